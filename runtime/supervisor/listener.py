"""The supervisor's unix stream listeners (control.sock, init.sock): one handler per connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class UnixListener:
    """Serves each connection of a bound unix socket with `handler(reader, writer)` until
    closed."""

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.handler = handler
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self.handler, sock=self.sock)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
