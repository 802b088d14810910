"""Spec edits as pure functions from spec to spec, in the spirit of CDI's container edits.

Each function returns a new spec and never mutates its argument: only the containers on the path
to a change are copied, everything else is shared. Every edit is idempotent (a retried create must
not duplicate mounts, env or hooks) and appends in order (re-sorting mounts broke containers).
"""

from __future__ import annotations

from ..errors import SpecError, clip

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from ..compiled import CompiledRule, CompiledService

    Spec = dict[str, Any]

ATTACHED_ANNOTATION = "io.retinue.attached"
SERVICES_RECORD_ANNOTATION = "io.retinue.attached-services"
MOUNTS_RECORD_ANNOTATION = "io.retinue.mounts"
# The arguments put before the container's own, as one string; `retinue plan` shows it and a
# later create of the same bundle takes them off again.
INIT_RECORD_ANNOTATION = "io.retinue.init"
# Outside /retinue, where services' files live: a service may be called "init".
INIT_PATH = "/.retinue/init"
INIT_SOCKET = "/.retinue/init.sock"
INIT_SOCKET_NAME = "init.sock"
SERVICE_PREFIX = "/retinue"
NOTIFY_DIR = "/run/retinue"
# Every stage an earlier version may have written our hook into (strip_previous takes it off).
HOOK_STAGES = ("createRuntime", "poststart", "poststop")
# The stages a supervisor needs told: createRuntime (the init's pid before start; the supervisor
# asks runc otherwise) and poststop (the services stop when the container is deleted). poststart
# is not added any more: the supervisor only took note of it, and under runc 1.1 it ran at the
# end of every create, a Python start-up (~15 ms) on the create path.
ADDED_STAGES = ("createRuntime", "poststop")
BIND_OPTIONS = ("rbind", "ro", "nosuid", "nodev")
NOTIFY_OPTIONS = ("bind", "ro", "nosuid", "nodev", "noexec")
# Before each socket was mounted on its own, the whole notify directory was, read-write: a
# bundle edited then must still be recognised.
OLD_NOTIFY_OPTIONS = ("rbind", "nosuid", "nodev", "noexec")
OUR_MOUNT_OPTIONS = (list(BIND_OPTIONS), list(NOTIFY_OPTIONS), list(OLD_NOTIFY_OPTIONS))


def bind_mount(source: str, destination: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": list(BIND_OPTIONS),
    }


def add_mounts(spec: Spec, mounts: list[dict[str, Any]]) -> Spec:
    existing = list(spec.get("mounts") or [])
    by_destination = {m.get("destination"): m for m in existing}
    changed = False
    for mount in mounts:
        current = by_destination.get(mount["destination"])
        if current == mount:
            continue
        if current is not None:
            raise SpecError(
                f"mounts: {mount['destination']} is already a mount of the container "
                f"(source {clip(str(current.get('source')))!r}); retinue will not mount over it"
            )
        existing.append(mount)
        by_destination[mount["destination"]] = mount
        changed = True
    return {**spec, "mounts": existing} if changed else spec


def set_env(spec: Spec, env: list[tuple[str, str]]) -> Spec:
    """Set variables, replacing a container's own definition in place; the administrator wins."""
    process = spec.get("process") or {}
    entries = list(process.get("env") or [])
    index = {e.partition("=")[0]: i for i, e in enumerate(entries)}
    changed = False
    for name, value in env:
        entry = f"{name}={value}"
        if name in index:
            if entries[index[name]] != entry:
                entries[index[name]] = entry
                changed = True
        else:
            index[name] = len(entries)
            entries.append(entry)
            changed = True
    if not changed:
        return spec
    return {**spec, "process": {**process, "env": entries}}


def add_hooks(spec: Spec, hooks: list[tuple[str, dict[str, Any]]]) -> Spec:
    all_hooks = dict(spec.get("hooks") or {})
    changed = False
    for stage, hook in hooks:
        entries = list(all_hooks.get(stage) or [])
        if hook in entries:
            continue
        entries.append(hook)
        all_hooks[stage] = entries
        changed = True
    return {**spec, "hooks": all_hooks} if changed else spec


def annotate(spec: Spec, values: dict[str, str]) -> Spec:
    annotations = spec.get("annotations") or {}
    if all(annotations.get(k) == v for k, v in values.items()):
        return spec
    return {**spec, "annotations": {**annotations, **values}}


def retinue_hooks(hook_path: str, container_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """The hook entries that tell the supervisor about the container's life.

    The container's state directory is an argument, never read from annotations: a container's
    owner can set annotations, and the hook runs as root on the host.
    """
    return [
        (stage, {"path": hook_path, "args": ["retinue-hook", stage, container_dir]})
        for stage in ADDED_STAGES
    ]


def service_mounts(services: list[CompiledService], container_dir: str) -> list[dict[str, Any]]:
    """Each service's files, read-only under /retinue/NAME, and its notify socket if it has one.

    Each socket is mounted on its own, read-only (sending to a unix socket needs no write access
    to the mount): the container gets nothing of the host's state directory that it could fill
    or shape, and never the control socket beside them.
    """
    # A sibling-placed service has no files in the app: its image is its own root.
    services = [s for s in services if s.get("placement", "exec") == "exec"]
    mounts = [bind_mount(s["files"], f"{SERVICE_PREFIX}/{s['name']}") for s in services]
    for s in services:
        if s["ready"] == "notify":
            mounts.append(
                {
                    "destination": notify_socket(s["name"]),
                    "type": "bind",
                    "source": f"{container_dir}/notify/{s['name']}.sock",
                    "options": list(NOTIFY_OPTIONS),
                }
            )
    return mounts


def notify_socket(service: str) -> str:
    """Where a service finds its notify socket (its NOTIFY_SOCKET) inside the container."""
    return f"{NOTIFY_DIR}/{service}.sock"


def init_mounts(binary: str, container_dir: str | None) -> list[dict[str, Any]]:
    """retinue-init, read-only, and the supervisor's socket for it when there is a supervisor.

    The socket is mounted alone (not its directory): the container sees that one file and
    nothing else of the state directory; the supervisor trusts only the peer that is init.
    """
    mounts = [bind_mount(binary, INIT_PATH)]
    if container_dir is not None:
        mounts.append(bind_mount(f"{container_dir}/{INIT_SOCKET_NAME}", INIT_SOCKET))
    return mounts


def init_prefix(supervised: bool, wait_ms: int) -> list[str]:
    prefix = [INIT_PATH]
    if supervised:
        prefix += ["-s", INIT_SOCKET, "-t", str(wait_ms)]
    return [*prefix, "--"]


def wrap_init(spec: Spec, prefix: list[str]) -> Spec:
    """process.args = init's arguments, `--`, the container's own; recorded in an annotation."""
    process = spec.get("process") or {}
    args = list(process.get("args") or [])
    if not args:
        raise SpecError("process.args: empty; there is no program for retinue-init to start")
    spec = {**spec, "process": {**process, "args": [*prefix, *args]}}
    return annotate(spec, {INIT_RECORD_ANNOTATION: " ".join(prefix)})


def unwrap_init(spec: Spec) -> Spec:
    """The container's own args again, when an earlier create wrapped them in retinue-init."""
    annotations = spec.get("annotations") or {}
    recorded = annotations.get(INIT_RECORD_ANNOTATION)
    if recorded is None:
        return spec
    process = spec.get("process") or {}
    args = list(process.get("args") or [])
    prefix = recorded.split(" ")
    kept = {k: v for k, v in annotations.items() if k != INIT_RECORD_ANNOTATION}
    spec = {**spec, "annotations": kept}
    # Only our exact prefix is taken off: a container's own args are never shortened.
    if args[: len(prefix)] == prefix and prefix and prefix[0] == INIT_PATH:
        spec = {**spec, "process": {**process, "args": args[len(prefix) :]}}
    return spec


def strip_previous(spec: Spec) -> Spec:
    """Remove the hooks and mounts an earlier create added for another container.

    By hand, one bundle often serves several containers in turn (`runc run a`, then `run b`);
    the edits made for `a` name a's state directory. Our hooks are recognised by their argv[0];
    our mounts by the destinations recorded in an annotation, and only with our exact options,
    so a container's own mount is never taken away; our init by its recorded arguments.
    """
    spec = unwrap_init(spec)
    recorded = (spec.get("annotations") or {}).get(MOUNTS_RECORD_ANNOTATION)
    mounts = spec.get("mounts") or []
    if recorded:
        ours = set(recorded.split(","))
        kept = [
            m
            for m in mounts
            if not (m.get("destination") in ours and m.get("options") in OUR_MOUNT_OPTIONS)
        ]
        if len(kept) != len(mounts):
            spec = {**spec, "mounts": kept}
    hooks = spec.get("hooks") or {}
    changed = {}
    for stage in HOOK_STAGES:
        entries = hooks.get(stage) or []
        kept_hooks = [h for h in entries if (h.get("args") or [None])[0] != "retinue-hook"]
        if len(kept_hooks) != len(entries):
            changed[stage] = kept_hooks
    if changed:
        spec = {**spec, "hooks": {**hooks, **changed}}
    return spec


def apply(
    spec: Spec,
    rules: list[CompiledRule],
    hook_path: str,
    container_dir: str,
    services: list[CompiledService] | None = None,
    init: dict[str, Any] | None = None,
    supervised: bool | None = None,
) -> Spec:
    """Every edit the selected rules and services call for, then the hooks and the record.

    `init` ({"binary", "supervised", "wait_ms"}) makes retinue-init the container's PID 1.
    The hooks only tell a supervisor (`supervised`, by default: there are services): without
    one they would answer at once, two runs of a program on every create for nothing.
    """
    original = spec
    spec = strip_previous(spec)
    added: list[dict[str, Any]] = []
    for rule in rules:
        added += [bind_mount(src, dst) for src, dst in rule["mounts"]]
    if services:
        added += service_mounts(services, container_dir)
    if init is not None:
        added += init_mounts(init["binary"], container_dir if init["supervised"] else None)
        spec = wrap_init(spec, init_prefix(init["supervised"], init["wait_ms"]))
    spec = add_mounts(spec, added)
    for rule in rules:
        spec = set_env(spec, rule["env"])
    if supervised if supervised is not None else bool(services):
        spec = add_hooks(spec, retinue_hooks(hook_path, container_dir))
    record = {ATTACHED_ANNOTATION: ",".join(rule["name"] for rule in rules)}
    if services:
        record[SERVICES_RECORD_ANNOTATION] = ",".join(s["name"] for s in services)
    if added:
        record[MOUNTS_RECORD_ANNOTATION] = ",".join(m["destination"] for m in added)
    spec = annotate(spec, record)
    # Stripping and re-adding the same edits (a retried create) must leave the spec as it was.
    return original if spec == original else spec
