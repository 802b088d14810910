"""The control server: reads one request from `control.sock`, checks it against the declared
protocol (retinue.control), calls the Supervisor and writes its reply.

It holds no state of its own beyond its connections: what a request means is the Supervisor's
business (supervisor.py), what a request may contain is control.py's. A request that is not
valid gets `{"ok": false, "error": ...}` naming what is wrong, and never takes the supervisor
down.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import control
from .listener import UnixListener

if TYPE_CHECKING:
    from .supervisor import Supervisor

# A control request's `by` (who stopped a service), as `retinue status` shows it.
MAX_BY = 64

# A request's handler: the checked request in, the reply out.
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    """The control socket of one container's supervisor."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.server: UnixListener | None = None
        # Connection handlers are the server's tasks; kept so that the last replies (delete,
        # poststop) are written before the process exits.
        self._handlers: set[asyncio.Task[Any]] = set()
        # One handler per op of control.OPS.
        self.ops: dict[str, Handler] = {
            "status": self.op_status,
            "start": self.op_start,
            "stop": self.op_stop,
            "delete": self.op_delete,
            "hook": self.op_hook,
            "stop-service": self.op_stop_service,
            "start-service": self.op_start_service,
            "restart": self.op_restart,
        }
        assert self.ops.keys() == control.OPS.keys()

    async def open(self) -> None:
        """Listen: before the lower create runs (the shim waits for the supervisor's ready)."""
        path = os.path.join(self.sup.dir, control.SOCKET_NAME)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        control.via_fd(path, listener.bind)
        os.chmod(path, 0o600)
        # Not asyncio.start_unix_server: its Server, closed while a connection it accepted waits
        # for its transport, is woken twice and raises in the loop (listener.py).
        self.server = UnixListener(listener, self.handle)
        await self.server.start()

    async def close(self) -> None:
        """Stop listening, and let the replies in flight be written (5 s at most)."""
        if self.server is not None:
            self.server.close()
        current = asyncio.current_task()
        handlers = [t for t in self._handlers if t is not current and not t.done()]
        if handlers:
            await asyncio.wait(handlers, timeout=5)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            line = await reader.readline()
            try:
                reply = await self.dispatch(json.loads(line))
            except control.BadRequest as e:
                reply = {"ok": False, "error": f"supervisor: bad request: {e}"}
            except Exception as e:  # a bad request must not take the supervisor down
                reply = {"ok": False, "error": f"supervisor: {type(e).__name__}: {e}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def dispatch(self, request: object) -> dict[str, Any]:
        """The reply to one decoded request; raises control.BadRequest."""
        checked = control.check(request)
        return await self.ops[checked["op"]](checked)

    async def op_status(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **self.sup.status()}

    async def op_start(self, request: dict[str, Any]) -> dict[str, Any]:
        error = await self.sup.start()
        return {"ok": True} if error is None else {"ok": False, "error": error}

    async def op_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        await self.sup.stop(request["force"])
        return {"ok": True}

    async def op_delete(self, request: dict[str, Any]) -> dict[str, Any]:
        await self.sup.delete(request["force"])
        return {"ok": True}

    async def op_hook(self, request: dict[str, Any]) -> dict[str, Any]:
        await self.sup.hook(request["stage"], request["state"])
        return {"ok": True}

    async def op_stop_service(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._service(request, self.sup.stop_service)

    async def op_start_service(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._service(request, self.sup.start_service)

    async def op_restart(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._service(request, self.sup.restart_service)

    async def _service(self, request: dict[str, Any], action: Any) -> dict[str, Any]:
        unit, error = self.sup.control_target(request["service"])
        if unit is None:
            return {"ok": False, "error": error}
        by = (request["by"] or "a control request")[:MAX_BY]
        error, state = await action(unit, by)
        if error is not None:
            return {"ok": False, "error": error, "state": state.value}
        return {"ok": True, "state": state.value}
