"""How a unit is run: the `Runner` interface, `Run`, and `ExecRunner` (a process inside the
container).

A unit (unit.py) decides when to start, restart and stop; a runner only carries that out in one
place, and knows nothing of units: it is given a service's name, its compiled definition and the
write end of the pipe that feeds its log, and hands back a `Run`. `ExecRunner` starts the service
with the lower runtime's `exec` in its own sub-cgroup of the container's; `ContainerRunner`
(containerrunner.py) as a sibling container. Which one runs a unit is the compiled service's
"placement". A runner sees the container through `AppContainer` (container.py).

What a runner has to say while it starts a service (a limit it could not apply) it writes to
that pipe as a line of the service's log (`note_line`); what it learns when a run ends (an OOM
kill) it leaves in `Run.notes`, and why a start failed in `StartFailed`, whose `explain` may
refine it from what the start wrote to the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .. import layout
from ..host import cgroups
from . import execerror, probes, procs, readiness
from .container import lower_root

if TYPE_CHECKING:
    from ..compiled import CompiledService
    from .container import AppContainer

# What a runner is asked to run beside the service itself, each from its own process file:
# ready.exec, health.exec and stop.exec.
COMMANDS = ("probe", "health", "drain")


def note_line(text: str) -> bytes:
    """A line of retinue's own in a service's log (see Unit.note; last_output skips them)."""
    return f"retinue: {time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n".encode()


def last_output(log_tail: str) -> str:
    """The last line the service itself wrote, from the end of its log."""
    lines = [
        line
        for line in log_tail.splitlines()
        if line.strip() and not line.startswith("retinue: ")
    ]
    return lines[-1][:200] if lines else "(none)"


def recorded_cgroup_paths(app: AppContainer) -> tuple[dict[str, Any], str] | None:
    """The container's cgroup paths as runc recorded them at create (its state.json's
    `cgroup_paths`), with this mount namespace's mountinfo to map them to hierarchies; None
    when the lower runtime keeps no such record (crun)."""
    try:
        with open(os.path.join(lower_root(app.lower), app.id, "state.json")) as f:
            paths = json.load(f).get("cgroup_paths")
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    except (OSError, ValueError, AttributeError):
        return None
    return (paths, mountinfo) if isinstance(paths, dict) else None


class Run:
    """One start of a unit: its main process and how it ends."""

    __slots__ = ("exit", "name", "notes", "pid", "pidfd")

    def __init__(self, name: str, pid: int, pidfd: int | None, exit: asyncio.Future[int]) -> None:
        self.name = name
        self.pid = pid
        # Signals go through the pidfd, never through a pid the reaper may already have
        # released (and the kernel handed to another process).
        self.pidfd = pidfd
        self.exit = exit  # resolves to the main process's wait status
        # What the runner learnt of the run's end (an OOM kill), for the service's log.
        self.notes: list[str] = []

    def signal(self, sig: int) -> None:
        """To the main process, through its pidfd: nothing once it has been reaped."""
        if self.pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass

    def netns(self) -> int | None:
        """A descriptor of the run's network namespace for tcp/http probes: its pidfd will do
        (an exec'd service and a sibling both live in the app's network namespace); None once
        the run has ended."""
        return self.pidfd

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
        # Whether what the start wrote to the service's log says more (see explain).
        self.wants_output = False

    def explain(self, log_tail: str) -> None:
        """Refine `why` from the end of the service's log; the unit calls it, with what the
        failed start wrote there, when `wants_output`."""


class ExecFailed(StartFailed):
    """The lower runtime's exec failed: its own words in the log may say no retry can help."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(status, why)
        self.wants_output = True

    def explain(self, log_tail: str) -> None:
        permanent = execerror.permanent(log_tail)
        if permanent:
            self.why = f"could not be started: {permanent}"
            self.permanent = True


class CreateFailed(StartFailed):
    """The lower runtime's create of a sibling failed: its last line of output says why."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(status, why)
        self.wants_output = True

    def explain(self, log_tail: str) -> None:
        self.why = f"{self.why}: {last_output(log_tail)})"


class Runner(Protocol):
    async def start(self, name: str, spec: CompiledService, out: int) -> Run:
        """Start the service's main process with its stdout and stderr on `out` (the runner
        does not close it); raises StartFailed."""
        ...

    async def exec(
        self, run: Run, which: str, timeout: float, output: Callable[[bytes], None]
    ) -> tuple[int | None, str]:
        """Run one of the service's COMMANDS where the run runs ("probe": ready.exec, "health":
        health.exec, "drain": stop.exec), for at most `timeout` seconds, then kill it and what
        it started. (wait status, "") once it exited; (None, why) if it never started or hung."""
        ...

    def kill_all(self, run: Run) -> None:
        """SIGKILL everything left of the run, forks included; never waits."""
        ...

    async def cleanup(self, name: str) -> None:
        """After the service's last run."""
        ...

    def describe(self, name: str) -> dict[str, Any]:
        """What `retinue status` shows of where the service runs, beyond its state."""
        ...


class ExecRunner:
    """`runc exec --detach --process process/NAME.json --cgroup retinue-NAME ID`.

    One per container: the container's cgroup directories are read from its init once and
    shared by every unit's sub-cgroup.
    """

    def __init__(self, container: AppContainer) -> None:
        self.container = container
        # hierarchy -> directory; None until the first start reads them, {} where unknown.
        self.cgroups: dict[str, str] | None = None

    async def start(self, name: str, spec: CompiledService, out: int) -> Run:
        app = self.container
        pid_file = os.path.join(app.dir, layout.pid_file(name))
        process_file = os.path.join(app.dir, layout.process_file(name))
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        argv = [
            *app.lower,
            "exec",
            "--detach",
            "--pid-file",
            pid_file,
            "--process",
            process_file,
            *self.cgroup_args(name, spec, out),
            app.id,
        ]
        pid = procs.spawn(argv, stdout=out)
        status = await app.reaper.wait(pid)
        if status != 0:
            raise ExecFailed(
                status,
                f"could not be started ({app.lower[0]} exec {procs.describe_status(status)})",
            )
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            raise StartFailed(1 << 8, "could not be started (no pid file)") from None
        return Run(name, pid, app.reaper.pidfd(pid), app.reaper.wait(pid))

    async def exec(
        self, run: Run, which: str, timeout: float, output: Callable[[bytes], None]
    ) -> tuple[int | None, str]:
        # Detached, so that a command that hangs is ours to kill: killing a `runc exec` that
        # waits for its process leaves the process running in the container. The command, with
        # the service's user, env and capabilities, is in its process file, written by the shim.
        app = self.container
        pid_file = os.path.join(app.dir, layout.pid_file(run.name, which))
        process = os.path.join(app.dir, layout.process_file(run.name, which))
        argv = [*app.lower, "exec", "--detach", "--pid-file", pid_file, "--process", process,
                app.id]
        return await probes.exec_inside(app.reaper, argv, pid_file, timeout, output)

    def kill_all(self, run: Run) -> None:
        """The main process and what it forked: its sub-cgroup, else (no cgroup) the main
        process's descendants, as systemd's control-group kill mode."""
        run.signal(signal.SIGKILL)
        if self.cgroups:
            cgroups.kill_all(self.cgroups, run.name, signal.SIGKILL)
        elif run.pidfd is not None:
            _kill_tree(run.pid, signal.SIGKILL)

    async def cleanup(self, name: str) -> None:
        # The sub-cgroups go all at once, after the state directory (see remove_cgroups).
        return None

    def describe(self, name: str) -> dict[str, Any]:
        return {}

    def remove_cgroups(self, names: list[str]) -> None:
        if self.cgroups:
            cgroups.remove_service_cgroups(self.cgroups, names)

    def recorded_cgroups(self) -> dict[str, str] | None:
        """The container's cgroups as runc recorded them at create, which is what its
        `exec --cgroup` joins (init's current cgroup may differ: something may have moved it);
        None when the lower runtime keeps no such record (crun)."""
        recorded = recorded_cgroup_paths(self.container)
        return cgroups.recorded_dirs(*recorded) if recorded is not None else None

    def cgroup_args(self, name: str, spec: CompiledService, out: int) -> list[str]:
        """`--cgroup retinue-NAME`: the service runs in its own sub-cgroup of the container's,
        so that whatever it forks (a daemon that left its process tree) is found at its stop.
        Empty where the container's cgroups are unknown; raises StartFailed on error. What
        could not be applied is said in the service's log (`out`)."""
        if self.cgroups is None:
            self.cgroups = self.recorded_cgroups()
            init_pid = self.container.init_pid
            if self.cgroups is None and init_pid is not None:
                try:
                    self.cgroups = cgroups.container_dirs(init_pid)
                except OSError:
                    pass
            if self.cgroups is None:
                self.cgroups = {}
        limits = spec.get("resources") or {}
        if not self.cgroups:
            if any(limits.values()):
                os.write(out, note_line(
                    "[resources] not applied: the container's cgroups are not known"))
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
                os.write(out, note_line(
                    "[resources] not applied: no controller in the service's sub-cgroup"))
        except (cgroups.CgroupError, OSError) as e:
            raise StartFailed(
                1 << 8, f"could not be started (cannot create its cgroup: {e})"
            ) from None
        return ["--cgroup", cgroups.SUB_PREFIX + name]


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
