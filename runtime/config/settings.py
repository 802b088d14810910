"""The administrator's configuration: TOML files, modelled in attrs, validated by cattrs.

`config.toml` names the lower runtime and where everything else lives; `policy.toml` says what
attaches to which containers. Every error names the file, the key path and what was expected,
e.g. `policy.toml: attach[2].when.annotations: expected a table of strings, got a list: [...]`.

This module is the slow, thorough boundary. The hot path never imports it: it reads the compiled
form (`compile_config`) from the cache in `confcache`.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from typing import TYPE_CHECKING, Any

import attrs

from .. import config_source, layout
from ..errors import ConfigError
from ..seccomp.config import SeccompRule, check_rules, compile_rules
from ..tomlmodel import check_abs, describe_value, read_toml, structure

if TYPE_CHECKING:
    from ..compiled import Compiled

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")
MAX_LOG_KEEP = 1000


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
    # Pod sandbox (pause) containers, as the CRI marks them: true selects only sandboxes, the
    # default never selects one; `always = true` means every container of that kind.
    sandbox: bool = False
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
    # Syscalls brokered by the container's supervisor through seccomp user notification.
    seccomp: list[SeccompRule] = attrs.field(factory=list)
    # retinue-init as PID 1: true gives it to every selected container (as `docker run --init`);
    # false keeps the image's entrypoint as PID 1 even with services (systemd images); unset,
    # a container gets it exactly when it has exec services (sidecars need none).
    init: bool | None = None
    # Caps the services' part of the container's stop (see Settings.stop_budget).
    stop_budget: str | float | None = None


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
    state_dir: str = layout.DEFAULT_STATE_DIR
    # Service images (`retinue image import`), unpacked once per digest.
    image_dir: str = layout.DEFAULT_IMAGE_DIR
    # The most an imported image may declare, copy or unpack to (bytes, or K, M or G).
    image_max_size: str | int = "4G"
    log_dir: str = layout.DEFAULT_LOG_DIR
    # Each service's log rotates at this size, keeping this many older files (SERVICE.log.N).
    log_max_bytes: int = 8 << 20
    log_keep: int = 2
    # Log directories of deleted containers (one per container id; a restarted Kubernetes
    # container is a new id) are removed once older than this ("" for no age limit), and
    # beyond this many, newest kept; never while the container lives.
    log_retention: str = "7d"
    log_keep_containers: int = 100
    # All of one container's log files together (its services' logs, rotated ones included,
    # and supervisor.log); 0: no cap. A service over it gives up its own oldest output first.
    log_max_container_bytes: int = 64 << 20
    # No service output is written while the log filesystem has less free than this (a size,
    # or a percentage of the filesystem; "0": no floor), so that no container's output can
    # fill the node's disk.
    log_min_free: str = "5%"
    # The hook program; empty means `retinue-hook` beside the running retinue-runtime.
    hook: str = ""
    # Each container's supervisor (and its helpers) runs in a cgroup beside the container's,
    # bounded to this many CPUs (0: no bound) and this much memory ("0": no bound) where that
    # is stricter than what the cgroups above allow (the pod's limits). Bounds, not use: make
    # bench measured ~9 MiB idle and a 16 MiB peak while starting three services. One CPU: the
    # supervisor's interpreter starts in its cgroup, on the create path, and one thread never
    # exceeds it.
    supervisor_cpu: float = 1.0
    supervisor_memory: str = "64M"
    # What a container can make its supervisor do, per second: notify datagrams per service
    # socket (the excess is dropped and counted), seccomp notifications per container (the
    # excess waits in the kernel, on the container's own time).
    notify_rate: float = layout.NOTIFY_RATE
    seccomp_rate: float = layout.SECCOMP_RATE
    # Once a container's main process has exited, its services get at most this long in all to
    # stop (each within its own stop timeout) before its init exits and the kernel ends them: it
    # must fit the engine's grace period (Docker's and Kubernetes' default: 10s and 30s).
    stop_budget: str | float = "5s"


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
# Meaning: checks that need more than types.


def check_settings(s: Settings, source: str) -> list[str]:
    errors = []
    for key in ("state_dir", "log_dir", "image_dir"):
        errors += check_abs(key, getattr(s, key), "directory")
    if s.hook:
        errors += check_abs("hook", s.hook, "path")
    if s.runtime and "/" in s.runtime:
        errors += check_abs("runtime", s.runtime, "path")
    if s.log_max_bytes < 1024:
        errors.append(f"log_max_bytes: expected at least 1024, got {s.log_max_bytes}")
    errors += _check_budget("stop_budget", s.stop_budget)
    from ..host.images import max_size_bytes

    if max_size_bytes(s.image_max_size) is None:
        errors.append(
            'image_max_size: expected a size like "4G" (bytes, or K, M or G; at least 1M), '
            f"got {s.image_max_size!r:.100}"
        )
    if s.log_keep < 1:  # rotation renames the full file away: it needs somewhere to go
        errors.append(f"log_keep: expected 1 or more, got {s.log_keep}")
    elif s.log_keep > MAX_LOG_KEEP:  # each rotation renames every kept file in turn
        errors.append(f"log_keep: expected at most {MAX_LOG_KEEP}, got {s.log_keep}")
    try:
        parse_retention(s.log_retention)
    except ValueError:
        errors.append(
            f"log_retention: expected a duration like 7d, 12h or 1w2d (or \"\" for no age "
            f"limit), got {s.log_retention!r}"
        )
    if s.log_keep_containers < 0:
        errors.append(f"log_keep_containers: expected 0 or more, got {s.log_keep_containers}")
    if s.log_max_container_bytes != 0 and s.log_max_container_bytes < MIN_CONTAINER_LOG:
        errors.append(
            f"log_max_container_bytes: expected 0 (no cap) or at least {MIN_CONTAINER_LOG}, "
            f"got {s.log_max_container_bytes}"
        )
    if parse_min_free(s.log_min_free) is None:
        errors.append(
            'log_min_free: expected a size like "256M" or a percentage like "5%" (at most '
            f'50%; "0": no floor), got {s.log_min_free[:100]!r}'
        )
    errors += check_supervisor_bounds(s)
    return [f"{source}: {e}" for e in errors]


# One pipe read of a service's output is up to 64 KiB: a cap must hold a few of them.
MIN_CONTAINER_LOG = 1 << 20


def parse_min_free(text: str) -> float | None:
    """log_min_free: bytes (a size), or a fraction of the filesystem below 1 ("5%" -> 0.05);
    None if it is neither."""
    from ..host.cgroups import parse_size

    t = text.strip()
    if t.endswith("%"):
        try:
            percent = float(t[:-1])
        except ValueError:
            return None
        if not math.isfinite(percent) or not 0 <= percent <= 50:
            return None
        return percent / 100
    size = parse_size(t) if t else None
    return None if size is None else float(size)


MIN_SUPERVISOR_MEMORY = 32 << 20  # below this the supervisor's interpreter alone is killed


def check_supervisor_bounds(s: Settings) -> list[str]:
    from ..host.cgroups import parse_size

    errors = []
    cpu = s.supervisor_cpu
    if not math.isfinite(cpu) or cpu < 0 or (0 < cpu < 0.01) or cpu > 1024:
        errors.append(
            f"supervisor_cpu: expected a number of CPUs from 0.01 to 1024 (0: no bound), got {cpu}"
        )
    size = parse_size(s.supervisor_memory)
    if size is None:
        errors.append(
            'supervisor_memory: expected a size like "128M" (bytes, or K, M or G; "0": no bound), '
            f"got {s.supervisor_memory[:100]!r}"
        )
    elif 0 < size < MIN_SUPERVISOR_MEMORY:
        errors.append(
            f'supervisor_memory: expected "0" or at least 32M, got {s.supervisor_memory!r}'
        )
    for key in ("notify_rate", "seccomp_rate"):
        rate = getattr(s, key)
        if not math.isfinite(rate) or rate < 1 or rate > 1_000_000:
            errors.append(f"{key}: expected a number per second from 1 to 1000000, got {rate}")
    return errors


RETENTION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_retention(text: str) -> float:
    """Seconds from "7d", "12h", "1w2d"; 0 for "" (no age limit); ValueError otherwise."""
    text = text.strip()
    if not text:
        return 0.0
    if not re.fullmatch(r"(?:\d+[smhdw])+", text):
        raise ValueError(text)
    seconds = sum(int(n) * RETENTION_UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", text))
    if seconds <= 0:
        raise ValueError(text)
    return float(seconds)


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
        errors += check_rules(rule.seccomp, at=f"{at}.seccomp")
        if rule.stop_budget is not None:
            errors += _check_budget(f"{at}.stop_budget", rule.stop_budget)
        w = rule.when
        if not (w.always or w.sandbox or w.annotations or w.env or w.command):
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
                errors += check_abs(f"{at}.mounts[{j}].source", m.source, "host path")
            elif not m.source or ".." in m.source.split("/") or "\0" in m.source:
                errors.append(
                    f"{at}.mounts[{j}].source: expected a host path (absolute, or relative to "
                    f"this file, without '..'), got {m.source!r}"
                )
            errors += check_abs(f"{at}.mounts[{j}].destination", m.destination, "container path")
            if m.destination == "/":
                errors.append(f"{at}.mounts[{j}].destination: cannot mount over the root")
            if m.destination in destinations:
                errors.append(f"{at}.mounts[{j}].destination: {m.destination} is mounted twice")
            destinations.add(m.destination)
    return [f"{source}: {e}" for e in errors]


def _check_budget(key: str, value: str | float) -> list[str]:
    from .services import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError:
        return [f"{key}: expected a duration like 5s or 500ms, got {describe_value(value)}"]
    if not 0 <= seconds <= 3600:
        return [f"{key}: expected between 0s and 1h, got {describe_value(value)}"]
    return []


def _raise_if(errors: list[str]) -> None:
    if errors:
        raise ConfigError("\n".join(errors))


def load(path: str | None = None) -> Config:
    """Load and validate every file; raises ConfigError listing every problem found."""
    explicit = path is not None
    if path is None:
        path, explicit = config_source()
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
        # Only the default name may be missing (no rules); a file the configuration names must
        # exist. The class attribute is attrs' slot descriptor, not the default: ask attrs.
        if os.path.exists(policy_path) or settings.policy != attrs.fields(Settings).policy.default:
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
        # Listed even when absent: the cache must notice the directory appearing.
        files += service_files or [services_dir]
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


def compile_config(cfg: Config, runtime: str, hook: str) -> Compiled:
    """The plain-data form the hot path reads: only builtins, so `marshal` can store it."""
    from ..host.cgroups import parse_size
    from . import services as services_module

    s = cfg.settings
    return {
        "runtime": runtime,
        "hook": hook,
        # Built by the package build beside the package root; bind-mounted into containers.
        "init": os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "libexec", "retinue-init"
        ),
        "stop_budget": services_module.parse_duration(s.stop_budget),
        "state_dir": s.state_dir,
        "image_dir": s.image_dir,
        "log_dir": s.log_dir,
        "log_max_bytes": s.log_max_bytes,
        "log_keep": s.log_keep,
        "log_retention": parse_retention(s.log_retention),
        "log_keep_containers": s.log_keep_containers,
        "log_max_container_bytes": s.log_max_container_bytes,
        "log_min_free": parse_min_free(s.log_min_free) or 0.0,
        "supervisor_cpu": s.supervisor_cpu,
        "supervisor_memory": parse_size(s.supervisor_memory) or 0,
        "notify_rate": s.notify_rate,
        "seccomp_rate": s.seccomp_rate,
        "rules": [
            {
                "name": r.name,
                "always": r.when.always,
                "sandbox": r.when.sandbox,
                "annotations": sorted(r.when.annotations.items()),
                "env_match": sorted(r.when.env.items()),
                "command": list(r.when.command),
                "mounts": [(m.source, m.destination) for m in r.mounts],
                "env": list(r.env.items()),
                "services": list(r.services),
                "seccomp": compile_rules(r.seccomp),
                "init": r.init,
                "stop_budget": (
                    None
                    if r.stop_budget is None
                    else services_module.parse_duration(r.stop_budget)
                ),
            }
            for r in cfg.policy.attach
        ],
        # Whether any container can have a supervisor: the hot path skips its stat otherwise.
        "supervised": bool(cfg.services) or any(r.seccomp for r in cfg.policy.attach),
        "services": {
            name: services_module.compile_service(
                name, svc, os.path.dirname(os.path.abspath(cfg.path))
            )
            for name, svc in cfg.services.items()
        },
    }
