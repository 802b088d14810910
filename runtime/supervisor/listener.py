"""The supervisor's control socket listener: one handler per connection, no asyncio.Server.

Not asyncio.start_unix_server. Its Server counts the connections it attaches, and a connection
accepted just before Server.close() is attached after it: CPython 3.11 guards that with an
assert, which the supervisor's -OO removes, and that connection's end then wakes the closed
server's waiters a second time ("TypeError: 'NoneType' object is not iterable" in
_call_connection_lost, in supervisor.log at shutdown; issue 15 item 17). Here a connection
belongs to its handler alone, and closing the listener only stops the accepting.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

BACKLOG = 100
# accept(2) failing for want of descriptors or memory: the socket stays readable, so reading it
# again at once would spin; the connection waits in the backlog meanwhile.
ACCEPT_PAUSE = 0.1


class UnixListener:
    """Serves each connection of a bound unix socket with `handler(reader, writer)`, in a task
    of its own, until closed."""

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.handler = handler
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._closed = False

    async def start(self) -> None:
        self.sock.setblocking(False)
        self.sock.listen(BACKLOG)
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Accept nothing more: a client not accepted yet gets ECONNRESET or ECONNREFUSED (the
        shim's "supervisor gone"); connections already accepted are served to their end."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _accept(self) -> None:
        for _ in range(BACKLOG):
            if self._closed:
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError:
                self._loop.remove_reader(self.sock.fileno())
                self._loop.call_later(ACCEPT_PAUSE, self._resume)
                return
            task = self._loop.create_task(self._serve(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self.sock.fileno(), self._accept)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn)
        except BaseException:
            conn.close()
            raise
        await self.handler(reader, writer)
