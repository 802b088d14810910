"""The control protocol, declared once (retinue.control): what each client sends, what the server
accepts, and the hook's hand encoder byte for byte against the client's encoding (issue 17)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from retinue import control
from retinue.hooks import hook
from retinue.supervisor.server import ControlServer

STATES = [
    b'{"ociVersion":"1.0.2","id":"abc","status":"creating","pid":4242,"bundle":"/b"}',
    b'{"id":"quote\\"and\\\\backslash","annotations":{"a":"tab\\there"}}',
    # Raw control characters, DEL, non-ASCII, a line separator, and bytes that are not UTF-8.
    b'{"id":"x\x00\x01\x08\x09\x0a\x0c\x0d\x1b\x1f\x7f"}',
    '{"id":"caf\u00e9 \u4e2d\u6587 \U0001f600 \u2028 \u2029"}'.encode(),
    b'{"id":"\xff\xfe bad \xc3"}',
    b"{}",
]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("stage", ["createRuntime", "poststop"])
def test_the_hooks_encoder_matches_the_clients(stage: str, state: bytes) -> None:
    by_hand = hook.encode_request(stage, state)
    reference = control.encode(control.hook_request(stage, state.decode("utf-8", "replace")))
    assert by_hand == reference
    decoded = json.loads(by_hand)
    assert control.check(decoded) == decoded  # and the server takes it as it is


def test_the_hook_and_the_client_agree_on_the_socket_and_version() -> None:
    assert hook.SOCKET_NAME == control.SOCKET_NAME
    assert hook.VERSION == control.VERSION


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A control socket that records each request and answers ok."""
    seen: list[dict[str, Any]] = []
    path = str(tmp_path / control.SOCKET_NAME)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("rb").readline()
                seen.append(json.loads(line))
                conn.sendall(b'{"ok": true}\n')

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield str(tmp_path), seen
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()


def test_every_client_call_is_a_valid_request(
    recorder: tuple[str, list[dict[str, Any]]],
) -> None:
    directory, seen = recorder
    control.status(directory)
    control.start(directory)
    control.stop(directory, force=True)
    control.delete(directory, force=False)
    control.hook(directory, "createRuntime", '{"id":"x"}')
    for op in ("stop-service", "start-service", "restart"):
        control.service(directory, op, "web", "retinue test")  # type: ignore[arg-type]
    assert [r["op"] for r in seen] == [
        "status", "start", "stop", "delete", "hook", "stop-service", "start-service", "restart"
    ]
    assert {op for op in control.OPS} == {r["op"] for r in seen}
    for request in seen:
        assert request["v"] == control.VERSION
        assert control.check(request) == request, request
        assert set(request) == {"v", "op", *control.OPS[request["op"]]}


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"v": 2, "op": "status"}, "unknown protocol version 2"),
        ({"v": "1", "op": "status"}, "unknown protocol version '1'"),
        ({"v": 1, "op": "reboot"}, "unknown request 'reboot' (known: status, start, stop"),
        ({"v": 1}, "unknown request None"),
        ({"v": 1, "op": "hook", "state": "{}"}, "request 'hook': field 'stage' is missing"),
        ({"v": 1, "op": "stop", "force": "yes"},
         "request 'stop': field 'force' must be a bool, not 'yes'"),
        ({"v": 1, "op": "restart", "service": 3, "by": "x"},
         "request 'restart': field 'service' must be a str, not 3"),
        ([1, 2], "a request is a JSON object, not list"),
    ],
)
def test_check_names_what_is_wrong(request_: object, error: str) -> None:
    with pytest.raises(control.BadRequest) as raised:
        control.check(request_)
    assert error in str(raised.value)


def test_a_request_without_a_version_is_version_1() -> None:
    # What a client of the previous version sends (no "v"); the fields it left out get the
    # meaning they had then.
    assert control.check({"op": "stop"}) == {"v": 1, "op": "stop", "force": False}
    assert control.check({"op": "hook", "stage": "poststop"}) == {
        "v": 1, "op": "hook", "stage": "poststop", "state": ""
    }


class _Sup:
    """What the server asks of the Supervisor for a status, and nothing more."""

    def __init__(self, directory: str) -> None:
        self.dir = directory

    def status(self) -> dict[str, Any]:
        return {"id": "c1", "phase": "created"}


def test_the_server_answers_a_clear_error(tmp_path: Path) -> None:
    """Through the socket, as a client of another version would meet it."""

    async def main() -> list[dict[str, Any]]:
        server = ControlServer(_Sup(str(tmp_path)))  # type: ignore[arg-type]
        await server.open()
        try:
            replies = []
            for message in ({"v": 9, "op": "status"}, {"v": 1, "op": "frobnicate"},
                            {"v": 1, "op": "status"}):
                replies.append(await asyncio.to_thread(control.request, os.path.join(
                    str(tmp_path), control.SOCKET_NAME), message, 5))
            return replies
        finally:
            await server.close()

    version, op, status = asyncio.run(main())
    assert version == {"ok": False, "error": "supervisor: bad request: unknown protocol version 9 "
                       "(this supervisor speaks version 1; the supervisor and the client come "
                       "from different retinue versions)"}
    assert op["ok"] is False and "unknown request 'frobnicate'" in op["error"]
    assert status == {"ok": True, "id": "c1", "phase": "created"}
