"""Readiness checks that look into the container from the host.

A TCP port is checked in the container's own network namespace through the service process's
/proc/PID/net/tcp{,6}; a file through /proc/PID/root, walked one component at a time without
following symlinks, so a path inside the container can never name a host file.
"""

from __future__ import annotations

import os
import stat

TCP_LISTEN = "0A"


def tcp_listening(pid: int, port: int) -> bool:
    """Whether something listens on `port` in the network namespace of `pid`."""
    want = f"{port:04X}"
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if (
                        len(fields) > 3
                        and fields[3] == TCP_LISTEN
                        and fields[1].endswith(":" + want)
                    ):
                        return True
        except OSError:
            continue
    return False


def file_stat(pid: int, path: str) -> os.stat_result | None:
    """What `path` is inside the root of `pid` (a symlink as itself), None if it is not there;
    never following a symlink out of it."""
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        return None
    try:
        fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if last else os.O_DIRECTORY)
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except OSError:
                return None
            os.close(fd)
            fd = nfd
        return os.fstat(fd)
    finally:
        os.close(fd)


def file_made(pid: int, path: str, before: os.stat_result | None) -> bool:
    """Whether `path` (seen from `pid`) is a file made or changed since `before` was taken at the
    start of the run: one the image already had does not say the service is ready, nor does a
    symlink, dangling or not."""
    now = file_stat(pid, path)
    if now is None or stat.S_ISLNK(now.st_mode):
        return False
    if before is None:
        return True
    # A new file (another inode), or the same one written, touched or chmod-ed by this run.
    return (now.st_dev, now.st_ino, now.st_ctime_ns) != (
        before.st_dev,
        before.st_ino,
        before.st_ctime_ns,
    )


def is_descendant(pid: int, ancestor: int) -> bool:
    """Whether `pid` is `ancestor` or one of its descendants (host pid namespace)."""
    seen = 0
    while pid > 1 and seen < 64:
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            return False
        pid = int(stat.rpartition(")")[2].split()[1])
        seen += 1
    return pid == ancestor
