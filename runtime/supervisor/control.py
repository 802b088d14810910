"""The control socket's protocol: one JSON request line, one JSON reply line, then close.

The socket lives in the container's root-only state directory. Clients are the shim (start,
stop, delete), the hook program (createRuntime, poststart, poststop) and `retinue status`.
"""

from __future__ import annotations

import json
import socket
from typing import Any

SOCKET_NAME = "control.sock"


class SupervisorGone(Exception):
    """Nothing answers on the control socket: the supervisor has exited or was killed."""


def request(
    path: str, message: dict[str, Any], timeout: float | None = None
) -> dict[str, Any]:
    """Send one request and wait for its reply; raises SupervisorGone if nobody answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise SupervisorGone(str(e)) from None
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise SupervisorGone("the supervisor closed the connection without answering")
            data += chunk
    finally:
        sock.close()
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise SupervisorGone(f"unexpected reply {reply!r}")
    return reply
