"""A sidecar-placed service's OCI spec: a pure function of the app's spec and the service.

The sibling is a container of its own (its image as a read-only root, its own PID and mount
namespaces, its own cgroup beside the app's) that joins the app container's network, IPC and
UTS namespaces (and its user namespace when it has one) by path: the supervisor gives descriptors
it opened through the app's init (supervisor/apphandles.py); `retinue plan` shows
`/proc/<app init pid>/ns/...`. What runs, as whom, with which capabilities and environment
comes from the administrator's service file and the image; from the app's spec only its
confinement (seccomp without retinue's notify rules, AppArmor, SELinux) and its user
namespace's mappings are taken, so the app's owner reaches nothing of the host through it.
"""

from __future__ import annotations

import posixpath

from .. import layout
from ..errors import SpecError
from . import edits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Spec = dict[str, Any]

SIDECAR_OF = layout.SIDECAR_OF
SIDECAR_SERVICE = layout.SIDECAR_SERVICE
SIDECAR_DIR = layout.SIDECAR_DIR
SIDECAR_IMAGE = layout.SIDECAR_IMAGE
CGROUP_INFIX = ".retinue-"
PATH = layout.SERVICE_PATH
SHARE_OPTIONS = edits.BIND_OPTIONS
JOINED = ("network", "ipc", "uts")
NS_FILE = {"network": "net", "ipc": "ipc", "uts": "uts", "user": "user"}
MASKED = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
    "/proc/scsi",
]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def sidecar_id(app_id: str, service: str) -> str:
    """The sibling's id under retinue's own runc root (ids there are only ever ours)."""
    return f"{app_id}.{service}"


def sidecar_cgroup(app_cgroup: str, service: str) -> str:
    """Beside the app's cgroup (so inside the pod's under CRI, where the pod's accounting
    holds), never inside it: the app's limits must not bound the service, nor the reverse."""
    parent, name = posixpath.split(app_cgroup.rstrip("/"))
    if not name:
        raise SpecError("the app container's cgroup is the root cgroup: no place beside it")
    for unit_suffix in (".scope", ".slice"):
        if name.endswith(unit_suffix):
            name = name[: -len(unit_suffix)]
    return posixpath.join(parent or "/", f"{name}{CGROUP_INFIX}{service}")


def host_path(app: Spec, bundle: str, path: str) -> str:
    """Where the host sees the app container's `path` (see host_place)."""
    base, rest = host_place(app, bundle, path)
    return posixpath.normpath(posixpath.join(base, rest))


def host_place(app: Spec, bundle: str, path: str) -> tuple[str, str]:
    """(host directory, path below it) where the host sees the app container's `path`
    (absolute, normalized, symlinks already resolved inside the container): under the last of
    the app's bind mounts that covers it, else under its root. The directory is the engine's
    (a mount's source, the root); what is below it is the app's to change. A mount of the app's
    own mount namespace cannot be the source of another container's bind mount (the kernel
    refuses it), so a share is made from the host's copy; what is on none of them (a tmpfs,
    /proc) cannot be shared."""
    covering: Spec | None = None
    for mount in app.get("mounts") or []:
        dest = posixpath.normpath(str(mount.get("destination") or "/"))
        if path == dest or path.startswith(dest.rstrip("/") + "/"):
            covering = mount
            where = dest
    if covering is None:
        root = str((app.get("root") or {}).get("path") or "rootfs")
        return posixpath.normpath(posixpath.join(bundle, root)), path.lstrip("/")
    options = covering.get("options") or []
    if covering.get("type") != "bind" and "bind" not in options and "rbind" not in options:
        raise SpecError(
            f"share: {path} is on the app's {covering.get('type') or 'unknown'} mount at {where}, "
            "which has no host directory to share"
        )
    source = posixpath.join(bundle, str(covering.get("source") or ""))
    return posixpath.normpath(source), path[len(where.rstrip("/")):].lstrip("/")


def _process(app: Spec, svc: dict[str, Any], image: dict[str, Any], app_id: str) -> Spec:
    config = image.get("config") or {}
    args = list(svc["command"]) or [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    if not args:
        raise SpecError(
            f"service {svc['name']}: no command, and image {image['digest']} has neither "
            "Entrypoint nor Cmd"
        )
    env = {"PATH": PATH}
    for entry in config.get("Env") or []:
        key, _, value = str(entry).partition("=")
        env[key] = value
    env.update({"RETINUE_SERVICE": svc["name"], "RETINUE_CONTAINER_ID": app_id})
    env.update(dict(svc["env"]))
    caps = list(dict.fromkeys(svc["capabilities"]))
    sets = {k: caps for k in ("bounding", "effective", "permitted")}
    # A non-root process keeps capabilities across exec only through the inheritable and
    # ambient sets.
    if svc["uid"] != 0:
        sets |= {"inheritable": caps, "ambient": caps}
    cwd = svc["cwd"] if svc["cwd"] != "/" else (config.get("WorkingDir") or "/")
    proc: Spec = {
        "terminal": False,
        "user": {"uid": svc["uid"], "gid": svc["gid"]},
        "args": args,
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": cwd,
        "capabilities": sets,
        "noNewPrivileges": True,
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    }
    app_proc = app.get("process") or {}
    if svc["confinement"] == "app":
        for key in ("apparmorProfile", "selinuxLabel"):
            if app_proc.get(key):
                proc[key] = app_proc[key]
    return proc


def _seccomp(profile: Spec) -> Spec:
    """The app's filter without retinue's notify rules: the sibling has no agent of its own,
    and the app's agent answers the app's notifications only."""
    out = {k: v for k, v in profile.items() if k not in ("listenerPath", "listenerMetadata")}
    out["syscalls"] = [
        rule for rule in profile.get("syscalls") or [] if rule.get("action") != "SCMP_ACT_NOTIFY"
    ]
    return out


def _resources(limits: dict[str, Any]) -> Spec:
    res: Spec = {}
    if limits.get("memory"):
        res["memory"] = {"limit": int(limits["memory"])}
    if limits.get("cpu"):
        period = 100_000
        res["cpu"] = {"quota": max(1000, round(float(limits["cpu"]) * period)), "period": period}
    if limits.get("pids"):
        res["pids"] = {"limit": int(limits["pids"])}
    return res


def sibling_spec(
    app: Spec,
    svc: dict[str, Any],
    image: dict[str, Any],
    *,
    app_id: str,
    app_proc: str,
    app_cgroup: str,
    container_dir: str,
    shared: dict[str, str] | None = None,
    init: str | None = None,
    ns_paths: dict[str, str] | None = None,
) -> Spec:
    """The sibling container's config.json.

    `app_proc` is /proc/<app init pid> (its namespaces and root are reached through it);
    `app_cgroup` the app's cgroup path in the hierarchy; `image` what images.resolve gives;
    `shared` maps each `share` path to the host path it was resolved to (default: through
    app_proc/root, as `retinue plan` shows it); `init`, retinue-init's host path, makes it the
    sibling's PID 1 (a service as PID 1 would ignore SIGTERM without a handler of its own);
    `ns_paths` maps a namespace type to the path to join (default: app_proc/ns/...).
    """
    joined = {t: f"{app_proc}/ns/{NS_FILE[t]}" for t in NS_FILE} | (ns_paths or {})
    linux_app = app.get("linux") or {}
    app_ns = {ns.get("type") for ns in linux_app.get("namespaces") or []}
    namespaces: list[Spec] = [{"type": "pid"}, {"type": "mount"}, {"type": "cgroup"}]
    namespaces += [{"type": t, "path": joined[t]} for t in JOINED]
    linux: Spec = {}
    if "user" in app_ns:
        namespaces.append({"type": "user", "path": joined["user"]})
        for key in ("uidMappings", "gidMappings"):
            if linux_app.get(key):
                linux[key] = linux_app[key]
    mounts: list[Spec] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=755"]},
    ]
    for path in svc["share"]:
        source = (shared or {}).get(path, f"{app_proc}/root{path}")
        mounts.append(
            {"destination": path, "type": "bind", "source": source, "options": list(SHARE_OPTIONS)}
        )
    process = _process(app, svc, image, app_id)
    linux |= {
        "namespaces": namespaces,
        "cgroupsPath": sidecar_cgroup(app_cgroup, svc["name"]),
        "resources": _resources(svc["resources"]),
        "maskedPaths": list(MASKED),
        "readonlyPaths": list(READONLY),
    }
    if svc["confinement"] == "app":
        if linux_app.get("seccomp"):
            linux["seccomp"] = _seccomp(linux_app["seccomp"])
        if linux_app.get("mountLabel"):
            linux["mountLabel"] = linux_app["mountLabel"]
    base = {
        "ociVersion": app.get("ociVersion") or "1.0.2",
        "process": process,
        "root": {"path": image["rootfs"], "readonly": True},
        "mounts": mounts,
        "linux": linux,
        "annotations": {
            SIDECAR_OF: app_id,
            SIDECAR_SERVICE: svc["name"],
            SIDECAR_DIR: container_dir,
            SIDECAR_IMAGE: image["digest"],
        },
    }
    # A sibling is built whole for one container, never edited again: nothing to record.
    return base if init is None else edits.apply(base, edits.for_init(init), record=False)
