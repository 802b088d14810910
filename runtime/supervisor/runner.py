"""How a unit is run: the `Runner` interface, and `ExecRunner`, a process inside the container.

A unit (unit.py) decides when to start, restart and stop; a runner only carries that out in one
place. `ExecRunner` starts the service with the lower runtime's `exec` in its own sub-cgroup of
the container's; another placement (a sibling container, issue 11) is another class with the same
five methods, chosen by the compiled service's "placement".
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .. import cgroups, layout
from . import execerror, probes, procs, readiness

if TYPE_CHECKING:
    from .unit import Context, Unit


class Run:
    """One start of a unit: its main process and how it ends."""

    __slots__ = ("exit", "name", "pid", "pidfd")

    def __init__(self, name: str, pid: int, pidfd: int | None, exit: asyncio.Future[int]) -> None:
        self.name = name
        self.pid = pid
        # Signals go through the pidfd, never through a pid the reaper may already have
        # released (and the kernel handed to another process).
        self.pidfd = pidfd
        self.exit = exit  # resolves to the main process's wait status

    def signal(self, sig: int) -> None:
        """To the main process, through its pidfd: nothing once it has been reaped."""
        if self.pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Once the main process has been reaped: its number is no longer its own."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class StartFailed(Exception):
    """The unit could not be started; `status` stands for its exit in the restart policy."""

    def __init__(self, status: int, why: str, permanent: bool = False) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        # True when every retry would fail the same way (a missing command or cwd).
        self.permanent = permanent


class Runner(Protocol):
    async def start(self, unit: Unit) -> Run:
        """Start the unit's main process; raises StartFailed."""
        ...

    async def probe(self, unit: Unit, argv: list[str], timeout: float) -> int:
        """Run a readiness probe command where the unit runs; its wait status."""
        ...

    async def command(
        self, unit: Unit, which: str, timeout: float, output: Callable[[bytes], None]
    ) -> tuple[int | None, str]:
        """Run one of the unit's commands where it runs ("probe": ready.exec, "health":
        health.exec, "drain": stop.exec), for at most `timeout` seconds, then kill it and what it
        started. (wait status, "") once it exited; (None, why) if it never started or hung."""
        ...

    def netns(self, run: Run) -> int | None:
        """A descriptor of the run's network namespace for tcp/http probes (a pidfd will do);
        None once the run has ended."""
        ...

    def signal(self, run: Run, sig: int) -> None:
        """Signal the run's main process (nothing once it has exited)."""
        ...

    def kill_all(self, run: Run) -> None:
        """SIGKILL everything left of the run, forks included; never waits."""
        ...

    async def cleanup(self, unit: Unit) -> None:
        """After the unit's last run."""
        ...

    def describe(self, unit: Unit) -> dict[str, Any]:
        """What `retinue status` shows of where the unit runs, beyond its state."""
        ...


class ExecRunner:
    """`runc exec --detach --process process/NAME.json --cgroup retinue-NAME ID`.

    One per container: the container's cgroup directories are read from its init once and
    shared by every unit's sub-cgroup.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # hierarchy -> directory; None until the first start reads them, {} where unknown.
        self.cgroups: dict[str, str] | None = None

    async def start(self, unit: Unit) -> Run:
        ctx = self.ctx
        pid_file = os.path.join(ctx.dir, layout.pid_file(unit.name))
        process_file = os.path.join(ctx.dir, layout.process_file(unit.name))
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        argv = [
            *ctx.lower,
            "exec",
            "--detach",
            "--pid-file",
            pid_file,
            "--process",
            process_file,
            *self.cgroup_args(unit),
            ctx.id,
        ]
        wfd = unit.open_output()
        try:
            pid = procs.spawn(argv, stdout=wfd)
        finally:
            os.close(wfd)
        status = await ctx.reaper.wait(pid)
        if status != 0:
            unit.drain_output()
            why = execerror.permanent(unit.log.tail(4096).decode("utf-8", "replace"))
            if why:
                raise StartFailed(status, f"could not be started: {why}", permanent=True)
            raise StartFailed(
                status,
                f"could not be started ({ctx.lower[0]} exec {procs.describe_status(status)})",
            )
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            raise StartFailed(1 << 8, "could not be started (no pid file)") from None
        return Run(unit.name, pid, ctx.reaper.pidfd(pid), ctx.reaper.wait(pid))

    async def probe(self, unit: Unit, argv: list[str], timeout: float) -> int:
        # `argv` is already in the probe's process file, written by the shim with the service's
        # user, env and capabilities; the command line only names that file.
        status, _ = await self.command(unit, "probe", timeout, lambda data: None)
        return 1 if status is None else status

    async def command(
        self, unit: Unit, which: str, timeout: float, output: Callable[[bytes], None]
    ) -> tuple[int | None, str]:
        # Detached, so that a command that hangs is ours to kill: killing a `runc exec` that
        # waits for its process leaves the process running in the container.
        ctx = self.ctx
        pid_file = os.path.join(ctx.dir, layout.pid_file(unit.name, which))
        process = os.path.join(ctx.dir, layout.process_file(unit.name, which))
        argv = [*ctx.lower, "exec", "--detach", "--pid-file", pid_file, "--process", process,
                ctx.id]
        return await probes.exec_inside(ctx.reaper, argv, pid_file, timeout, output)

    def netns(self, run: Run) -> int | None:
        return run.pidfd

    def signal(self, run: Run, sig: int) -> None:
        run.signal(sig)

    def kill_all(self, run: Run) -> None:
        """The main process and what it forked: its sub-cgroup, else (no cgroup) the main
        process's descendants, as systemd's control-group kill mode."""
        self.signal(run, signal.SIGKILL)
        if self.cgroups:
            cgroups.kill_all(self.cgroups, run.name, signal.SIGKILL)
        elif run.pidfd is not None:
            _kill_tree(run.pid, signal.SIGKILL)

    async def cleanup(self, unit: Unit) -> None:
        # The sub-cgroups go all at once, after the state directory (see remove_cgroups).
        return None

    def describe(self, unit: Unit) -> dict[str, Any]:
        return {}

    def remove_cgroups(self, names: list[str]) -> None:
        if self.cgroups:
            cgroups.remove_service_cgroups(self.cgroups, names)

    def recorded_cgroups(self) -> dict[str, str] | None:
        """The container's cgroups as runc recorded them at create, which is what its
        `exec --cgroup` joins (init's current cgroup may differ: something may have moved it);
        None when the lower runtime keeps no such record (crun)."""
        try:
            with open(os.path.join(lower_root(self.ctx.lower), self.ctx.id, "state.json")) as f:
                paths = json.load(f).get("cgroup_paths")
            with open("/proc/self/mountinfo") as f:
                mountinfo = f.read()
        except (OSError, ValueError, AttributeError):
            return None
        return cgroups.recorded_dirs(paths, mountinfo) if isinstance(paths, dict) else None

    def cgroup_args(self, unit: Unit) -> list[str]:
        """`--cgroup retinue-NAME`: the service runs in its own sub-cgroup of the container's,
        so that whatever it forks (a daemon that left its process tree) is found at its stop.
        Empty where the container's cgroups are unknown; raises StartFailed on error."""
        if self.cgroups is None:
            self.cgroups = self.recorded_cgroups()
            init_pid = self.ctx.init_pid()
            if self.cgroups is None and init_pid is not None:
                try:
                    self.cgroups = cgroups.container_dirs(init_pid)
                except OSError:
                    pass
            if self.cgroups is None:
                self.cgroups = {}
        name = unit.name
        limits = unit.spec.get("resources") or {}
        if not self.cgroups:
            if any(limits.values()):
                unit.note("[resources] not applied: the container's cgroups are not known")
            return []
        try:
            cgroups.make_service_cgroup(self.cgroups, name)
            # Its own limits, inside the container's (which still bound it, as they bound the
            # container's own processes).
            if any(limits.values()) and not cgroups.limit_service_cgroup(
                self.cgroups, name, limits
            ):
                # cgroup v2: the container's cgroup holds processes, so it cannot delegate
                # controllers to a child (no internal processes).
                unit.note("[resources] not applied: no controller in the service's sub-cgroup")
        except (cgroups.CgroupError, OSError) as e:
            raise StartFailed(
                1 << 8, f"could not be started (cannot create its cgroup: {e})"
            ) from None
        return ["--cgroup", cgroups.SUB_PREFIX + name]


def lower_root(lower: list[str]) -> str:
    """The lower runtime's --root in its argv (the shim always passes one)."""
    return lower[lower.index("--root") + 1] if "--root" in lower[:-1] else "/run/runc"


def _kill_tree(pid: int, sig: int) -> None:
    """Signal every process descended from `pid` (while `pid` is alive, its descendants'
    parent chains lead to it and to no recycled number)."""
    victims = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid and readiness.is_descendant(int(entry), pid):
            victims.append(int(entry))
    for victim in victims:
        try:
            os.kill(victim, sig)
        except ProcessLookupError:
            pass
