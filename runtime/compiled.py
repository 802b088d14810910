"""The types of the compiled configuration and of a container's plan, for mypy only.

`config.compile_config` turns the TOML files into plain builtins (so `marshal` can cache them and
the hot path never loads attrs or typing); the shim turns that, for one container, into the
`Plan` the supervisor reads from plan.json (written and read only through planfile.py). These
TypedDicts say what keys each has.

Import this module only under `if TYPE_CHECKING:` (with `TYPE_CHECKING = False` in modules of the
hot path, as shim.py does): `typing` costs ~10 ms to import, and at run time these are plain dicts.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class CompiledSeccompRule(TypedDict):
    """A seccomp notify handler's rule (seccomp/config.compile_rules)."""

    name: str
    syscalls: list[str]
    handler: str
    args: list[dict[str, Any]]
    settings: dict[str, Any]
    errno: int


class CompiledRule(TypedDict):
    """One `[[attach]]` rule of the policy."""

    name: str
    always: bool
    sandbox: bool | None
    # (key, pattern) pairs; tuples from compile_config, lists once they went through JSON.
    annotations: list[tuple[str, str]]
    env_match: list[tuple[str, str]]
    command: list[str]
    mounts: list[tuple[str, str]]  # (source, destination)
    env: list[tuple[str, str]]
    services: list[str]
    seccomp: list[CompiledSeccompRule]
    init: bool | None
    stop_budget: float | None  # seconds; None: the settings' stop_budget


class CompiledService(TypedDict):
    """One service definition (services.compile_service)."""

    name: str
    files: str
    command: list[str]
    uid: int
    gid: int
    capabilities: list[str]
    env: list[tuple[str, str]]
    cwd: str
    required: bool
    selectable: bool
    requires: list[str]
    wants: list[str]
    after: list[str]
    type: str  # "simple" or "oneshot"
    on_failure: str  # "ignore" or "stop-container"
    ready: str  # "tcp", "exec", "file", "notify", "http" or "started"
    # By `ready`: a port (tcp), a command (exec), a path (file), [address, port, path] (http),
    # None (notify, started).
    ready_target: Any
    ready_timeout: float
    ready_interval: float
    health: str | None  # "exec", "tcp", "http" or None
    health_target: Any  # as ready_target
    health_interval: float
    health_timeout: float
    health_failures: int
    restart: str  # "no", "on-failure" or "always"
    # Exit codes and signal numbers that count as a clean exit / that are never restarted.
    success_exit: list[int]
    success_signals: list[int]
    prevent_exit: list[int]
    prevent_signals: list[int]
    stop_exec: list[str] | None  # the drain command, inside the container
    restart_delay: float
    restart_max_delay: float
    restart_reset_after: float
    restart_burst: int
    restart_interval: float
    stop_signal: int
    stop_timeout: float
    seccomp: list[CompiledSeccompRule]
    # Which Runner runs it (supervisor/runner.py); absent means "exec".
    placement: NotRequired[str]
    # placement = "container": the image (NAME, sha256:HEX or NAME@sha256:HEX), the app's paths
    # it sees read-only, whose confinement it takes ("app" or "none"), and its cgroup's limits
    # ({"memory": bytes, "cpu": CPUs, "pids": count}; 0: none).
    image: NotRequired[str]
    share: NotRequired[list[str]]
    confinement: NotRequired[str]
    resources: NotRequired[dict[str, Any]]


class Compiled(TypedDict):
    """config.compile_config's result: everything every runtime call may need."""

    runtime: str
    hook: str
    init: str  # retinue-init's path
    stop_budget: float
    state_dir: str
    image_dir: str
    log_dir: str
    log_max_bytes: int
    log_keep: int
    log_retention: float
    log_keep_containers: int
    log_max_container_bytes: int
    log_min_free: float
    supervisor_cpu: float
    supervisor_memory: int
    notify_rate: float
    seccomp_rate: float
    rules: list[CompiledRule]
    supervised: bool
    services: dict[str, CompiledService]


class CriNames(TypedDict, total=False):
    """policy.cri_names: set together, for containers the CRI created."""

    pod: str  # NAMESPACE/NAME
    name: str


class Plan(CriNames):
    """What the supervisor of one container works from (its plan.json, written by the shim)."""

    id: str
    root: str
    lower: str
    lower_globals: list[str]
    bundle: str
    log_dir: str
    log_max_bytes: int
    log_keep: int
    log_retention: float
    log_keep_containers: int
    log_max_container_bytes: int
    log_min_free: float
    services: list[CompiledService]
    seccomp: list[CompiledSeccompRule]
    seccomp_listener: str
    creator_pid: int
    notify_rate: float
    seccomp_rate: float
    init: bool  # retinue-init is PID 1 and talks to the supervisor
    # No init and only sidecars: the supervisor watches the container's own PID 1 and stops
    # the sidecars after it (attach.watches_main).
    watch_main: NotRequired[bool]
    stop_budget: float
    cgroup: dict[str, Any] | None  # where the supervisor's own cost is charged
    image_dir: NotRequired[str]  # service images (images.py)
    sidecar_root: NotRequired[str]  # the lower runtime's --root for sibling containers
