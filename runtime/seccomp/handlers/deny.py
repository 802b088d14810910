"""`deny`: fail the syscall with a chosen errno, and record it."""

from __future__ import annotations

import attrs

from ..api import Handler, HandlerContext, Reply, Request, errno


@attrs.frozen
class DenySettings:
    errno: str = "EPERM"
    # Record each refusal in the container's log.
    log: bool = True


class Deny(Handler):
    name = "deny"
    settings_type = DenySettings

    def __init__(self, settings: DenySettings, context: HandlerContext) -> None:
        super().__init__(settings, context)
        from ..config import errno_number

        self.reply = errno(errno_number(settings.errno) or 1)

    @classmethod
    def check(cls, settings: DenySettings, syscalls: list[str]) -> list[str]:
        from ..config import errno_number

        if errno_number(settings.errno) is None:
            return [f"errno: expected an errno name such as 'EPERM', got {settings.errno!r}"]
        return []

    def handle(self, req: Request) -> Reply:
        if self.settings.log:
            self.log.info(
                "seccomp deny: container=%s pid=%d syscall=%s errno=%s",
                req.container.id,
                req.pid,
                req.syscall,
                self.settings.errno,
            )
        return self.reply
