"""Service definitions: one TOML file per service in the services directory.

# /etc/retinue/services/metrics.toml  (the file name is the service name)
description = "node metrics on :9100"
files = "/opt/retinue/metrics"      # host directory (relative: to config.toml's directory),
                                    # mounted read-only at /retinue/metrics
command = ["bin/agent", "--port", "9100"]   # relative to files, or absolute under /retinue/metrics
user = "65534:65534"
capabilities = ["CAP_NET_BIND_SERVICE"]
env = { LEVEL = "info" }
required = true                     # gates the container's entrypoint
requires = ["proxy"]                # pulled in; started after it is ready; fails if it fails
wants = []                          # pulled in; started after it; its failure is tolerated
after = []                          # ordering only, if the other is attached anyway
type = "simple"                     # simple (a daemon) | oneshot (runs to completion)
on_failure = "ignore"               # ignore | stop-container (fails for good after start)
[ready]                             # started | tcp | exec | file | notify | http
tcp = 9100
timeout = "30s"                     # a oneshot: the time it has to finish
[health]                            # liveness after ready: exec | tcp | http
http = "http://127.0.0.1:9100/healthz"
interval = "10s"
timeout = "1s"
failures = 3                        # consecutive failures that restart it
[restart]
policy = "on-failure"               # no | on-failure | always (a oneshot: no)
delay = "1s"
max_delay = "30s"
reset_after = "60s"
burst = 5
interval = "30s"
success_exit = [3, "SIGUSR1"]       # also a clean exit
prevent_exit = [78]                 # never restarted after these
[stop]
exec = ["bin/drain"]                # run inside the container before the signal
signal = "SIGTERM"
timeout = "10s"                     # the drain and the signal's wait share it
"""

from __future__ import annotations

import os
import re
import signal as signal_module
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import ConfigError, seconds
from ..layout import SERVICE_PREFIX
from ..policy import graph
from ..seccomp.config import SeccompRule, check_rules, compile_rules

if TYPE_CHECKING:
    from ..compiled import CompiledService
from ..tomlmodel import check_abs, describe_value, read_toml, structure

SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")
# Every capability Linux defines (capability.h, up to 6.x). A name that only looks right is not
# enough: runc 1.1 merely warns about an unknown one and runs the service without it.
CAPABILITIES = frozenset(
    [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ]
)
RESTART_POLICIES = ("no", "on-failure", "always")
PLACEMENTS = ("exec", "container")
CONFINEMENTS = ("app", "none")
# Below this, runc 1.1 cannot even start the sibling's init in its cgroup.
MIN_MEMORY = 4 << 20
TYPES = ("simple", "oneshot")
ON_FAILURE = ("ignore", "stop-container")
# A liveness probe runs this often at most, and gets at least this long.
MIN_HEALTH_INTERVAL = 0.1
MIN_HEALTH_TIMEOUT = 0.01
# A readiness check polls this often at most: 0 would spin the supervisor.
MIN_READY_INTERVAL = 0.001


@attrs.frozen
class Ready:
    """How the service tells it is ready; at most one of tcp, exec, file, notify, http."""

    tcp: int | None = None
    exec: list[str] | None = None
    file: str | None = None
    notify: bool = False
    http: str | None = None
    timeout: str | float = "30s"
    interval: str | float = "50ms"


@attrs.frozen
class Health:
    """A liveness probe once the service is ready; one of exec, tcp, http."""

    exec: list[str] | None = None
    tcp: int | None = None
    http: str | None = None
    interval: str | float = "10s"
    timeout: str | float = "1s"
    failures: int = 3


@attrs.frozen
class Restart:
    # None: "on-failure" for a daemon, "no" for a oneshot (systemd's defaults for each).
    policy: str | None = None
    delay: str | float = "1s"
    max_delay: str | float = "30s"
    reset_after: str | float = "60s"
    burst: int = 5
    interval: str | float = "30s"
    # Exit codes (0-255) or signal names: success_exit also count as a clean exit, after
    # prevent_exit the service is never restarted (systemd's SuccessExitStatus=,
    # RestartPreventExitStatus=).
    success_exit: list[int | str] = attrs.field(factory=list)
    prevent_exit: list[int | str] = attrs.field(factory=list)


@attrs.frozen
class Stop:
    exec: list[str] | None = None
    signal: str = "SIGTERM"
    timeout: str | float = "10s"


@attrs.frozen
class Resources:
    """Limits of the service's own cgroup (placement = "container"); 0 or "" means none."""

    memory: str = ""
    cpu: float = 0.0
    pids: int = 0


@attrs.frozen
class Service:
    # With placement = "exec" (the default): a host directory and a command inside it.
    files: str = ""
    command: list[str] = attrs.field(factory=list)
    description: str = ""
    type: str = "simple"
    on_failure: str = "ignore"
    user: str | int = "0:0"
    capabilities: list[str] = attrs.field(factory=list)
    env: dict[str, str] = attrs.field(factory=dict)
    working_dir: str = "/"
    required: bool = True
    selectable: bool = True
    requires: list[str] = attrs.field(factory=list)
    wants: list[str] = attrs.field(factory=list)
    after: list[str] = attrs.field(factory=list)
    ready: Ready = attrs.field(factory=Ready)
    health: Health | None = None
    restart: Restart = attrs.field(factory=Restart)
    stop: Stop = attrs.field(factory=Stop)
    # Seccomp handlers every container with this service gets (a broker the service relies on).
    seccomp: list[SeccompRule] = attrs.field(factory=list)
    # "exec": run inside the app container; "container": a sibling container from `image`.
    placement: str = "exec"
    image: str = ""
    # Paths of the app container a sibling sees read-only at the same place.
    share: list[str] = attrs.field(factory=list)
    # "app": a sibling gets the app's seccomp, AppArmor and SELinux confinement; "none": not.
    confinement: str = "app"
    resources: Resources = attrs.field(factory=Resources)


# A year: longer is a typo, and the supervisor's timers, sleeps and `runc` calls take it as is.
MAX_DURATION = 365 * 24 * 3600.0


def parse_duration(value: str | float) -> float:
    """Seconds from 1.5, "30s", "100ms", "1m30s", at most a year; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_DURATION:  # also false for nan
            raise ValueError
        return float(value)
    text = value.strip()
    if not text or not re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+", text):
        raise ValueError
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    seconds = sum(float(n) * unit[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text))
    if not seconds <= MAX_DURATION:  # a long run of digits reads as inf
        raise ValueError
    return seconds


# The largest id a process can have: (uid_t)-1 means "no change" to the kernel.
MAX_ID = (1 << 32) - 2
# Stopping with SIGSTOP would freeze the service until its stop timeout, then SIGKILL it.
UNUSABLE_STOP_SIGNALS = frozenset({"SIGSTOP"})


def signal_number(name: str) -> int | None:
    """The number of a signal name such as SIGTERM; None for anything else (SIG_DFL, TERM)."""
    member = signal_module.Signals.__members__.get(name)
    return None if member is None else int(member)


def parse_user(value: str | int) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_ID:
            raise ValueError
        return value, value
    if value == "root":
        return 0, 0
    if value == "nobody":
        return 65534, 65534
    uid, _, gid = str(value).partition(":")
    if not uid.isascii() or not uid.isdigit() or (gid and not (gid.isascii() and gid.isdigit())):
        raise ValueError
    if len(uid) > 10 or len(gid) > 10 or int(uid) > MAX_ID or int(gid or uid) > MAX_ID:
        raise ValueError
    return int(uid), int(gid or uid)


def mount_point(name: str) -> str:
    return f"{SERVICE_PREFIX}/{name}"


def container_command(name: str, command: list[str]) -> list[str]:
    """The command as the container sees it: relative paths are inside the service's files."""
    first = command[0]
    if not first.startswith("/"):
        first = f"{mount_point(name)}/{first}"
    return [first, *command[1:]]


def _inside_files(name: str, path: str) -> bool:
    normalized = os.path.normpath(path)
    return (
        path.startswith("/")
        and normalized.startswith(mount_point(name) + "/")
        and ".." not in path.split("/")
    )


def check_service(name: str, svc: Service, source: str, files_base: str) -> list[str]:
    """Meaning checks for one service; each message names the file, key and value."""
    errors: list[str] = []

    def err(key: str, msg: str) -> None:
        errors.append(f"{source}: {key}: {msg}")

    if not SERVICE_NAME.match(name):
        err("(file name)", f"service names are lowercase letters, digits, '_' or '-', got {name!r}")
    errors += [f"{source}: {e}" for e in check_resources(svc.resources)]
    sidecar = svc.placement == "container"
    if svc.placement not in PLACEMENTS:
        err("placement", f"expected one of {', '.join(PLACEMENTS)}, got {svc.placement!r}")
    elif svc.placement == "container":
        errors += [f"{source}: {e}" for e in check_container(svc)]
    else:
        for key in ("image", "share"):
            if getattr(svc, key):
                err(key, f'only with placement = "container", got {getattr(svc, key)!r}')
        files = svc.files if os.path.isabs(svc.files) else os.path.join(files_base, svc.files)
        if not svc.files:
            err("files", 'missing (required with placement = "exec": a host directory)')
        elif ".." in svc.files.split("/"):
            err("files", f"expected a host directory without '..', got {svc.files!r}")
        elif not os.path.isdir(files):
            err("files", f"{files}: no such directory")
        if not svc.command:
            err("command", "expected a non-empty list of strings, got an empty list")
        elif any("\0" in arg for arg in svc.command):
            i = next(i for i, arg in enumerate(svc.command) if "\0" in arg)
            err(f"command[{i}]", f"contains a NUL byte, got {svc.command[i]!r}")
        else:
            first = svc.command[0]
            if first.startswith("/") and not _inside_files(name, first):
                err(
                    "command[0]",
                    f"must be one of the service's own files (relative to `files`, or under "
                    f"{mount_point(name)}/), got {first!r}",
                )
            elif not first or ".." in first.split("/"):
                err("command[0]", f"must be a path inside the service's files, got {first!r}")
            elif os.path.isdir(files):
                rel = first[len(mount_point(name)) + 1 :] if first.startswith("/") else first
                host = os.path.join(files, rel)
                if not os.path.isfile(host):
                    err("command[0]", f"{first!r}: no such file in {files}")
                elif not os.access(host, os.X_OK):
                    err("command[0]", f"{first!r}: {host} is not executable")
    try:
        parse_user(svc.user)
    except ValueError:
        err("user", f"expected uid[:gid], 'root' or 'nobody', got {describe_value(svc.user)}")
    for i, cap in enumerate(svc.capabilities):
        if cap not in CAPABILITIES:
            err(f"capabilities[{i}]", f"expected a capability name like CAP_NET_ADMIN, got {cap!r}")
        elif cap in svc.capabilities[:i]:
            err(f"capabilities[{i}]", f"{cap} is listed twice")
    for var, text in svc.env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            err("env", f"invalid variable name {var!r}")
        elif "\0" in text:
            err(f"env.{var}", f"contains a NUL byte, got {text!r}")
    # A path inside the container: whether it exists is known only when the service starts
    # (its exec then fails at once, naming it); what can be checked here is its form.
    if not svc.working_dir.startswith("/"):
        err("working_dir", f"expected an absolute path, got {svc.working_dir!r}")
    else:
        errors += [f"{source}: {e}" for e in check_abs("working_dir", svc.working_dir, "path")]
    ready = svc.ready
    kinds = [k for k in ("tcp", "exec", "file", "http") if getattr(ready, k) is not None]
    if ready.notify:
        kinds.append("notify")
    if len(kinds) > 1:
        err("ready", f"give at most one of tcp, exec, file, notify, http; got {', '.join(kinds)}")
    if ready.tcp is not None and not 0 < ready.tcp < 65536:
        err("ready.tcp", f"expected a port 1-65535, got {ready.tcp}")
    if ready.file is not None and not ready.file.startswith("/"):
        err("ready.file", f"expected an absolute path in the container, got {ready.file!r}")
    elif ready.file is not None:
        errors += [f"{source}: {e}" for e in check_abs("ready.file", ready.file, "path")]
    if ready.exec is not None:
        check_probe_command(name, "ready.exec", ready.exec, err, sidecar)
    if ready.http is not None:
        check_http_key("ready.http", ready.http, err)
    health = svc.health
    if health is not None:
        kinds = [k for k in ("exec", "tcp", "http") if getattr(health, k) is not None]
        if len(kinds) != 1:
            got = ", ".join(kinds) if kinds else "none"
            err("health", f"give exactly one of exec, tcp, http; got {got}")
        if health.exec is not None:
            check_probe_command(name, "health.exec", health.exec, err, sidecar)
        if health.tcp is not None and not 0 < health.tcp < 65536:
            err("health.tcp", f"expected a port 1-65535, got {health.tcp}")
        if health.http is not None:
            check_http_key("health.http", health.http, err)
        if health.failures < 1:
            err("health.failures", f"expected at least 1, got {health.failures}")
        for key, value, least in (
            ("health.interval", health.interval, MIN_HEALTH_INTERVAL),
            ("health.timeout", health.timeout, MIN_HEALTH_TIMEOUT),
        ):
            try:
                if parse_duration(value) < least:
                    err(key, f"expected at least {seconds(least)}, got {describe_value(value)}")
            except ValueError:
                err(key, f"{DURATION_HELP}, got {describe_value(value)}")
    if svc.stop.exec is not None:
        check_probe_command(name, "stop.exec", svc.stop.exec, err, sidecar)
    if svc.type not in TYPES:
        err("type", f"expected one of {', '.join(TYPES)}, got {svc.type!r}")
    elif svc.type == "oneshot":
        # A one-shot is ready when it has exited 0: nothing else can say so, nor watch it.
        if kinds_ready := [k for k in ("tcp", "exec", "file", "http") if getattr(ready, k)]:
            err(f"ready.{kinds_ready[0]}", "a oneshot service is ready when it exits 0; "
                "remove the check (ready.timeout is the time it has to finish)")
        elif ready.notify:
            err("ready.notify", "a oneshot service is ready when it exits 0; remove the check")
        if health is not None:
            err("health", "a oneshot service runs to completion: it has no liveness probe")
        if svc.restart.policy == "always":
            err("restart.policy", "a oneshot service runs to completion: 'always' would run it "
                "again after every success; use no or on-failure")
    if svc.on_failure not in ON_FAILURE:
        err("on_failure", f"expected one of {', '.join(ON_FAILURE)}, got {svc.on_failure!r}")
    for key in ("success_exit", "prevent_exit"):
        for i, entry in enumerate(getattr(svc.restart, key)):
            if isinstance(entry, bool) or (
                isinstance(entry, int) and not 0 <= entry <= 255
            ) or (isinstance(entry, str) and signal_number(entry) is None):
                err(
                    f"restart.{key}[{i}]",
                    "expected an exit code 0-255 or a signal name like SIGTERM, "
                    f"got {describe_value(entry)}",
                )
    durations: list[tuple[str, str | float]] = [
        ("ready.timeout", ready.timeout),
        ("ready.interval", ready.interval),
        ("restart.delay", svc.restart.delay),
        ("restart.max_delay", svc.restart.max_delay),
        ("restart.reset_after", svc.restart.reset_after),
        ("restart.interval", svc.restart.interval),
        ("stop.timeout", svc.stop.timeout),
    ]
    for key, value in durations:
        try:
            parse_duration(value)
        except ValueError:
            err(key, f"{DURATION_HELP}, got {describe_value(value)}")
    try:
        if parse_duration(ready.interval) < MIN_READY_INTERVAL:
            err(
                "ready.interval",
                f"expected at least {MIN_READY_INTERVAL * 1000:g}ms (the check runs this often), "
                f"got {describe_value(ready.interval)}",
            )
    except ValueError:
        pass
    if svc.restart.policy is not None and svc.restart.policy not in RESTART_POLICIES:
        err(
            "restart.policy",
            f"expected one of {', '.join(RESTART_POLICIES)}, got {svc.restart.policy!r}",
        )
    if svc.restart.burst < 1:
        err("restart.burst", f"expected at least 1, got {svc.restart.burst}")
    if svc.stop.signal in UNUSABLE_STOP_SIGNALS:
        err("stop.signal", f"{svc.stop.signal} cannot stop a service: it only suspends it")
    elif signal_number(svc.stop.signal) is None:
        err("stop.signal", f"expected a signal name like SIGTERM, got {svc.stop.signal!r}")
    errors += [f"{source}: {e}" for e in check_rules(svc.seccomp, at="seccomp")]
    return errors


def check_container(svc: Service) -> list[str]:
    """Checks of the keys of a sibling-placed service; the image's presence is the CLI's."""
    from ..host.images import check_reference

    errors: list[str] = []
    if svc.files:
        errors.append(
            f'files: not used with placement = "container" (the image is the service\'s files), '
            f"got {svc.files!r}"
        )
    if not svc.image:
        errors.append('image: required with placement = "container"')
    elif (problem := check_reference(svc.image)) is not None:
        errors.append(f"image: {problem}")
    for i, arg in enumerate(svc.command):
        if "\0" in arg:
            errors.append(f"command[{i}]: contains a NUL byte, got {arg!r}")
    if svc.ready.file is not None or svc.ready.notify:
        kind = "file" if svc.ready.file is not None else "notify"
        errors.append(
            f'ready.{kind}: not available with placement = "container" (use tcp or exec)'
        )
    for i, path in enumerate(svc.share):
        found = check_abs(f"share[{i}]", path, "path")
        if not found and path == "/":
            found = [f"share[{i}]: sharing the app's whole root is not allowed, got '/'"]
        if not found and path in svc.share[:i]:
            found = [f"share[{i}]: {path} is listed twice"]
        errors += found
    if svc.confinement not in CONFINEMENTS:
        errors.append(
            f"confinement: expected one of {', '.join(CONFINEMENTS)}, got {svc.confinement!r}"
        )
    return errors


def check_resources(res: Resources) -> list[str]:
    from ..host.cgroups import parse_size

    errors: list[str] = []
    if res.memory:
        size = parse_size(res.memory)
        if size is None or size < MIN_MEMORY:
            errors.append(
                f"resources.memory: expected a size like 64M or 1G, at least 4M, "
                f"got {res.memory!r}"
            )
    if not 0 <= res.cpu <= 1024:
        errors.append(f"resources.cpu: expected a number of CPUs (0: no limit), got {res.cpu}")
    if not 0 <= res.pids < (1 << 31):
        errors.append(
            f"resources.pids: expected a number of processes (0: no limit), got {res.pids}"
        )
    return errors


DURATION_HELP = "expected a duration like 30s, 100ms or 1m30s (at most 8760h)"


def check_probe_command(
    name: str, key: str, command: list[str], err: Any, sidecar: bool = False
) -> None:
    """A command run inside the container for the service (a probe, a drain); a sidecar's runs
    in its own image, where any path is its own."""
    if not command:
        err(key, "expected a non-empty command")
    elif any("\0" in arg for arg in command):
        i = next(i for i, arg in enumerate(command) if "\0" in arg)
        err(f"{key}[{i}]", f"contains a NUL byte, got {command[i]!r}")
    elif sidecar:
        return
    elif command[0].startswith("/") and not _inside_files(name, command[0]):
        err(f"{key}[0]", f"must be one of the service's own files, got {command[0]!r}")
    elif not command[0] or ".." in command[0].split("/"):
        err(f"{key}[0]", f"must be a path inside the service's files, got {command[0]!r}")


def check_http_key(key: str, url: str, err: Any) -> None:
    try:
        parse_http_url(url)
    except ValueError as e:
        err(key, f"{e}, got {url!r}")


def parse_http_url(url: str) -> tuple[str, int, str]:
    """(address, port, path) of "http://ADDRESS[:PORT][/PATH]"; ValueError saying what is
    wrong. The address is an IP literal (or localhost): it is reached from inside the container's
    network namespace, where the host's resolver has no say."""
    import ipaddress

    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "http":
        raise ValueError("expected a URL like http://127.0.0.1:8080/healthz (http only)")
    hostport, slash, path = rest.partition("/")
    path = slash + path if slash else "/"
    if not path.isascii() or any(c.isspace() or ord(c) < 32 or c == "#" for c in path):
        raise ValueError("expected a path of printable ASCII without spaces or '#'")
    if "@" in hostport:
        raise ValueError("expected no user name or password in the URL")
    if hostport.startswith("["):
        host, bracket, port_text = hostport[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError("expected [IPv6]:PORT")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(
            "expected an IP address or localhost as the host (no name lookups in the container)"
        ) from None
    if port_text == "":
        port = 80
    elif not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError("expected a port 1-65535")
    else:
        port = int(port_text)
    return address, port, path


def _exit_rules(entries: list[int | str]) -> tuple[list[int], list[int]]:
    """Exit codes and signal numbers of a success_exit/prevent_exit list."""
    codes = [e for e in entries if isinstance(e, int)]
    sigs = [n for e in entries if isinstance(e, str) and (n := signal_number(e)) is not None]
    return codes, sigs


def check_graph(services: dict[str, Service], sources: dict[str, str]) -> list[str]:
    errors = []
    for name, svc in services.items():
        for key in ("requires", "wants", "after"):
            for dep in getattr(svc, key):
                if dep == name:
                    errors.append(f"{sources[name]}: {key}: service {name!r} depends on itself")
                elif dep not in services:
                    errors.append(
                        f"{sources[name]}: {key}: service {name!r} depends on {dep!r}, "
                        f"which is not defined"
                    )
    g = {n: (list(s.requires), list(s.wants), list(s.after)) for n, s in services.items()}
    cycle = graph.find_cycle(g)
    if cycle:
        errors.append(f"{sources[cycle[0]]}: dependency cycle: {' -> '.join(cycle)}")
    return errors


def load_dir(directory: str, files_base: str | None = None) -> tuple[dict[str, Service], list[str]]:
    """Every `*.toml` in `directory`; raises ConfigError listing every problem."""
    services: dict[str, Service] = {}
    sources: dict[str, str] = {}
    errors: list[str] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return {}, []
    except OSError as e:
        raise ConfigError(
            f"{directory}: cannot list the services directory: {e.strerror}"
        ) from None
    files: list[str] = [directory]
    for entry in names:
        if not entry.endswith(".toml"):
            continue
        path = os.path.join(directory, entry)
        files.append(path)
        name = entry[: -len(".toml")]
        try:
            svc = structure(read_toml(path), Service, path)
        except ConfigError as e:
            errors.append(str(e))
            continue
        errors += check_service(name, svc, path, files_base or directory)
        services[name] = svc
        sources[name] = path
    if not errors:
        errors += check_graph(services, sources)
    if errors:
        raise ConfigError("\n".join(errors))
    return services, files


def compile_resources(res: Resources) -> dict[str, Any]:
    from ..host.cgroups import parse_size

    return {
        "memory": (parse_size(res.memory) or 0) if res.memory else 0,
        "cpu": float(res.cpu),
        "pids": res.pids,
    }


def compile_service(name: str, svc: Service, files_base: str) -> CompiledService:
    """Plain data for the hot path and the supervisor (marshal-able)."""
    uid, gid = parse_user(svc.user)
    sidecar = svc.placement == "container"
    ready = svc.ready
    target: Any
    if ready.tcp is not None:
        kind, target = "tcp", ready.tcp
    elif ready.exec is not None:
        kind, target = "exec", container_command(name, ready.exec)
    elif ready.file is not None:
        kind, target = "file", ready.file
    elif ready.notify:
        kind, target = "notify", None
    elif ready.http is not None:
        kind, target = "http", list(parse_http_url(ready.http))
    else:
        kind, target = "started", None
    if sidecar:
        files, command = "", list(svc.command)
        if kind == "exec":
            target = list(ready.exec or [])
    else:
        files = os.path.normpath(
            svc.files if os.path.isabs(svc.files) else os.path.join(files_base, svc.files)
        )
        command = container_command(name, svc.command)
    health = svc.health
    health_kind: str | None = None
    health_target: Any = None
    if health is not None:
        if health.exec is not None:
            health_kind, health_target = "exec", (
                list(health.exec) if sidecar else container_command(name, health.exec)
            )
        elif health.tcp is not None:
            health_kind, health_target = "tcp", health.tcp
        elif health.http is not None:
            health_kind, health_target = "http", list(parse_http_url(health.http))
    policy = svc.restart.policy or ("no" if svc.type == "oneshot" else "on-failure")
    success_codes, success_signals = _exit_rules(svc.restart.success_exit)
    prevent_codes, prevent_signals = _exit_rules(svc.restart.prevent_exit)
    stop_signal = signal_number(svc.stop.signal)
    assert stop_signal is not None  # check_service refuses every name it does not know
    return {
        "name": name,
        "placement": svc.placement,
        "image": svc.image,
        "share": list(svc.share),
        "confinement": svc.confinement,
        "resources": compile_resources(svc.resources),
        "files": files,
        "command": command,
        "uid": uid,
        "gid": gid,
        "capabilities": list(svc.capabilities),
        "env": sorted(svc.env.items()),
        "cwd": svc.working_dir,
        "required": svc.required,
        "selectable": svc.selectable,
        "requires": list(svc.requires),
        "wants": list(svc.wants),
        "after": list(svc.after),
        "ready": kind,
        "ready_target": target,
        "ready_timeout": parse_duration(ready.timeout),
        "ready_interval": parse_duration(ready.interval),
        "type": svc.type,
        "on_failure": svc.on_failure,
        "health": health_kind,
        "health_target": health_target,
        "health_interval": parse_duration(health.interval) if health else 0.0,
        "health_timeout": parse_duration(health.timeout) if health else 0.0,
        "health_failures": health.failures if health else 0,
        "restart": policy,
        "success_exit": success_codes,
        "success_signals": success_signals,
        "prevent_exit": prevent_codes,
        "prevent_signals": prevent_signals,
        "stop_exec": (
            None if not svc.stop.exec
            else list(svc.stop.exec) if sidecar
            else container_command(name, svc.stop.exec)
        ),
        "restart_delay": parse_duration(svc.restart.delay),
        "restart_max_delay": parse_duration(svc.restart.max_delay),
        "restart_reset_after": parse_duration(svc.restart.reset_after),
        "restart_burst": svc.restart.burst,
        "restart_interval": parse_duration(svc.restart.interval),
        "stop_signal": stop_signal,
        "stop_timeout": parse_duration(svc.stop.timeout),
        "seccomp": compile_rules(svc.seccomp),
    }
