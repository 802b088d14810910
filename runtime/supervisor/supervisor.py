"""The container's orchestration: start order, the gate, stop order, fate sharing and status.

One `Supervisor` per container. The container itself (its init, whether it exited or is paused)
is an `AppContainer` (container.py); each service is a `Unit` (unit.py) run by a `Runner`
(runner.py); requests arrive through the control server (server.py), which calls the methods
below. This module decides when: it starts every unit once the container exists, opens the gate
when the required ones are ready, stops them in reverse dependency order whichever path ends the
container, and ends the container when a service with on_failure = "stop-container" fails for
good.

Everything runs on one asyncio loop owned by `Supervisor.run`; every task is created in its
TaskGroup (or a TaskGroup nested in one of its tasks) and is waited for before the process exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from ..host import statedir
from ..policy import graph
from . import procs
from .container import AppContainer
from .logs import DiagnosticLog, LogSpace, RotatingLog
from .notify import NotifySockets
from .runner import ExecRunner, Runner
from .unit import Context, State, Unit

if TYPE_CHECKING:
    from ..compiled import Plan

# The container's exit code when a service with on_failure = "stop-container" failed for good
# and the supervisor ended the main process (README: fate sharing). Above 128+64, so it is never
# a signal's, and outside the ranges shells (126, 127) use.
FATE_EXIT_CODE = 222
# How long the main process has to exit after its SIGTERM before init gets SIGKILL.
FATE_GRACE = 10.0


class Server(Protocol):
    """The control server as the supervisor runs it (server.ControlServer)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class Supervisor:
    """One container's services from its create to its end (see the module's docstring)."""

    def __init__(self, container_dir: str, plan: Plan) -> None:
        self.dir = container_dir
        self.plan = plan
        self.id: str = plan["id"]
        self.lower: list[str] = [plan["lower"], *plan["lower_globals"]]
        self.container = AppContainer(self.id, container_dir, self.lower, self.main_exited)
        # created -> starting -> running (or failed) -> stopping -> stopped: what status shows.
        self.phase = "created"
        self.seccomp: Any = None  # the seccomp agent, when the container has handlers
        self.stopping = False
        self.done = asyncio.Event()
        self.started: asyncio.Task[str | None] | None = None
        self.stop_task: asyncio.Task[None] | None = None
        # Stopping the services after the main process, when no init does it (watch_main).
        self.after_main: asyncio.Task[None] | None = None
        self.ctx = Context(self.container, self.main_exited)
        self.exec_runner = ExecRunner(self.container)
        # Where a unit runs, by its compiled "placement".
        self.runners: dict[str, Runner] = {"exec": self.exec_runner}
        if any(s.get("placement") == "container" for s in plan["services"]):
            from .containerrunner import ContainerRunner

            self.runners["container"] = ContainerRunner(self.container, plan)
        log_dir = os.path.join(plan["log_dir"], self.id)
        # The container's share of the log filesystem, which all its files draw on.
        self.log_space = LogSpace(
            log_dir, plan.get("log_max_container_bytes", 0), plan.get("log_min_free", 0.0)
        )
        if isinstance(sys.stderr, DiagnosticLog):
            sys.stderr.attach(self.log_space)
        self.services: dict[str, Unit] = {
            s["name"]: Unit(
                s,
                RotatingLog(
                    os.path.join(log_dir, f"{s['name']}.log"),
                    plan["log_max_bytes"],
                    plan["log_keep"],
                    self.log_space,
                ),
                self.runners[s.get("placement", "exec")],
                self.ctx,
            )
            for s in plan["services"]
        }
        self.order: list[str] = [s["name"] for s in plan["services"]]
        deps = {s["name"]: (s["requires"], s["wants"], s["after"]) for s in plan["services"]}
        # What must be ready (or have failed) before each unit starts, and the reverse.
        for name in self.order:
            unit = self.services[name]
            for dep in graph.predecessors(deps, name, self.order):
                unit.predecessors.append(self.services[dep])
                self.services[dep].dependents.append(unit)
        self.notify = NotifySockets(container_dir, plan.get("notify_rate"), self.done.is_set)
        self.ctx.failed = self.unit_failed
        # Set once a failed service ended the container (fate sharing): init's exit code.
        self.fate_code: int | None = None
        self.tg: asyncio.TaskGroup
        self.reaper: procs.Reaper

    # -- life of the supervisor ---------------------------------------------------------------

    async def run(self, ready_fd: int, server: Server) -> None:
        loop = asyncio.get_running_loop()
        self.reaper = self.container.reaper = procs.Reaper(loop)
        procs.become_subreaper()
        await server.open()
        link = None
        if self.plan.get("init"):
            from .initlink import InitLink

            link = InitLink(self.container, self.init_said_exit)
            await link.listen()
        self.notify.open(list(self.services.values()))
        seccomp = self.seccomp_agent()
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = self.ctx.tg = tg
                if seccomp is not None:
                    tg.create_task(seccomp)
                tg.create_task(self.watch_creator(self.plan["creator_pid"]))
                os.write(ready_fd, b"1")
                os.close(ready_fd)
                await self.done.wait()
                await self.stop_services(force=True)
                for unit in self.services.values():
                    if unit.task:
                        unit.task.cancel()
                raise _Finished
        except* _Finished:
            pass
        finally:
            if link is not None:
                link.close()
            await server.close()
            self.notify.close()
            self.container.close()
            self.reaper.close()
            for unit in self.services.values():
                unit.log.close()
            if self.plan.get("seccomp_listener"):
                try:
                    os.unlink(self.plan["seccomp_listener"])
                except FileNotFoundError:
                    pass
            statedir.remove(self.dir)
            # After the state directory: a v1 rmdir can take milliseconds each, and until the
            # directory is gone a delete would take this supervisor for one that died. Only
            # once the lower runtime has forgotten the container: until then an engine may walk
            # its cgroup tree (`kill --all`, the delete of a container without its own PID
            # namespace), which fails on a child removed under it; the lower delete removes the
            # children with the container's cgroup (runc since 1.0).
            if not self.container.lower_knows():
                self.exec_runner.remove_cgroups(list(self.services))

    def seccomp_agent(self) -> Coroutine[Any, Any, None] | None:
        """Bind the seccomp listener now (runc connects to it during create) and return the
        coroutine that serves it; it is cancelled only after the services have stopped, since
        every `runc exec` of a filtered container connects to it too."""
        rules = self.plan.get("seccomp")
        if not rules:
            return None
        from ..seccomp import agent

        path = self.plan["seccomp_listener"]
        statedir.private_dir(os.path.dirname(os.path.dirname(path)))
        statedir.private_dir(os.path.dirname(path))
        log_path = os.path.join(self.plan["log_dir"], self.id, "seccomp.log")
        log = agent.setup_log(log_path, name=f"retinue.seccomp.{self.id}")
        try:
            os.chmod(log_path, 0o600)  # as every log (one an older version made may be 0644)
        except OSError:
            pass
        sock = agent.bind(path)
        routes = agent.Routes.from_rules(rules, log)
        self.seccomp = agent.Agent(routes, log, rate=self.plan.get("seccomp_rate"))
        return agent.serve(sock, routes, log, agent=self.seccomp)

    def finish(self, reason: str) -> None:
        if not self.done.is_set():
            # One line in supervisor.log: when a container's services end unexpectedly, this is
            # where an administrator finds out which path ended them.
            _say(f"supervisor of {self.id} exiting: {reason}")
        self.done.set()

    # -- the container's end ------------------------------------------------------------------

    async def watch_creator(self, creator_pid: int) -> None:
        """When the process running the lower create exits, check that the container exists."""
        if not await self.container.watch_creator(creator_pid):
            self.finish("the lower create exited and the container does not exist")

    def main_exited(self) -> None:
        # The kernel kills every process of the container's PID namespace with its init; the
        # services' exits follow through the reaper. The container has ended. With retinue-init
        # as PID 1 this is init's exit, after the services were stopped (see init_said_exit)
        # unless the engine killed it.
        if self.plan.get("watch_main"):
            # PID 1 is the main process itself and the services are sidecars, which outlive
            # it (their own PID namespaces; the app's network, IPC and UTS namespaces stay
            # while they hold them): they are stopped now, as init would have had them.
            if self.after_main is None and not self.done.is_set():
                self.after_main = self.tg.create_task(self.stop_after_main())
            return
        self.phase = "stopped"
        self.stopping = True
        self.finish("the container's main process exited")

    async def stop_after_main(self) -> None:
        """The services in reverse dependency order within the container's stop budget, then
        whatever is left at once; then the supervisor ends."""
        budget = float(self.plan.get("stop_budget", 5.0))
        self.phase = "stopping"
        _say(f"{self.id}: the main process exited; stopping the services within {budget:g}s")
        try:
            await asyncio.wait_for(self.stop_services(force=False), budget)
        except TimeoutError:
            for unit in self.services.values():
                if unit.pid is not None:
                    unit.note(f"stop budget of {budget:g}s spent: killed")
            await self.stop_services(force=True)
        self.phase = "stopped"
        self.finish("the container's main process exited; its services were stopped")

    async def init_said_exit(self, code: int) -> bytes:
        """retinue-init's main process exited with `code`: the services, in reverse dependency
        order, within the container's stop budget; then init's answer (initlink.py): "ok", or
        the container's exit code when the supervisor ended the main process (fate sharing)."""
        budget = float(self.plan.get("stop_budget", 5.0))
        self.phase = "stopping"
        _say(f"{self.id}: the main process exited ({code}); stopping the services within "
             f"{budget:g}s")
        try:
            await asyncio.wait_for(self.stop_services(force=False), budget)
        except TimeoutError:
            # The stop goes on only until init exits: then the kernel kills what is left of
            # the PID namespace. No restart may start in between.
            for unit in self.services.values():
                unit.ends_with_container(budget)
        return f"code {self.fate_code}\n".encode() if self.fate_code is not None else b"ok\n"

    # -- requests (server.py) -------------------------------------------------------------------

    async def stop(self, force: bool) -> None:
        if not await self.paused():
            await self.stop_services(force=force)

    async def delete(self, force: bool) -> None:
        if not await self.paused():
            await self.stop_services(force=force)
            self.finish("the container is being deleted")

    async def paused(self) -> bool:
        """Whether the container is frozen. A frozen process acts on no signal, and does not
        even die, until the container is resumed: waiting for the services then would hold the
        engine's kill for ever (and with it the resume Docker sends after its SIGKILL). They end
        with the container, as its main process does; its end or the poststop hook finishes us."""
        return await self.container.paused()

    async def hook(self, stage: str, raw_state: str) -> None:
        try:
            state = json.loads(raw_state) if raw_state else {}
        except ValueError:
            state = {}
        if not isinstance(state, dict) or state.get("id", self.id) != self.id:
            # Another container's hook: two containers created from one bundle at the same time
            # can each run the hooks the other's create wrote into it. Acting on them would
            # watch the wrong init, or stop these services when the other container is deleted.
            return
        if stage == "createRuntime":
            self.container.created(state.get("pid"))
        elif stage == "poststop":
            await self.stop_services(force=False)
            self.finish("poststop hook: the container was deleted")
        # poststart: runc 1.1 runs it at the end of `create`, before the entrypoint is released
        # (runc 1.2 and crun after `start`): retinue no longer adds it, and takes no note of it.

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pod": self.plan.get("pod", ""),
            "name": self.plan.get("name", ""),
            "phase": self.phase,
            "init_pid": self.container.init_pid,
            "supervisor_pid": os.getpid(),
            "services": [self.services[n].status() for n in self.order],
            "seccomp": self.seccomp.stats.as_dict() if self.seccomp is not None else None,
            "logs": self.log_space.status([u.log for u in self.services.values()]),
        }

    # -- one service by hand (retinue stop|start|restart) ----------------------------------------

    def control_target(self, name: str) -> tuple[Unit | None, str]:
        """(unit, error): the unit a service-control request names, or why not."""
        unit = self.services.get(name)
        if unit is None:
            known = ", ".join(self.order) or "none"
            return None, f"container {self.id} has no service {name!r} (its services: {known})"
        if self.stopping:
            return None, f"container {self.id} is stopping"
        if self.started is None or not self.started.done() or self.started.result():
            return None, f"container {self.id} has not started (phase: {self.phase})"
        return unit, ""

    async def stop_service(self, unit: Unit, by: str) -> tuple[str | None, State]:
        async with unit.control:
            await unit.manual_stop(by)
        return None, unit.state

    async def start_service(self, unit: Unit, by: str) -> tuple[str | None, State]:
        async with unit.control:
            if unit.task is None or unit.task.done():
                unit.manual_start(by)
            return await self._until_ready(unit)

    async def restart_service(self, unit: Unit, by: str) -> tuple[str | None, State]:
        async with unit.control:
            # Whatever it is doing (starting, backing off, ready): stopped as configured first.
            await unit.manual_stop(by)
            if self.stopping:
                return f"container {self.id} is stopping", unit.state
            unit.manual_start(by)
            return await self._until_ready(unit)

    async def _until_ready(self, unit: Unit) -> tuple[str | None, State]:
        ok, why = await unit.until_ready()
        return (None if ok else f'service "{unit.name}": {why}'), unit.state

    # -- fate sharing -------------------------------------------------------------------------

    def unit_failed(self, unit: Unit) -> None:
        """A unit gave up for good. With on_failure = "stop-container", once the container has
        started, the container ends: SIGTERM to the main process through init (which forwards
        every signal), SIGKILL of the main after FATE_GRACE; init exits with FATE_EXIT_CODE.
        Without init (only sidecars) the pidfd is the main process's own: the same signals go
        to it directly, and the container's exit code is whatever the main process makes of
        them (its SIGTERM handler's code, else 143; 137 after the SIGKILL)."""
        if unit.spec.get("on_failure") != "stop-container" or self.stopping:
            return
        if self.started is None or not self.started.done() or self.started.result():
            return  # before the entrypoint ran, the failure fails `start` instead
        reason = (
            f'service "{unit.name}" failed for good ({unit.reason}) and has on_failure = '
            f'"stop-container": stopping the container'
        )
        unit.note("failed for good; on_failure = stop-container: stopping the container")
        _say(f"{self.id}: {reason}")
        if self.plan.get("init"):
            self.fate_code = FATE_EXIT_CODE
        if self.container.signal(signal.SIGTERM):
            self.tg.create_task(self._fate_grace())

    async def _fate_grace(self) -> None:
        await asyncio.sleep(FATE_GRACE)
        app = self.container
        if app.init_pidfd is not None and not app.exited() and self.phase != "stopping":
            _say(f"{self.id}: the main process is still running {FATE_GRACE:g}s after its "
                 "SIGTERM: SIGKILL")
            main = app.main_child() if self.plan.get("init") else None
            if main is None:
                app.signal(signal.SIGKILL)
                return
            # The main process alone: init then still reports and exits with the fate code.
            try:
                target = os.pidfd_open(main)
            except ProcessLookupError:
                return
            try:
                signal.pidfd_send_signal(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
            finally:
                os.close(target)

    # -- start and the gate -----------------------------------------------------------------

    async def start(self) -> str | None:
        """None once the gate is open (the shim then runs the lower start); else why not."""
        if self.stopping:
            return "the container is stopping"
        app = self.container
        if self.started is None:
            if app.init_pid is None:
                state = await app.lower_state()
                if state is None:
                    return f"container {self.id} does not exist"
                await app.init_from_state(state)
                if app.init_pid is None:
                    status = state.get("status") or "without an init"
                    return f"container {self.id} is {status}"
            self.phase = "starting"
            for name in self.order:
                unit = self.services[name]
                unit.task = self.tg.create_task(unit.run())
            self.started = self.tg.create_task(self.gate())
        error = await asyncio.shield(self.started)
        if error:
            self.phase = "failed"
            await self.stop_services(force=False)
            # Engines delete a task whose start failed only once it has stopped: containerd's
            # client refuses to delete a `created` one, so Docker and `ctr run --rm` would leave
            # the container, its shim and this supervisor behind for good. The entrypoint never
            # ran: end the container's init (runc-init, still waiting for start) here.
            await app.kill_waiting()
            return error
        if self.phase != "running":
            self.phase = "running"  # the shim runs the lower start now
        return None

    async def gate(self) -> str | None:
        """None once every required service is ready; else the first reason one never will be."""
        pending = {
            self.services[n].settled for n in self.order if self.services[n].spec["required"]
        }
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                if future.result():
                    return future.result()
        return None

    # -- stop ---------------------------------------------------------------------------------

    async def stop_services(self, force: bool) -> None:
        """Stop every service, each after the services that depend on it; idempotent."""
        self.stopping = True
        if self.stop_task is None:
            self.stop_task = self.tg.create_task(self._stop_all(force))
        elif force:
            for unit in self.services.values():
                unit.kill()
        await asyncio.shield(self.stop_task)

    async def _stop_all(self, force: bool) -> None:
        async with asyncio.TaskGroup() as tg:
            for unit in self.services.values():
                tg.create_task(unit.stop(force))


def _say(text: str) -> None:
    """One timestamped line in supervisor.log."""
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}", file=sys.stderr, flush=True)


class _Finished(Exception):
    """Raised inside the task group to end it once the supervisor is done."""
