"""The control socket's protocol: one JSON request line, one JSON reply line, then close.

The socket lives in the container's root-only state directory. Clients are the shim (start,
stop, delete), the hook program (createRuntime, poststart, poststop) and `retinue status`.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

SOCKET_NAME = "control.sock"


def via_fd(path: str, operation: Callable[[str], None]) -> None:
    """Call operation (a bind or connect) on `path` through /proc/self/fd.

    A unix socket address holds at most 107 bytes, and a state directory under Docker's runc
    root with a 64-character container id is longer than that. Reaching the directory through
    an O_PATH descriptor keeps the address short whatever the directory's path.
    """
    directory, name = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        operation(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)


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
            via_fd(path, sock.connect)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
            raise SupervisorGone(str(e)) from None
        data = b""
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise SupervisorGone("the supervisor closed the connection without answering")
                data += chunk
        except (ConnectionResetError, BrokenPipeError) as e:
            # The supervisor died (or was killed) between our connect and its answer: the
            # kernel resets a connection whose request was never read.
            raise SupervisorGone(str(e)) from None
    finally:
        sock.close()
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise SupervisorGone(f"unexpected reply {reply!r}")
    return reply
