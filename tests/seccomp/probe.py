"""Runs inside the test containers (the host's Python, bind-mounted): raw syscalls, hostile too.

`python3.11 -I -S /probe/probe.py COMMAND ARGS...` prints one JSON object per command:
{"ret": return value, "errno": "ENAME" or ""} plus command-specific fields.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import struct
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

NR = {
    "mkdir": 83,
    "mknod": 133,
    "mount": 165,
    "sysinfo": 99,
    "getppid": 110,
    "getpgrp": 111,
    "mkdirat": 258,
}


def call(nr: int, *args: int | bytes | None) -> dict[str, object]:
    cargs = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *cargs)
    err = ctypes.get_errno() if ret == -1 else 0
    return {"ret": ret, "errno": errno.errorcode.get(err, str(err)) if err else ""}


def page_end_string() -> tuple[mmap.mmap, int]:
    """A string without NUL that runs into an unmapped page."""
    m = mmap.mmap(-1, 2 * mmap.PAGESIZE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    m[mmap.PAGESIZE - 8 : mmap.PAGESIZE] = b"/tmp/abc"
    libc.mprotect(ctypes.c_void_p(base + mmap.PAGESIZE), mmap.PAGESIZE, 0)
    return m, base + mmap.PAGESIZE - 8


def main(argv: list[str]) -> dict[str, object]:
    cmd, args = argv[0], argv[1:]
    if cmd == "mkdir":
        return call(NR["mkdir"], args[0].encode(), 0o755)
    if cmd == "mkdir-long":
        return call(NR["mkdir"], b"/tmp/" + b"x" * int(args[0]), 0o755)
    if cmd == "mkdir-badptr":
        return call(NR["mkdir"], int(args[0], 0), 0o755)
    if cmd == "mkdir-pageend":
        keep, addr = page_end_string()
        out = call(NR["mkdir"], addr, 0o755)
        del keep
        return out
    if cmd == "mknod":
        kind = {"c": 0o020000, "b": 0o060000, "p": 0o010000}[args[1]]
        dev = os.makedev(int(args[2]), int(args[3])) if len(args) > 3 else 0
        return call(NR["mknod"], args[0].encode(), kind | 0o666, dev)
    if cmd == "mknod-badptr":
        return call(NR["mknod"], int(args[0], 0), 0o020000 | 0o666, os.makedev(10, 229))
    if cmd == "mount":
        source, target, fstype, flags, data = args
        return call(
            NR["mount"],
            source.encode(),
            target.encode(),
            fstype.encode(),
            int(flags, 0),
            data.encode() if data else None,
        )
    if cmd == "mount-badptr":
        return call(NR["mount"], b"none", int(args[0], 0), b"tmpfs", 0, None)
    if cmd == "sysinfo":
        buf = ctypes.create_string_buffer(112)
        out = call(NR["sysinfo"], ctypes.addressof(buf))
        fields = struct.unpack("=q3Q6QHH4x2QI4x", buf.raw)
        out.update(
            uptime=fields[0],
            totalram=fields[4],
            freeram=fields[5],
            totalswap=fields[8],
            procs=fields[10],
            mem_unit=fields[14],
        )
        return out
    if cmd == "loop":
        # Per-call latencies of a raw syscall, for the benchmark.
        nr, n = NR.get(args[0]) or int(args[0]), int(args[1])
        arg = args[2].encode() if len(args) > 2 else None
        syscall, clock = libc.syscall, time.perf_counter_ns
        times = []
        start = clock()
        for _ in range(n):
            t0 = clock()
            syscall(nr, arg)
            times.append(clock() - t0)
        total = clock() - start
        times.sort()
        return {
            "n": n,
            "median_ns": times[n // 2],
            "p90_ns": times[n * 9 // 10],
            "mean_ns": sum(times) // n,
            "total_ns": total,
        }
    if cmd == "sleep-then":
        time.sleep(float(args[0]))
        return main(args[1:])
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
