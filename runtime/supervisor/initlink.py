"""The supervisor's end of the channel with retinue-init, the container's PID 1.

init connects once, before it starts the main process, to `init.sock` in the container's state
directory (bind-mounted alone, read-only, into the container). When the main process has exited,
init writes `exit CODE`; the link calls the one callback the Supervisor gave it, which stops
the services in reverse dependency order within the container's stop budget and returns the
answer (`ok`, or `code N` when the supervisor itself ended the main process); init then exits
with CODE (or N), and the kernel ends whatever is left of the container. The link itself knows
only the `AppContainer` (container.py): whose connection to trust, and whether init still runs.

Any process of the container can connect to the socket: only the connection whose peer is the
container's init (SO_PEERCRED, a host pid the kernel fills in, compared with the pid runc
reported) is listened to, and on it only the bytes that init itself wrote (SCM_CREDENTIALS on
every read): a process that copied init's descriptor (pidfd_getfd, ptrace; init makes itself
non-dumpable so that only CAP_SYS_PTRACE can) is not heard. Strangers' connections are closed
unread as soon as they are accepted, in bounded synchronous batches, so a flood of
them cannot keep init out for long (init waits for a place in the backlog rather than
giving up); once init is connected the socket stops listening: nobody else has any use for it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .. import control, layout

if TYPE_CHECKING:
    from .container import AppContainer

SOCKET_NAME = layout.INIT_SOCKET_NAME  # the source of the mount at layout.INIT_SOCKET
_UCRED = struct.Struct("3i")
# Connections accepted per event-loop turn.
_ACCEPT_BATCH = 64


class InitLink:
    """The listening socket and the one connection that counts."""

    def __init__(
        self, container: AppContainer, main_exited: Callable[[int], Awaitable[bytes]]
    ) -> None:
        self.container = container
        # Called with the main process's exit code; returns the answer for init.
        self.main_exited = main_exited
        self.listener: socket.socket | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # Messages on init's connection sent by another process (a copied descriptor).
        self.strangers = 0
        self._lookup: asyncio.Future[None] | None = None

    async def listen(self) -> None:
        """Bind before the lower create runs: runc bind-mounts the socket into the container."""
        path = os.path.join(self.container.dir, SOCKET_NAME)
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )
        control.via_fd(path, sock.bind)
        # The container's process.user runs init; connecting needs write permission. Whoever
        # connects, only init's connection is ever read.
        os.chmod(path, 0o666)
        # The largest backlog the kernel grants: strangers flooding the socket must fill more
        # than one event-loop turn's worth before init's connect has to wait (init then waits).
        sock.listen(socket.SOMAXCONN)
        # Credentials on every message from the start: an accepted connection inherits this
        # (the kernel copies it at accept). Set on the connection only once _serve ran, a main
        # process that exits at once could have init's `exit N` sent in between, without
        # credentials, and taken for a stranger's (init then waits for an answer in vain).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.listener = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_all)

    def _stop_listening(self) -> None:
        if self.listener is not None:
            asyncio.get_running_loop().remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None

    def close(self) -> None:
        self._stop_listening()
        for task in self.tasks:
            task.cancel()
        if self._lookup is not None:
            self._lookup.cancel()

    def _accept_all(self) -> None:
        """Accept a batch without awaiting anything: a stranger's connection is closed unread
        the moment it is accepted. Bounded, so that a flood cannot starve the event loop."""
        for _ in range(_ACCEPT_BATCH):
            if self.listener is None:
                return
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and the like: the next readable event tries again
            try:
                conn.setblocking(False)  # accept(2) does not pass O_NONBLOCK on
                peer = _peer_pid(conn)
            except OSError:
                conn.close()
                continue
            if not self._may_be_init(peer):
                conn.close()
                continue
            if peer == self.container.init_pid:
                # init connects once: from now on nobody needs the socket, and a stranger's
                # connect is refused by the kernel at no cost to the supervisor.
                self._stop_listening()
            task = asyncio.ensure_future(self._serve(conn, peer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _may_be_init(self, peer: int) -> bool:
        init_pid = self.container.init_pid
        # Before runc's createRuntime hook has told us init's pid, any peer might be it:
        # _serve asks runc (once) before listening to it.
        return init_pid is None or peer == init_pid

    async def _serve(self, conn: socket.socket, peer: int) -> None:
        app = self.container
        try:
            if app.init_pid is None:
                # One `runc state` however many peers are waiting for the answer.
                if self._lookup is None:
                    self._lookup = asyncio.ensure_future(self._ask_runc())
                await asyncio.shield(self._lookup)
            if app.init_pid is None or peer != app.init_pid or app.exited():
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            line = await self._line_from_init(conn)
            word, _, code = line.decode("ascii", "replace").strip().partition(" ")
            if word != "exit" or not code.lstrip("-").isdigit():
                # EOF: init died without a word (SIGKILL); its pidfd tells the rest.
                return
            answer = await self.main_exited(int(code))
            await asyncio.get_running_loop().sock_sendall(conn, answer)
        except OSError:
            pass
        finally:
            conn.close()

    async def _ask_runc(self) -> None:
        state = await self.container.lower_state()
        if state is not None:
            await self.container.init_from_state(state)

    async def _line_from_init(self, conn: socket.socket) -> bytes:
        """init's one line, or b"" at EOF. The kernel keeps bytes from different senders in
        different reads and says who sent each (SCM_CREDENTIALS): whatever a process that
        copied init's descriptor writes is dropped, so only init's own bytes are read, while
        init is alive."""
        loop = asyncio.get_running_loop()
        data = b""
        while not data.endswith(b"\n") and len(data) < 64:
            readable: asyncio.Future[None] = loop.create_future()

            def ready(future: asyncio.Future[None] = readable) -> None:
                # The loop may call a reader again before the awaiting task has resumed.
                if not future.done():
                    future.set_result(None)

            loop.add_reader(conn.fileno(), ready)
            try:
                await readable
            finally:
                loop.remove_reader(conn.fileno())
            try:
                chunk, ancillary, _, _ = conn.recvmsg(64, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                continue
            if not chunk:
                return b""
            if _sender(ancillary) != self.container.init_pid or self.container.exited():
                self._stranger(len(chunk))
                continue
            data += chunk
        return data

    def _stranger(self, size: int) -> None:
        self.strangers += 1
        if self.strangers == 1:
            # Once: a process that can copy init's descriptor can also write in a loop.
            print(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.container.id}: ignored {size} bytes "
                "on init's connection from another process (a copied descriptor)",
                file=sys.stderr,
                flush=True,
            )


def _peer_pid(conn: socket.socket) -> int:
    """The pid that connected (the kernel's record, in the supervisor's PID namespace)."""
    pid, _, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(pid)


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The pid that wrote the bytes just read, from their SCM_CREDENTIALS."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _, _ = _UCRED.unpack(data[: _UCRED.size])
            return int(pid)
    return None

