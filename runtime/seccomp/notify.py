"""The kernel's seccomp user-notification interface on x86_64, and the target's memory. No policy.

Everything here is a thin, checked wrapper of one kernel operation. The rules that make it safe
(learned the hard way, see research/seccomp.md §6) live here too:

- RECV needs a zeroed 80-byte buffer, and a mutable one: with `bytes` fcntl.ioctl returns a copy
  and the kernel's answer is lost.
- `fcntl.ioctl` is not retried on EINTR (PEP 475 does not cover it).
- ENOENT is normal: the target was killed or signalled while its notification was pending.
- The target's memory is read page by page (one pread across an unmapped page fails even for a
  short string), and the notification id is checked with ID_VALID after opening /proc/PID/mem
  (the pid was not recycled) and after reading (the request is still live before acting).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

# ioctl numbers: _IOWR('!', 0..3, ...) with the x86_64 struct sizes 80/24/8/24.
IOCTL_RECV = 0xC0502100
IOCTL_SEND = 0xC0182101
IOCTL_ID_VALID = 0x40082102
# Kernels before 5.17 only know the ID_VALID number from before the direction fix.
IOCTL_ID_VALID_OLD = 0x80082102
IOCTL_ADDFD = 0x40182103

FLAG_CONTINUE = 1
ADDFD_FLAG_SETFD = 1
ADDFD_FLAG_SEND = 2

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

SYS_SECCOMP = 317
SECCOMP_GET_NOTIF_SIZES = 3

PAGE = os.sysconf("SC_PAGE_SIZE")
PATH_MAX = 4096

# struct seccomp_notif {u64 id; u32 pid; u32 flags; struct seccomp_data {int nr; u32 arch;
# u64 instruction_pointer; u64 args[6]}}
_NOTIF = struct.Struct("=QIIiIQ6Q")
# struct seccomp_notif_resp {u64 id; s64 val; s32 error; u32 flags}
_RESP = struct.Struct("=QqiI")
# struct seccomp_notif_addfd {u64 id; u32 flags; u32 srcfd; u32 newfd; u32 newfd_flags}
_ADDFD = struct.Struct("=QIIII")
_U64 = struct.Struct("=Q")

assert _NOTIF.size == 80 and _RESP.size == 24 and _ADDFD.size == 24


class TargetGone(Exception):
    """The notification is no longer live (the target died, or was signalled and will retry)."""


class SyscallError(Exception):
    """The target's syscall must fail with this errno (e.g. EFAULT for a bad pointer).

    Not an internal error of the agent: this is the answer the real syscall would have given.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason or os.strerror(code))
        self.errno = code
        self.reason = reason or os.strerror(code)


class Notification:
    """One decoded `struct seccomp_notif`."""

    __slots__ = ("arch", "args", "flags", "id", "ip", "nr", "pid")

    def __init__(self, buf: bytes | bytearray) -> None:
        (self.id, self.pid, self.flags, self.nr, self.arch, self.ip, *args) = _NOTIF.unpack(buf)
        self.args: tuple[int, ...] = tuple(args)

    def __repr__(self) -> str:
        return f"Notification(id={self.id:#x}, pid={self.pid}, nr={self.nr}, arch={self.arch:#x})"


def check_sizes() -> None:
    """Refuse to run if the kernel's structs are not the ones this module packs."""
    libc = ctypes.CDLL(None, use_errno=True)
    sizes = (ctypes.c_uint16 * 3)()
    if libc.syscall(SYS_SECCOMP, SECCOMP_GET_NOTIF_SIZES, 0, ctypes.byref(sizes)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_GET_NOTIF_SIZES): {os.strerror(err)}")
    if tuple(sizes) != (80, 24, 64):
        raise OSError(errno.ENOTSUP, f"unexpected seccomp notification struct sizes {tuple(sizes)}")


def _live_ioctl(fd: int, request: int, buf: bytearray) -> bool:
    """ioctl on a notify fd, retried on EINTR; False on ENOENT (the notification is gone)."""
    while True:
        try:
            fcntl.ioctl(fd, request, buf, True)
        except InterruptedError:
            continue
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True


def recv(fd: int) -> Notification | None:
    """Receive one notification; None when it vanished before we got it (target killed)."""
    buf = bytearray(_NOTIF.size)
    return Notification(buf) if _live_ioctl(fd, IOCTL_RECV, buf) else None


def send(fd: int, notif_id: int, val: int = 0, error: int = 0, flags: int = 0) -> bool:
    """Answer a notification; False if it is no longer live.

    `error` is a negative errno (a positive one would be returned to the target as a success
    value); CONTINUE needs val == error == 0.
    """
    return _live_ioctl(fd, IOCTL_SEND, bytearray(_RESP.pack(notif_id, val, error, flags)))


_id_valid_number = IOCTL_ID_VALID


def id_valid(fd: int, notif_id: int) -> bool:
    """Whether the notification is still pending (its target alive and still waiting)."""
    global _id_valid_number
    buf = bytearray(_U64.pack(notif_id))
    try:
        return _live_ioctl(fd, _id_valid_number, buf)
    except OSError as e:
        if e.errno != errno.EINVAL or _id_valid_number != IOCTL_ID_VALID:
            raise
    _id_valid_number = IOCTL_ID_VALID_OLD
    return _live_ioctl(fd, _id_valid_number, buf)


def addfd(fd: int, notif_id: int, srcfd: int, newfd_flags: int = 0, answer: bool = True) -> int:
    """Install `srcfd` in the target; returns its number there.

    With `answer`, the kernel also answers the notification with that number, atomically.
    """
    flags = ADDFD_FLAG_SEND if answer else 0
    buf = bytearray(_ADDFD.pack(notif_id, flags, srcfd, 0, newfd_flags))
    try:
        return int(fcntl.ioctl(fd, IOCTL_ADDFD, buf, True))
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise TargetGone() from None
        raise


def is_notify_fd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:seccomp notify"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The target's memory


def open_memory(notify_fd: int, notif_id: int, pid: int, write: bool = False) -> int:
    """Open /proc/PID/mem of the notifying task, proven to be that task by ID_VALID."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC
    try:
        mem = os.open(f"/proc/{pid}/mem", flags)
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGone() from None
    if not id_valid(notify_fd, notif_id):
        os.close(mem)
        raise TargetGone()
    return mem


def _pread(mem: int, size: int, addr: int) -> bytes:
    # pread's offset is a signed off_t; user addresses are far below 2**63 anyway.
    if addr < 0 or addr + size >= 1 << 63:
        raise SyscallError(errno.EFAULT, f"bad address {addr:#x}")
    try:
        return os.pread(mem, size, addr)
    except OSError as e:
        # EIO: unmapped page; EFAULT/EINVAL: non-canonical address.
        if e.errno in (errno.EIO, errno.EFAULT, errno.EINVAL, errno.EOVERFLOW):
            raise SyscallError(errno.EFAULT, f"cannot read target memory at {addr:#x}") from None
        raise


def read_bytes(mem: int, addr: int, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        here = addr + len(out)
        chunk = _pread(mem, min(size - len(out), PAGE - here % PAGE), here)
        if not chunk:  # the mm is gone (exit or exec)
            raise TargetGone()
        out += chunk
    return bytes(out)


def read_cstring(mem: int, addr: int, limit: int = PATH_MAX) -> bytes:
    """A NUL-terminated string of at most `limit` bytes including the NUL.

    ENAMETOOLONG past the limit, EFAULT for NULL or unreadable memory, like the kernel's
    strncpy_from_user for a path.
    """
    if addr == 0:
        raise SyscallError(errno.EFAULT, "NULL pointer")
    out = bytearray()
    while True:
        here = addr + len(out)
        want = min(PAGE - here % PAGE, limit - len(out))
        if want <= 0:
            raise SyscallError(errno.ENAMETOOLONG, f"string longer than {limit - 1} bytes")
        chunk = _pread(mem, want, here)
        if not chunk:
            raise TargetGone()
        end = chunk.find(0)
        if end >= 0:
            out += chunk[:end]
            return bytes(out)
        out += chunk


def write_bytes(mem: int, addr: int, data: bytes) -> None:
    if addr == 0 or addr + len(data) >= 1 << 63:
        raise SyscallError(errno.EFAULT, f"bad address {addr:#x}")
    try:
        written = os.pwrite(mem, data, addr)
    except OSError as e:
        if e.errno in (errno.EIO, errno.EFAULT, errno.EINVAL):
            raise SyscallError(errno.EFAULT, f"cannot write target memory at {addr:#x}") from None
        raise
    if written != len(data):
        raise SyscallError(errno.EFAULT, f"short write to target memory at {addr:#x}")
