"""`sysinfo`: answer with the container's own memory and CPU limits instead of the host's.

What LXCFS gives `free`, `top` and `nproc`, at the syscall:

- `sysinfo`: `totalram` is the container's memory limit (the host's RAM when unlimited),
  `freeram` that minus the cgroup's usage, `sharedram` its shmem, swap from its memory+swap
  limit, `procs` its pids.current, `uptime` the time since the container's init started; the
  load averages stay the host's (sysinfo has no field for a CPU count or quota);
- `sched_getaffinity` of the caller itself, asked as pid 0: the real mask, cut down to the
  first ceil(quota / period) CPUs of the container's CPU quota, so `nproc`, Go's GOMAXPROCS and
  thread-pool sizes follow the limit. A mask asked for by pid number (another task's, or the
  caller's own) is left to the kernel.

cgroup v1 (this host's hybrid setup) and v2 are both read; the cgroup is the notifying task's,
found in /proc/PID/cgroup, and the files are found through /proc/self/mountinfo.
"""

from __future__ import annotations

import ctypes
import os
import struct
import time

from ..api import CONTINUE, Handler, HandlerContext, Reply, Request, TargetGone, errno, value

# struct sysinfo on x86_64: long uptime; unsigned long loads[3], totalram, freeram, sharedram,
# bufferram, totalswap, freeswap; unsigned short procs, pad; unsigned long totalhigh, freehigh;
# unsigned int mem_unit; padding to 112 bytes.
SYSINFO = struct.Struct("=q3Q6QHH4x2QI4x")
assert SYSINFO.size == 112

UNLIMITED = 1 << 62  # v1 reports "no limit" as a page-rounded 2**63-1


class _CSysinfo(ctypes.Structure):
    _fields_ = (
        ("uptime", ctypes.c_long),
        ("loads", ctypes.c_ulong * 3),
        ("totalram", ctypes.c_ulong),
        ("freeram", ctypes.c_ulong),
        ("sharedram", ctypes.c_ulong),
        ("bufferram", ctypes.c_ulong),
        ("totalswap", ctypes.c_ulong),
        ("freeswap", ctypes.c_ulong),
        ("procs", ctypes.c_ushort),
        ("pad", ctypes.c_ushort),
        ("totalhigh", ctypes.c_ulong),
        ("freehigh", ctypes.c_ulong),
        ("mem_unit", ctypes.c_uint),
        ("_f", ctypes.c_char * 4),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_SCHED_GETAFFINITY = 204


def host_sysinfo() -> _CSysinfo:
    info = _CSysinfo()
    if _libc.sysinfo(ctypes.byref(info)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return info


def cgroup_mounts() -> tuple[dict[str, str], str]:
    """v1 controller -> mount point, and the cgroup2 mount point ('' if none)."""
    v1: dict[str, str] = {}
    v2 = ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            point = fields[4].replace("\\040", " ")
            if rfields[0] == "cgroup2" and not v2:
                v2 = point
            elif rfields[0] == "cgroup":
                for opt in rfields[2].split(","):
                    v1.setdefault(opt, point)
    return v1, v2


class _File:
    """A cgroup file kept open and re-read with pread (reopening costs more than reading)."""

    __slots__ = ("fd",)

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = -1

    def read(self, size: int = 64) -> bytes | None:
        if self.fd < 0:
            return None
        try:
            return os.pread(self.fd, size, 0)
        except OSError:
            return None

    def number(self) -> int | None:
        text = self.read()
        if text is None:
            return None
        text = text.strip()
        if text == b"max":
            return UNLIMITED
        try:
            return int(text)
        except ValueError:
            return None

    def stat(self, keys: tuple[bytes, ...]) -> int:
        text = self.read(16384)
        if not text:
            return 0
        values = dict(line.split(b" ", 1) for line in text.splitlines() if b" " in line)
        for key in keys:
            if key in values:
                return int(values[key])
        return 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Cgroup:
    """The open files sysinfo needs for one cgroup."""

    def __init__(self, memory: str, pids: str, v2: bool, cpu: str = "") -> None:
        self.v2 = v2
        self.started = 0.0  # seconds after boot when the container's init started
        m = memory
        names = {
            "limit": "memory.max" if v2 else "memory.limit_in_bytes",
            "usage": "memory.current" if v2 else "memory.usage_in_bytes",
            "swap_limit": "memory.swap.max" if v2 else "memory.memsw.limit_in_bytes",
            "swap_usage": "memory.swap.current" if v2 else "memory.memsw.usage_in_bytes",
            "stat": "memory.stat",
        }
        self.files = {k: _File(f"{m}/{v}") if m else _File("") for k, v in names.items()}
        self.files["procs"] = _File(f"{pids}/pids.current") if pids else _File("")
        self.files["cpu_max"] = _File(f"{cpu}/cpu.max") if v2 and cpu else _File("")
        self.files["quota"] = _File(f"{cpu}/cpu.cfs_quota_us") if cpu and not v2 else _File("")
        self.files["period"] = _File(f"{cpu}/cpu.cfs_period_us") if cpu and not v2 else _File("")

    def cpu_limit(self) -> int | None:
        """ceil(quota / period), or None without a quota."""
        if self.v2:
            text = self.files["cpu_max"].read()
            if not text:
                return None
            quota_text, _, period_text = text.strip().partition(b" ")
            if quota_text == b"max" or not period_text:
                return None
            quota, period = int(quota_text), int(period_text)
        else:
            q, p = self.files["quota"].number(), self.files["period"].number()
            if q is None or p is None or q <= 0:
                return None
            quota, period = q, p
        return max(1, -(-quota // period)) if period > 0 else None

    @classmethod
    def of(cls, pid: int, mounts: tuple[dict[str, str], str]) -> Cgroup:
        v1, v2mount = mounts
        paths: dict[str, str] = {}
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                for line in f:
                    _, controllers, path = line.rstrip("\n").split(":", 2)
                    for c in controllers.split(",") if controllers else [""]:
                        paths[c] = path
        except (FileNotFoundError, ProcessLookupError):
            raise TargetGone() from None
        if "memory" in paths and "memory" in v1:

            def v1dir(controller: str) -> str:
                if controller in v1 and controller in paths:
                    return os.path.join(v1[controller], paths[controller].lstrip("/"))
                return ""

            return cls(v1dir("memory"), v1dir("pids"), False, v1dir("cpu"))
        base = os.path.join(v2mount, paths.get("", "/").lstrip("/")) if v2mount else ""
        return cls(base, base, True, base)

    def values(self) -> dict[str, int | None]:
        f = self.files
        return {
            "limit": f["limit"].number(),
            "usage": f["usage"].number(),
            "swap_limit": f["swap_limit"].number(),
            "swap_usage": f["swap_usage"].number(),
            "shmem": f["stat"].stat((b"shmem",) if self.v2 else (b"total_shmem", b"shmem")),
            "procs": f["procs"].number(),
        }

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def start_time(pid: int) -> float:
    """Seconds since boot when `pid` started."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = text[text.rfind(b")") + 2 :].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def emulate(cg: Cgroup, started: float) -> bytes:
    host = host_sysinfo()
    unit = host.mem_unit or 1
    host_ram, host_swap = host.totalram * unit, host.totalswap * unit
    v = cg.values()
    limit = v.get("limit")
    total = min(limit, host_ram) if limit else host_ram
    usage = v.get("usage")
    free = max(0, total - usage) if usage is not None else host.freeram * unit
    if v.get("swap_limit") is not None and limit:
        swap_limit = v["swap_limit"] or 0
        # v1 limits memory+swap together; v2 limits swap alone.
        total_swap = swap_limit if cg.v2 else max(0, swap_limit - limit)
        total_swap = min(total_swap, host_swap)
        used_swap = v.get("swap_usage") or 0
        if not cg.v2:
            used_swap = max(0, used_swap - (usage or 0))
        free_swap = max(0, total_swap - used_swap)
    else:
        total_swap, free_swap = host_swap, host.freeswap * unit
    procs = v.get("procs")
    uptime = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    return SYSINFO.pack(
        max(0, int(uptime)),
        *host.loads,
        total,
        free,
        min(v.get("shmem") or 0, total),
        0,
        total_swap,
        free_swap,
        min(procs if procs is not None else host.procs, 0xFFFF),
        0,
        0,
        0,
        1,
    )


def limited_affinity(tid: int, size: int, cpus: int | None) -> tuple[int, bytes]:
    """The kernel's answer to the task's own sched_getaffinity, cut to `cpus` CPUs."""
    buf = ctypes.create_string_buffer(max(0, min(size, 1 << 16)))
    ret = _libc.syscall(
        ctypes.c_long(SYS_SCHED_GETAFFINITY), ctypes.c_long(tid), ctypes.c_size_t(len(buf)), buf
    )
    if ret < 0:
        err = ctypes.get_errno()
        if err == 3:  # ESRCH
            raise TargetGone()
        return -err, b""
    mask = bytearray(buf.raw[:ret])
    if cpus is not None:
        seen = 0
        for i in range(len(mask) * 8):
            if mask[i // 8] >> (i % 8) & 1:
                seen += 1
                if seen > cpus:
                    mask[i // 8] &= ~(1 << (i % 8)) & 0xFF
    return ret, bytes(mask)


class Sysinfo(Handler):
    name = "sysinfo"
    syscalls = frozenset({"sysinfo", "sched_getaffinity"})

    def __init__(self, settings: None, context: HandlerContext) -> None:
        super().__init__(settings, context)
        self._mounts = cgroup_mounts()
        self._cgroups: dict[int, Cgroup] = {}

    def handle(self, req: Request) -> Reply:
        cg = self._cgroup(req)
        if req.syscall == "sched_getaffinity":
            return self._affinity(req, cg)
        req.write_memory(req.args[0], emulate(cg, cg.started))
        return value(0)

    def _affinity(self, req: Request, cg: Cgroup) -> Reply:
        pid = ctypes.c_int32(req.args[0] & 0xFFFFFFFF).value
        if pid != 0:
            return CONTINUE  # another task's mask, or its own by number: the kernel knows
        size = req.args[1] & 0xFFFFFFFF
        ret, mask = limited_affinity(req.pid, size, cg.cpu_limit())
        if ret < 0:
            return errno(-ret)
        req.write_memory(req.args[2], mask)
        return value(ret)

    def _cgroup(self, req: Request) -> Cgroup:
        # The cgroup of a container's processes is the container's; keyed by its init, and
        # dropped when that init is gone (the pid may be reused by another container).
        init = req.container.init_pid
        cg = self._cgroups.get(init)
        if cg is None or not os.path.exists(f"/proc/{init}"):
            if cg is not None:
                cg.close()
            cg = Cgroup.of(req.pid, self._mounts)
            cg.started = start_time(init)
            if len(self._cgroups) > 256:
                self.close()
            self._cgroups[init] = cg
        return cg

    def close(self) -> None:
        for cg in self._cgroups.values():
            cg.close()
        self._cgroups.clear()
