"""The supervisor's state machine: services, the gate, restarts and the ordered stop.

Everything runs on one asyncio loop owned by `Supervisor.run`; every task is created in its
TaskGroup (or a TaskGroup nested in one of its tasks) and is waited for before the process exits.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .. import cgroups, graph, ratelimit, statedir
from . import control, execerror, procs, readiness
from .logs import RotatingLog

# Exits by these signals are a clean stop, not a failure (as systemd's on-failure has it).
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})
PF_EXITING = 0x4  # include/linux/sched.h
NOTIFY_RATE = 50.0  # datagrams a second per service socket, when the plan does not say
NOTIFY_BATCH = 64  # datagrams read per wake-up: a full queue never starves the loop
NOTIFY_PAUSE = 0.1  # at least this long without reading a socket that went over its limit


class Service:
    """One service of one container, and everything known about its current run."""

    def __init__(self, spec: dict[str, Any], log: RotatingLog) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.log = log
        self.state = "waiting"
        self.pid: int | None = None
        # The current run's pidfd: signals go through it, never through a pid the reaper may
        # already have released (and the kernel handed to another process).
        self.pidfd: int | None = None
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
        self.runner: asyncio.Task[None] | None = None
        self.notified = asyncio.Event()
        # Clear while a `runc exec` of this service is in flight: a stop waits for it, so that a
        # service starting at that moment is stopped like any other, never left unsupervised.
        self.launched = asyncio.Event()
        self.launched.set()
        # Resolves once: None when first ready, else why it never became ready.
        self.settled: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.stopped = asyncio.Event()
        # Reads what the current run wrote and the loop has not read yet (see service_output).
        self.drain_output: Callable[[], None] = lambda: None
        # The readiness file as it was before the current run (None: absent).
        self.file_before: os.stat_result | None = None

    def settle(self, error: str | None) -> None:
        if not self.settled.done():
            self.settled.set_result(error)

    def note(self, text: str) -> None:
        self.log.write(f"retinue: {time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n".encode())

    def last_output(self) -> str:
        lines = [
            line
            for line in self.log.tail(2048).decode("utf-8", "replace").splitlines()
            if line.strip() and not line.startswith("retinue: ")
        ]
        return lines[-1][:200] if lines else "(none)"

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "required": self.spec["required"],
            "pid": self.pid,
            "restarts": self.restarts,
            # Only while ready: a service that exited (or failed) is not "ready since" anything.
            "ready_since": self.ready_since if self.state == "ready" else None,
            "last_exit": self.last_exit,
            "reason": self.reason,
        }


class Supervisor:
    def __init__(self, container_dir: str, plan: dict[str, Any]) -> None:
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
        self.poststart_seen = False
        log_dir = os.path.join(plan["log_dir"], self.id)
        self.services = {
            s["name"]: Service(
                s,
                RotatingLog(
                    os.path.join(log_dir, f"{s['name']}.log"),
                    plan["log_max_bytes"],
                    plan["log_keep"],
                ),
            )
            for s in plan["services"]
        }
        self.order: list[str] = [s["name"] for s in plan["services"]]
        deps = {s["name"]: (s["requires"], s["wants"], s["after"]) for s in plan["services"]}
        # What must be ready (or have failed) before each service starts, and the reverse.
        self.predecessors = {n: graph.predecessors(deps, n, self.order) for n in self.order}
        self.dependents: dict[str, list[str]] = {n: [] for n in self.order}
        for name in self.order:
            for dep in self.predecessors[name]:
                self.dependents[dep].append(name)
        self.tg: asyncio.TaskGroup
        self.reaper: procs.Reaper
        self._watched: list[int] = []
        # The container's cgroup directories (hierarchy -> directory), read from init once.
        self._service_cgroups: dict[str, str] | None = None
        self._notify_limits: dict[str, tuple[ratelimit.TokenBucket, ratelimit.DropLog]] = {}
        # Connection handlers are the control server's tasks; kept so that the last replies
        # (delete, poststop) are written before the process exits.
        self._handlers: set[asyncio.Task[Any]] = set()

    # -- life of the supervisor ---------------------------------------------------------------

    async def run(self, ready_fd: int) -> None:
        loop = asyncio.get_running_loop()
        self.reaper = procs.Reaper(loop)
        procs.become_subreaper()
        sock_path = os.path.join(self.dir, control.SOCKET_NAME)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        control.via_fd(sock_path, listener.bind)
        os.chmod(sock_path, 0o600)
        server = await asyncio.start_unix_server(self.handle, sock=listener)
        link = None
        if self.plan.get("init"):
            from .initlink import InitLink

            link = InitLink(self)
            await link.listen()
        notify_socks = self.open_notify_sockets()
        seccomp = self.seccomp_agent()
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                if seccomp is not None:
                    tg.create_task(seccomp)
                tg.create_task(self.watch_creator(self.plan["creator_pid"]))
                os.write(ready_fd, b"1")
                os.close(ready_fd)
                await self.done.wait()
                await self.stop_services(force=True)
                for svc in self.services.values():
                    if svc.runner:
                        svc.runner.cancel()
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
            for sock in notify_socks:
                loop.remove_reader(sock.fileno())
                sock.close()
            for fd in self._watched:
                loop.remove_reader(fd)
                os.close(fd)
            if self.init_pidfd is not None:
                os.close(self.init_pidfd)
            self.reaper.close()
            for svc in self.services.values():
                svc.log.close()
            if self.plan.get("seccomp_listener"):
                try:
                    os.unlink(self.plan["seccomp_listener"])
                except FileNotFoundError:
                    pass
            statedir.remove(self.dir)
            # After the state directory: a v1 rmdir can take milliseconds each, and until the
            # directory is gone a delete would take this supervisor for one that died.
            if self._service_cgroups:
                cgroups.remove_service_cgroups(self._service_cgroups, list(self.services))

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
        log = agent.setup_log(
            os.path.join(self.plan["log_dir"], self.id, "seccomp.log"),
            name=f"retinue.seccomp.{self.id}",
        )
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
        self.phase = "stopped"
        self.stopping = True
        self.finish("the container's main process exited")

    async def paused(self) -> bool:
        if self.init_pid is None or self.init_exited():
            return False
        state = await self.lower_state()
        return state is not None and state.get("status") == "paused"

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
        op = request.get("op")
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "start":
            return await self.start()
        if op in ("stop", "delete") and await self.paused():
            # A frozen process acts on no signal, and does not even die, until the container is
            # resumed: waiting here for the services would hold the engine's kill for ever (and
            # with it the resume Docker sends after its SIGKILL). They end with the container,
            # as its main process does; its end or the poststop hook then finishes us.
            return {"ok": True}
        if op == "stop":
            await self.stop_services(force=bool(request.get("force")))
            return {"ok": True}
        if op == "delete":
            await self.stop_services(force=bool(request.get("force")))
            self.finish("the container is being deleted")
            return {"ok": True}
        if op == "hook":
            return await self.hook(str(request.get("stage")), request.get("state") or "")
        return {"ok": False, "error": f"unknown request {op!r}"}

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
                svc = self.services[name]
                svc.runner = self.tg.create_task(self.run_service(svc))
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

    # -- one service ------------------------------------------------------------------------

    async def run_service(self, svc: Service) -> None:
        for dep_name in self.predecessors[svc.name]:
            dep = self.services[dep_name]
            error = await asyncio.shield(dep.settled)
            if error and dep_name in svc.spec["requires"]:
                svc.state = "failed"
                svc.reason = f'dependency "{dep_name}" failed'
                svc.note(svc.reason)
                svc.settle(f'service "{svc.name}" not started: dependency "{dep_name}" failed')
                return
        if svc.stopping:
            return
        deadline = self.tg.create_task(self.start_deadline(svc))
        try:
            await self.supervise(svc)
        finally:
            deadline.cancel()

    async def start_deadline(self, svc: Service) -> None:
        timeout = svc.spec["ready_timeout"]
        try:
            await asyncio.wait_for(asyncio.shield(svc.settled), timeout)
            return
        except TimeoutError:
            pass
        why = svc.last_exit or ("still running" if svc.pid else "not running")
        svc.drain_output()
        svc.gave_up = True
        svc.state = "failed"
        svc.reason = f"not ready after {_seconds(timeout)}"
        svc.note(f"{svc.reason}: {why}")
        svc.settle(
            f'service "{svc.name}" not ready after {_seconds(timeout)}: {why}; '
            f"last output: {svc.last_output()}"
        )
        self.kill_service(svc, signal.SIGKILL)

    async def supervise(self, svc: Service) -> None:
        spec = svc.spec
        while not (svc.stopping or svc.gave_up):
            now = time.monotonic()
            while svc.starts and svc.starts[0] < now - spec["restart_interval"]:
                svc.starts.popleft()
            if len(svc.starts) >= spec["restart_burst"]:
                svc.state = "failed"
                svc.reason = (
                    f"start limit hit: {spec['restart_burst']} starts within "
                    f"{_seconds(spec['restart_interval'])}"
                )
                svc.note(svc.reason)
                svc.settle(
                    f'service "{svc.name}" failed: {svc.last_exit}; {svc.reason}; '
                    f"last output: {svc.last_output()}"
                )
                return
            if svc.starts or svc.last_exit:
                svc.restarts += 1
            svc.starts.append(now)
            status = await self.run_once(svc)
            if not svc.stopping and self.init_exited():
                # The container's init died and the kernel killed the rest of its PID namespace;
                # the service's exit may be reaped before the pidfd of init is read.
                self.main_exited()
                svc.stopping = True
                svc.note(
                    "the container's main process exited; the kernel ended the service with it"
                )
            if svc.stopping or svc.gave_up:
                break
            clean = _is_clean(status)
            policy = spec["restart"]
            if policy == "no" or (policy == "on-failure" and clean):
                svc.state = "exited" if clean else "failed"
                svc.reason = None if clean else svc.last_exit
                svc.settle(
                    None
                    if clean and svc.ready_since
                    else f'service "{svc.name}" {svc.last_exit} before it was ready; '
                    f"last output: {svc.last_output()}"
                )
                return
            healthy_for = time.monotonic() - (svc.started_at or time.monotonic())
            svc.failures = 1 if healthy_for >= spec["restart_reset_after"] else svc.failures + 1
            delay = min(spec["restart_max_delay"], spec["restart_delay"] * 2 ** (svc.failures - 1))
            svc.state = "backoff"
            svc.note(f"restarting in {_seconds(delay)}")
            await asyncio.sleep(delay)
        if svc.stopping and svc.state not in ("failed", "exited"):
            svc.state = "stopped"

    async def run_once(self, svc: Service) -> int:
        """Start the service once and wait for it to exit; returns its wait status."""
        svc.state = "starting"
        svc.ready_since = None
        svc.notified.clear()
        pid_file = os.path.join(self.dir, "pids", f"{svc.name}.pid")
        process_file = os.path.join(self.dir, "process", f"{svc.name}.json")
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        argv = [
            *self.lower,
            "exec",
            "--detach",
            "--pid-file",
            pid_file,
            "--process",
            process_file,
            *self.service_cgroup_args(svc),
            self.id,
        ]
        if svc.spec["ready"] == "file":
            # What the readiness file is before this run: only a file this run makes counts.
            svc.file_before = (
                readiness.file_stat(self.init_pid, svc.spec["ready_target"])
                if self.init_pid
                else None
            )
        if argv[-2] == "--cgroup-failed":
            svc.last_exit = f"could not be started ({argv[-1]})"
            return 1 << 8
        wfd = self.service_output(svc)
        svc.launched.clear()
        try:
            try:
                pid = procs.spawn(argv, stdout=wfd)
            finally:
                os.close(wfd)
            status = await self.reaper.wait(pid)
            if status != 0:
                svc.drain_output()
                svc.last_exit = (
                    f"could not be started ({self.plan['lower']} exec "
                    f"{procs.describe_status(status)})"
                )
                why = execerror.permanent(svc.log.tail(4096).decode("utf-8", "replace"))
                if why:  # a missing cwd or command: every retry would fail the same way
                    svc.last_exit = f"could not be started: {why}"
                    svc.gave_up = True
                    svc.state = "failed"
                    svc.reason = svc.last_exit
                    svc.note(svc.last_exit)
                    svc.settle(f'service "{svc.name}" {svc.last_exit}')
                return status
            try:
                with open(pid_file) as f:
                    svc.pid = int(f.read().strip())
            except (OSError, ValueError):
                svc.last_exit = "could not be started (no pid file)"
                return 1 << 8
            svc.pidfd = self.child_pidfd(svc.pid)
            svc.started_at = time.monotonic()
            svc.state = "running"
            svc.note(f"started, pid {svc.pid}")
            svc.exit_future = self.reaper.wait(svc.pid)
        finally:
            svc.launched.set()
        check = self.tg.create_task(self.check_ready(svc))
        try:
            status = await asyncio.shield(svc.exit_future)
        finally:
            check.cancel()
        svc.pid = None
        if svc.pidfd is not None:
            os.close(svc.pidfd)
            svc.pidfd = None
        # What the service left behind (a daemon it forked) ends with it, as with systemd's
        # control-group kill mode: a restart starts from nothing, and a stop leaves nothing.
        self.kill_service(svc, signal.SIGKILL)
        svc.drain_output()
        svc.last_exit = procs.describe_status(status)
        svc.note(svc.last_exit)
        return status

    def service_output(self, svc: Service) -> int:
        """A pipe whose read end feeds the service's log file; returns the write end."""
        loop = asyncio.get_running_loop()
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)

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
            svc.log.write(data)
            return True

        def readable() -> None:
            read_once()

        def drain() -> None:
            # The exit of a process can be reaped before the loop has read its last words from
            # the pipe; "last output" in an error must include them.
            for _ in range(64):
                if not read_once():
                    return

        closed: set[int] = set()
        loop.add_reader(r, readable)
        svc.drain_output = drain
        return w

    async def check_ready(self, svc: Service) -> None:
        spec = svc.spec
        kind, target, interval = spec["ready"], spec["ready_target"], spec["ready_interval"]
        pid = svc.pid
        assert pid is not None
        if kind == "tcp":
            # Only the service's own listener: a pod's containers share one network namespace.
            while not readiness.tcp_listening_owned(pid, target):
                await asyncio.sleep(interval)
        elif kind == "file":
            while not readiness.file_made(pid, target, svc.file_before):
                await asyncio.sleep(interval)
        elif kind == "notify":
            await svc.notified.wait()
        elif kind == "exec":
            probe = os.path.join(self.dir, "process", f"{svc.name}.probe.json")
            argv = [*self.lower, "exec", "--process", probe, self.id]
            while True:
                try:
                    status, _ = await procs.run(self.reaper, argv, timeout=max(interval, 5.0))
                except TimeoutError:
                    status = 1
                if status == 0:
                    break
                await asyncio.sleep(interval)
        svc.state = "ready"
        svc.ready_since = time.time()
        svc.note("ready")
        svc.settle(None)

    # -- notify sockets ---------------------------------------------------------------------

    def open_notify_sockets(self) -> list[socket.socket]:
        loop = asyncio.get_running_loop()
        socks = []
        for svc in self.services.values():
            if svc.spec["ready"] != "notify":
                continue
            # Bound before the lower create (the shim waits for us): the container's spec
            # bind-mounts this very socket, read-only, at the service's NOTIFY_SOCKET.
            path = os.path.join(self.dir, "notify", f"{svc.name}.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            control.via_fd(path, sock.bind)
            # The service may run as any user; the directory itself stays root-only.
            os.chmod(path, 0o666)
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self.notify_readable, sock, svc)
            socks.append(sock)
        return socks

    def notify_readable(self, sock: socket.socket, svc: Service) -> None:
        """Read what is queued, within the service's token bucket. Past it, datagrams are
        dropped (counted, said in the service's log once per window) and the socket is not read
        again until a token is due: the kernel's queue fills and the sender's sends fail or
        block, on the container's time, not ours."""
        limit = self._notify_limits.get(svc.name)
        now = time.monotonic()
        if limit is None:
            rate = float(self.plan.get("notify_rate") or NOTIFY_RATE)
            limit = (ratelimit.TokenBucket(rate, max(rate, 10.0), now), ratelimit.DropLog(10, now))
            self._notify_limits[svc.name] = limit
        bucket, drops = limit
        for _ in range(NOTIFY_BATCH):
            try:
                data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            if bucket.take(now):
                self.notify_datagram(data, ancdata, svc)
                continue
            said = drops.drop(now)
            if said is not None:
                svc.note(
                    f"notify socket: dropped {said} datagram(s) over the limit of "
                    f"{bucket.rate:g}/s ({drops.total} in all)"
                )
            loop = asyncio.get_running_loop()
            loop.remove_reader(sock.fileno())
            loop.call_later(
                max(bucket.wait_time(now), NOTIFY_PAUSE), self.notify_resume, sock, svc
            )
            return

    def notify_resume(self, sock: socket.socket, svc: Service) -> None:
        if sock.fileno() != -1 and not self.done.is_set():
            asyncio.get_running_loop().add_reader(sock.fileno(), self.notify_readable, sock, svc)

    def notify_datagram(self, data: bytes, ancdata: list[Any], svc: Service) -> None:
        sender = 0
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= 4:
                sender = int.from_bytes(payload[:4], "little")
        # Only the service (or its children) may say it is ready, not the container's app.
        if svc.pid is None or not readiness.is_descendant(sender, svc.pid):
            return
        if b"READY=1" in data.split(b"\n"):
            svc.notified.set()

    # -- stop ---------------------------------------------------------------------------------

    async def stop_services(self, force: bool) -> None:
        """Stop every service, each after the services that depend on it; idempotent."""
        self.stopping = True
        if self.stop_task is None:
            self.stop_task = self.tg.create_task(self._stop_all(force))
        elif force:
            for svc in self.services.values():
                self.kill_service(svc, signal.SIGKILL)
        await asyncio.shield(self.stop_task)

    async def _stop_all(self, force: bool) -> None:
        async with asyncio.TaskGroup() as tg:
            for svc in self.services.values():
                tg.create_task(self._stop_one(svc, force))

    async def _stop_one(self, svc: Service, force: bool) -> None:
        for name in self.dependents[svc.name]:
            await self.services[name].stopped.wait()
        svc.stopping = True
        try:
            await svc.launched.wait()
            if svc.pid is not None and svc.exit_future is not None:
                if svc.state != "failed":  # keep why a service that gave up failed
                    svc.state = "stopping"
                spec = svc.spec
                if force:
                    self.kill_service(svc, signal.SIGKILL)
                else:
                    svc.note(f"stopping with {signal.Signals(spec['stop_signal']).name}")
                    self.signal_main(svc, spec["stop_signal"])
                    self.signal_main(svc, signal.SIGCONT)
                try:
                    await asyncio.wait_for(asyncio.shield(svc.exit_future), spec["stop_timeout"])
                except TimeoutError:
                    svc.note(f"still running after {_seconds(spec['stop_timeout'])}: SIGKILL")
                    self.kill_service(svc, signal.SIGKILL)
                    await asyncio.shield(svc.exit_future)
                # Its forked daemons too (run_once does it as well, once it sees the exit).
                self.kill_service(svc, signal.SIGKILL)
            if svc.runner is not None and not svc.runner.done():
                svc.runner.cancel()
                try:
                    await svc.runner
                except asyncio.CancelledError:
                    pass
            if svc.state not in ("failed", "exited"):
                svc.state = "stopped"
            svc.settle(f'service "{svc.name}" stopped before it was ready')
        finally:
            svc.stopped.set()

    def child_pidfd(self, pid: int) -> int | None:
        """A pidfd of a child that the reaper has not released: opened before checking, so a
        number already reaped (and maybe reused) is never taken for the child."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        if self.reaper.reaped(pid):
            os.close(pidfd)
            return None
        return pidfd

    def signal_main(self, svc: Service, sig: int) -> None:
        if svc.pidfd is None:
            return
        try:
            signal.pidfd_send_signal(svc.pidfd, sig)
        except ProcessLookupError:
            pass

    def service_cgroup_args(self, svc: Service) -> list[str]:
        """`--cgroup retinue-NAME`: the service runs in its own sub-cgroup of the container's,
        so that whatever it forks (a daemon that left its process tree) is found at its stop.
        Empty where the container's cgroups are unknown; ["--cgroup-failed", why] on error."""
        if self._service_cgroups is None:
            self._service_cgroups = {}
            if self.init_pid is not None:
                try:
                    self._service_cgroups = cgroups.container_dirs(self.init_pid)
                except OSError:
                    pass
        if not self._service_cgroups:
            return []
        try:
            cgroups.make_service_cgroup(self._service_cgroups, svc.name)
        except (cgroups.CgroupError, OSError) as e:
            return ["--cgroup-failed", f"cannot create its cgroup: {e}"]
        return ["--cgroup", cgroups.SUB_PREFIX + svc.name]

    def kill_service(self, svc: Service, sig: int) -> None:
        """Signal the service's main process and everything else it started: its sub-cgroup,
        else (no cgroup) the main process's descendants."""
        self.signal_main(svc, sig)
        if self._service_cgroups:
            cgroups.kill_all(self._service_cgroups, svc.name, sig)
        elif svc.pid is not None and svc.pidfd is not None:
            self.kill_tree(svc.pid, sig)

    def kill_tree(self, pid: int, sig: int) -> None:
        """Signal every process descended from `pid` (while `pid` is alive, its descendants'
        parent chains lead to it and to no recycled number)."""
        victims = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != pid and readiness.is_descendant(int(entry), pid):
                victims.append(int(entry))
        for victim in victims:
            _kill(victim, sig)


class _Finished(Exception):
    """Raised inside the task group to end it once the supervisor is done."""


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _is_clean(status: int) -> bool:
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) in CLEAN_SIGNALS
    return os.waitstatus_to_exitcode(status) == 0


def _seconds(value: float) -> str:
    return f"{value:g}s" if value >= 1 or value == 0 else f"{value * 1000:g}ms"
