"""A service's state machine as data: events fed to a `Unit` without runc, states and results
checked (issue 17). The runner here is a script: its runs are futures the test resolves, as the
reaper resolves a real run's; everything else (the unit, its log, its policies, the kinds, the
transition table) is the supervisor's own code. The same transitions on real containers are
the services tests' business (tests/services/)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from retinue.config import services
from retinue.supervisor import kinds
from retinue.supervisor.container import AppContainer
from retinue.supervisor.logs import LogSpace, RotatingLog
from retinue.supervisor.runner import CreateFailed, ExecFailed, Run, StartFailed
from retinue.supervisor.unit import (
    ENDED,
    TRANSITIONS,
    Context,
    Result,
    State,
    Unit,
)

W, S, R, Y, D = State.WAITING, State.STARTING, State.RUNNING, State.READY, State.DONE
B, P, T, E, F = State.BACKOFF, State.STOPPING, State.STOPPED, State.EXITED, State.FAILED


def exit_status(code: int) -> int:
    """A wait status for an exit with `code`."""
    return code << 8


class ScriptedRun(Run):
    """A run whose process "exits" when the test says, or when it is signalled to."""

    dies_on = (signal.SIGTERM, signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if sig in self.dies_on and not self.exit.done():
            self.exit.set_result(sig)  # killed by `sig`: that is its wait status

    def netns(self) -> int | None:
        return None


class ScriptedRunner:
    """Runner: start() hands out ScriptedRuns, or raises what the test queued."""

    def __init__(self) -> None:
        self.runs: list[ScriptedRun] = []
        self.refusals: list[StartFailed] = []
        self.cleaned: list[str] = []
        self.started = asyncio.Event()

    async def start(self, name: str, spec: Any, out: int) -> Run:
        os.write(out, b"hello from the service\n")
        if self.refusals:
            raise self.refusals.pop(0)
        run = ScriptedRun(name, 1000 + len(self.runs), None,
                          asyncio.get_running_loop().create_future())
        self.runs.append(run)
        self.started.set()
        return run

    async def exec(self, run: Run, which: str, timeout: float,
                   output: Callable[[bytes], None]) -> tuple[int | None, str]:
        return 0, ""

    def kill_all(self, run: Run) -> None:
        run.signal(signal.SIGKILL)

    async def cleanup(self, name: str) -> None:
        self.cleaned.append(name)

    def describe(self, name: str) -> dict[str, Any]:
        return {}


def compiled(tmp_path: Path, name: str, toml: str) -> Any:
    """A service as the shim compiles it, from its TOML."""
    directory = tmp_path / "services"
    files = tmp_path / "files" / name
    files.mkdir(parents=True, exist_ok=True)
    (files / "run.sh").write_text("#!/bin/sh\n")
    (files / "run.sh").chmod(0o755)
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.toml").write_text(f'command = ["run.sh"]\nfiles = "{files}"\n{toml}')
    loaded, _ = services.load_dir(str(directory))
    return services.compile_service(name, loaded[name], str(directory))


class Bench:
    """Units on one Context, inside a task group, as the Supervisor builds them."""

    def __init__(self, tmp_path: Path, tg: asyncio.TaskGroup) -> None:
        self.tmp = tmp_path
        self.container = AppContainer("c1", str(tmp_path), ["runc"], lambda: None)
        self.ctx = Context(self.container, lambda: None)
        self.ctx.tg = tg
        self.failed: list[str] = []
        self.ctx.failed = lambda unit: self.failed.append(unit.name)
        self.space = LogSpace(str(tmp_path), 0, 0.0)

    def unit(self, name: str, toml: str = "", runner: ScriptedRunner | None = None) -> Unit:
        spec = compiled(self.tmp, name, toml)
        log = RotatingLog(str(self.tmp / f"{name}.log"), 1 << 20, 1, self.space)
        return Unit(spec, log, runner or ScriptedRunner(), self.ctx)

    def run(self, unit: Unit) -> None:
        unit.task = self.ctx.tg.create_task(unit.run())


def drive(tmp_path: Path, scenario: Callable[[Bench], Awaitable[None]]) -> None:
    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            await asyncio.wait_for(scenario(Bench(tmp_path, tg)), 10)
            # What still runs (a unit waiting for its run's exit) ends with the scenario.
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    asyncio.run(main())


async def until(unit: Unit, *states: State) -> None:
    while unit.state not in states:
        await unit.changed()


def path(unit: Unit) -> list[State]:
    """The states the unit went through, from waiting."""
    return [W, *(new for _, _, new in unit.history)]


# -- the table itself -----------------------------------------------------------------------------


def test_every_state_has_its_transitions() -> None:
    assert set(TRANSITIONS) == set(State)
    for state, targets in TRANSITIONS.items():
        assert state not in targets, f"{state} -> itself is a no-op, not a transition"
    # A stop reaches "stopped" from wherever a unit is, and only a manual start leaves it.
    assert all(T in TRANSITIONS[s] for s in State if s not in (T, P)) and T in TRANSITIONS[P]
    assert TRANSITIONS[T] == {W}
    # What a unit ends in by itself, it leaves only for a stop or a manual start.
    for ended in ENDED:
        assert TRANSITIONS[ended] <= {T, W}


def test_set_state_refuses_what_the_table_does_not_allow(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        unit = bench.unit("svc")
        assert unit.set_state(Y) is False  # waiting -> ready skips the start
        assert unit.state is W and not unit.history
        assert unit.set_state(S) and unit.set_state(R) and unit.set_state(Y)
        assert unit.set_state(W) is False  # only a stopped or ended unit starts again
        assert path(unit) == [W, S, R, Y]

    drive(tmp_path, scenario)


def test_set_state_wakes_waiters(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        unit = bench.unit("svc")
        waiter = asyncio.ensure_future(unit.changed())
        await asyncio.sleep(0)
        assert not waiter.done()
        unit.set_state(S)
        await asyncio.wait_for(waiter, 1)

    drive(tmp_path, scenario)


# -- a daemon -------------------------------------------------------------------------------------


def test_daemon_is_ready_then_restarted_by_policy(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        unit = bench.unit("web", '[restart]\ndelay = "1ms"\n', runner)
        assert unit.kind is kinds.SIMPLE
        bench.run(unit)
        await until(unit, Y)
        assert unit.settled.result() is None and unit.result is Result.SUCCESS
        runner.runs[0].exit.set_result(exit_status(1))  # fails: on-failure restarts it
        await until(unit, B)
        await until(unit, Y)
        assert path(unit) == [W, S, R, Y, B, S, R, Y]
        assert unit.restarts == 1 and unit.last_exit == "exited with status 1"
        assert unit.result is Result.SUCCESS

    drive(tmp_path, scenario)


def test_clean_exit_without_restart_is_exited(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        unit = bench.unit("web", "", runner)
        bench.run(unit)
        await until(unit, Y)
        runner.runs[0].exit.set_result(exit_status(0))
        await until(unit, E)
        assert unit.result is Result.SUCCESS and unit.reason is None

    drive(tmp_path, scenario)


def test_prevent_exit_fails_with_the_exit_code(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        unit = bench.unit("web", "[restart]\nprevent_exit = [78]\n", runner)
        bench.run(unit)
        await until(unit, Y)
        runner.runs[0].exit.set_result(exit_status(78))
        await until(unit, F)
        assert unit.result is Result.EXIT_CODE
        assert unit.reason == "exited with status 78: in prevent_exit, not restarted"
        assert bench.failed == ["web"]

    drive(tmp_path, scenario)


def test_killed_by_a_signal_without_restart_fails_with_signal(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        unit = bench.unit("web", '[restart]\npolicy = "no"\n', runner)
        bench.run(unit)
        await until(unit, Y)
        runner.runs[0].exit.set_result(signal.SIGSEGV)
        await until(unit, F)
        assert unit.result is Result.SIGNAL

    drive(tmp_path, scenario)


def test_start_limit(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        unit = bench.unit("web", '[restart]\ndelay = "1ms"\nburst = 2\ninterval = "60s"\n',
                          runner)
        bench.run(unit)
        for i in range(2):
            await until(unit, Y)
            runner.runs[i].exit.set_result(exit_status(1))
            await until(unit, B, F)
        await until(unit, F)
        assert unit.result is Result.START_LIMIT
        assert unit.reason == "start limit hit: 2 starts within 60s"
        assert path(unit) == [W, S, R, Y, B, S, R, Y, B, F]

    drive(tmp_path, scenario)


def test_a_start_no_retry_can_fix_fails_at_once(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        runner.refusals.append(StartFailed(1 << 8, "could not be started: no such command",
                                           permanent=True))
        unit = bench.unit("web", "", runner)
        bench.run(unit)
        await until(unit, F)
        assert unit.result is Result.START_FAILED
        assert path(unit) == [W, S, F]
        assert unit.settled.result() == 'service "web" could not be started: no such command'

    drive(tmp_path, scenario)


def test_a_failed_exec_is_explained_from_the_service_log() -> None:
    # What runc exec wrote to the service's log decides whether a retry can help.
    failed = ExecFailed(1 << 8, "could not be started (runc exec exited with code 1)")
    failed.explain("retinue: 2026 starting\nexec failed: unable to start container process: "
                   'exec: "/x": stat /x: no such file or directory\n')
    assert failed.permanent and failed.why.startswith("could not be started: ")
    retry = ExecFailed(1 << 8, "could not be started (runc exec exited with code 1)")
    retry.explain("the pids cgroup is full\n")
    assert not retry.permanent
    assert retry.why == "could not be started (runc exec exited with code 1)"
    created = CreateFailed(1 << 8, "could not be started (runc create exited with code 1")
    created.explain("retinue: 2026 a note\nno such image\nretinue: 2026 another\n")
    assert created.why == "could not be started (runc create exited with code 1: no such image)"


def test_not_ready_in_time(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        unit = bench.unit("web", '[ready]\nnotify = true\ntimeout = "50ms"\n')
        bench.run(unit)
        await until(unit, F)
        assert unit.result is Result.TIMEOUT
        assert unit.reason == "not ready after 50ms"
        assert path(unit) == [W, S, R, F]
        error = unit.settled.result()
        assert error is not None and "last output: hello from the service" in error

    drive(tmp_path, scenario)


def test_dependency_failed(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        runner.refusals.append(StartFailed(1 << 8, "could not be started: gone", permanent=True))
        db = bench.unit("db", "", runner)
        app = bench.unit("app", 'requires = ["db"]\n')
        app.predecessors.append(db)
        bench.run(db)
        bench.run(app)
        await until(app, F)
        assert app.result is Result.DEPENDENCY and path(app) == [W, F]
        assert app.reason == 'dependency "db" failed'

    drive(tmp_path, scenario)


# -- a one-shot -----------------------------------------------------------------------------------


def test_oneshot_is_done_when_it_exits_cleanly(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        unit = bench.unit("setup", 'type = "oneshot"\n', runner)
        assert unit.kind is kinds.ONESHOT
        bench.run(unit)
        await until(unit, R)
        await asyncio.sleep(0.01)
        assert unit.state is R  # nothing checks a one-shot's readiness while it runs
        runner.runs[0].exit.set_result(exit_status(0))
        await until(unit, D)
        assert unit.settled.result() is None and unit.result is Result.SUCCESS
        assert path(unit) == [W, S, R, D]

    drive(tmp_path, scenario)


def test_oneshot_that_fails_is_not_restarted(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        unit = bench.unit("setup", 'type = "oneshot"\n', runner)
        bench.run(unit)
        await until(unit, R)
        runner.runs[0].exit.set_result(exit_status(2))
        await until(unit, F)
        assert unit.result is Result.EXIT_CODE and len(runner.runs) == 1
        assert path(unit) == [W, S, R, F]

    drive(tmp_path, scenario)


def test_oneshot_that_is_still_running_is_not_done(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        unit = bench.unit("setup", 'type = "oneshot"\n[ready]\ntimeout = "50ms"\n')
        bench.run(unit)
        await until(unit, F)
        assert unit.result is Result.TIMEOUT and unit.reason == "not done after 50ms"

    drive(tmp_path, scenario)


def test_kinds_default_restart_is_what_the_compiler_applies(tmp_path: Path) -> None:
    for kind in kinds.KINDS.values():
        spec = compiled(tmp_path, f"k{kind.name}", f'type = "{kind.name}"\n')
        assert spec["restart"] == kind.default_restart, kind.name


# -- stop, by the container and by hand -----------------------------------------------------------


def test_stop_of_a_ready_daemon(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        unit = bench.unit("web", "", runner)
        bench.run(unit)
        await until(unit, Y)
        await unit.stop(force=False)
        assert unit.state is T and unit.stopped_by == "the container's stop"
        assert path(unit) == [W, S, R, Y, P, T]
        assert runner.runs[0].exit.result() == signal.SIGTERM
        assert runner.cleaned == ["web"] and unit.result is Result.SUCCESS

    drive(tmp_path, scenario)


def test_stop_keeps_why_a_unit_failed(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        runner.refusals.append(StartFailed(1 << 8, "could not be started: x", permanent=True))
        unit = bench.unit("web", "", runner)
        bench.run(unit)
        await until(unit, F)
        await unit.stop(force=False)
        assert unit.state is F and unit.result is Result.START_FAILED

    drive(tmp_path, scenario)


def test_manual_stop_then_start(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        unit = bench.unit("web", "", runner)
        bench.run(unit)
        await until(unit, Y)
        await unit.manual_stop("retinue stop")
        assert unit.state is T and unit.stopped_by == "retinue stop"
        await asyncio.sleep(0.01)
        assert len(runner.runs) == 1  # a manual stop is not restarted
        unit.manual_start("retinue start")
        assert await unit.until_ready() == (True, "")
        assert path(unit) == [W, S, R, Y, P, T, W, S, R, Y]
        assert unit.stopped_by is None and len(runner.runs) == 2

    drive(tmp_path, scenario)


def test_until_ready_says_why_not(tmp_path: Path) -> None:
    async def scenario(bench: Bench) -> None:
        runner = ScriptedRunner()
        runner.refusals.append(StartFailed(1 << 8, "could not be started: x", permanent=True))
        unit = bench.unit("web", "", runner)
        bench.run(unit)
        assert await unit.until_ready() == (False, "could not be started: x")

    drive(tmp_path, scenario)
