"""Where a container's supervisor and services are accounted: cgroup paths and their upkeep.

The supervisor works for one container (its services' `runc exec`s, its seccomp answers, its
notify sockets), so its cost belongs with that container, not with the engine shim that happened
to spawn it. It runs in a cgroup beside the container's own (`<container cgroup>.retinue`), with
its own CPU and memory bounds: under CRI that sibling sits in the pod's cgroup, which is what a
RuntimeClass `overhead` reserves for.

Pure path computation first (`container_path`, `sibling`, `placement`), then the few functions
that touch /sys/fs/cgroup (`enter`, `remove`, the service sub-cgroups and `kill_all`).
"""

from __future__ import annotations

import os
import posixpath
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..compiled import Compiled

ROOT = "/sys/fs/cgroup"
SUFFIX = ".retinue"
SUB_PREFIX = "retinue-"  # a service's sub-cgroup inside the container's: retinue-<service>
# The v1 hierarchies the supervisor joins: the two it is bounded in, and the two that count.
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
CFS_PERIOD_US = 100_000
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class CgroupError(Exception):
    """A cgroup could not be set up; the message names the path and the cause."""


# ---------------------------------------------------------------------------------------------
# Pure: values and paths.


def parse_size(text: str) -> int | None:
    """'64M' -> bytes; '0' means no limit (0); None if not a size."""
    t = text.strip().upper()
    if t.endswith("B"):
        t = t[:-1]
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    number = t[: len(t) - len(unit)]
    if not number.isdigit():
        return None
    return int(number) * _UNITS[unit]


def cfs_quota(cores: float) -> int:
    """cpu.cfs_quota_us for `cores` (0: no limit, -1)."""
    return -1 if cores <= 0 else max(1000, round(cores * CFS_PERIOD_US))


def quota_cores(quota: int, period: int) -> float | None:
    """CPUs a CFS quota allows; None for no limit (v1 -1, v2 'max')."""
    return None if quota < 0 or period <= 0 else quota / period


def parse_cpu_max(text: str) -> float | None:
    """v2 cpu.max ('max 100000', '50000 100000') -> CPUs, None for no limit."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    period = int(parts[1]) if len(parts) > 1 else CFS_PERIOD_US
    return quota_cores(int(parts[0]), period)


def parse_memory_limit(text: str) -> int | None:
    """v1 memory.limit_in_bytes or v2 memory.max -> bytes, None for no limit (v1 reports no
    limit as a page-rounded 2^63-1)."""
    t = text.strip()
    if t in ("", "max", "-1"):
        return None
    value = int(t)
    return None if value >= 1 << 62 else value


def stricter(own: float, ceiling: float | None) -> float:
    """What to write for a bound `own` (0: none) under ancestors that allow `ceiling` (None: no
    limit): `own` where it is stricter, else 0, no bound of its own.

    Never the ancestors' value copied: on v1 a child's CFS quota above its parent's is refused,
    and a parent cannot shrink below a child's, so a copy would make the pod's own later shrink
    (an in-place resize, `runc update`) fail; the ancestors' bound holds without one.
    """
    if own <= 0:
        return 0
    if ceiling is not None and own >= ceiling:
        return 0
    return own


def _clean(path: str) -> str:
    # As runc cleans a cgroupfs path: '..' never climbs above the hierarchy's root.
    if path.startswith("/"):
        return posixpath.normpath(path)
    rel = posixpath.relpath(posixpath.normpath("/" + path), "/")
    return "" if rel == "." else rel


def expand_slice(slice_name: str) -> str:
    """systemd's slice path: 'a-b.slice' -> '/a.slice/a-b.slice' ('-.slice' is the root)."""
    if slice_name == "-.slice":
        return "/"
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise CgroupError(f"invalid slice name {slice_name!r}")
    base = slice_name[: -len(".slice")]
    if not base or "--" in base or base.startswith("-") or base.endswith("-"):
        raise CgroupError(f"invalid slice name {slice_name!r}")
    out, prefix = "", ""
    for part in base.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        out += f"/{prefix}.slice"
    return out


def container_path(
    cgroups_path: str, container_id: str, systemd: bool, own: str, v2: bool = False,
    init: str = "/",
) -> str:
    """The container's cgroup as runc 1.1 resolves linux.cgroupsPath, relative to a hierarchy's
    root. `own` is the calling process's cgroup in that hierarchy, `init` pid 1's; `v2` says
    whether the hierarchy is the unified one.

    cgroupfs: a relative path is below the caller's own cgroup on v1, below its parent on v2
    (whose own cgroup holds processes and could not give controllers to a child). systemd:
    "slice:prefix:name" is the scope `prefix-name.scope` (or the slice `name` when it is one) in
    the expanded slice (default system.slice); on v1 below pid 1's cgroup without its
    `init.scope` (not on v2, where runc joins it to the mount point directly).
    """
    if systemd:
        if not cgroups_path:
            parent, prefix, name = "system.slice", "runc", container_id
        else:
            parts = cgroups_path.split(":")
            if len(parts) != 3:
                raise CgroupError(
                    f'linux.cgroupsPath: expected "slice:prefix:name" with --systemd-cgroup, '
                    f"got {cgroups_path[:200]!r}"
                )
            parent, prefix, name = parts[0] or "system.slice", parts[1], parts[2]
        unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
        if "/" in unit:
            raise CgroupError(f"linux.cgroupsPath: invalid unit name {unit[:200]!r}")
        base = "/"
        if not v2:
            base = posixpath.normpath(init or "/")
            if base.endswith("init.scope"):
                base = base[: -len("init.scope")] or "/"
        return posixpath.join(base, expand_slice(parent).lstrip("/"), unit)
    path = _clean(cgroups_path) if cgroups_path else container_id
    if path.startswith("/"):
        return path
    base = posixpath.dirname(own or "/") if v2 else own or "/"
    return posixpath.join(base, path)


def sibling(path: str) -> str:
    """The supervisor's cgroup beside the container's; not a systemd unit name on purpose (a
    `.scope` or `.slice` directory systemd did not create would confuse it)."""
    parent, name = posixpath.split(path.rstrip("/"))
    if not name:
        raise CgroupError("the container's cgroup is the root cgroup: nothing to put beside it")
    for unit_suffix in (".scope", ".slice"):
        if name.endswith(unit_suffix):
            name = name[: -len(unit_suffix)]
    return posixpath.join(parent or "/", name + SUFFIX)


def parse_mounts(mountinfo: str) -> tuple[str | None, dict[str, str]]:
    """(the cgroup2 mount point or None, v1 controller -> mount point) from mountinfo."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if len(after) < 3:
            continue
        fstype, options = after[0], after[2].split(",")
        mount_point = fields[4].replace("\\040", " ")
        if fstype == "cgroup2" and v2 is None:
            v2 = mount_point
        elif fstype == "cgroup":
            for option in options:
                if option in V1_CONTROLLERS or option == "freezer":
                    v1.setdefault(option, mount_point)
    return v2, v1


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup -> controller -> path ('' for the v2 line)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            out[""] = parts[2]
        for controller in parts[1].split(","):
            if controller:
                out[controller] = parts[2]
    return out


def placement(
    cgroups_path: str,
    container_id: str,
    systemd: bool,
    mountinfo: str,
    own: dict[str, str],
    cpu: float,
    memory: int,
    init: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Where the supervisor goes: {"v2": bool, "dirs": [[mount, cgroup path, controller]],
    "cpu", "memory", "origin": `own`}. v2 when no v1 controller is mounted (a unified host); a
    hybrid host's empty v2 tree bounds nothing, so there it is v1. `init` is pid 1's cgroups
    (the systemd driver's v1 paths start there)."""
    init = init or {}
    v2_mount, v1 = parse_mounts(mountinfo)
    if not v1 and v2_mount is not None:
        inner = sibling(container_path(
            cgroups_path, container_id, systemd, own.get("", "/"), v2=True
        ))
        return {"v2": True, "dirs": [[v2_mount, inner, ""]], "cpu": cpu, "memory": memory,
                "origin": own}
    if not v1:
        raise CgroupError("no cgroup hierarchy is mounted")
    dirs: list[list[str]] = []
    for controller in V1_CONTROLLERS:
        mount = v1.get(controller)
        if mount is None or any(m == mount for m, _, _ in dirs):
            continue  # co-mounted controllers (cpu,cpuacct) share one directory
        own_path = own.get(controller, "/")
        inner = sibling(container_path(
            cgroups_path, container_id, systemd, own_path, init=init.get(controller, "/")
        ))
        dirs.append([mount, inner, controller])
    return {"v2": False, "dirs": dirs, "cpu": cpu, "memory": memory, "origin": own}


def directories(place: dict[str, Any]) -> list[str]:
    return [mount + inner for mount, inner, _ in place["dirs"]]


def placement_here(
    cgroups_path: str, container_id: str, systemd: bool, cpu: float, memory: int
) -> dict[str, Any]:
    """placement() for the calling process (the shim: runc create runs in its cgroup)."""
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    with open("/proc/self/cgroup") as f:
        own = parse_proc_cgroup(f.read())
    init: dict[str, str] = {}
    if systemd:
        try:
            with open("/proc/1/cgroup") as f:
                init = parse_proc_cgroup(f.read())
        except OSError:
            pass
    return placement(cgroups_path, container_id, systemd, mountinfo, own, cpu, memory, init)


# ---------------------------------------------------------------------------------------------
# Side effects: the supervisor's own cgroup.


def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"{path}: cannot open: {e.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise CgroupError(f"{path}: cannot write {value!r}: {e.strerror}") from None
    finally:
        os.close(fd)


def _enable_v2_controllers(mount: str, inner: str) -> None:
    """Enable cpu and memory from the root down to the cgroup's parent, as runc does for a
    container's cgroup (a parent with processes of its own refuses: EBUSY, reported)."""
    current = mount
    for part in ["", *inner.strip("/").split("/")[:-1]]:
        current = posixpath.join(current, part) if part else current
        control = posixpath.join(current, "cgroup.subtree_control")
        with open(control) as f:
            enabled = f.read().split()
        missing = [c for c in ("cpu", "memory") if c not in enabled]
        if missing:
            _write(control, " ".join("+" + c for c in missing))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _cpu_bound(d: str) -> float | None:
    text = _read(f"{d}/cpu.max")
    if text is not None:
        return parse_cpu_max(text)
    quota, period = _read(f"{d}/cpu.cfs_quota_us"), _read(f"{d}/cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return quota_cores(int(quota), int(period))


def _memory_bound(d: str) -> float | None:
    for name in ("memory.max", "memory.limit_in_bytes"):
        text = _read(f"{d}/{name}")
        if text is not None:
            return parse_memory_limit(text)
    return None


def ceiling(
    directory: str, top: str, bound: Callable[[str], float | None]
) -> tuple[float | None, str]:
    """The strictest `bound` of `directory` and every cgroup above it up to the hierarchy's
    mount `top` (missing directories bound nothing), and the directory that sets it."""
    best: float | None = None
    where = ""
    d = directory.rstrip("/")
    while True:
        value = bound(d)
        if value is not None and (best is None or value < best):
            best, where = value, d
        if d == top or not d.startswith(top + "/"):
            return best, where
        d = posixpath.dirname(d)


def enter(place: dict[str, Any], pid: int = 0) -> list[str]:
    """Create the supervisor's cgroup(s), bound them, and move `pid` (0: the caller) in.

    Each bound is the supervisor's own setting where it is stricter than what the cgroups above
    allow (the pod's limits under the kubelet), else none of its own: the pod's holds it, and a
    container in a pod below one CPU still starts. Returns a note per bound left to them.
    """
    notes: list[str] = []
    cpu, memory = place["cpu"], place["memory"]
    # Read before anything is created: what we create above the sibling bounds nothing.
    limits: list[tuple[str, float, float]] = []  # (directory, cpu, memory) to write
    for mount, inner, _ in place["dirs"]:
        parent = posixpath.join(mount, posixpath.dirname(inner).lstrip("/")).rstrip("/")
        cpu_ceiling, cpu_where = ceiling(parent, mount, _cpu_bound)
        memory_ceiling, memory_where = ceiling(parent, mount, _memory_bound)
        own_cpu, own_memory = stricter(cpu, cpu_ceiling), stricter(memory, memory_ceiling)
        if cpu > 0 and not own_cpu and cpu_ceiling is not None:
            notes.append(f"supervisor_cpu {cpu:g} is not below the {cpu_ceiling:g} CPUs "
                         f"{cpu_where} allows: that bounds the supervisor")
        if memory > 0 and not own_memory and memory_ceiling is not None:
            notes.append(f"supervisor_memory {memory} is not below the {int(memory_ceiling)} "
                         f"bytes {memory_where} allows: that bounds the supervisor")
        limits.append((mount + inner, own_cpu, own_memory))
    for d in directories(place):
        try:
            os.makedirs(d, mode=0o755, exist_ok=True)
        except OSError as e:
            raise CgroupError(f"{d}: cannot create: {e.strerror}") from None
    if place["v2"]:
        mount, inner, _ = place["dirs"][0]
        _enable_v2_controllers(mount, inner)
    for d, own_cpu, own_memory in limits:
        quota = cfs_quota(own_cpu)
        if os.path.exists(f"{d}/cpu.max"):
            _write(f"{d}/cpu.max", f"{'max' if quota < 0 else quota} {CFS_PERIOD_US}")
        elif os.path.exists(f"{d}/cpu.cfs_quota_us"):
            _write(f"{d}/cpu.cfs_quota_us", "-1")  # first: a period change must not refuse
            _write(f"{d}/cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(f"{d}/cpu.cfs_quota_us", str(quota))
        if os.path.exists(f"{d}/memory.max"):
            _write(f"{d}/memory.max", str(int(own_memory)) if own_memory else "max")
        elif os.path.exists(f"{d}/memory.limit_in_bytes"):
            _write(f"{d}/memory.limit_in_bytes", str(int(own_memory)) if own_memory else "-1")
    for d in directories(place):
        _write(f"{d}/cgroup.procs", str(pid))
    return list(dict.fromkeys(notes))


def leave(place: dict[str, Any], back_to: dict[str, str]) -> None:
    """Move the caller out (to where it came from, else the hierarchy's root) so that its
    cgroup can be removed."""
    for mount, _, controller in place["dirs"]:
        origin = back_to.get(controller, "")
        for target in ([mount + origin] if origin and origin != "/" else []) + [mount]:
            try:
                _write(f"{target}/cgroup.procs", "0")
                break
            except CgroupError:
                continue


def remove(place: dict[str, Any], timeout: float = 2.0, if_empty: bool = False) -> list[str]:
    """rmdir the supervisor's cgroup(s); returns the ones that would not go (still busy).
    `if_empty`: leave alone at once a cgroup that lists a process (a live supervisor removes
    its own when it exits)."""
    left = []
    for d in directories(place):
        if not d.startswith(ROOT + "/") or not d.endswith(SUFFIX) or "/../" in d:
            continue  # never anything but what placement() named
        if if_empty:
            try:
                with open(f"{d}/cgroup.procs") as f:
                    if f.read().strip():
                        left.append(d)
                        continue
            except OSError:
                continue  # gone already
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    left.append(d)
                    break
                _reap_children()
                time.sleep(0.02)
    return left


def _reap_children() -> None:
    # A zombie child still counts in its cgroup until it is reaped.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# ---------------------------------------------------------------------------------------------
# Side effects: a service's sub-cgroup inside the container's cgroup.


def container_dirs(init_pid: int) -> dict[str, str]:
    """The container's cgroup directories, read from its init: hierarchy mount -> directory.
    Only hierarchies whose path is not the root (runc put the container there)."""
    with open("/proc/self/mountinfo") as f:
        v2_mount, v1 = parse_mounts(f.read())
    with open(f"/proc/{init_pid}/cgroup") as f:
        paths = parse_proc_cgroup(f.read())
    out: dict[str, str] = {}
    if v1:
        # Every v1 hierarchy: runc exec --cgroup joins the sub-cgroup in each one it manages,
        # and skips (leaving the process in the caller's cgroup) any where it does not exist.
        with open("/proc/self/mountinfo") as f:
            for line in f:
                if " - cgroup " not in line:
                    continue
                mount = line.split()[4]
                options = line.split(" - ", 1)[1].split()[2].split(",")
                for option in options:
                    path = paths.get(option)
                    if path and path != "/":
                        out[mount] = mount + path
                        break
    # The v2 tree too, hybrid hosts included: runc 1.1 keeps a path there for the container.
    if v2_mount is not None and paths.get("", "/") != "/":
        out[v2_mount] = v2_mount + paths[""]
    return out


def recorded_dirs(cgroup_paths: dict[str, Any], mountinfo: str) -> dict[str, str]:
    """container_dirs() from the cgroup paths runc recorded at create (its state.json's
    `cgroup_paths`: controller -> directory, '' for the v2 tree): where `runc exec --cgroup`
    and `kill --all` look, even after something moved the container's init elsewhere."""
    mounts = sorted(
        {
            line.split()[4].replace("\\040", " ")
            for line in mountinfo.splitlines()
            if " - cgroup " in line or " - cgroup2 " in line
        },
        key=len,
        reverse=True,
    )
    out: dict[str, str] = {}
    for path in cgroup_paths.values():
        if not isinstance(path, str):
            continue
        mount = next((m for m in mounts if path.startswith(m + "/")), None)
        if mount is not None:
            out[mount] = path
    return out


def recorded_path(cgroup_paths: dict[str, Any], mountinfo: str) -> str | None:
    """The container's path in the hierarchy siblings are placed by (memory on v1, else the
    v2 tree), from the cgroup paths runc recorded at create; None if neither is there."""
    for key in ("memory", ""):
        path = cgroup_paths.get(key)
        for mount, d in recorded_dirs({key: path}, mountinfo).items():
            return d[len(mount):]
    return None


def make_service_cgroup(dirs: dict[str, str], name: str) -> None:
    """Create the service's sub-cgroup in every hierarchy of the container."""
    for d in dirs.values():
        sub = f"{d}/{SUB_PREFIX}{name}"
        try:
            os.mkdir(sub, 0o755)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"{sub}: cannot create: {e.strerror}") from None
        # A v1 cpuset child starts empty and refuses tasks until it has cpus and mems.
        for key in ("cpuset.cpus", "cpuset.mems"):
            if os.path.exists(f"{sub}/{key}"):
                with open(f"{sub}/{key}") as f:
                    if f.read().strip():
                        continue
                with open(f"{d}/{key}") as f:
                    _write(f"{sub}/{key}", f.read().strip())


def limit_files(
    resources: dict[str, Any], cpu_ceiling: float | None = None,
    memory_ceiling: float | None = None,
) -> list[tuple[str, str]]:
    """(file, value) of a service's [resources] in whichever hierarchy has the file: v1 and v2
    names both (each exists in one kind of hierarchy only); empty for no limits. A limit not
    stricter than the container's (its ceiling) is written as none: the container's holds it,
    and on v1 a child's quota above its parent's is refused (see `stricter`)."""
    out: list[tuple[str, str]] = []
    if resources.get("memory"):
        memory = int(stricter(float(resources["memory"]), memory_ceiling))
        out += [("memory.limit_in_bytes", str(memory) if memory else "-1"),
                ("memory.max", str(memory) if memory else "max")]
    if resources.get("pids"):
        out += [("pids.max", str(resources["pids"]))]
    if resources.get("cpu"):
        quota = cfs_quota(stricter(float(resources["cpu"]), cpu_ceiling))
        out += [("cpu.cfs_quota_us", "-1"), ("cpu.cfs_period_us", str(CFS_PERIOD_US)),
                ("cpu.cfs_quota_us", str(quota)),
                ("cpu.max", f"{'max' if quota < 0 else quota} {CFS_PERIOD_US}")]
    return out


def limit_service_cgroup(dirs: dict[str, str], name: str, resources: dict[str, Any]) -> int:
    """Apply an exec service's limits to its sub-cgroup; how many files were written (0 where
    the container's hierarchies have none of the controllers)."""
    written = 0
    for mount, d in dirs.items():
        sub = f"{d}/{SUB_PREFIX}{name}"
        files = limit_files(
            resources, ceiling(d, mount, _cpu_bound)[0], ceiling(d, mount, _memory_bound)[0]
        )
        for key, value in files:
            if os.path.exists(f"{sub}/{key}"):
                _write(f"{sub}/{key}", value)
                written += 1
    return written


# ---------------------------------------------------------------------------------------------
# `update` of a container with services: its sub-cgroups must never stop the lower runtime.


def parse_cpu_list(text: str) -> set[int]:
    """'0-2,4' -> {0, 1, 2, 4} (cpuset.cpus and cpuset.mems syntax); ValueError if not one."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, dash, last = part.partition("-")
        low, high = int(first), int(last if dash else first)
        if low < 0 or high < low:
            raise ValueError(part)
        out.update(range(low, high + 1))
    return out


def format_cpu_list(cpus: set[int]) -> str:
    runs: list[list[int]] = []
    for n in sorted(cpus):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def service_subgroups(dirs: dict[str, str], names: list[str]) -> list[tuple[str, str, str]]:
    """(mount, container directory, sub-cgroup) of each service that has one."""
    return [
        (mount, d, f"{d}/{SUB_PREFIX}{name}")
        for mount, d in dirs.items()
        for name in names
        if os.path.isdir(f"{d}/{SUB_PREFIX}{name}")
    ]


def updated_cores(dirs: dict[str, str], quota: int | None, period: int | None) -> float | None:
    """The container's CPU bound after an update that sets `quota` and `period` (None or 0:
    unchanged, as runc reads them), on v1; None when it is unbounded or unknown."""
    for d in dirs.values():
        old_quota, old_period = _read(f"{d}/cpu.cfs_quota_us"), _read(f"{d}/cpu.cfs_period_us")
        if old_quota is not None and old_period is not None:
            return quota_cores(quota or int(old_quota), period or int(old_period))
    return None


def before_update(
    dirs: dict[str, str], names: list[str], cpus: str | None, mems: str | None,
    cores: float | None,
) -> list[tuple[str, str]]:
    """Make room for the lower runtime's `update` of the container's cgroup: v1 will not narrow
    a cpuset below a child's, nor lower a CFS quota below a child's. The services' cpusets go
    to the new one first (the container's widened to hold both while they move, when the new
    set is not inside the old), and a service quota above the new one is lifted (its own comes
    back in `after_update`). Returns the writes that undo this, in order."""
    children: list[tuple[str, str]] = []
    parents: list[tuple[str, str]] = []
    try:
        _make_room(dirs, names, cpus, mems, cores, children, parents)
    except CgroupError:
        for path, value in children + parents:
            try:
                _write(path, value)
            except CgroupError:
                pass  # after_update copies the container's cpuset to them again
        raise
    return children + parents


def _make_room(
    dirs: dict[str, str], names: list[str], cpus: str | None, mems: str | None,
    cores: float | None, children: list[tuple[str, str]], parents: list[tuple[str, str]],
) -> None:
    subs = service_subgroups(dirs, names)
    for key, value in (("cpuset.cpus", cpus), ("cpuset.mems", mems)):
        if not value:
            continue  # unchanged
        try:
            wanted = parse_cpu_list(value)
        except ValueError:
            continue  # the lower runtime says what is wrong with it
        for d in {d for _, d, _ in subs}:
            current_text = _read(f"{d}/{key}")
            if current_text is None:
                continue
            current = parse_cpu_list(current_text)
            if not wanted <= current:
                _write(f"{d}/{key}", format_cpu_list(current | wanted))
                parents.append((f"{d}/{key}", current_text.strip()))
            for _, parent, sub in subs:
                was = _read(f"{sub}/{key}") if parent == d else None
                if was is not None:
                    _write(f"{sub}/{key}", format_cpu_list(wanted))
                    children.append((f"{sub}/{key}", was.strip()))
    if cores is not None:
        for _, _, sub in subs:
            own = _cpu_bound(sub)
            if own is not None and own > cores and os.path.exists(f"{sub}/cpu.cfs_quota_us"):
                _write(f"{sub}/cpu.cfs_quota_us", "-1")


def after_update(
    dirs: dict[str, str], services: dict[str, dict[str, Any]], undo: list[tuple[str, str]]
) -> list[str]:
    """After the lower runtime's `update` (`undo` done first when it failed): each service's
    sub-cgroup copies the container's cpuset again and gets its own limits where they are
    stricter than the container's new ones. Returns what could not be written."""
    errors: list[str] = []
    for path, value in undo:
        try:
            _write(path, value)
        except CgroupError as e:
            errors.append(str(e))
    for _, d, sub in service_subgroups(dirs, list(services)):
        for key in ("cpuset.mems", "cpuset.cpus"):
            current = _read(f"{d}/{key}")
            if current is not None and os.path.exists(f"{sub}/{key}"):
                try:
                    _write(f"{sub}/{key}", current.strip())
                except CgroupError as e:
                    errors.append(str(e))
    for name, resources in services.items():
        try:
            limit_service_cgroup(dirs, name, resources)
        except CgroupError as e:
            errors.append(str(e))
    return errors


def service_procs(dirs: dict[str, str], name: str) -> list[int]:
    for d in dirs.values():
        try:
            with open(f"{d}/{SUB_PREFIX}{name}/cgroup.procs") as f:
                return [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue
    return []


def kill_all(dirs: dict[str, str], name: str, sig: int) -> int:
    """Signal every process of the service's sub-cgroup once, forks included; returns how many.

    Never waits: the supervisor reaps its children on the same loop, and a killed child stays
    listed as a zombie until then. Passes repeat while new pids appear (a process forking while
    it was being signalled; once SIGKILL is pending, fork fails). Each pid is signalled through
    a pidfd opened before checking that the pid still belongs to this cgroup, so a pid recycled
    by another process in between is never signalled.
    """
    import signal as signal_mod

    if sig == signal_mod.SIGKILL:
        for d in dirs.values():
            kill_file = f"{d}/{SUB_PREFIX}{name}/cgroup.kill"
            if os.path.exists(kill_file):  # v2, Linux 5.14+: atomic, forks included
                try:
                    _write(kill_file, "1")
                    return len(service_procs(dirs, name))
                except CgroupError:
                    break
    seen: set[int] = set()
    for _ in range(100):
        pids = [p for p in service_procs(dirs, name) if p not in seen]
        if not pids:
            break
        for pid in pids:
            seen.add(pid)
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                if pid in service_procs(dirs, name):
                    signal_mod.pidfd_send_signal(pidfd, sig)
            except OSError:
                pass
            finally:
                os.close(pidfd)
    return len(seen)


def remove_service_cgroups(dirs: dict[str, str], names: list[str]) -> None:
    for d in dirs.values():
        for name in names:
            try:
                os.rmdir(f"{d}/{SUB_PREFIX}{name}")
            except OSError:
                pass  # gone with the container, or a process is still dying


def for_container(
    spec: dict[str, Any], container_id: str, lower_globals: list[str], compiled: Compiled
) -> dict[str, Any] | None:
    """The supervisor's placement for a container being created by this process; None where
    the lower runtime manages no cgroups either (rootless)."""
    if os.geteuid() != 0:
        return None
    if "--rootless" in lower_globals:
        value = lower_globals[lower_globals.index("--rootless") + 1]
        if value != "false":
            return None
    linux = spec.get("linux")
    cgroups_path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    if not isinstance(cgroups_path, str):
        cgroups_path = ""
    return placement_here(
        cgroups_path,
        container_id,
        "--systemd-cgroup" in lower_globals,
        float(compiled.get("supervisor_cpu", 1.0)),
        int(compiled.get("supervisor_memory", 64 << 20)),
    )


def own() -> dict[str, str]:
    """The caller's cgroup in each hierarchy (controller -> path, '' for v2)."""
    try:
        with open("/proc/self/cgroup") as f:
            return parse_proc_cgroup(f.read())
    except OSError:
        return {}
