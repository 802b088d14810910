"""One service's state machine, the way systemd has units.

A `Unit` waits for its predecessors, starts through its `Runner`, checks readiness after each
start, restarts by policy within its start limit, and stops (signal, SIGCONT, timeout, SIGKILL of
what is left) after its dependents. It sees the container only through a `Context`.

Its state is a `State`, changed only by `set_state` (systemd's service_set_state): the one
writer, which refuses a change `TRANSITIONS` does not list, records it and wakes whoever waits
for a change. Why it last failed is a `Result`, kept apart from the state (a failed unit that is
then stopped keeps its result). What differs between a daemon and a one-shot is its `Kind`
(kinds.py).

    waiting -> starting -> running -> ready            a daemon (type = "simple")
    waiting -> starting -> running -> done             a one-shot, exited cleanly
    ... -> backoff -> starting                         a restart by policy
    ... -> stopping -> stopped                         a stop (the container's or by hand)
    ... -> exited                                      ended cleanly, not restarted
    ... -> failed                                      gave up; `result` and `reason` say why

Once ready, a unit with a liveness probe ([health]) is probed every interval, one probe at a
time; after `failures` failures in a row its run is stopped (drain, signal) and counts as failed
for the restart policy. A stop runs the drain command ([stop] exec) first, within the stop
timeout. A unit can be stopped and started on its own (`retinue stop|start|restart`): a manual
stop is not a failure, and nothing restarts the unit until it is started again.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..errors import seconds
from . import probes, procs, readiness
from .kinds import KINDS
from .logs import RotatingLog
from .runner import Run, Runner, StartFailed, last_output, note_line

if TYPE_CHECKING:
    from ..compiled import CompiledService
    from .container import AppContainer

# Exits by these signals are a clean stop, not a failure (as systemd's on-failure has it).
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})


class State(enum.Enum):
    WAITING = "waiting"  # for its predecessors, or for the container to start
    STARTING = "starting"  # the runner is starting it
    RUNNING = "running"  # its main process runs; not ready yet
    READY = "ready"  # its readiness check passed
    DONE = "done"  # a one-shot that exited cleanly
    BACKOFF = "backoff"  # between a run's end and its restart
    STOPPING = "stopping"  # being stopped (drain, stop signal, timeout)
    STOPPED = "stopped"  # stopped by the container's stop or by hand
    EXITED = "exited"  # ended cleanly, and its policy does not restart it
    FAILED = "failed"  # gave up; `result` says why


W, S, R, Y, D = State.WAITING, State.STARTING, State.RUNNING, State.READY, State.DONE
B, P, T, E, F = State.BACKOFF, State.STOPPING, State.STOPPED, State.EXITED, State.FAILED
# Every change set_state allows. A stop reaches "stopped" from wherever the unit is; a manual
# start ("waiting") from wherever it ended.
TRANSITIONS: dict[State, frozenset[State]] = {
    W: frozenset({S, F, T}),
    S: frozenset({R, B, E, F, T}),
    R: frozenset({Y, D, B, E, F, P, T}),
    Y: frozenset({B, E, F, P, T}),
    D: frozenset({T, W}),
    B: frozenset({S, F, T}),
    P: frozenset({B, F, T}),
    T: frozenset({W}),
    E: frozenset({T, W}),
    F: frozenset({T, W}),
}
# The states a unit ended in by itself, which the container's stop keeps.
ENDED = frozenset({F, E, D})


class Result(enum.Enum):
    """Why the unit last failed (systemd's ServiceResult); SUCCESS while it has not."""

    SUCCESS = "success"
    DEPENDENCY = "dependency"  # a service it requires failed
    TIMEOUT = "timeout"  # not ready (a one-shot: not done) within its start timeout
    START_LIMIT = "start-limit-hit"  # restart.burst starts within restart.interval
    START_FAILED = "start-failed"  # could not be started, and no retry would help
    EXIT_CODE = "exit-code"  # exited with a failing code its policy does not restart
    SIGNAL = "signal"  # killed by a signal its policy does not restart
    UNHEALTHY = "unhealthy"  # stopped for failing its health checks, not restarted


class Context:
    """What a unit may know of its container; filled in by the Supervisor."""

    def __init__(self, container: AppContainer, main_exited: Callable[[], None]) -> None:
        self.container = container
        # Called when a run ends and the container's init turns out to have exited.
        self.main_exited = main_exited
        # Called when a unit has failed for good (fate sharing decides what that means).
        self.failed: Callable[[Unit], None] = lambda unit: None
        self.tg: asyncio.TaskGroup  # once the supervisor's loop runs


class Unit:
    """One service of one container, and everything known about its current run."""

    def __init__(
        self, spec: CompiledService, log: RotatingLog, runner: Runner, ctx: Context
    ) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.kind = KINDS[spec.get("type", "simple")]
        self.log = log
        self.runner = runner
        self.ctx = ctx
        # Set by the Supervisor: what must be ready (or have failed) before this unit starts,
        # and what must have stopped before it stops.
        self.predecessors: list[Unit] = []
        self.dependents: list[Unit] = []
        self.state = State.WAITING
        self.result = Result.SUCCESS
        # The last changes of state: (monotonic time, from, to).
        self.history: collections.deque[tuple[float, State, State]] = collections.deque(
            maxlen=32
        )
        self._changed = asyncio.Event()
        self.pid: int | None = None
        # The current (or last) run; before the first, one with no process, so that a kill still
        # reaches whatever a start in flight has put in the unit's cgroup.
        self.current = Run(self.name, 0, None, asyncio.get_running_loop().create_future())
        self.restarts = 0
        self.failures = 0
        self.ready_since: float | None = None
        self.started_at: float | None = None
        self.last_exit: str | None = None
        self.reason: str | None = None
        self.starts: collections.deque[float] = collections.deque()
        self.stopping = False
        self.gave_up = False
        self.exit_future: asyncio.Future[int] | None = None
        self.task: asyncio.Task[None] | None = None  # run(), once the container started
        self.notified = asyncio.Event()
        # Clear while a start is in flight: a stop waits for it, so that a service starting at
        # that moment is stopped like any other, never left unsupervised.
        self.launched = asyncio.Event()
        self.launched.set()
        # Resolves once: None when first ready, else why it never became ready.
        self.settled: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.stopped = asyncio.Event()
        # Reads what the current run wrote and the loop has not read yet (see open_output).
        self.drain_output: Callable[[], None] = lambda: None
        # The readiness file as it was before the current run (None: absent).
        self.file_before: os.stat_result | None = None
        # Liveness: None (no probe, or not ready yet), "healthy" or "unhealthy N/M", and what
        # the last probe said.
        self.health: str | None = None
        self.probe_result: str | None = None
        # Set when the current run was stopped for failing its health checks: its exit, by the
        # stop signal, is a failure all the same.
        self.unhealthy_stop = False
        # A manual stop: nothing restarts the unit until it is started again; who asked.
        self.held = False
        self.stopped_by: str | None = None
        # Serializes manual stop/start/restart requests.
        self.control = asyncio.Lock()
        self.terminating: asyncio.Task[None] | None = None

    # -- its state ------------------------------------------------------------------------------

    def set_state(self, new: State) -> bool:
        """The only writer of `state`: refuses (False, one line in supervisor.log) a change
        TRANSITIONS does not allow, records the change and wakes whoever waits for one."""
        old = self.state
        if new is old:
            return True
        if new not in TRANSITIONS[old]:
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.ctx.container.id}: service "
                  f"{self.name}: refused state change {old.value} -> {new.value}",
                  file=sys.stderr, flush=True)
            return False
        self.state = new
        self.history.append((time.monotonic(), old, new))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    def changed(self) -> Coroutine[Any, Any, bool]:
        """Until the next change of state after this call (the event is taken now, so that a
        change before the caller awaits it is not missed)."""
        return self._changed.wait()

    async def until_ready(self) -> tuple[bool, str]:
        """(True, "") once ready (a one-shot: done); else (False, why it will not be), at most
        its start timeout from now."""
        loop = asyncio.get_running_loop()
        timeout = self.spec["ready_timeout"]
        deadline = loop.time() + timeout
        while self.state not in (Y, D):
            if self.state in (F, E, T):
                return False, str(self.reason or self.last_exit or self.state.value)
            left = deadline - loop.time()
            if left <= 0:
                return False, f"not ready after {timeout:g}s (still {self.state.value})"
            try:
                await asyncio.wait_for(self.changed(), left)
            except TimeoutError:
                pass
        return True, ""

    # -- what it says -------------------------------------------------------------------------

    def settle(self, error: str | None) -> None:
        if not self.settled.done():
            self.settled.set_result(error)

    def note(self, text: str) -> None:
        self.log.write(note_line(text))

    def last_output(self) -> str:
        return last_output(self.log.tail(2048).decode("utf-8", "replace"))

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "required": self.spec["required"],
            "pid": self.pid,
            "restarts": self.restarts,
            # Only while ready: a service that exited (or failed) is not "ready since" anything.
            "ready_since": self.ready_since if self.state is Y else None,
            "last_exit": self.last_exit,
            "reason": self.reason,
            "placement": self.spec.get("placement", "exec"),
            **self.runner.describe(self.name),
            "type": self.spec.get("type", "simple"),
            "health": self.health,
            "probe": self.probe_result,
            "stopped_by": self.stopped_by if self.state is T else None,
            # Bytes of its output lost to a full log filesystem, the container's cap or the
            # node's floor (see logs.py).
            "log_dropped": self.log.drops.total,
        }

    def fail(self, result: Result, reason: str, error: str) -> None:
        """Give up for good: `result` and `reason` for status and the log, `error` for the
        gate."""
        self.gave_up = True
        self.set_state(F)
        self.result = result
        self.reason = reason
        self.note(reason)
        self.settle(error)
        self.ctx.failed(self)

    def succeeded(self, status: int) -> bool:
        """A clean exit: 0, a clean signal, or one of the service's success_exit statuses."""
        if self.unhealthy_stop:
            return False
        if is_clean(status):
            return True
        if os.WIFSIGNALED(status):
            return os.WTERMSIG(status) in self.spec.get("success_signals", [])
        return os.waitstatus_to_exitcode(status) in self.spec.get("success_exit", [])

    def prevented(self, status: int) -> bool:
        """One of the service's prevent_exit statuses: never restarted."""
        if os.WIFSIGNALED(status):
            return os.WTERMSIG(status) in self.spec.get("prevent_signals", [])
        return os.waitstatus_to_exitcode(status) in self.spec.get("prevent_exit", [])

    # -- supervise ----------------------------------------------------------------------------

    async def run(self) -> None:
        for dep in self.predecessors:
            error = await asyncio.shield(dep.settled)
            if error and dep.name in self.spec["requires"]:
                self.set_state(F)
                self.result = Result.DEPENDENCY
                self.reason = f'dependency "{dep.name}" failed'
                self.note(self.reason)
                self.settle(f'service "{self.name}" not started: dependency "{dep.name}" failed')
                return
        if self.stopping:
            return
        deadline = self.ctx.tg.create_task(self.start_deadline())
        try:
            await self.supervise()
        finally:
            deadline.cancel()

    async def start_deadline(self) -> None:
        timeout = self.spec["ready_timeout"]
        try:
            await asyncio.wait_for(asyncio.shield(self.settled), timeout)
            return
        except TimeoutError:
            pass
        why = self.last_exit or ("still running" if self.pid else "not running")
        self.drain_output()
        self.gave_up = True
        self.set_state(F)
        self.result = Result.TIMEOUT
        self.reason = f"{self.kind.deadline_word} after {seconds(timeout)}"
        self.note(f"{self.reason}: {why}")
        self.settle(
            f'service "{self.name}" {self.reason}: {why}; '
            f"last output: {self.last_output()}"
        )
        self.kill()

    async def supervise(self) -> None:
        spec = self.spec
        while not (self.stopping or self.gave_up):
            now = time.monotonic()
            while self.starts and self.starts[0] < now - spec["restart_interval"]:
                self.starts.popleft()
            if len(self.starts) >= spec["restart_burst"]:
                reason = (
                    f"start limit hit: {spec['restart_burst']} starts within "
                    f"{seconds(spec['restart_interval'])}"
                )
                self.fail(
                    Result.START_LIMIT,
                    reason,
                    f'service "{self.name}" failed: {self.last_exit}; {reason}; '
                    f"last output: {self.last_output()}",
                )
                return
            if self.starts or self.last_exit:
                self.restarts += 1
            self.starts.append(now)
            status = await self.run_once()
            if not self.stopping and self.ctx.container.exited():
                # The container's init died and the kernel killed the rest of its PID namespace;
                # the service's exit may be reaped before the pidfd of init is read.
                self.ctx.main_exited()
                self.stopping = True
                self.note(
                    "the container's main process exited; the kernel ended the service with it"
                )
            if self.stopping or self.gave_up or self.held:
                break
            clean = self.succeeded(status)
            policy = spec["restart"]
            if clean and self.kind.done_on_clean_exit:
                self.set_state(D)
                self.result = Result.SUCCESS
                self.reason = None
                self.note("done")
                self.settle(None)
                return
            if not clean and self.prevented(status):
                self.fail(
                    exit_result(status),
                    f"{self.last_exit}: in prevent_exit, not restarted",
                    f'service "{self.name}" {self.last_exit} (in prevent_exit, not restarted); '
                    f"last output: {self.last_output()}",
                )
                return
            if policy == "no" or (policy == "on-failure" and clean):
                if clean:
                    self.set_state(E)
                    self.result = Result.SUCCESS
                    self.reason = None
                    self.settle(
                        None
                        if self.ready_since
                        else f'service "{self.name}" {self.last_exit} before it was ready; '
                        f"last output: {self.last_output()}"
                    )
                    return
                why = "failed its health checks" if self.unhealthy_stop else self.last_exit
                self.fail(
                    Result.UNHEALTHY if self.unhealthy_stop else exit_result(status),
                    str(why),
                    f'service "{self.name}" {why} before it was ready; '
                    f"last output: {self.last_output()}"
                    if not self.settled.done()
                    else f'service "{self.name}" {why}',
                )
                return
            healthy_for = time.monotonic() - (self.started_at or time.monotonic())
            self.failures = 1 if healthy_for >= spec["restart_reset_after"] else self.failures + 1
            delay = min(
                spec["restart_max_delay"], spec["restart_delay"] * 2 ** (self.failures - 1)
            )
            self.set_state(B)
            self.note(f"restarting in {seconds(delay)}")
            await asyncio.sleep(delay)
        if (self.stopping or self.held) and self.state not in ENDED:
            self.set_state(T)

    async def run_once(self) -> int:
        """Start the service once and wait for it to exit; returns its wait status."""
        self.set_state(S)
        self.ready_since = None
        self.health = None
        self.unhealthy_stop = False
        self.notified.clear()
        if self.spec["ready"] == "file":
            # What the readiness file is before this run: only a file this run makes counts.
            init_pid = self.ctx.container.init_pid
            self.file_before = (
                readiness.file_stat(init_pid, self.spec["ready_target"]) if init_pid else None
            )
        self.launched.clear()
        try:
            out = self.open_output()
            try:
                run = await self.runner.start(self.name, self.spec, out)
            except StartFailed as e:
                if e.wants_output:
                    self.drain_output()
                    e.explain(self.log.tail(4096).decode("utf-8", "replace"))
                self.last_exit = e.why
                if e.permanent:
                    self.fail(Result.START_FAILED, e.why, f'service "{self.name}" {e.why}')
                else:
                    # The log is where an administrator looks first: "restarting in" alone
                    # would not say what to fix.
                    self.note(e.why)
                return e.status
            finally:
                os.close(out)
            self.current = run
            self.pid = run.pid
            self.started_at = time.monotonic()
            self.set_state(R)
            self.note(f"started, pid {self.pid}")
            self.exit_future = run.exit
        finally:
            self.launched.set()
        # A one-shot is ready when it has exited 0: nothing to check while it runs.
        check = None
        if self.kind.checks_readiness:
            check = self.ctx.tg.create_task(self.check_ready_then_health(run))
        try:
            status = await asyncio.shield(run.exit)
        finally:
            if check is not None:
                check.cancel()
        self.pid = None
        for text in run.notes:
            self.note(text)
        run.close()
        # What the service left behind (a daemon it forked) ends with it, as with systemd's
        # control-group kill mode: a restart starts from nothing, and a stop leaves nothing.
        self.runner.kill_all(run)
        self.drain_output()
        self.last_exit = procs.describe_status(status)
        self.note(self.last_exit)
        return status

    def open_output(self) -> int:
        """A pipe whose read end feeds the unit's log file; returns the write end, for the
        runner to hand to the process it starts."""
        loop = asyncio.get_running_loop()
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        closed: set[int] = set()

        def read_once() -> bool:
            """One read into the log; False once there is nothing more to read now."""
            if r in closed:
                return False
            try:
                data = os.read(r, 65536)
            except BlockingIOError:
                return False
            if not data:
                loop.remove_reader(r)
                os.close(r)
                closed.add(r)
                return False
            self.log.write(data)
            return True

        def readable() -> None:
            read_once()

        def drain() -> None:
            # The exit of a process can be reaped before the loop has read its last words from
            # the pipe; "last output" in an error must include them.
            for _ in range(64):
                if not read_once():
                    return

        loop.add_reader(r, readable)
        self.drain_output = drain
        return w

    async def check_ready(self) -> None:
        spec = self.spec
        kind, target, interval = spec["ready"], spec["ready_target"], spec["ready_interval"]
        pid = self.pid
        assert pid is not None
        if kind == "tcp":
            # Only the service's own listener: a pod's containers share one network namespace.
            while not readiness.tcp_listening_owned(pid, target):
                await asyncio.sleep(interval)
        elif kind == "file":
            while not readiness.file_made(pid, target, self.file_before):
                await asyncio.sleep(interval)
        elif kind == "notify":
            await self.notified.wait()
        elif kind == "exec":
            while (await self.runner.exec(self.current, "probe", max(interval, 5.0), _discard))[
                0
            ] != 0:
                await asyncio.sleep(interval)
        elif kind == "http":
            address, port, path = target
            while True:
                ns = self.current.netns()
                # As for tcp: an answer counts only while the service itself listens there.
                if (
                    ns is not None
                    and readiness.tcp_listening_owned(pid, port)
                    and (await probes.http_get(ns, address, port, path, max(interval, 1.0)))[0]
                ):
                    break
                await asyncio.sleep(interval)
        self.set_state(Y)
        self.ready_since = time.time()
        self.note("ready")
        self.settle(None)

    async def check_ready_then_health(self, run: Run) -> None:
        await self.check_ready()
        if self.spec.get("health"):
            await self.watch_health(run)

    async def watch_health(self, run: Run) -> None:
        """Probe every interval, one probe at a time; stop the run after `failures` failures in
        a row (the restart policy then decides)."""
        spec = self.spec
        interval, timeout = spec["health_interval"], spec["health_timeout"]
        threshold = spec["health_failures"]
        failed = 0
        while True:
            # The first probe right away: "healthy" is never said before a probe said so.
            ok, said = await self.health_probe(run, timeout)
            self.probe_result = said
            if ok:
                if failed:
                    self.note(f"health check passed again ({said})")
                failed = 0
                self.health = "healthy"
                await asyncio.sleep(interval)
                continue
            failed += 1
            self.health = f"unhealthy {failed}/{threshold}"
            self.note(f"health check failed ({failed}/{threshold}): {said}")
            if failed >= threshold:
                break
            await asyncio.sleep(interval)
        self.note(f"health check failed {failed} times in a row ({said}): restarting")
        self.unhealthy_stop = True
        await self.terminate()

    async def health_probe(self, run: Run, timeout: float) -> tuple[bool, str]:
        kind, target = self.spec["health"], self.spec["health_target"]
        if kind == "exec":
            out = probes.Tail()
            status, why = await self.runner.exec(run, "health", timeout, out.append)
            last = out.last_line(120)
            detail = f": {last}" if last else ""
            if status is None:
                return False, why
            return status == 0, procs.describe_status(status) + detail
        ns = run.netns()
        if ns is None:
            return False, "not running"
        port = int(target) if kind == "tcp" else target[1]
        # A pod's containers share one network namespace: a neighbour answering on the port
        # says nothing about this service (as for tcp readiness, see readiness.py).
        if not readiness.tcp_listening_owned(run.pid, port):
            return False, f"port {port}: no socket of the service listens there"
        if kind == "tcp":
            return await probes.tcp_connect(ns, "127.0.0.1", port, timeout)
        address, _, path = target
        return await probes.http_get(ns, address, port, path, timeout)

    # -- stop -----------------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        """The current run's main process only."""
        self.current.signal(sig)

    def ends_with_container(self, budget: float) -> None:
        """The container's stop budget is spent and init is about to exit: the kernel ends
        what is left; no restart may start in between."""
        self.stopping = True
        if self.pid is not None:
            self.note(f"stop budget of {budget:g}s spent: ended with the container")

    def kill(self) -> None:
        """SIGKILL everything of the current (or last) run; never waits."""
        self.runner.kill_all(self.current)

    async def stop(self, force: bool) -> None:
        """Stop after every dependent has stopped; gracefully unless `force`."""
        for dependent in self.dependents:
            await dependent.stopped.wait()
        self.stopping = True
        try:
            await self.launched.wait()
            if self.pid is not None and self.exit_future is not None:
                if self.state is not F:  # keep why a service that gave up failed
                    self.set_state(P)
                if force:
                    self.kill()
                    await asyncio.shield(self.exit_future)
                else:
                    await self.terminate()
                # Its forked daemons too (run_once does it as well, once it sees the exit).
                self.kill()
            if self.stopped_by is None:
                self.stopped_by = "the container's stop"
            if self.task is not None and not self.task.done():
                self.task.cancel()
                try:
                    await self.task
                except asyncio.CancelledError:
                    pass
            if self.state not in ENDED:
                self.set_state(T)
            self.settle(f'service "{self.name}" stopped before it was ready')
            await self.runner.cleanup(self.name)
        finally:
            self.stopped.set()

    async def terminate(self) -> None:
        """Stop the current run gracefully, once however many ask at the same time (the
        container's stop, a manual stop, a failed health check); see _terminate."""
        if self.terminating is None or self.terminating.done():
            self.terminating = self.ctx.tg.create_task(self._terminate())
        await asyncio.shield(self.terminating)

    async def _terminate(self) -> None:
        """Stop the current run gracefully: the drain command, then the stop signal (and
        SIGCONT), SIGKILL of what is left once the stop timeout is spent. The drain and the wait
        share the timeout; a drain that outlives it is killed, and the signal still gets
        GRACE_AFTER_DRAIN (at most the timeout) before the SIGKILL."""
        exit_future = self.exit_future
        if self.pid is None or exit_future is None or exit_future.done():
            return
        spec = self.spec
        timeout = spec["stop_timeout"]
        loop = asyncio.get_running_loop()
        began = loop.time()
        if self.state is not F:  # keep why a service that gave up failed
            self.set_state(P)
        stop_exec = spec.get("stop_exec")
        if stop_exec:
            self.note(f"draining: {' '.join(stop_exec)}")
            drain = self.ctx.tg.create_task(
                self.runner.exec(self.current, "drain", timeout, self.log.write)
            )
            # The service may exit during its drain: then the drain is not waited for.
            try:
                either: set[asyncio.Future[Any]] = {drain, exit_future}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not drain.done():
                    drain.cancel()  # its process is killed on the way out
            if drain.done() and not drain.cancelled():
                status, why = drain.result()
                self.note(
                    f"drain {why}" if status is None else f"drain {procs.describe_status(status)}"
                )
        left = max(timeout - (loop.time() - began), min(GRACE_AFTER_DRAIN, timeout))
        if not exit_future.done():
            self.note(f"stopping with {signal.Signals(spec['stop_signal']).name}")
            self.signal(spec["stop_signal"])
            self.signal(signal.SIGCONT)
        try:
            await asyncio.wait_for(asyncio.shield(exit_future), left)
        except TimeoutError:
            spent = timeout if not spec.get("stop_exec") else loop.time() - began
            self.note(f"still running after {seconds(round(spent, 3))}: SIGKILL")
            self.kill()
            await asyncio.shield(exit_future)

    # -- manual control (retinue stop|start|restart) ---------------------------------------------

    async def manual_stop(self, by: str) -> None:
        """Stop this unit alone, as configured; nothing restarts it until manual_start. Its
        dependents are left running: an operator stopping a proxy for a moment does not want
        the app's other services torn down."""
        self.held = True
        await self.launched.wait()
        if self.pid is not None:
            await self.terminate()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.kill()
        self.health = None
        self.stopped_by = by
        self.set_state(T)
        self.note(f"stopped by {by}")

    def manual_start(self, by: str) -> None:
        """Start again, with a fresh start limit (a failed unit included)."""
        self.held = False
        self.gave_up = False
        self.starts.clear()
        self.failures = 0
        self.reason = None
        self.result = Result.SUCCESS
        self.stopped_by = None
        self.note(f"started by {by}")
        self.set_state(W)
        self.task = self.ctx.tg.create_task(self.run())


# After a drain that used up the stop timeout, the stop signal still gets this long (Kubernetes
# likewise gives SIGTERM 2 s after a preStop hook that used up the grace period).
GRACE_AFTER_DRAIN = 2.0


def _discard(data: bytes) -> None:
    """A readiness probe's output: only its status counts."""


def exit_result(status: int) -> Result:
    return Result.SIGNAL if os.WIFSIGNALED(status) else Result.EXIT_CODE


def is_clean(status: int) -> bool:
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) in CLEAN_SIGNALS
    return os.waitstatus_to_exitcode(status) == 0
