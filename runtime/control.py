"""The supervisor's control protocol, declared once: transport, requests, replies, a client.

One JSON request line, one JSON reply line, then close, on `control.sock` in the container's
root-only state directory. Every request carries `"v": VERSION` and an `"op"`; every reply has
`"ok"` and, when not ok, an `"error"` that says why in a sentence. The ops (the server is
supervisor/server.py; `OPS` is what it checks a request against):

  op              fields                         reply (beside ok/error)   sent by
  status          -                              StatusReply               retinue status, the
                                                                           shim's kill, spawn, gc
  start           -                              -                         the shim's start, run
  stop            force: bool                    -                         the shim's kill, run
  delete          force: bool                    -                         the shim's delete, run
  hook            stage: str, state: str         -                         retinue-hook
  stop-service    service: str, by: str          state                     retinue stop
  start-service   service: str, by: str          state                     retinue start
  restart         service: str, by: str          state                     retinue restart

A request without "v" is read as version 1 (the protocol before the field existed), so a
supervisor started by this version still answers a client of the previous one.
`hooks/hook.py` encodes its one request by hand (json would double that program's start-up
time); `encode` is the reference it must match byte for byte (tests/test_control.py).

The types are for mypy only (TYPE_CHECKING is False at run time): the shim imports this module on
its start/kill/delete path and must not pay for `typing`.
"""

from __future__ import annotations

import json
import os
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Literal, TypedDict

    class Request(TypedDict):
        v: int
        op: str

    class StatusRequest(Request):
        pass

    class StartRequest(Request):
        pass

    class StopRequest(Request):
        force: bool

    class DeleteRequest(Request):
        force: bool

    class HookRequest(Request):
        stage: str
        state: str

    class ServiceRequest(Request):
        service: str
        by: str

    class Reply(TypedDict, total=False):
        ok: bool
        error: str

    class ServiceReply(Reply, total=False):
        state: str

    class StatusReply(Reply, total=False):
        id: str
        pod: str
        name: str
        phase: str
        init_pid: int | None
        supervisor_pid: int
        services: list[dict[str, Any]]
        seccomp: dict[str, Any] | None
        logs: dict[str, Any]

    ServiceOp = Literal["stop-service", "start-service", "restart"]

SOCKET_NAME = "control.sock"
VERSION = 1
# op -> its fields and their types: what the server checks a request against (types by name,
# so that this table costs no import).
OPS: dict[str, dict[str, type]] = {
    "status": {},
    "start": {},
    "stop": {"force": bool},
    "delete": {"force": bool},
    "hook": {"stage": str, "state": str},
    "stop-service": {"service": str, "by": str},
    "start-service": {"service": str, "by": str},
    "restart": {"service": str, "by": str},
}
# Fields a request may leave out, and what they then mean (the clients always send them).
DEFAULTS: dict[str, object] = {"force": False, "by": "a control request", "state": ""}


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


class BadRequest(Exception):
    """A request the server cannot act on: an unknown version or op, a missing or wrong field."""


def encode(message: Request | dict[str, Any]) -> bytes:
    """A message as it goes on the wire: compact JSON, non-ASCII as is, one line."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def check(request: object) -> dict[str, Any]:
    """The request with its defaults filled in, or BadRequest saying what is wrong with it."""
    if not isinstance(request, dict):
        raise BadRequest(f"a request is a JSON object, not {type(request).__name__}")
    version = request.get("v", 1)
    if version != VERSION:
        raise BadRequest(
            f"unknown protocol version {version!r} (this supervisor speaks version {VERSION}; "
            "the supervisor and the client come from different retinue versions)"
        )
    op = request.get("op")
    fields = OPS.get(op) if isinstance(op, str) else None
    if fields is None:
        raise BadRequest(f"unknown request {op!r} (known: {', '.join(OPS)})")
    checked: dict[str, Any] = {"v": VERSION, "op": op}
    for name, kind in fields.items():
        value = request.get(name, DEFAULTS.get(name))
        if value is None:
            raise BadRequest(f"request {op!r}: field {name!r} is missing")
        if type(value) is not kind:
            raise BadRequest(
                f"request {op!r}: field {name!r} must be a {kind.__name__}, not {value!r}"
            )
        checked[name] = value
    return checked


def request(
    path: str, message: Request | dict[str, Any], timeout: float | None = None
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
            sock.sendall(encode(message))
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


# -- the typed client: one function per op, given the container's state directory ----------------


def _ask(container_dir: str, message: Request, timeout: float | None) -> Any:
    return request(os.path.join(container_dir, SOCKET_NAME), message, timeout)


def status(container_dir: str, timeout: float | None = 5) -> StatusReply:
    return _ask(container_dir, {"v": VERSION, "op": "status"}, timeout)  # type: ignore[no-any-return]


def start(container_dir: str, timeout: float | None = None) -> Reply:
    return _ask(container_dir, {"v": VERSION, "op": "start"}, timeout)  # type: ignore[no-any-return]


def stop(container_dir: str, force: bool, timeout: float | None = None) -> Reply:
    message: StopRequest = {"v": VERSION, "op": "stop", "force": force}
    return _ask(container_dir, message, timeout)  # type: ignore[no-any-return]


def delete(container_dir: str, force: bool, timeout: float | None = None) -> Reply:
    message: DeleteRequest = {"v": VERSION, "op": "delete", "force": force}
    return _ask(container_dir, message, timeout)  # type: ignore[no-any-return]


def hook_request(stage: str, state: str) -> HookRequest:
    return {"v": VERSION, "op": "hook", "stage": stage, "state": state}


def hook(container_dir: str, stage: str, state: str, timeout: float | None = None) -> Reply:
    return _ask(container_dir, hook_request(stage, state), timeout)  # type: ignore[no-any-return]


def service(
    container_dir: str, op: ServiceOp, name: str, by: str, timeout: float | None = None
) -> ServiceReply:
    """stop-service, start-service or restart of one service, on behalf of `by`."""
    message: ServiceRequest = {"v": VERSION, "op": op, "service": name, "by": by}
    return _ask(container_dir, message, timeout)  # type: ignore[no-any-return]
