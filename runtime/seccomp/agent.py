"""The seccomp agent: accepts runc's connections, serves every notify fd it gets, answers all.

Shape (research/seccomp.md §3, §6, §7):

- The listener is a unix stream socket, mode 0600 in a root-only directory; a peer whose
  SO_PEERCRED uid is not 0 is dropped before anything is read.
- runc connects once per filtered process (the container's init at create, then every
  `runc exec`), sends one JSON message with exactly one fd (SCM_RIGHTS), and in runc 1.1 keeps
  its end open until it exits: the agent reads one message (more only while the JSON is
  incomplete, within a deadline), never waits for EOF, and closes its end. Fds are received with
  MSG_CMSG_CLOEXEC, so no notify fd reaches a child (a leaked copy would turn a dead agent's
  ENOSYS into a hang).
- One notification thread polls every notify fd: RECV, route by syscall number (and argument
  conditions), answer. Handlers marked `blocking` run on worker threads and answer from there,
  so a mount in a container's namespace never holds up another container's getppid; their
  namespace work runs in helper processes (`nshelper`), never in a fork of the agent.
- Every notification gets an answer: the handler's, an errno from a SyscallError, or the rule's
  configured errno on an internal error. A notification whose target is gone (ENOENT) needs none.
- POLLHUP without POLLIN means every task using the filter has exited: the fd is closed, not
  polled again (epoll would report it ready forever). Stopping the agent closes every notify fd,
  and the kernel fails the syscalls still waiting with ENOSYS.

The supervisor owns it through `serve()` (an asyncio coroutine that runs until cancelled); the
standalone entry `python -m retinue.seccomp.agent --listener PATH --config FILE` runs the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno as errno_mod
import json
import logging
import os
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..ratelimit import DropLog, TokenBucket
from . import notify
from .api import ANSWERED, ContainerProcess, Handler, HandlerContext, Reply, Request
from .notify import SyscallError, TargetGone
from .profile import METADATA_PREFIX, digest
from .syscalls import NAMES, X86_64

if TYPE_CHECKING:
    from ..compiled import CompiledSeccompRule

MAX_MESSAGE = 1 << 20
RECEIVE_TIMEOUT = 5.0
_CREDS = struct.Struct("3i")

# ---------------------------------------------------------------------------------------------
# Routes: syscall number -> handler, from the compiled configuration


def _cmp(op: str, value: int, value_two: int) -> Callable[[int], bool]:
    if op == "SCMP_CMP_EQ":
        return lambda a: a == value
    if op == "SCMP_CMP_NE":
        return lambda a: a != value
    if op == "SCMP_CMP_LT":
        return lambda a: a < value
    if op == "SCMP_CMP_LE":
        return lambda a: a <= value
    if op == "SCMP_CMP_GT":
        return lambda a: a > value
    if op == "SCMP_CMP_GE":
        return lambda a: a >= value
    if op == "SCMP_CMP_MASKED_EQ":
        return lambda a: a & value == value_two
    raise ValueError(f"unknown comparison {op!r}")


class Route:
    """One rule's share of one syscall."""

    __slots__ = ("blocking", "conditions", "errno", "handler", "rule", "syscall")

    def __init__(
        self,
        rule: str,
        syscall: str,
        handler: Handler,
        errno: int,
        conditions: list[tuple[int, Callable[[int], bool]]],
    ) -> None:
        self.rule = rule
        self.syscall = syscall
        self.handler = handler
        self.errno = errno
        self.conditions = conditions
        self.blocking = type(handler).blocking

    def matches(self, args: tuple[int, ...]) -> bool:
        return all(test(args[index]) for index, test in self.conditions)


class Routes:
    """The handlers, instantiated once, and the table the notification thread looks up."""

    def __init__(
        self,
        by_nr: dict[int, list[Route]],
        handlers: list[Handler],
        fingerprint: str = "",
        namespaces: Any = None,
    ) -> None:
        self.by_nr = by_nr
        self.handlers = handlers
        self.fingerprint = fingerprint
        self.namespaces = namespaces

    @classmethod
    def from_rules(
        cls,
        rules: list[CompiledSeccompRule],
        log: logging.Logger,
        registry: dict[str, type[Handler]] | None = None,
    ) -> Routes:
        """Instantiate the handlers of compiled rules (`config.compile_rules`).

        `registry` maps handler names to classes; by default the entry-point group
        `retinue.seccomp`. Settings are structured by the handler's own type here again, so a
        rule that skipped `retinue check` still fails loudly, naming its key path.
        """
        from . import config
        from .nshelper import NamespaceRunner

        registry = config.handler_registry() if registry is None else registry
        runner = NamespaceRunner()
        context = HandlerContext(log, runner)
        by_nr: dict[int, list[Route]] = {}
        handlers: list[Handler] = []
        for i, rule in enumerate(rules):
            name = rule.get("name") or f"rule[{i}]"
            handler_cls = registry.get(rule["handler"])
            if handler_cls is None:
                raise ConfigError(f"{name}: unknown seccomp handler {rule['handler']!r}")
            unknown = [s for s in rule["syscalls"] if s not in X86_64]
            if unknown:
                raise ConfigError(f"{name}: unknown syscalls {unknown}")
            settings = config.structure_settings(handler_cls, rule.get("settings") or {}, name)
            handler = handler_cls(settings, context)
            handlers.append(handler)
            conditions = [
                (a["index"], _cmp(a["op"], a.get("value", 0), a.get("valueTwo", 0)))
                for a in rule.get("args") or []
            ]
            for syscall in rule["syscalls"]:
                by_nr.setdefault(X86_64[syscall], []).append(
                    Route(name, syscall, handler, rule.get("errno", errno_mod.ENOSYS), conditions)
                )
        if any(h.blocking for h in handlers):
            runner.prestart()
        return cls(by_nr, handlers, digest(rules), runner)

    def close(self) -> None:
        for handler in self.handlers:
            with contextlib.suppress(Exception):
                handler.close()
        if self.namespaces is not None:
            self.namespaces.close()


# ---------------------------------------------------------------------------------------------
# The notification thread


class Target:
    """One notify fd: a filtered process tree (the container's init, or one exec)."""

    __slots__ = ("busy", "closed", "container", "fd", "hung_up", "lock")

    def __init__(self, fd: int, container: ContainerProcess) -> None:
        self.fd = fd
        self.container = container
        self.busy = 0  # notifications of this fd being handled on workers
        self.hung_up = False
        self.closed = False
        self.lock = threading.Lock()

    def release(self) -> None:
        with self.lock:
            self.busy -= 1
            if self.hung_up and self.busy == 0:
                self._close()

    def hang_up(self) -> None:
        with self.lock:
            self.hung_up = True
            if self.busy == 0:
                self._close()

    def _close(self) -> None:
        # A worker may still hold the number: close only when none does, or it could SEND to
        # whatever file gets that number next.
        if not self.closed:
            self.closed = True
            os.close(self.fd)


class Stats:
    __slots__ = (
        "answered", "connections", "errors", "rejected", "targets", "throttled", "vanished"
    )

    def __init__(self) -> None:
        self.connections = 0  # runc connections accepted and understood
        self.rejected = 0  # connections refused (peer, protocol)
        self.targets = 0  # notify fds currently served
        self.answered = 0
        self.vanished = 0  # notifications whose target went away first
        self.errors = 0  # internal errors answered with the rule's errno
        self.throttled = 0  # times the container went over its rate and its syscalls waited

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class Agent:
    """The notification thread, its workers, and the notify fds they serve."""

    def __init__(
        self, routes: Routes, log: logging.Logger, workers: int = 4, rate: float | None = None
    ) -> None:
        self.routes = routes
        # Over `rate` notifications a second, the excess waits: the agent stops reading until a
        # token is due. A notified syscall already sleeps in the kernel until it is answered, so
        # waiting costs the supervisor nothing and the flooding container only its own time; an
        # errno instead would still cost a RECV and a SEND per call (a tight loop keeps that up)
        # and would fail calls, such as sysinfo, that programs never expect to fail or retry.
        now = time.monotonic()
        self._bucket = TokenBucket(rate, max(rate, 50.0), now) if rate else None
        self._throttle_log = DropLog(10, now)
        self.log = log
        self.stats = Stats()
        self._targets: dict[int, Target] = {}
        self._incoming: list[Target] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="seccomp-worker")
        self._thread = threading.Thread(target=self._run, name="seccomp-notify", daemon=True)
        self._bad_arch_logged = False

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the notification thread is serving."""
        return self._thread.is_alive()

    def add(self, fd: int, container: ContainerProcess) -> None:
        """Serve a notify fd (ownership passes to the agent)."""
        with self._lock:
            if self._stopping:
                os.close(fd)
                return
            self._incoming.append(Target(fd, container))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; every notify fd is closed (pending syscalls then fail with ENOSYS)."""
        with self._lock:
            self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        # Helpers first: a worker waiting on one gets its error at once and answers.
        self.routes.close()
        self._workers.shutdown(wait=True, cancel_futures=False)
        with self._lock:
            targets = [*self._targets.values(), *self._incoming]
            self._targets.clear()
            self._incoming.clear()
        for target in targets:
            target.hang_up()
        self.stats.targets = 0
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        wake_only = select.poll()
        wake_only.register(self._wake_r, select.POLLIN)
        targets = self._targets
        bucket = self._bucket
        try:
            while True:
                if bucket is not None:
                    delay = bucket.wait_time(time.monotonic())
                    if delay > 0:
                        self._throttled()
                        if wake_only.poll(max(10, int(delay * 1000))) and not self._woken(poller):
                            return
                        continue
                for fd, events in poller.poll():
                    if fd == self._wake_r:
                        if not self._woken(poller):
                            return
                        continue
                    served = targets.get(fd)
                    if served is None:
                        continue
                    if events & select.POLLIN:
                        if bucket is not None and not bucket.take(time.monotonic()):
                            break  # over the rate: wait above, then poll again
                        if self._receive(served):
                            continue
                    elif not events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        continue
                    # POLLHUP without POLLIN: every task of the filter has exited, and RECV
                    # would now fail at once, forever. Stop polling it.
                    poller.unregister(fd)
                    with self._lock:
                        del targets[fd]
                    self.stats.targets = len(targets)
                    self.log.debug(
                        "seccomp: %s pid %d: filter released",
                        served.container.id,
                        served.container.pid,
                    )
                    served.hang_up()
        except Exception:
            self.log.exception("seccomp: notification thread failed; closing every notify fd")
            with self._lock:
                self._stopping = True
                dead = list(targets.values())
                targets.clear()
            for target in dead:
                target.hang_up()

    def _woken(self, poller: select.poll) -> bool:
        """Take in the fds added since; False when the agent is stopping."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        with self._lock:
            if self._stopping:
                return False
            incoming, self._incoming = self._incoming, []
            for target in incoming:
                self._targets[target.fd] = target
        for target in incoming:
            poller.register(target.fd, select.POLLIN)
        self.stats.targets = len(self._targets)
        return True

    def _throttled(self) -> None:
        self.stats.throttled += 1
        said = self._throttle_log.drop(time.monotonic())
        if said is not None:
            ids = sorted({t.container.id for t in self._targets.values()})
            self.log.warning(
                "seccomp: %s: over %g notifications/s; its syscalls waited %d time(s) "
                "(%d in all)",
                ",".join(ids) or "?",
                self._bucket.rate if self._bucket else 0,
                said,
                self._throttle_log.total,
            )

    def _receive(self, target: Target) -> bool:
        """Serve one notification; False if the fd is unusable and must be dropped."""
        try:
            notif = notify.recv(target.fd)
        except OSError as e:
            # Polling it again would fail the same way, in a loop.
            self.log.error(
                "seccomp: %s: RECV failed, dropping its notify fd: %s", target.container.id, e
            )
            return False
        if notif is None:
            self.stats.vanished += 1
            return True
        route = None
        if notif.arch == notify.AUDIT_ARCH_X86_64 and not notif.nr & notify.X32_SYSCALL_BIT:
            routes = self.routes.by_nr.get(notif.nr)
            if routes:
                for candidate in routes:
                    if not candidate.conditions or candidate.matches(notif.args):
                        route = candidate
                        break
        if route is None:
            # i386/x32 numbering, or a syscall the configuration does not route: fail closed.
            if notif.arch != notify.AUDIT_ARCH_X86_64 and not self._bad_arch_logged:
                self._bad_arch_logged = True
                self.log.warning(
                    "seccomp: %s: syscall %d of arch %#x refused (ENOSYS)",
                    target.container.id,
                    notif.nr,
                    notif.arch,
                )
            elif notif.arch == notify.AUDIT_ARCH_X86_64:
                self.log.warning(
                    "seccomp: %s: no handler for %s, answered ENOSYS",
                    target.container.id,
                    NAMES.get(notif.nr, notif.nr),
                )
            self._send(target, notif.id, Reply(0, -errno_mod.ENOSYS, 0))
            return True
        request = Request(target.fd, notif, route.syscall, target.container)
        if route.blocking:
            with target.lock:
                target.busy += 1
            try:
                self._workers.submit(self._serve_on_worker, target, route, request)
            except RuntimeError:  # shutting down
                target.release()
                self._send(target, notif.id, Reply(0, -route.errno, 0))
        else:
            self._serve(target, route, request)
        return True

    def _serve_on_worker(self, target: Target, route: Route, request: Request) -> None:
        try:
            self._serve(target, route, request)
        finally:
            target.release()

    def _serve(self, target: Target, route: Route, request: Request) -> None:
        try:
            reply = route.handler.handle(request)
            if type(reply) is not Reply:
                raise TypeError(f"handler returned {reply!r}, not a Reply")
        except TargetGone:
            self.stats.vanished += 1
            return
        except SyscallError as e:
            reply = Reply(0, -e.errno, 0)
        except Exception:
            self.stats.errors += 1
            self.log.exception(
                "seccomp: %s pid %d: handler %s failed on %s; answered %s",
                target.container.id,
                request.pid,
                route.rule,
                route.syscall,
                errno_mod.errorcode.get(route.errno, route.errno),
            )
            reply = Reply(0, -route.errno, 0)
        finally:
            request.close()
        if reply is ANSWERED:
            self.stats.answered += 1
            return
        self._send(target, request.id, reply, route.errno)

    def _send(self, target: Target, notif_id: int, reply: Reply, fallback: int = 0) -> None:
        try:
            if notify.send(target.fd, notif_id, reply.val, reply.error, reply.flags):
                self.stats.answered += 1
            else:
                self.stats.vanished += 1
        except OSError as e:
            # EINVAL: a malformed reply (e.g. CONTINUE with a value); never leave it unanswered.
            self.log.error("seccomp: %s: SEND failed: %s", target.container.id, e)
            if fallback and e.errno == errno_mod.EINVAL:
                with contextlib.suppress(OSError):
                    notify.send(target.fd, notif_id, 0, -fallback, 0)


# ---------------------------------------------------------------------------------------------
# runc's connection


class ProtocolError(Exception):
    pass


def bind(path: str, backlog: int = 64) -> socket.socket:
    """The listening socket at `path`, mode 0600; a stale socket file there is replaced."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    return sock


def parse_state(data: bytes, fds: list[int]) -> tuple[int, ContainerProcess]:
    """Validate runc's message; returns the notify fd and who it is for. Closes nothing."""
    try:
        msg = json.loads(data)
    except ValueError as e:
        raise ProtocolError(f"invalid JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message is not a JSON object")
    names = msg.get("fds")
    if names != ["seccompFd"] or len(fds) != 1:
        raise ProtocolError(f"expected one fd named seccompFd, got {names!r} and {len(fds)} fds")
    if not notify.is_notify_fd(fds[0]):
        raise ProtocolError("the fd is not a seccomp notify fd")
    state = msg.get("state")
    pid = msg.get("pid")
    if not isinstance(state, dict) or type(pid) is not int or pid <= 0:
        raise ProtocolError("missing pid or state")
    annotations = state.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    init_pid = state.get("pid")
    return fds[0], ContainerProcess(
        id=str(state.get("id") or ""),
        pid=pid,
        init_pid=init_pid if type(init_pid) is int and init_pid > 0 else pid,
        bundle=str(state.get("bundle") or ""),
        status=str(state.get("status") or ""),
        metadata=str(msg.get("metadata") or ""),
        annotations={str(k): str(v) for k, v in annotations.items()},
    )


def _fds_from(ancillary: Iterable[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(struct.unpack(f"{usable // 4}i", data[:usable]))
    return fds


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await asyncio.wait_for(fut, timeout)
    finally:
        loop.remove_reader(fd)


async def receive(
    conn: socket.socket, timeout: float = RECEIVE_TIMEOUT
) -> tuple[int, ContainerProcess]:
    """Read runc's one message (never to EOF: runc 1.1 keeps the connection open)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    data = b""
    fds: list[int] = []
    conn.setblocking(False)
    try:
        while True:
            try:
                chunk, ancillary, flags, _ = conn.recvmsg(
                    65536, socket.CMSG_SPACE(4 * 8), socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                left = deadline - loop.time()
                if left <= 0:
                    raise ProtocolError("timed out waiting for runc's message") from None
                try:
                    await _readable(loop, conn.fileno(), left)
                except TimeoutError:
                    raise ProtocolError("timed out waiting for runc's message") from None
                continue
            fds += _fds_from(ancillary)
            if flags & socket.MSG_CTRUNC:
                raise ProtocolError("too many fds (control message truncated)")
            if not chunk:
                if not data:
                    raise ProtocolError("connection closed before any message")
                return parse_state(data, fds)
            data += chunk
            if len(data) > MAX_MESSAGE:
                raise ProtocolError("message too long")
            try:
                json.loads(data)
            except ValueError:
                continue  # incomplete: a stream may deliver it in pieces
            return parse_state(data, fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def peer_uid(conn: socket.socket) -> int:
    _, uid, _ = _CREDS.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
    return int(uid)


async def _connection(
    agent: Agent, conn: socket.socket, on_connection: Callable[[ContainerProcess], None] | None
) -> None:
    with conn:
        uid = peer_uid(conn)
        if uid != 0:
            agent.stats.rejected += 1
            agent.log.warning("seccomp: refused a connection from uid %d", uid)
            return
        try:
            fd, container = await receive(conn)
        except ProtocolError as e:
            agent.stats.rejected += 1
            agent.log.warning("seccomp: refused runc's connection: %s", e)
            return
        except OSError as e:
            agent.stats.rejected += 1
            agent.log.warning("seccomp: runc's connection failed: %s", e)
            return
    fingerprint = agent.routes.fingerprint
    if fingerprint and container.metadata != METADATA_PREFIX + fingerprint:
        agent.log.warning(
            "seccomp: %s: listenerMetadata %r does not match this agent's rules (%s); "
            "serving with this agent's rules",
            container.id,
            container.metadata,
            fingerprint,
        )
    agent.stats.connections += 1
    agent.log.info(
        "seccomp: %s: serving pid %d (%s)", container.id, container.pid, container.status or "?"
    )
    agent.add(fd, container)
    if on_connection is not None:
        on_connection(container)


async def serve(
    listener: str | socket.socket,
    routes: Routes,
    log: logging.Logger,
    *,
    on_connection: Callable[[ContainerProcess], None] | None = None,
    agent: Agent | None = None,
) -> None:
    """Serve runc's connections and their notifications until cancelled.

    `listener` is a path (bound here, mode 0600, removed on exit) or a socket already bound and
    listening (the supervisor binds before the lower `create` runs; it keeps ownership of the
    path). On exit, cancelled or not, every notify fd is closed: the container's notified
    syscalls then fail with ENOSYS instead of hanging; `routes` is closed too.
    """
    loop = asyncio.get_running_loop()
    own_path = isinstance(listener, str)
    sock = bind(listener) if isinstance(listener, str) else listener
    sock.setblocking(False)
    agent = agent or Agent(routes, log)
    agent.start()
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            conn, _ = await loop.sock_accept(sock)
            task = asyncio.create_task(_connection(agent, conn, on_connection))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        if own_path:
            with contextlib.suppress(OSError):
                os.unlink(sock.getsockname())
        sock.close()
        await asyncio.shield(asyncio.to_thread(agent.stop))


# ---------------------------------------------------------------------------------------------
# Standalone


def setup_log(path: str, verbose: bool = False, name: str = "retinue.seccomp") -> logging.Logger:
    """The logger handlers write to: one line per event in `path` (or on stderr)."""
    log = logging.getLogger(name)
    handler: logging.Handler = (
        logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    return log


async def _main_async(listener: str, rules: list[CompiledSeccompRule], log: logging.Logger) -> None:
    routes = Routes.from_rules(rules, log)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    started = time.monotonic()
    with contextlib.suppress(asyncio.CancelledError):
        await serve(listener, routes, log)
    log.info("seccomp: agent stopped after %.1fs", time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retinue.seccomp.agent",
        description="Serve seccomp notifications of runc containers (standalone agent).",
    )
    parser.add_argument("--listener", required=True, help="unix socket path to listen on")
    parser.add_argument("--config", required=True, help="TOML file with [[rule]] entries")
    parser.add_argument("--log", default="", help="log file (default: stderr)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    from . import config

    try:
        rules = config.compile_rules(config.load(args.config))
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    log = setup_log(args.log, args.verbose)
    notify.check_sizes()
    asyncio.run(_main_async(args.listener, rules, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
