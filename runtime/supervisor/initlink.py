"""The supervisor's end of the channel with retinue-init, the container's PID 1.

init connects once, before it starts the main process, to `init.sock` in the container's state
directory (bind-mounted alone, read-only, into the container). When the main process has exited,
init writes `exit CODE`; the supervisor stops the services in reverse dependency order within
the container's stop budget and answers `ok`; init then exits with CODE, and the kernel ends
whatever is left of the container.

Any process of the container can connect to the socket: only the connection whose peer is the
container's init (SO_PEERCRED, a host pid the kernel fills in, compared with the pid runc
reported) is listened to. init connected before any other process of the container existed, and
its descriptor is close-on-exec, so no other process holds that connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING

from . import control

if TYPE_CHECKING:
    from .core import Supervisor

SOCKET_NAME = "init.sock"  # edits.INIT_SOCKET_NAME: the mount's source
_UCRED = struct.Struct("3i")


class InitLink:
    """The listening socket and the one connection that counts."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # When the main process exited and with what code, once init has said so.
        self.main_exit: tuple[float, int] | None = None

    async def listen(self) -> None:
        """Bind before the lower create runs: runc bind-mounts the socket into the container."""
        path = os.path.join(self.sup.dir, SOCKET_NAME)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        control.via_fd(path, sock.bind)
        # The container's process.user runs init; connecting needs write permission. Whoever
        # connects, only init's connection is ever read.
        os.chmod(path, 0o666)
        self.server = await asyncio.start_unix_server(self._accept, sock=sock)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.tasks:
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        try:
            if await self._is_init(writer):
                await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _is_init(self, writer: asyncio.StreamWriter) -> bool:
        sock: socket.socket = writer.get_extra_info("socket")
        peer_pid, _, _ = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        sup = self.sup
        if sup.init_pid is None:
            # runc's createRuntime hook normally told us already; ask runc otherwise.
            state = await sup.lower_state()
            if state is not None:
                sup.container_created(state.get("pid"))
        return sup.init_pid is not None and peer_pid == sup.init_pid

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        word, _, code = line.decode("ascii", "replace").strip().partition(" ")
        if word != "exit" or not code.lstrip("-").isdigit():
            # EOF: init died without a word (SIGKILL); its pidfd tells the rest.
            return
        self.main_exit = (time.monotonic(), int(code))
        await self.stop_after_main(int(code))
        # The supervisor ended the main process itself (fate sharing): the container's exit code
        # says so, not the SIGTERM it got.
        fate = getattr(self.sup, "fate_code", None)
        writer.write(f"code {fate}\n".encode() if fate is not None else b"ok\n")
        await writer.drain()

    async def stop_after_main(self, code: int) -> None:
        """The services, in reverse dependency order, within the container's stop budget."""
        sup = self.sup
        budget = float(sup.plan.get("stop_budget", 5.0))
        sup.phase = "stopping"
        print(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {sup.id}: the main process exited ({code}); "
            f"stopping the services within {budget:g}s",
            file=sys.stderr,
            flush=True,
        )
        try:
            await asyncio.wait_for(sup.stop_services(force=False), budget)
        except TimeoutError:
            # The stop goes on only until init exits: then the kernel kills what is left of
            # the PID namespace. No restart may start in between.
            for svc in sup.services.values():
                svc.stopping = True
                if svc.pid is not None:
                    svc.note(f"stop budget of {budget:g}s spent: ended with the container")
