"""Child processes under asyncio: spawn with posix_spawn, reap every child on SIGCHLD.

The supervisor is a child subreaper, so a service started with `runc exec --detach` becomes its
child once runc exits. One reaper (`waitpid(-1)`) serves every child: the runc processes it runs
and the services reparented to it. asyncio's own subprocess support is not used because its child
watcher would race with that reaper.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Reaper:
    """Collects exit statuses; `wait(pid)` resolves when that child has exited."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: dict[int, asyncio.Future[int]] = {}
        # Statuses of children nobody waited for yet (a service that exits before its pid file
        # has been read).
        self._early: dict[int, int] = {}
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            future = self._waiters.pop(pid, None)
            if future is None or future.done():  # done: its waiter was cancelled
                self._early[pid] = status
            else:
                future.set_result(status)

    def wait(self, pid: int) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        if pid in self._early:
            future.set_result(self._early.pop(pid))
        else:
            self._waiters[pid] = future
            # The child may have exited between spawn and this registration.
            self.reap()
        return future

    def reaped(self, pid: int) -> bool:
        """Whether `pid` exited and was reaped with nobody waiting yet: the number may already
        belong to another process."""
        return pid in self._early

    def pidfd(self, pid: int) -> int | None:
        """A pidfd of a child this reaper has not released: opened before checking, so a number
        already reaped (and maybe reused) is never taken for the child."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        if self.reaped(pid):
            os.close(fd)
            return None
        return fd

    def close(self) -> None:
        self._loop.remove_signal_handler(signal.SIGCHLD)


def spawn(argv: list[str], stdout: int) -> int:
    """Start argv with stdin on /dev/null, stdout and stderr on `stdout`; returns its pid."""
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stdout, 2),
        ]
        return os.posix_spawn(
            argv[0],
            argv,
            os.environ,
            file_actions=actions,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD),
        )
    finally:
        os.close(devnull)


# Reads of what a finished command left in its pipe: a grandchild that kept the pipe and keeps
# writing would otherwise hold the loop for good.
DRAIN_READS = 64


async def run(
    reaper: Reaper, argv: list[str], timeout: float | None = None, keep: int = 1 << 20
) -> tuple[int, bytes]:
    """Run argv to completion; returns (wait status, combined output, at most its first `keep`
    bytes: a command run inside a container prints what the container wants). Kills it on
    timeout."""
    loop = asyncio.get_running_loop()
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    chunks: list[bytes] = []
    kept = 0

    def take(data: bytes) -> None:
        nonlocal kept
        if kept < keep:
            chunks.append(data[: keep - kept])
            kept += len(chunks[-1])

    def readable() -> None:
        try:
            data = os.read(r, 65536)
        except BlockingIOError:
            return
        if data:
            take(data)
        else:
            loop.remove_reader(r)

    try:
        pid = spawn(argv, stdout=w)
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    os.close(w)
    loop.add_reader(r, readable)
    try:
        try:
            status = await asyncio.wait_for(reaper.wait(pid), timeout)
        except TimeoutError:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            status = await reaper.wait(pid)
            raise
        # Drain what is left without blocking on grandchildren that kept the pipe, nor reading
        # for ever from one that keeps writing.
        for _ in range(DRAIN_READS):
            try:
                data = os.read(r, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            take(data)
        return status, b"".join(chunks)
    finally:
        loop.remove_reader(r)
        os.close(r)
