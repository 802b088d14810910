"""`audit`: record the syscall (container, pid, name, arguments, paths) and let it run.

The "what would break under a stricter profile" mode. CONTINUE lets the kernel run the syscall
as the target made it, with the container's own privileges; on a syscall the container's profile
refused before the merge, that means it now runs, so route `audit` to syscalls the profile allows.
"""

from __future__ import annotations

import time

import attrs

from ..api import CONTINUE, Handler, HandlerContext, Reply, Request
from ..notify import SyscallError

# Arguments that are paths, by syscall: logged as strings read from the target.
PATH_ARGS: dict[str, tuple[int, ...]] = {
    "open": (0,),
    "openat": (1,),
    "openat2": (1,),
    "creat": (0,),
    "mkdir": (0,),
    "mkdirat": (1,),
    "mknod": (0,),
    "mknodat": (1,),
    "rmdir": (0,),
    "unlink": (0,),
    "unlinkat": (1,),
    "rename": (0, 1),
    "renameat": (1, 3),
    "renameat2": (1, 3),
    "link": (0, 1),
    "linkat": (1, 3),
    "symlink": (0, 1),
    "symlinkat": (0, 2),
    "chmod": (0,),
    "fchmodat": (1,),
    "chown": (0,),
    "lchown": (0,),
    "fchownat": (1,),
    "execve": (0,),
    "execveat": (1,),
    "mount": (0, 1, 2),
    "umount2": (0,),
    "chdir": (0,),
    "chroot": (0,),
    "stat": (0,),
    "lstat": (0,),
    "newfstatat": (1,),
    "statx": (1,),
    "access": (0,),
    "faccessat": (1,),
    "faccessat2": (1,),
    "truncate": (0,),
    "readlink": (0,),
    "readlinkat": (1,),
    "setxattr": (0, 1),
    "getxattr": (0, 1),
    "removexattr": (0, 1),
    "pivot_root": (0, 1),
    "swapon": (0,),
    "swapoff": (0,),
    "acct": (0,),
    "utimensat": (1,),
    "statfs": (0,),
    "uselib": (0,),
    "quotactl": (1,),
    "open_tree": (1,),
    "move_mount": (1, 3),
    "fsopen": (0,),
    "inotify_add_watch": (1,),
    "name_to_handle_at": (1,),
}


@attrs.frozen
class AuditSettings:
    # Read path arguments from the target's memory and log them.
    paths: bool = True
    # At most this many lines per second per handler; the rest are counted, not lost.
    limit_per_second: int = 200


class Audit(Handler):
    name = "audit"
    settings_type = AuditSettings

    def __init__(self, settings: AuditSettings, context: HandlerContext) -> None:
        super().__init__(settings, context)
        self._window = 0
        self._count = 0
        self._dropped = 0

    @classmethod
    def check(cls, settings: AuditSettings, syscalls: list[str]) -> list[str]:
        if settings.limit_per_second < 1:
            return [f"limit_per_second: expected at least 1, got {settings.limit_per_second}"]
        return []

    def handle(self, req: Request) -> Reply:
        now = int(time.monotonic())
        if now != self._window:
            if self._dropped:
                self.log.warning(
                    "seccomp audit: %d lines over the limit not written", self._dropped
                )
            self._window, self._count, self._dropped = now, 0, 0
        if self._count >= self.settings.limit_per_second:
            self._dropped += 1
            return CONTINUE
        self._count += 1
        text = ""
        if self.settings.paths:
            parts = []
            for index in PATH_ARGS.get(req.syscall, ()):
                try:
                    parts.append(f" arg{index}={req.read_path(index)!r}")
                except SyscallError as e:
                    parts.append(f" arg{index}=<{e.reason}>")
            text = "".join(parts)
        self.log.info(
            "seccomp audit: container=%s pid=%d syscall=%s args=%s%s",
            req.container.id,
            req.pid,
            req.syscall,
            ",".join(f"{a:#x}" for a in req.args),
            text,
        )
        return CONTINUE
