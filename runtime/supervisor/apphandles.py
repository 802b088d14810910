"""Handles on the app container for one sibling start: its init's namespaces, cgroup and shares.

A sibling joins the app's namespaces and bind-mounts the app's shared paths, and runc resolves
both by path when it creates the sibling. A path through `/proc/<app init pid>` names whatever
process has that number by then (the app's init may have exited and the number been reused), and
a path into the app's files may be swapped for a symlink to a host directory by the app itself
between retinue's check and runc's mount. So everything the sibling gets is opened here once, as
descriptors, and runc is given only paths that resolve to those descriptors:

- the namespaces as `/proc/<supervisor pid>/fd/N` of files opened through `/proc/<pid>`, and the
  app's init checked to be alive (its pidfd) after they were opened: the number was still its own;
- each share as a bind mount, made from a descriptor, onto a staging point in the sibling's
  root-only bundle directory. The descriptor is opened from the host directory under which the
  app's path lies, with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS (the kernel refuses any symlink and
  any way out), and must be the very inode the app sees at that path. A swap at any moment can
  then make a start fail, or give the sibling another directory inside the app's files, never a
  directory of the host.

The staging mounts are needed only while the lower runtime creates the sibling (the sibling's
mount namespace keeps its own copy): `release` unmounts them; after a supervisor killed midway,
the state directory's removal and `retinue gc` do (mounts.clear).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable

from ..host.mounts import remove_point, unmount

SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall table merge)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
MS_BIND = 0x1000
MS_REC = 0x4000
NS_FILE = {"network": "net", "ipc": "ipc", "uts": "uts", "user": "user"}
SYMLINK_HOPS = 40  # the kernel's own limit on one path walk

_libc = ctypes.CDLL(None, use_errno=True)


class ShareError(Exception):
    pass


class AppGone(Exception):
    """The app container's init has exited: nothing of it may be joined."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _libc.syscall(SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _mount(source: str, target: str, flags: int) -> None:
    if _libc.mount(os.fsencode(source), os.fsencode(target), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def resolve_in_root(root: str, path: str) -> str:
    """`path` in the app container (whose root is `root`) without a symlink left in it: a
    symlink is resolved against the container's root, never the host's. This only finds where
    the path leads now; `AppHandles.share` opens it without following anything, and checks."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except OSError as e:
            raise ShareError(f"share: {path}: {e.strerror} in the app container") from None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > SYMLINK_HOPS:
                raise ShareError(f"share: {path}: too many symbolic links in the app container")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
        else:
            resolved.append(part)
    return "/" + "/".join(resolved)


class AppHandles:
    """The app's init's /proc directory, namespaces and root, opened for one sibling start."""

    def __init__(self, init_pid: int, namespaces: list[str], exited: Callable[[], bool]) -> None:
        """Open them, then ask `exited` (a poll of the init's pidfd): if the init is still
        alive, every file opened through /proc/<init_pid> was its own. Raises AppGone."""
        self.pid = init_pid
        self.fds: dict[str, int] = {}
        self.staged: list[str] = []
        try:
            proc = os.open(f"/proc/{init_pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self.fds["proc"] = proc
            for ns in namespaces:
                self.fds[ns] = os.open(f"ns/{NS_FILE[ns]}", os.O_RDONLY | os.O_CLOEXEC,
                                       dir_fd=proc)
            self.fds["root"] = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                                       dir_fd=proc)
            with open(f"/proc/self/fd/{proc}/cgroup") as f:
                self.cgroup_file = f.read()
        except OSError:
            self.close()
            if exited():
                raise AppGone(self.gone()) from None
            raise
        if exited():
            self.close()
            raise AppGone(self.gone())

    def gone(self) -> str:
        return (f"the app container's init (pid {self.pid}) has exited: not joining "
                "namespaces through its pid")

    def ns_paths(self) -> dict[str, str]:
        """runc opens these paths: they lead to this process's descriptors, nothing else."""
        me = os.getpid()
        return {ns: f"/proc/{me}/fd/{fd}" for ns, fd in self.fds.items() if ns in NS_FILE}

    @property
    def root(self) -> str:
        return f"/proc/self/fd/{self.fds['root']}"

    def share(self, path: str, place: Callable[[str], tuple[str, str]], staging: str) -> str:
        """Bind-mount what the app has at `path` onto `staging` and return `staging`.

        `place` maps the resolved path to (host directory, path below it) as sidecar.host_place
        does; the host directory is the engine's (the app's root or a bind mount's source), the
        rest the app's, so the rest is opened below it without following any symlink, and the
        result must be the inode the app's own root leads to."""
        resolved = resolve_in_root(self.root, path)
        base_dir, rest = place(resolved)
        fds: list[int] = []
        try:
            try:
                inside = openat2(self.fds["root"], resolved.lstrip("/") or ".", os.O_PATH,
                                 RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)
                fds.append(inside)
                base = os.open(base_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                fds.append(base)
                host = openat2(base, rest or ".", os.O_PATH,
                               RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
                fds.append(host)
            except OSError as e:
                if e.errno == errno.ENOSYS:
                    raise ShareError(f"share: {path}: needs openat2 (Linux 5.6 or later)") from None
                if e.errno == errno.ELOOP:
                    raise ShareError(f"share: {path}: changed to a symbolic link while it was "
                                     "being shared") from None
                raise ShareError(f"share: {path}: {e.strerror} in the app container") from None
            seen, got = os.fstat(inside), os.fstat(host)
            if (seen.st_dev, seen.st_ino) != (got.st_dev, got.st_ino):
                raise ShareError(f"share: {path}: changed while it was being shared, or is not "
                                 f"the host's {base_dir} in the app container")
            if stat.S_ISDIR(got.st_mode):
                os.mkdir(staging, 0o700)
            else:
                os.close(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                 0o600))
            self.staged.append(staging)
            _mount(f"/proc/self/fd/{host}", staging, MS_BIND | MS_REC)
        finally:
            for fd in fds:
                os.close(fd)
        return staging

    def release(self) -> None:
        """Unmount the staging points and close every descriptor (the sibling was created, or
        will not be)."""
        for staging in reversed(self.staged):
            unmount(staging)
            remove_point(staging)
        self.staged = []
        self.close()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
