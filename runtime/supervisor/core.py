"""The container's orchestration: the gate, start and stop order, init, hooks and control.

One `Supervisor` per container. Each service is a `Unit` (unit.py) run by a `Runner`
(runner.py); this module decides when: it starts every unit once the container exists, opens the
gate when the required ones are ready, stops them in reverse dependency order whichever path ends
the container, and answers the control socket through the `ops` table.

Everything runs on one asyncio loop owned by `Supervisor.run`; every task is created in its
TaskGroup (or a TaskGroup nested in one of its tasks) and is waited for before the process exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..host import statedir
from ..policy import graph
from . import control, procs
from .listener import UnixListener
from .logs import DiagnosticLog, LogSpace, RotatingLog
from .notify import NotifySockets
from .runner import ExecRunner, Runner, lower_root
from .unit import Context, Unit

if TYPE_CHECKING:
    from ..compiled import Plan

PF_EXITING = 0x4  # include/linux/sched.h
# The container's exit code when a service with on_failure = "stop-container" failed for good
# and the supervisor ended the main process (README: fate sharing). Above 128+64, so it is never
# a signal's, and outside the ranges shells (126, 127) use.
FATE_EXIT_CODE = 222
# How long the main process has to exit after its SIGTERM before init gets SIGKILL.
FATE_GRACE = 10.0
# A control request's `by` (who stopped a service), as `retinue status` shows it.
MAX_BY = 64

# A control request's handler: the request in, the reply out.
Op = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Supervisor:
    """One container's services from its create to its end (see the module's docstring)."""

    def __init__(self, container_dir: str, plan: Plan) -> None:
        self.dir = container_dir
        self.plan = plan
        self.id: str = plan["id"]
        self.lower: list[str] = [plan["lower"], *plan["lower_globals"]]
        self.phase = "created"
        self.init_pid: int | None = None
        # A second pidfd of init, polled when a service dies to tell "the container ended".
        self.init_pidfd: int | None = None
        self.seccomp: Any = None  # the seccomp agent, when the container has handlers
        self.stopping = False
        self.done = asyncio.Event()
        self.started: asyncio.Task[str | None] | None = None
        self.stop_task: asyncio.Task[None] | None = None
        # Stopping the services after the main process, when no init does it (watch_main).
        self.after_main: asyncio.Task[None] | None = None
        self.poststart_seen = False
        self.ctx = Context(
            self.lower,
            self.id,
            container_dir,
            lambda: self.init_pid,
            self.init_exited,
            self.main_exited,
        )
        self.exec_runner = ExecRunner(self.ctx)
        # Where a unit runs, by its compiled "placement" (issue 11 adds "container").
        self.runners: dict[str, Runner] = {"exec": self.exec_runner}
        if any(s.get("placement") == "container" for s in plan["services"]):
            from .containerrunner import ContainerRunner

            self.runners["container"] = ContainerRunner(self.ctx, plan)
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
        # The control protocol: one entry per request "op".
        self.ops: dict[str, Op] = {
            "status": self.op_status,
            "start": self.op_start,
            "stop": self.op_stop,
            "delete": self.op_delete,
            "hook": self.op_hook,
            "stop-service": self.op_stop_service,
            "start-service": self.op_start_service,
            "restart": self.op_restart,
        }
        self.ctx.failed = self.unit_failed
        # Set once a failed service ended the container (fate sharing): init's exit code.
        self.fate_code: int | None = None
        self.tg: asyncio.TaskGroup
        self.reaper: procs.Reaper
        self._watched: list[int] = []
        # Connection handlers are the control server's tasks; kept so that the last replies
        # (delete, poststop) are written before the process exits.
        self._handlers: set[asyncio.Task[Any]] = set()

    # -- life of the supervisor ---------------------------------------------------------------

    async def run(self, ready_fd: int) -> None:
        loop = asyncio.get_running_loop()
        self.reaper = self.ctx.reaper = procs.Reaper(loop)
        procs.become_subreaper()
        sock_path = os.path.join(self.dir, control.SOCKET_NAME)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        control.via_fd(sock_path, listener.bind)
        os.chmod(sock_path, 0o600)
        server = UnixListener(listener, self.handle)
        await server.start()
        link = None
        if self.plan.get("init"):
            from .initlink import InitLink

            link = InitLink(self)
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
            server.close()
            if link is not None:
                link.close()
            current = asyncio.current_task()
            handlers = [t for t in self._handlers if t is not current and not t.done()]
            if handlers:
                await asyncio.wait(handlers, timeout=5)
            self.notify.close()
            for fd in self._watched:
                loop.remove_reader(fd)
                os.close(fd)
            if self.init_pidfd is not None:
                os.close(self.init_pidfd)
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
            if not self.lower_knows_container():
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
            print(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor of {self.id} exiting: {reason}",
                file=sys.stderr,
                flush=True,
            )
        self.done.set()

    # -- the container's processes ----------------------------------------------------------

    def watch_pid(self, pid: int, on_exit: Any, pidfd: int | None = None) -> None:
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

    async def watch_creator(self, creator_pid: int) -> None:
        """When the process running the lower create exits, check that the container exists."""
        exited = asyncio.Event()
        self.watch_pid(creator_pid, exited.set)
        await exited.wait()
        if self.init_pid is None:
            state = await self.lower_state()
            if state is None:
                # The lower create failed: there is no container to serve.
                self.finish("the lower create exited and the container does not exist")
                return
            await self.init_from_state(state)

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
        self.container_created(pid, pidfd)

    def container_created(self, pid: object, pidfd: int | None = None) -> None:
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
        self.watch_pid(pid, self.main_exited, pidfd)

    def init_exited(self) -> bool:
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

    def main_exited(self) -> None:
        # The kernel kills every process of the container's PID namespace with its init; the
        # services' exits follow through the reaper. The container has ended. With retinue-init
        # as PID 1 this is init's exit, after the services were stopped (see initlink) unless
        # the engine killed it.
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
        print(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.id}: the main process exited; "
            f"stopping the services within {budget:g}s",
            file=sys.stderr,
            flush=True,
        )
        try:
            await asyncio.wait_for(self.stop_services(force=False), budget)
        except TimeoutError:
            for unit in self.services.values():
                if unit.pid is not None:
                    unit.note(f"stop budget of {budget:g}s spent: killed")
            await self.stop_services(force=True)
        self.phase = "stopped"
        self.finish("the container's main process exited; its services were stopped")

    def lower_knows_container(self) -> bool:
        """Whether the lower runtime still has the container (its directory under --root)."""
        return os.path.isdir(os.path.join(lower_root(self.lower), self.id))

    async def lower_state(self) -> dict[str, Any] | None:
        status, out = await procs.run(self.reaper, [*self.lower, "state", self.id], timeout=30)
        if status != 0:
            return None
        try:
            state: dict[str, Any] = json.loads(out)
        except ValueError:
            return None
        return state

    # -- control requests -------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                reply = await self.dispatch(request)
            except Exception as e:  # a bad request must not take the supervisor down
                reply = {"ok": False, "error": f"supervisor: {type(e).__name__}: {e}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = self.ops.get(str(request.get("op")))
        if op is None:
            return {"ok": False, "error": f"unknown request {request.get('op')!r}"}
        return await op(request)

    async def op_status(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **self.status()}

    async def op_start(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.start()

    async def op_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        if not await self.paused():
            await self.stop_services(force=bool(request.get("force")))
        return {"ok": True}

    async def op_delete(self, request: dict[str, Any]) -> dict[str, Any]:
        if not await self.paused():
            await self.stop_services(force=bool(request.get("force")))
            self.finish("the container is being deleted")
        return {"ok": True}

    # -- one service by hand (retinue stop|start|restart) ----------------------------------------

    def _control_target(self, request: dict[str, Any]) -> tuple[Unit | None, str, str]:
        """(unit, who asks, error): the unit a service-control request names, or why not."""
        name = request.get("service")
        by = str(request.get("by") or "a control request")[:MAX_BY]
        unit = self.services.get(name) if isinstance(name, str) else None
        if unit is None:
            known = ", ".join(self.order) or "none"
            return None, by, f"container {self.id} has no service {name!r} (its services: {known})"
        if self.stopping:
            return None, by, f"container {self.id} is stopping"
        if self.started is None or not self.started.done() or self.started.result():
            return None, by, f"container {self.id} has not started (phase: {self.phase})"
        return unit, by, ""

    async def op_stop_service(self, request: dict[str, Any]) -> dict[str, Any]:
        unit, by, error = self._control_target(request)
        if unit is None:
            return {"ok": False, "error": error}
        async with unit.control:
            await unit.manual_stop(by)
        return {"ok": True, "state": unit.state}

    async def op_start_service(self, request: dict[str, Any]) -> dict[str, Any]:
        unit, by, error = self._control_target(request)
        if unit is None:
            return {"ok": False, "error": error}
        async with unit.control:
            if unit.task is None or unit.task.done():
                unit.manual_start(by)
            return await self._until_ready(unit)

    async def op_restart(self, request: dict[str, Any]) -> dict[str, Any]:
        unit, by, error = self._control_target(request)
        if unit is None:
            return {"ok": False, "error": error}
        async with unit.control:
            # Whatever it is doing (starting, backing off, ready): stopped as configured first.
            await unit.manual_stop(by)
            if self.stopping:
                return {"ok": False, "error": f"container {self.id} is stopping"}
            unit.manual_start(by)
            return await self._until_ready(unit)

    async def _until_ready(self, unit: Unit) -> dict[str, Any]:
        """Wait until the unit is ready (or done), at most its start timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + unit.spec["ready_timeout"]
        while unit.state not in ("ready", "done"):
            if unit.state in ("failed", "exited", "stopped") or loop.time() > deadline:
                why = unit.reason or unit.last_exit or unit.state
                if unit.state not in ("failed", "exited", "stopped"):
                    why = f"not ready after {unit.spec['ready_timeout']:g}s (still {unit.state})"
                return {"ok": False, "error": f'service "{unit.name}": {why}',
                        "state": unit.state}
            await asyncio.sleep(0.02)
        return {"ok": True, "state": unit.state}

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
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.id}: {reason}", file=sys.stderr,
              flush=True)
        if self.plan.get("init"):
            self.fate_code = FATE_EXIT_CODE
        if self.init_pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self.init_pidfd, signal.SIGTERM)
        except ProcessLookupError:
            return
        self.tg.create_task(self._fate_grace())

    async def _fate_grace(self) -> None:
        await asyncio.sleep(FATE_GRACE)
        if self.init_pidfd is not None and not self.init_exited() and self.phase != "stopping":
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.id}: the main process is still "
                  f"running {FATE_GRACE:g}s after its SIGTERM: SIGKILL", file=sys.stderr,
                  flush=True)
            main = _main_child(self.init_pid) if self.plan.get("init") else None
            target = self.init_pidfd
            if main is not None:
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
                if target != self.init_pidfd:
                    os.close(target)

    async def paused(self) -> bool:
        """Whether the container is frozen. A frozen process acts on no signal, and does not
        even die, until the container is resumed: waiting for the services then would hold the
        engine's kill for ever (and with it the resume Docker sends after its SIGKILL). They end
        with the container, as its main process does; its end or the poststop hook finishes us."""
        if self.init_pid is None or self.init_exited():
            return False
        state = await self.lower_state()
        return state is not None and state.get("status") == "paused"

    async def op_hook(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.hook(str(request.get("stage")), request.get("state") or "")

    async def hook(self, stage: str, raw_state: str) -> dict[str, Any]:
        try:
            state = json.loads(raw_state) if raw_state else {}
        except ValueError:
            state = {}
        if state.get("id", self.id) != self.id:
            # Another container's hook: two containers created from one bundle at the same time
            # can each run the hooks the other's create wrote into it. Acting on them would
            # watch the wrong init, or stop these services when the other container is deleted.
            return {"ok": True}
        if stage == "createRuntime":
            self.container_created(state.get("pid"))
        elif stage == "poststart":
            # runc 1.1 runs poststart hooks at the end of `create`, before the entrypoint is
            # released (runc 1.2 and crun after `start`): a hook before start only takes note.
            self.poststart_seen = True
            if self.started is not None and self.phase == "starting-main":
                self.phase = "running"
        elif stage == "poststop":
            await self.stop_services(force=False)
            self.finish("poststop hook: the container was deleted")
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pod": self.plan.get("pod", ""),
            "name": self.plan.get("name", ""),
            "phase": self.phase,
            "init_pid": self.init_pid,
            "supervisor_pid": os.getpid(),
            "services": [self.services[n].status() for n in self.order],
            "seccomp": self.seccomp.stats.as_dict() if self.seccomp is not None else None,
            "logs": self.log_space.status([u.log for u in self.services.values()]),
        }

    # -- start and the gate -----------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        if self.stopping:
            return {"ok": False, "error": "the container is stopping"}
        if self.started is None:
            if self.init_pid is None:
                state = await self.lower_state()
                if state is None:
                    return {"ok": False, "error": f"container {self.id} does not exist"}
                await self.init_from_state(state)
                if self.init_pid is None:
                    status = state.get("status") or "without an init"
                    return {"ok": False, "error": f"container {self.id} is {status}"}
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
            await self.kill_waiting_init()
            return {"ok": False, "error": error}
        if self.phase != "running":
            self.phase = "running"  # the shim runs the lower start now; poststart is not hooked
        return {"ok": True}

    async def kill_waiting_init(self) -> None:
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


def _main_child(init_pid: int | None) -> int | None:
    """retinue-init's main process: its oldest child (forked before any service existed; every
    other child is an orphan re-parented to init later)."""
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


class _Finished(Exception):
    """Raised inside the task group to end it once the supervisor is done."""
