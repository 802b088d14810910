"""Readiness checks that look into the container from the host.

A TCP port is checked in the container's own network namespace through the service process's
/proc/PID/net/tcp{,6}, and counts only when the listening socket is one of the service's own
(an fd of the service's process or of a descendant): containers of one pod share a network
namespace, and a neighbour's listener on the same port must not make this service ready while
its own server failed to bind. A file through /proc/PID/root, walked one component at a time without
following symlinks, so a path inside the container can never name a host file.
"""

from __future__ import annotations

import os
import stat

TCP_LISTEN = "0A"


def tcp_listening_owned(pid: int, port: int) -> bool:
    """Whether `pid` or one of its descendants holds a socket listening on `port` (in the
    network namespace of `pid`)."""
    inodes = listening_inodes(pid, port)
    if not inodes:
        return False  # the common case while the service starts: no walk of /proc
    return not inodes.isdisjoint(socket_inodes(tree(pid)))


def listening_inodes(pid: int, port: int) -> set[int]:
    """The inodes of the sockets listening on `port` in the network namespace of `pid`."""
    want = f"{port:04X}"
    found: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if (
                        len(fields) > 9
                        and fields[3] == TCP_LISTEN
                        and fields[1].endswith(":" + want)
                        and fields[9].isdigit()
                    ):
                        found.add(int(fields[9]))
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (host PID namespace), from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def socket_inodes(pids: list[int]) -> set[int]:
    """The inodes of every socket an fd of `pids` refers to (`socket:[INODE]`)."""
    found: set[int] = set()
    for pid in pids:
        directory = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(directory)
        except OSError:
            continue  # exited meanwhile
        for fd in fds:
            try:
                target = os.readlink(f"{directory}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target.endswith("]"):
                found.add(int(target[8:-1]))
    return found


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
