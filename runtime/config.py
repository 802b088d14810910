"""The administrator's configuration: TOML files, modelled in attrs, validated by cattrs.

`config.toml` names the lower runtime and where everything else lives; `policy.toml` says what
attaches to which containers. Every error names the file, the key path and what was expected,
e.g. `policy.toml: attach[2].when.annotations: expected a table of strings, got a list: [...]`.

This module is the slow, thorough boundary. The hot path never imports it: it reads the compiled
form (`compile_config`) from the cache in `confcache`.
"""

from __future__ import annotations

import os
import posixpath
import re
import tomllib
import types
import typing
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from .confcache import CONFIG_ENV, DEFAULT_CONFIG
from .errors import ConfigError

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")


def _empty_dict() -> dict[str, str]:
    return {}


@attrs.frozen
class Mount:
    """A host directory bind-mounted read-only into the container."""

    source: str
    destination: str


@attrs.frozen
class When:
    """Which containers a rule selects. Every condition given must hold (AND)."""

    always: bool = False
    # Annotation name -> glob on its value.
    annotations: dict[str, str] = attrs.field(factory=_empty_dict)
    # Env variable name -> glob on its value.
    env: dict[str, str] = attrs.field(factory=_empty_dict)
    # Globs on the container's command (process.args[0]); any may match.
    command: list[str] = attrs.field(factory=list)


@attrs.frozen
class Rule:
    """One `[[attach]]` entry of the policy."""

    name: str
    when: When
    mounts: list[Mount] = attrs.field(factory=list)
    env: dict[str, str] = attrs.field(factory=_empty_dict)
    # Services every selected container gets; the container cannot opt out of them.
    services: list[str] = attrs.field(factory=list)


@attrs.frozen
class Policy:
    attach: list[Rule] = attrs.field(factory=list)


@attrs.frozen
class Settings:
    """`config.toml`. Relative paths are relative to the file's own directory."""

    # runc or crun: an absolute path, or a name on PATH; empty means runc, else crun, on PATH.
    runtime: str = ""
    policy: str = "policy.toml"
    services: str = "services"
    state_dir: str = "/run/retinue"
    log_dir: str = "/var/log/retinue"
    # The hook program; empty means `retinue-hook` beside the running retinue-runtime.
    hook: str = ""


@attrs.frozen
class Config:
    """Everything loaded, with the paths it came from."""

    path: str
    settings: Settings
    policy_path: str
    policy: Policy
    services_dir: str
    services: dict[str, Any]  # name -> services.Service
    files: tuple[str, ...]  # every file and directory read, for the cache's validity check


# ---------------------------------------------------------------------------------------------
# Strict structuring: cattrs would happily turn 3 into "3" or iterate a string as a list.


class _Mismatch(Exception):
    def __init__(self, expected: str, value: object) -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value


def _describe_type(t: Any) -> str:
    if t is str:
        return "a string"
    if t is bool:
        return "true or false"
    if t is int:
        return "an integer"
    if t is float:
        return "a number"
    if attrs.has(t):
        return "a table"
    origin = typing.get_origin(t)
    if origin is dict:
        return f"a table of {_plural(typing.get_args(t)[1])}"
    if origin is list:
        return f"a list of {_plural(typing.get_args(t)[0])}"
    return str(t)


def _plural(t: Any) -> str:
    text = _describe_type(t)
    for article in ("a ", "an "):
        if text.startswith(article):
            text = text[len(article) :]
            break
    return {"table": "tables", "string": "strings", "integer": "integers", "number": "numbers"}.get(
        text, text
    )


def describe_value(value: object) -> str:
    kind = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind}: {text}"


def _scalar_hook(kind: type) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        # bool is an int in Python, and TOML has both: keep them apart.
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise _Mismatch(_describe_type(kind), value)
        return value

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
    for kind in (str, bool, int, float):
        conv.register_structure_hook(kind, _scalar_hook(kind))

    def mapping_factory(t: Any) -> Callable[[Any, Any], Any]:
        value_type = typing.get_args(t)[1]

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise _Mismatch(_describe_type(t), value)
            out, errors = {}, []
            for key, item in value.items():
                try:
                    out[key] = conv.structure(item, value_type)
                except Exception as e:
                    e.__notes__ = [*getattr(e, "__notes__", []), _key_note(key, value_type)]
                    errors.append(e)
            if errors:
                raise IterableValidationError(f"While structuring {t}", errors, t)
            return out

        return hook

    def list_factory(t: Any) -> Callable[[Any, Any], Any]:
        item_type = typing.get_args(t)[0]

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, list):
                raise _Mismatch(_describe_type(t), value)
            out, errors = [], []
            for index, item in enumerate(value):
                try:
                    out.append(conv.structure(item, item_type))
                except Exception as e:
                    e.__notes__ = [
                        *getattr(e, "__notes__", []),
                        IterableValidationNote(f"@ index {index}", index, item_type),
                    ]
                    errors.append(e)
            if errors:
                raise IterableValidationError(f"While structuring {t}", errors, t)
            return out

        return hook

    def scalar_union_factory(t: Any) -> Callable[[Any, Any], Any]:
        members = typing.get_args(t)
        allowed = {m for m in members if m is not type(None)}
        if float in allowed:
            allowed.add(int)
        described = " or ".join(_describe_type(m) for m in members if m is not type(None))

        def hook(value: Any, _: Any) -> Any:
            if value is None and type(None) in members:
                return None
            if type(value) not in allowed:
                raise _Mismatch(described, value)
            return value

        return hook

    def is_scalar_union(t: Any) -> bool:
        if typing.get_origin(t) not in (typing.Union, types.UnionType):
            return False
        members = [m for m in typing.get_args(t) if m is not type(None)]
        return len(members) > 1 and all(m in (str, int, float, bool) for m in members)

    conv.register_structure_hook_factory(is_scalar_union, scalar_union_factory)
    conv.register_structure_hook_factory(lambda t: _origin(t) is dict, mapping_factory)
    conv.register_structure_hook_factory(lambda t: _origin(t) is list, list_factory)

    def class_factory(t: Any) -> Callable[[Any, Any], Any]:
        inner = cattrs.gen.make_dict_structure_fn(t, conv, _cattrs_forbid_extra_keys=True)

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise _Mismatch("a table", value)
            return inner(value, t)

        return hook

    conv.register_structure_hook_factory(attrs.has, class_factory)
    return conv


def _origin(t: Any) -> Any:
    return typing.get_origin(t)


class _KeyNote(str):
    key: str


def _key_note(key: str, t: Any) -> _KeyNote:
    note = _KeyNote(f"@ key {key!r}")
    note.key = key
    return note


_converter: cattrs.Converter | None = None


def converter() -> cattrs.Converter:
    global _converter
    if _converter is None:
        _converter = _make_converter()
    return _converter


def _format_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _join(path: str, segment: str) -> str:
    if segment.startswith("["):
        return path + segment
    return f"{path}.{segment}" if path else segment


def _segment(exc: BaseException) -> str:
    for note in getattr(exc, "__notes__", []):
        if isinstance(note, AttributeValidationNote):
            return note.name
        if isinstance(note, _KeyNote):
            return _format_key(note.key)
        if isinstance(note, IterableValidationNote):
            return f"[{note.index}]"
    return ""


def validation_messages(exc: BaseException, path: str = "") -> list[str]:
    """Flatten a cattrs validation error into `key.path: message` lines."""
    here = _join(path, _segment(exc)) if _segment(exc) else path
    if isinstance(exc, ClassValidationError | IterableValidationError):
        return [m for sub in exc.exceptions for m in validation_messages(sub, here)]
    if isinstance(exc, ForbiddenExtraKeysError):
        return [
            f"{_join(here, _format_key(k)) or '(top level)'}: unknown key"
            for k in sorted(exc.extra_fields)
        ]
    if isinstance(exc, KeyError):
        return [f"{here}: missing (required)"]
    if isinstance(exc, _Mismatch):
        return [
            f"{here or '(top level)'}: expected {exc.expected}, got {describe_value(exc.value)}"
        ]
    return [f"{here or '(top level)'}: {exc}"]


def structure(data: dict[str, Any], cls: type[Any], source: str) -> Any:
    try:
        return converter().structure(data, cls)
    except (ClassValidationError, IterableValidationError, _Mismatch) as e:
        raise ConfigError("\n".join(f"{source}: {m}" for m in validation_messages(e))) from None


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 ({e.reason})") from None


# ---------------------------------------------------------------------------------------------
# Meaning: checks that need more than types.


def _check_abs(path: str, value: str, what: str) -> list[str]:
    if not value.startswith("/"):
        return [f"{path}: expected an absolute {what}, got {value!r}"]
    if posixpath.normpath(value) != (value.rstrip("/") or "/") or "/../" in value + "/":
        return [
            f"{path}: expected a normalized absolute {what} (no '..', '.' or '//'), got {value!r}"
        ]
    return []


def check_settings(s: Settings, source: str) -> list[str]:
    errors = []
    for key in ("state_dir", "log_dir"):
        errors += _check_abs(key, getattr(s, key), "directory")
    if s.hook:
        errors += _check_abs("hook", s.hook, "path")
    if s.runtime and "/" in s.runtime:
        errors += _check_abs("runtime", s.runtime, "path")
    return [f"{source}: {e}" for e in errors]


def check_policy(policy: Policy, source: str) -> list[str]:
    errors: list[str] = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(policy.attach):
        at = f"attach[{i}]"
        if not RULE_NAME.match(rule.name):
            errors.append(
                f"{at}.name: expected lowercase letters, digits, '.', '_' or '-' "
                f"(at most 63), got {rule.name!r}"
            )
        if rule.name in seen:
            errors.append(
                f"{at}.name: {rule.name!r} is already the name of attach[{seen[rule.name]}]"
            )
        seen.setdefault(rule.name, i)
        w = rule.when
        if not (w.always or w.annotations or w.env or w.command):
            errors.append(
                f"{at}.when: selects nothing; give always = true or annotations, env or command"
            )
        for name in w.env:
            if not ENV_NAME.match(name):
                errors.append(f"{at}.when.env: invalid variable name {name!r}")
        for name in rule.env:
            if not ENV_NAME.match(name):
                errors.append(f"{at}.env: invalid variable name {name!r}")
        for name, value in rule.env.items():
            if "\0" in value:
                errors.append(f"{at}.env.{name}: contains a NUL byte")
        destinations: set[str] = set()
        for j, m in enumerate(rule.mounts):
            if m.source.startswith("/"):
                errors += _check_abs(f"{at}.mounts[{j}].source", m.source, "host path")
            elif not m.source or ".." in m.source.split("/"):
                errors.append(
                    f"{at}.mounts[{j}].source: expected a host path (absolute, or relative to "
                    f"this file, without '..'), got {m.source!r}"
                )
            errors += _check_abs(f"{at}.mounts[{j}].destination", m.destination, "container path")
            if m.destination == "/":
                errors.append(f"{at}.mounts[{j}].destination: cannot mount over the root")
            if m.destination in destinations:
                errors.append(f"{at}.mounts[{j}].destination: {m.destination} is mounted twice")
            destinations.add(m.destination)
    return [f"{source}: {e}" for e in errors]


def _raise_if(errors: list[str]) -> None:
    if errors:
        raise ConfigError("\n".join(errors))


def config_path() -> tuple[str, bool]:
    """The config file to use, and whether it was asked for explicitly."""
    explicit = os.environ.get(CONFIG_ENV, "")
    return (explicit, True) if explicit else (DEFAULT_CONFIG, False)


def load(path: str | None = None) -> Config:
    """Load and validate every file; raises ConfigError listing every problem found."""
    explicit = path is not None
    if path is None:
        path, explicit = config_path()
    if not explicit and not os.path.exists(path):
        # No configuration at all: pass everything through to runc/crun on PATH.
        return Config(path, Settings(), "", Policy(), "", {}, (path,))
    settings = structure(read_toml(path), Settings, path)
    _raise_if(check_settings(settings, path))
    base = os.path.dirname(os.path.abspath(path))
    policy_path = os.path.join(base, settings.policy) if settings.policy else ""
    files: list[str] = [path]
    policy = Policy()
    if policy_path:
        files.append(policy_path)
        if os.path.exists(policy_path) or settings.policy != Settings.policy:
            policy = structure(read_toml(policy_path), Policy, policy_path)
            _raise_if(check_policy(policy, policy_path))
            policy = _resolve_sources(policy, os.path.dirname(policy_path))
    from . import services as services_module

    services_dir = os.path.join(base, settings.services) if settings.services else ""
    services: dict[str, Any] = {}
    if services_dir:
        # A service's relative `files` is relative to this config file's directory, like every
        # other path in config.toml.
        services, service_files = services_module.load_dir(services_dir, base)
        files += service_files
    errors = []
    for i, rule in enumerate(policy.attach):
        for j, name in enumerate(rule.services):
            if name not in services:
                defined = ", ".join(sorted(services)) or "none"
                errors.append(
                    f"{policy_path}: attach[{i}].services[{j}]: no service {name!r} in "
                    f"{services_dir} (defined: {defined})"
                )
    _raise_if(errors)
    return Config(path, settings, policy_path, policy, services_dir, services, tuple(files))


def _resolve_sources(policy: Policy, base: str) -> Policy:
    """Relative mount sources are relative to the policy file; the spec only gets absolute ones."""
    return attrs.evolve(
        policy,
        attach=[
            attrs.evolve(
                rule,
                mounts=[
                    attrs.evolve(m, source=posixpath.normpath(posixpath.join(base, m.source)))
                    for m in rule.mounts
                ],
            )
            for rule in policy.attach
        ],
    )


def compile_config(cfg: Config, runtime: str, hook: str) -> dict[str, Any]:
    """The plain-data form the hot path reads: only builtins, so `marshal` can store it."""
    from . import services as services_module

    s = cfg.settings
    return {
        "runtime": runtime,
        "hook": hook,
        "state_dir": s.state_dir,
        "log_dir": s.log_dir,
        "rules": [
            {
                "name": r.name,
                "always": r.when.always,
                "annotations": sorted(r.when.annotations.items()),
                "env_match": sorted(r.when.env.items()),
                "command": list(r.when.command),
                "mounts": [(m.source, m.destination) for m in r.mounts],
                "env": list(r.env.items()),
                "services": list(r.services),
            }
            for r in cfg.policy.attach
        ],
        "services": {
            name: services_module.compile_service(
                name, svc, os.path.dirname(os.path.abspath(cfg.path))
            )
            for name, svc in cfg.services.items()
        },
    }
