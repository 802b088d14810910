"""`mount`: perform allowlisted mounts for a container that lacks CAP_SYS_ADMIN.

Only new mounts of the allowed filesystem types, on a target that resolves (inside the
container's root, symlinks followed as the kernel would) to one of the allowed directories or
beneath it, with allowed options. Remounts, binds, moves and propagation changes, other types,
targets, flags or options fail with EPERM, as the kernel would have refused them. The mount is
made in the container's mount namespace by a helper process (fsopen/fsmount/move_mount on the
resolved directory's fd, so nothing is resolved twice), always nosuid and nodev.

    [rule.settings]
    filesystems = ["tmpfs"]
    targets = ["/mnt"]
    options = ["size", "mode", "nr_inodes", "uid", "gid"]
    defaults = { size = "64m" }

Only filesystems with no source device and no namespace of their own are allowed (tmpfs,
ramfs): the helper runs in the host's other namespaces, so e.g. proc or mqueue would show the
host's.
"""

from __future__ import annotations

import errno as E
import os

import attrs

from ..api import Handler, Reply, Request, errno, value

SAFE_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_NOATIME = 1 << 10
MS_NODIRATIME = 1 << 11
MS_SILENT = 1 << 15
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_MGC_MSK = 0xFFFF0000
MS_MGC_VAL = 0xC0ED0000

MOUNT_ATTR_RDONLY = 0x01
MOUNT_ATTR_NOSUID = 0x02
MOUNT_ATTR_NODEV = 0x04
MOUNT_ATTR_NOEXEC = 0x08
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80

_FLAG_ATTRS = {
    MS_RDONLY: MOUNT_ATTR_RDONLY,
    MS_NOSUID: MOUNT_ATTR_NOSUID,
    MS_NODEV: MOUNT_ATTR_NODEV,
    MS_NOEXEC: MOUNT_ATTR_NOEXEC,
    MS_NOATIME: MOUNT_ATTR_NOATIME,
    MS_NODIRATIME: MOUNT_ATTR_NODIRATIME,
    MS_STRICTATIME: MOUNT_ATTR_STRICTATIME,
    MS_SILENT: 0,
    MS_RELATIME: 0,
}
ALLOWED_FLAGS = sum(_FLAG_ATTRS)


def _default_filesystems() -> list[str]:
    return ["tmpfs"]


def _default_targets() -> list[str]:
    return ["/mnt"]


def _default_options() -> list[str]:
    return ["size", "mode", "nr_inodes", "uid", "gid"]


def _default_defaults() -> dict[str, str]:
    return {"size": "64m"}


@attrs.frozen
class MountSettings:
    filesystems: list[str] = attrs.field(factory=_default_filesystems)
    # Directories (inside the container) a mount may be made on, or beneath.
    targets: list[str] = attrs.field(factory=_default_targets)
    # Option names the container may pass (`size=...`); anything else is refused.
    options: list[str] = attrs.field(factory=_default_options)
    # Options added when the container does not give them (a tmpfs without size may fill RAM).
    defaults: dict[str, str] = attrs.field(factory=_default_defaults)


class Mount(Handler):
    name = "mount"
    syscalls = frozenset({"mount"})
    settings_type = MountSettings
    blocking = True

    @classmethod
    def check(cls, settings: MountSettings, syscalls: list[str]) -> list[str]:
        from ...tomlmodel import check_abs

        errors: list[str] = []
        for i, fs in enumerate(settings.filesystems):
            if fs not in SAFE_FILESYSTEMS:
                errors.append(
                    f"filesystems[{i}]: {fs!r} is not one retinue can mount for a container "
                    f"(allowed: {', '.join(sorted(SAFE_FILESYSTEMS))})"
                )
        if not settings.targets:
            errors.append("targets: empty; name at least one directory")
        for i, target in enumerate(settings.targets):
            errors += check_abs(f"targets[{i}]", target, "container directory")
            if target == "/":
                errors.append(f"targets[{i}]: mounting anywhere (/) is not allowed")
        for i, opt in enumerate(settings.options):
            if not opt or any(c in opt for c in ",= ") or opt == "source":
                errors.append(f"options[{i}]: expected an option name, got {opt!r}")
        for key, val in settings.defaults.items():
            if not key or any(c in key for c in ",= ") or "," in val:
                errors.append(f"defaults.{key}: expected an option name and a value without ','")
        return errors

    def handle(self, req: Request) -> Reply:
        flags = req.args[3] & 0xFFFFFFFFFFFFFFFF
        if flags & MS_MGC_MSK == MS_MGC_VAL:
            flags &= ~MS_MGC_MSK
        target = req.read_path(1)
        fstype = req.read_string(req.args[2], 256) if req.args[2] else b""
        source = req.read_string(req.args[0]) if req.args[0] else b"none"
        data = req.read_string(req.args[4], os.sysconf("SC_PAGE_SIZE")) if req.args[4] else b""
        what = (
            f"{fstype.decode(errors='replace')} on {os.fsdecode(target)!r} flags {flags:#x} "
            f"data {os.fsdecode(data)!r}"
        )
        refusal = self._refusal(flags, fstype, data)
        if refusal:
            self.log.warning(
                "seccomp mount: container=%s pid=%d refused %s: %s",
                req.container.id,
                req.pid,
                what,
                refusal,
            )
            return errno(E.EPERM)
        options = self._options(data)
        attrs_ = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
        for flag, attr in _FLAG_ATTRS.items():
            if flags & flag:
                attrs_ |= attr
        fds = req.namespace_fds()
        try:
            reply = self.context.namespaces.run(
                {
                    "op": "mount",
                    "source": os.fsdecode(source),
                    "target": os.fsdecode(target),
                    "fstype": fstype.decode(),
                    "options": options,
                    "attrs": attrs_,
                    "prefixes": list(self.settings.targets),
                },
                fds,
            )
        finally:
            for fd in fds:
                os.close(fd)
        code = int(reply.get("errno", E.EIO))
        if code:
            self.log.warning(
                "seccomp mount: container=%s pid=%d refused %s: %s",
                req.container.id,
                req.pid,
                what,
                reply.get("error") or os.strerror(code),
            )
            return errno(code)
        self.log.info(
            "seccomp mount: container=%s pid=%d mounted %s at %s",
            req.container.id,
            req.pid,
            what,
            reply.get("path"),
        )
        return value(0)

    def _refusal(self, flags: int, fstype: bytes, data: bytes) -> str:
        if flags & ~ALLOWED_FLAGS:
            return f"flags {flags & ~ALLOWED_FLAGS:#x} not allowed"
        if fstype.decode(errors="replace") not in self.settings.filesystems:
            return "filesystem type not allowed"
        for item in data.split(b","):
            key = item.partition(b"=")[0].decode(errors="replace")
            if item and key not in self.settings.options:
                return f"option {key!r} not allowed"
        return ""

    def _options(self, data: bytes) -> list[tuple[str, str | None]]:
        given: dict[str, str | None] = {}
        for item in data.decode(errors="replace").split(","):
            if item:
                key, eq, val = item.partition("=")
                given[key] = val if eq else None
        for key, val in self.settings.defaults.items():
            given.setdefault(key, val)
        return list(given.items())
