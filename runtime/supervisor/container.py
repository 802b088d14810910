"""The app container's life as the supervisor sees it: its init (pid and pidfd), and whether it
was created, is paused, or has exited.

`AppContainer` knows no unit and no request: it learns init's pid (from runc's createRuntime
hook, or by asking the lower runtime), watches it through a pidfd, and calls `on_exit` once when
it has exited. Runners (runner.py) start services in it; the Supervisor (supervisor.py) decides
what its end means for them.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
from collections.abc import Callable
from typing import Any

from . import procs

PF_EXITING = 0x4  # include/linux/sched.h


class AppContainer:
    """One app container: its id, its state directory, the lower runtime that created it, and
    its init once known."""

    def __init__(
        self, container_id: str, container_dir: str, lower: list[str], on_exit: Callable[[], None]
    ) -> None:
        self.id = container_id
        self.dir = container_dir
        self.lower = lower  # the lower runtime and its global options
        self.on_exit = on_exit  # called once init has exited
        self.init_pid: int | None = None
        # A second pidfd of init, polled when a service dies to tell "the container ended".
        self.init_pidfd: int | None = None
        self._watched: list[int] = []
        self.reaper: procs.Reaper  # once the supervisor's loop runs

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._watched:
            loop.remove_reader(fd)
            os.close(fd)
        self._watched.clear()
        if self.init_pidfd is not None:
            os.close(self.init_pidfd)
            self.init_pidfd = None

    def watch_pid(self, pid: int, on_exit: Callable[[], None], pidfd: int | None = None) -> None:
        """Call on_exit() once `pid` has exited (pidfd: no polling, works for non-children);
        `pidfd`, when given, is one already known to be that process's (it is duplicated)."""
        loop = asyncio.get_running_loop()
        try:
            fd = os.dup(pidfd) if pidfd is not None else os.pidfd_open(pid)
        except ProcessLookupError:
            loop.call_soon(on_exit)
            return
        self._watched.append(fd)

        def readable() -> None:
            loop.remove_reader(fd)
            on_exit()

        loop.add_reader(fd, readable)

    async def watch_creator(self, creator_pid: int) -> bool:
        """Once the process running the lower create has exited: whether the container exists
        (False: the lower create failed, there is no container to serve)."""
        exited = asyncio.Event()
        self.watch_pid(creator_pid, exited.set)
        await exited.wait()
        if self.init_pid is None:
            state = await self.lower_state()
            if state is None:
                return False
            await self.init_from_state(state)
        return True

    async def lower_state(self) -> dict[str, Any] | None:
        status, out = await procs.run(self.reaper, [*self.lower, "state", self.id], timeout=30)
        if status != 0:
            return None
        try:
            state: dict[str, Any] = json.loads(out)
        except ValueError:
            return None
        return state

    def lower_knows(self) -> bool:
        """Whether the lower runtime still has the container (its directory under --root)."""
        return os.path.isdir(os.path.join(lower_root(self.lower), self.id))

    async def init_from_state(self, state: dict[str, Any]) -> None:
        """Take note of init as `runc state` reported it. That pid may be stale by the time its
        pidfd is open (the container ended and the number went to another process): open the
        pidfd first, then ask again; runc checks the pid's start time, so the same answer means
        the pidfd is init's."""
        pid = state.get("pid")
        if self.init_pid is not None or not isinstance(pid, int) or pid <= 0:
            return
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        again = await self.lower_state()
        if (
            self.init_pid is not None  # a hook told us meanwhile
            or again is None
            or again.get("pid") != pid
            or again.get("status") not in ("created", "running", "paused")
        ):
            os.close(pidfd)
            return
        self.created(pid, pidfd)

    def created(self, pid: object, pidfd: int | None = None) -> None:
        """Take note of the container's init, given as runc reports it (a stopped container's
        state says pid 0). Without `pidfd`, the caller vouches that the pid cannot have been
        reused (a hook: runc holds init unreaped while the hook runs)."""
        if self.init_pid is not None or not isinstance(pid, int) or pid <= 0:
            if pidfd is not None:
                os.close(pidfd)
            return
        if pidfd is None:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                pidfd = None
        self.init_pid = pid
        self.init_pidfd = pidfd
        self.watch_pid(pid, self.on_exit, pidfd)

    def exited(self) -> bool:
        """Whether init has exited (or is exiting); False before it is known."""
        if self.init_pid is None:
            return False
        if self.init_pidfd is None:
            return True
        poller = select.poll()
        poller.register(self.init_pidfd, select.POLLIN)
        if poller.poll(0):
            return True
        # An exiting PID-namespace init kills the namespace and waits for it before its pidfd
        # becomes readable: the services die while init is still "alive" but PF_EXITING.
        try:
            with open(f"/proc/{self.init_pid}/stat") as f:
                flags = int(f.read().rpartition(")")[2].split()[6])
        except (OSError, ValueError, IndexError):
            return True
        return bool(flags & PF_EXITING)

    async def paused(self) -> bool:
        """Whether the container is frozen (a frozen process acts on no signal until resumed)."""
        if self.init_pid is None or self.exited():
            return False
        state = await self.lower_state()
        return state is not None and state.get("status") == "paused"

    def signal(self, sig: int) -> bool:
        """Signal init through its pidfd; False if there is none or it has exited."""
        if self.init_pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(self.init_pidfd, sig)
        except ProcessLookupError:
            return False
        return True

    async def kill_waiting(self) -> None:
        """SIGKILL the container's init and wait until it has exited (stopped for the engine)."""
        pidfd = self.init_pidfd
        if pidfd is None:
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            # Replying before init has exited would let the engine ask for the task's status
            # while it still reads `created`.
            await asyncio.wait_for(exited, 10)
        except (ProcessLookupError, TimeoutError):
            pass
        finally:
            loop.remove_reader(pidfd)

    def main_child(self) -> int | None:
        """retinue-init's main process: its oldest child (forked before any service existed;
        every other child is an orphan re-parented to init later)."""
        init_pid = self.init_pid
        if init_pid is None:
            return None
        try:
            with open(f"/proc/{init_pid}/task/{init_pid}/children") as f:
                children = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return None
        oldest: tuple[int, int] | None = None
        for child in children:
            try:
                with open(f"/proc/{child}/stat") as f:
                    started = int(f.read().rpartition(")")[2].split()[19])
            except (OSError, ValueError, IndexError):
                continue
            if oldest is None or started < oldest[0]:
                oldest = (started, child)
        return None if oldest is None else oldest[1]


def lower_root(lower: list[str]) -> str:
    """The lower runtime's --root in its argv (the shim always passes one)."""
    return lower[lower.index("--root") + 1] if "--root" in lower[:-1] else "/run/runc"
