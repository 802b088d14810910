"""The handler plugin API: what a handler receives, and what it answers.

A handler is a class derived from `Handler`, registered in the entry-point group
`retinue.seccomp` under the name the configuration uses (the built-ins are registered the same
way, in retinue's pyproject.toml):

    [project.entry-points."retinue.seccomp"]
    mything = "mypackage.seccomp:MyThing"

For each notified syscall routed to it, the agent calls `handle(request)` and sends the reply the
handler returns:

- `CONTINUE`: let the kernel run the syscall as the target made it (the filter stays
  advisory: the target can change pointed-to memory after the check, so never CONTINUE as a
  security decision on what the memory said);
- `errno(code)`: fail the syscall with that errno, without running it;
- `value(n)`: the syscall "returns" `n` without running it (emulation);
- `ANSWERED`: the handler has answered already (`Request.send_fd`).

Raising `SyscallError(code)` fails the syscall with that errno (e.g. EFAULT for a bad pointer,
the answer the real syscall would give). Raising `TargetGone` drops the notification (its target
died or was signalled; nobody waits for an answer). Any other exception is an internal error: it
is logged, and the syscall fails with the rule's configured errno; a syscall is never left
unanswered.

`handle` runs on the agent's notification thread, so it must be quick (microseconds: every
other notified syscall of every container waits meanwhile). A handler that needs more (the
container's namespaces, slow I/O) sets `blocking = True`: it then runs on a worker thread, and
does its namespace work through `context.namespaces` (a pool of helper processes), never by
forking the agent.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import logging
import os
from typing import Any, ClassVar, NamedTuple

from . import notify
from .notify import SyscallError, TargetGone

__all__ = [
    "ANSWERED",
    "CONTINUE",
    "ContainerProcess",
    "Handler",
    "HandlerContext",
    "Reply",
    "Request",
    "SyscallError",
    "TargetGone",
    "errno",
    "value",
]


class Reply(NamedTuple):
    """A `struct seccomp_notif_resp` without its id."""

    val: int
    error: int
    flags: int


AT_FDCWD = -100

CONTINUE = Reply(0, 0, notify.FLAG_CONTINUE)
# Sentinel: the handler answered through ADDFD|SEND; the agent sends nothing.
ANSWERED = Reply(0, 0, -1)


def errno(code: int) -> Reply:
    if not 0 < code < 4096:
        raise ValueError(f"errno out of range: {code}")
    return Reply(0, -code, 0)


def value(val: int) -> Reply:
    return Reply(val, 0, 0)


class ContainerProcess:
    """What runc told the agent about the filtered process (one per runc connection).

    `pid` is the process whose filter this is (the container's init, or a `runc exec` process);
    `init_pid` the container's init. The fields are what runc sent; `metadata` is
    `linux.seccomp.listenerMetadata` from config.json: never trust it for a security decision
    (whoever writes config.json chose it).
    """

    __slots__ = ("annotations", "bundle", "id", "init_pid", "metadata", "pid", "status")

    def __init__(
        self,
        id: str,
        pid: int,
        init_pid: int,
        bundle: str = "",
        status: str = "",
        metadata: str = "",
        annotations: dict[str, str] | None = None,
    ) -> None:
        self.id = id
        self.pid = pid
        self.init_pid = init_pid
        self.bundle = bundle
        self.status = status
        self.metadata = metadata
        self.annotations = annotations or {}

    def __repr__(self) -> str:
        return f"ContainerProcess(id={self.id!r}, pid={self.pid}, init_pid={self.init_pid})"


class Request:
    """One notification, with checked access to the target's memory.

    `pid` is the notifying thread's id in the agent's pid namespace. Every memory access opens
    /proc/PID/mem and proves with ID_VALID that it is the notifying task's (the pid was not
    recycled), and checks ID_VALID again after reading; `check()` before acting.
    """

    __slots__ = (
        "_mem",
        "_memrw",
        "arch",
        "args",
        "container",
        "id",
        "notify_fd",
        "nr",
        "pid",
        "syscall",
    )

    def __init__(
        self, notify_fd: int, notif: notify.Notification, syscall: str, container: ContainerProcess
    ) -> None:
        self.notify_fd = notify_fd
        self.id = notif.id
        self.pid = notif.pid
        self.nr = notif.nr
        self.arch = notif.arch
        self.args = notif.args
        self.syscall = syscall
        self.container = container
        self._mem = -1
        self._memrw = -1

    # -- liveness

    def valid(self) -> bool:
        return notify.id_valid(self.notify_fd, self.id)

    def check(self) -> None:
        """Raise TargetGone unless the notification is still live; call it before acting."""
        if not notify.id_valid(self.notify_fd, self.id):
            raise TargetGone()

    # -- memory

    def read_string(self, addr: int, limit: int = notify.PATH_MAX) -> bytes:
        """A NUL-terminated string from the target (ENAMETOOLONG / EFAULT as the kernel)."""
        if self._mem < 0:
            self._mem = notify.open_memory(self.notify_fd, self.id, self.pid)
        data = notify.read_cstring(self._mem, addr, limit)
        self.check()
        return data

    def read_path(self, index: int) -> bytes:
        return self.read_string(self.args[index], notify.PATH_MAX)

    def read_memory(self, addr: int, size: int) -> bytes:
        if self._mem < 0:
            self._mem = notify.open_memory(self.notify_fd, self.id, self.pid)
        data = notify.read_bytes(self._mem, addr, size)
        self.check()
        return data

    def write_memory(self, addr: int, data: bytes) -> None:
        """Write into the target's memory (e.g. a struct the syscall fills); checked first."""
        if self._memrw < 0:
            self._memrw = notify.open_memory(self.notify_fd, self.id, self.pid, write=True)
        else:
            self.check()
        notify.write_bytes(self._memrw, addr, data)

    # -- the target's context, for work done on its behalf

    def namespace_fds(self, dirfd: int | None = None) -> list[int]:
        """[mount namespace, root, base directory] of the notifying task, proven by ID_VALID.

        The base is the task's cwd, or the directory fd a `*at` syscall named (`dirfd` is the raw
        argument; AT_FDCWD means the cwd). The caller closes the fds (or hands them to
        `context.namespaces.run`, then closes them).
        """
        fds: list[int] = []
        base = "cwd"
        if dirfd is not None:
            number = ctypes.c_int32(dirfd & 0xFFFFFFFF).value
            if number != AT_FDCWD:
                if number < 0:
                    raise SyscallError(_errno.EBADF, "bad directory fd")
                base = f"fd/{number}"
        try:
            for name, flags in (
                ("ns/mnt", os.O_RDONLY),
                ("root", os.O_PATH | os.O_DIRECTORY),
                (base, os.O_PATH),
            ):
                try:
                    fds.append(os.open(f"/proc/{self.pid}/{name}", flags | os.O_CLOEXEC))
                except FileNotFoundError:
                    if name.startswith("fd/") and self.valid():
                        raise SyscallError(_errno.EBADF, "bad directory fd") from None
                    raise TargetGone() from None
            self.check()
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def credentials(self) -> tuple[int, int, int]:
        """(fsuid, fsgid, umask) of the notifying task, from /proc/PID/status."""
        try:
            with open(f"/proc/{self.pid}/status", "rb") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError):
            raise TargetGone() from None
        fields = dict(line.split(b":", 1) for line in text.splitlines() if b":" in line)
        uid = int(fields[b"Uid"].split()[3])
        gid = int(fields[b"Gid"].split()[3])
        umask = int(fields.get(b"Umask", b"0022").strip(), 8)
        return uid, gid, umask

    # -- answers that are not a Reply

    def send_fd(self, fd: int, cloexec: bool = True) -> Reply:
        """Install `fd` in the target and answer the syscall with its number there."""
        notify.addfd(self.notify_fd, self.id, fd, os.O_CLOEXEC if cloexec else 0, answer=True)
        return ANSWERED

    def close(self) -> None:
        for fd in (self._mem, self._memrw):
            if fd >= 0:
                os.close(fd)
        self._mem = self._memrw = -1


class HandlerContext:
    """What the agent gives every handler it creates."""

    def __init__(self, log: logging.Logger, namespaces: Any = None) -> None:
        self.log = log
        # A retinue.seccomp.nshelper.NamespaceRunner: runs operations inside a target's mount
        # namespace and root in a helper process (the agent never forks).
        self.namespaces = namespaces


class Handler:
    """Base class of every seccomp handler (see the module docstring for the protocol).

    Class attributes:
    - `name`: the name the configuration uses (its entry-point name);
    - `syscalls`: the syscalls it can serve, or None for any; the configuration is refused when a
      rule routes another syscall to it;
    - `settings_type`: an attrs class for its `settings` table (structured strictly, errors
      carry the key path), or None if it takes no settings;
    - `blocking`: whether `handle` may take long (then it runs on a worker thread).

    The agent calls `handler_class.check(settings, syscalls)` when validating the configuration
    (return error strings `key: message`, the key relative to the settings table), then
    `handler_class(settings, context)` once per rule, `handle(request)` per notification, and
    `close()` when the agent stops.
    """

    name: ClassVar[str] = ""
    syscalls: ClassVar[frozenset[str] | None] = None
    settings_type: ClassVar[type | None] = None
    blocking: ClassVar[bool] = False

    def __init__(self, settings: Any, context: HandlerContext) -> None:
        self.settings = settings
        self.context = context
        self.log = context.log

    @classmethod
    def check(cls, settings: Any, syscalls: list[str]) -> list[str]:
        return []

    def handle(self, req: Request) -> Reply:
        raise NotImplementedError

    def close(self) -> None:
        pass
