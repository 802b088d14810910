"""Operations inside a target's mount namespace and root, run by helper processes.

The agent never forks: `os.fork()` in a threaded Python process takes the GIL and the import
locks and stalls every other notification for milliseconds (research/seccomp.md §5), and
`setns(CLONE_NEWNS)` refuses a multi-threaded caller anyway. So a small pool of long-lived,
single-threaded helper processes (`python -m retinue.seccomp.nshelper FD`, spawned once with
vfork+exec) does the namespace work. Per request the agent opens the target's
`/proc/TID/ns/mnt`, `/proc/TID/root` and its cwd (or the dirfd the syscall named), proves with
ID_VALID that they are the notifying task's, and passes them by SCM_RIGHTS; the helper joins
the mount namespace, chroots to the target's root and changes to its cwd, so every path the
target gave resolves exactly as the kernel would have resolved it for the target: absolute
symlinks and `..` stay inside the container's root. The result is checked once more (the
resolved directory must be beneath the root: a directory fd the target passes may lie outside
it) before anything is created or mounted.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

CLONE_NEWNS = 0x00020000
AT_FDCWD = -100

SYS_OPENAT2 = 437
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
RESOLVE_NO_MAGICLINKS = 0x02
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40

MAX_MESSAGE = 65536
MAX_FDS = 4

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    return _check(
        _libc.syscall(
            ctypes.c_long(SYS_OPENAT2),
            ctypes.c_int(dirfd),
            os.fsencode(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        ),
        f"openat2 {path!r}",
    )


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def fsconfig(fs: int, cmd: int, key: str | None = None, value: str | None = None) -> None:
    _check(
        _libc.syscall(
            ctypes.c_long(SYS_FSCONFIG),
            ctypes.c_int(fs),
            ctypes.c_uint(cmd),
            None if key is None else key.encode(),
            None if value is None else value.encode(),
            ctypes.c_int(0),
        ),
        f"fsconfig {key or 'create'}",
    )


# ---------------------------------------------------------------------------------------------
# The helper process


class _Helper:
    """State of one helper process: a host /proc kept from before any setns."""

    def __init__(self) -> None:
        # "self/fd/N" under the host's procfs names this helper whatever root it has chrooted to.
        self.proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # Where to return after each request, so that an idle helper pins no container's mounts.
        self.home_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self.home_root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def go_home(self) -> None:
        setns(self.home_ns, CLONE_NEWNS)
        os.fchdir(self.home_root)
        os.chroot(".")
        os.chdir("/")

    def enter(self, mntns: int, root: int, cwd: int) -> tuple[int, int]:
        """Join the target's mount namespace, root and cwd; returns the root's (dev, ino)."""
        setns(mntns, CLONE_NEWNS)
        os.fchdir(root)
        os.chroot(".")
        os.fchdir(cwd)
        st = os.stat("/")
        return st.st_dev, st.st_ino

    def path_of(self, fd: int) -> str:
        return os.readlink(f"self/fd/{fd}", dir_fd=self.proc)

    def beneath_root(self, fd: int, root: tuple[int, int]) -> bool:
        """Whether directory `fd` lies inside the current root (walking `..`, which stops there)."""
        cur = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        try:
            for _ in range(4096):
                st = os.fstat(cur)
                if (st.st_dev, st.st_ino) == root:
                    return True
                parent = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
                pst = os.fstat(parent)
                os.close(cur)
                cur = parent
                if (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino):
                    return False
            return False
        finally:
            os.close(cur)

    def resolve_dir(self, path: str, root: tuple[int, int]) -> tuple[int, str]:
        fd = openat2(AT_FDCWD, path, os.O_PATH | os.O_DIRECTORY, RESOLVE_NO_MAGICLINKS)
        if not self.beneath_root(fd, root):
            os.close(fd)
            raise OSError(1, f"{path!r} resolves outside the container's root")
        return fd, self.path_of(fd)

    # -- operations

    def op_mknod(self, req: dict[str, Any], root: tuple[int, int]) -> dict[str, Any]:
        path: str = req["path"]
        parent, _, base = path.rstrip("/").rpartition("/")
        if not base or base in (".", "..") or path.endswith("/"):
            raise OSError(17 if base else 2, "not a name for a new node")
        if path.startswith("/") and not parent:
            parent = "/"
        pfd, pdir = self.resolve_dir(parent or ".", root)
        try:
            resolved = pdir.rstrip("/") + "/" + base
            allowed: list[str] | None = req.get("allow")
            if allowed is not None and resolved not in allowed:
                return {"errno": 1, "path": resolved, "error": "path not allowed"}
            mode = req["mode"] & ~req.get("umask", 0o022)
            os.mknod(base, mode, req["dev"], dir_fd=pfd)
            os.chown(base, req["uid"], req["gid"], dir_fd=pfd, follow_symlinks=False)
            return {"errno": 0, "path": resolved}
        finally:
            os.close(pfd)

    def op_mount(self, req: dict[str, Any], root: tuple[int, int]) -> dict[str, Any]:
        tfd, target = self.resolve_dir(req["target"], root)
        try:
            prefixes: list[str] = req["prefixes"]
            if not any(target == p or target.startswith(p.rstrip("/") + "/") for p in prefixes):
                return {"errno": 1, "path": target, "error": "target not allowed"}
            fs = _check(
                _libc.syscall(
                    ctypes.c_long(SYS_FSOPEN), req["fstype"].encode(), ctypes.c_uint(FSOPEN_CLOEXEC)
                ),
                f"fsopen {req['fstype']}",
            )
            try:
                for key, val in [("source", req["source"]), *req["options"]]:
                    cmd = FSCONFIG_SET_FLAG if val is None else FSCONFIG_SET_STRING
                    fsconfig(fs, cmd, key, val)
                fsconfig(fs, FSCONFIG_CMD_CREATE)
                mnt = _check(
                    _libc.syscall(
                        ctypes.c_long(SYS_FSMOUNT),
                        ctypes.c_int(fs),
                        ctypes.c_uint(FSMOUNT_CLOEXEC),
                        ctypes.c_uint(req["attrs"]),
                    ),
                    "fsmount",
                )
            finally:
                os.close(fs)
            try:
                flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
                _check(
                    _libc.syscall(
                        ctypes.c_long(SYS_MOVE_MOUNT),
                        ctypes.c_int(mnt),
                        b"",
                        ctypes.c_int(tfd),
                        b"",
                        ctypes.c_uint(flags),
                    ),
                    "move_mount",
                )
            finally:
                os.close(mnt)
            return {"errno": 0, "path": target}
        finally:
            os.close(tfd)

    def serve(self, sock: socket.socket) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
            except OSError:
                return
            if not data:
                return
            try:
                reply = self._one(json.loads(data), fds)
            except OSError as e:
                reply = {"errno": e.errno or 5, "error": str(e)}
            except Exception as e:  # a bug here must still produce an answer
                reply = {"errno": 5, "error": f"{type(e).__name__}: {e}"}
            finally:
                for fd in fds:
                    os.close(fd)
                self.go_home()
            sock.send(json.dumps(reply).encode())

    def _one(self, req: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        if len(fds) != 3:
            return {"errno": 22, "error": f"expected 3 fds, got {len(fds)}"}
        root = self.enter(*fds)
        op = req.get("op")
        if op == "mknod":
            return self.op_mknod(req, root)
        if op == "mount":
            return self.op_mount(req, root)
        if op == "ping":
            return {"errno": 0}
        return {"errno": 22, "error": f"unknown op {op!r}"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(argv[0]))
    _Helper().serve(sock)
    return 0


# ---------------------------------------------------------------------------------------------
# The agent's side


class HelperError(Exception):
    """The helper failed (died, timed out, answered nonsense): an internal error."""


class _Process:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # close_fds (the default) keeps every other fd, notify fds included, out of the
            # helper; subprocess spawns with vfork, so this does not stall the agent.
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "retinue.seccomp.nshelper", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.sock = ours

    def call(self, request: dict[str, Any], fds: list[int], timeout: float) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
            data = self.sock.recv(MAX_MESSAGE)
        except TimeoutError:
            raise HelperError(f"helper did not answer within {timeout:g}s") from None
        except OSError as e:
            raise HelperError(f"helper: {e}") from None
        if not data:
            raise HelperError(f"helper exited (status {self.proc.poll()})")
        try:
            reply: dict[str, Any] = json.loads(data)
        except ValueError:
            raise HelperError("helper answered nonsense") from None
        return reply

    def kill(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class NamespaceRunner:
    """A pool of helper processes; `run` is thread-safe and blocks its caller only."""

    def __init__(self, max_helpers: int = 4, timeout: float = 10.0) -> None:
        self.max_helpers = max_helpers
        self.timeout = timeout
        self._idle: list[_Process] = []
        self._busy: set[_Process] = set()
        self._count = 0
        self._closed = False
        self._cond = threading.Condition()

    def prestart(self) -> None:
        """Start one helper now, so that the first request does not pay Python's start-up."""
        with self._cond:
            if self._count == 0 and not self._closed:
                self._idle.append(_Process())
                self._count += 1

    def _acquire(self, deadline: float) -> _Process:
        with self._cond:
            while True:
                if self._closed:
                    raise HelperError("the agent is stopping")
                if self._idle:
                    proc = self._idle.pop()
                    self._busy.add(proc)
                    return proc
                if self._count < self.max_helpers:
                    self._count += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    raise HelperError("every helper is busy")
        try:
            proc = _Process()
            with self._cond:
                self._busy.add(proc)
            return proc
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def run(self, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        """Send one request with the target's (mntns, root, cwd) fds; the helper's JSON reply."""
        deadline = time.monotonic() + self.timeout
        proc = self._acquire(deadline)
        healthy = False
        try:
            reply = proc.call(request, fds, max(0.1, deadline - time.monotonic()))
            healthy = True
            return reply
        finally:
            with self._cond:
                self._busy.discard(proc)
                if healthy and not self._closed:
                    self._idle.append(proc)
                else:
                    self._count -= 1
                self._cond.notify()
            if not healthy or self._closed:
                proc.kill()

    def pids(self) -> list[int]:
        with self._cond:
            return [p.proc.pid for p in self._idle]

    def close(self) -> None:
        """Stop every helper; a request still running gets a HelperError at once."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
            self._cond.notify_all()
        for proc in idle:
            proc.kill()
        for proc in busy:
            # The waiting caller sees EOF and answers; it reaps the process itself.
            with contextlib.suppress(OSError):
                proc.proc.kill()


if __name__ == "__main__":
    sys.exit(main())
