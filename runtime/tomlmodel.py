"""Strict structuring of TOML into attrs classes, with errors that name the key path.

cattrs alone would happily turn 3 into "3" or iterate a string as a list; the hooks here accept
exactly the TOML types a field declares, and `validation_messages` turns cattrs' exception groups
into `key.path: expected X, got Y: value` lines. Shared by every TOML file retinue reads (the
configuration, the services, the seccomp rules).
"""

from __future__ import annotations

import math
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

from .errors import ConfigError


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


# Signed or unsigned: seccomp masks and values use all 64 bits.
INT64 = range(-(1 << 63), 1 << 64)


def _check_number(value: Any) -> None:
    """TOML reads nan, inf and integers of any size; no setting means any of them."""
    if type(value) is float and not math.isfinite(value):
        raise _Mismatch("a finite number", value)
    if type(value) is int and value not in INT64:
        raise _Mismatch("an integer that fits in 64 bits", value)


def _scalar_hook(kind: type) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        # bool is an int in Python, and TOML has both: keep them apart.
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise _Mismatch(_describe_type(kind), value)
        _check_number(value)
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
                    e.__notes__ = [*getattr(e, "__notes__", []), _key_note(key)]
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
            _check_number(value)
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
    # Typed as Any: mypy reads `typing.get_origin(t) is dict` as a comparison that cannot hold.
    return typing.get_origin(t)


class _KeyNote(str):
    key: str


def _key_note(key: str) -> _KeyNote:
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
    segment = _segment(exc)
    here = _join(path, segment) if segment else path
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
    except ValueError as e:  # an integer too long for int() to convert, raised by tomllib as is
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


# ---------------------------------------------------------------------------------------------
# Shared meaning checks


def check_abs(path: str, value: str, what: str) -> list[str]:
    if "\0" in value:
        return [f"{path}: contains a NUL byte, got {value!r}"]
    if not value.startswith("/"):
        return [f"{path}: expected an absolute {what}, got {value!r}"]
    if posixpath.normpath(value) != (value.rstrip("/") or "/") or "/../" in value + "/":
        return [
            f"{path}: expected a normalized absolute {what} (no '..', '.' or '//'), got {value!r}"
        ]
    return []
