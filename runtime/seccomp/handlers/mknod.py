"""`mknod`: create allowlisted device nodes for a container that lacks CAP_MKNOD.

Only character and block devices are handled (a FIFO, socket or regular file needs no
capability: those CONTINUE to the kernel). A device is created when its type, major and minor
and the path it resolves to inside the container all match an `allow` entry; anything else fails
with EPERM, as the kernel would. The node is made in the container's mount namespace and root,
by a helper process, with the caller's umask, owned by its fsuid/fsgid.

    [rule.settings]
    allow = [
      { path = "/dev/fuse", type = "c", major = 10, minor = 229 },
      { path = "/dev/net/tun", type = "c", major = 10, minor = 200 },
    ]
"""

from __future__ import annotations

import errno as E
import os
import stat

import attrs

from ..api import CONTINUE, Handler, HandlerContext, Reply, Request, errno, value


@attrs.frozen
class Device:
    path: str
    type: str
    major: int
    minor: int


@attrs.frozen
class MknodSettings:
    allow: list[Device] = attrs.field(factory=list)


def decode_dev(dev: int) -> tuple[int, int]:
    """The kernel's new_decode_dev of the syscall's 32-bit dev argument."""
    dev &= 0xFFFFFFFF
    return (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


class Mknod(Handler):
    name = "mknod"
    syscalls = frozenset({"mknod", "mknodat"})
    settings_type = MknodSettings
    blocking = True

    def __init__(self, settings: MknodSettings, context: HandlerContext) -> None:
        super().__init__(settings, context)
        self.allowed: dict[tuple[int, int, int], list[str]] = {}
        for d in settings.allow:
            kind = stat.S_IFCHR if d.type == "c" else stat.S_IFBLK
            self.allowed.setdefault((kind, d.major, d.minor), []).append(d.path)

    @classmethod
    def check(cls, settings: MknodSettings, syscalls: list[str]) -> list[str]:
        from ...tomlmodel import check_abs

        errors: list[str] = []
        for i, d in enumerate(settings.allow):
            at = f"allow[{i}]"
            errors += check_abs(f"{at}.path", d.path, "container path")
            if d.type not in ("c", "b"):
                errors.append(f"{at}.type: expected 'c' (character) or 'b' (block), got {d.type!r}")
            if not 0 <= d.major <= 0xFFF:
                errors.append(f"{at}.major: expected 0 to 4095, got {d.major}")
            if not 0 <= d.minor <= 0xFFFFF:
                errors.append(f"{at}.minor: expected 0 to 1048575, got {d.minor}")
        return errors

    def handle(self, req: Request) -> Reply:
        at = req.syscall == "mknodat"
        mode, dev = (req.args[2], req.args[3]) if at else (req.args[1], req.args[2])
        mode &= 0xFFFFFFFF
        kind = stat.S_IFMT(mode)
        if kind not in (stat.S_IFCHR, stat.S_IFBLK):
            return CONTINUE
        major, minor = decode_dev(dev)
        paths = self.allowed.get((kind, major, minor))
        path = req.read_path(1 if at else 0)
        what = f"{'c' if kind == stat.S_IFCHR else 'b'} {major}:{minor} at {os.fsdecode(path)!r}"
        if not paths:
            self.log.warning(
                "seccomp mknod: container=%s pid=%d refused %s (not allowed)",
                req.container.id,
                req.pid,
                what,
            )
            return errno(E.EPERM)
        if not path:
            return errno(E.ENOENT)
        uid, gid, umask = req.credentials()
        fds = req.namespace_fds(req.args[0] if at and not path.startswith(b"/") else None)
        try:
            reply = self.context.namespaces.run(
                {
                    "op": "mknod",
                    "path": os.fsdecode(path),
                    "mode": kind | (mode & 0o7777),
                    "dev": os.makedev(major, minor),
                    "uid": uid,
                    "gid": gid,
                    "umask": umask,
                    "allow": paths,
                },
                fds,
            )
        finally:
            for fd in fds:
                os.close(fd)
        code = int(reply.get("errno", E.EIO))
        if code:
            self.log.warning(
                "seccomp mknod: container=%s pid=%d refused %s: %s",
                req.container.id,
                req.pid,
                what,
                reply.get("error") or os.strerror(code),
            )
            return errno(code)
        self.log.info(
            "seccomp mknod: container=%s pid=%d created %s", req.container.id, req.pid, what
        )
        return value(0)
