"""The supervisor's unix listeners at shutdown: a connection accepted as the listener closes
(issue 15 item 17: an asyncio TypeError traceback in supervisor.log, 2 of 142 supervisors).

Each case runs in a fresh interpreter with the supervisor's own flags (-OO among them: the
race needs the asserts gone, as they are in every supervisor without seccomp handlers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import retinue
from retinue.host import spawn

# The exact interleaving, driven through asyncio's FIFO order of callbacks: a client connects;
# the next loop iteration runs this coroutine first, then the listener's accept; the one after
# runs this coroutine again (close) before whatever the accept scheduled for that connection.
INTERLEAVING = r"""
import asyncio, json, os, socket, sys
from retinue.supervisor.listener import UnixListener

async def main(path):
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(
        f"{context.get('message')}: {context.get('exception')!r}"))
    served = []

    async def handler(reader, writer):
        served.append((await reader.readline()).decode())
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.bind(path)
    listener = UnixListener(sock, handler)
    await listener.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    listener.close()
    client.sendall(b"status\n")
    client.setblocking(False)
    reply = b""
    for _ in range(200):
        try:
            chunk = client.recv(64)
        except BlockingIOError:
            await asyncio.sleep(0.005)
            continue
        if not chunk:
            break
        reply += chunk
    client.close()
    late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        late.connect(path)
        refused = False
    except (ConnectionRefusedError, FileNotFoundError):
        refused = True
    finally:
        late.close()
    for _ in range(20):
        await asyncio.sleep(0)
    return {"errors": errors, "served": served, "reply": reply.decode(), "late_refused": refused}

result = asyncio.run(main(sys.argv[1]))
print(json.dumps(result))
"""


def _run(tmp_path: Path, code: str, flags: tuple[str, ...]) -> dict[str, object]:
    site = os.path.dirname(os.path.dirname(retinue.__file__))
    out = subprocess.run(
        [sys.executable, *flags, "-c",
         f"import sys; sys.path.insert(0, {site!r})\n{code}", str(tmp_path / "s.sock")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    # Whatever reached the loop's default handler or the interpreter's exit would be here.
    assert "Traceback" not in out.stderr, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


# A supervisor without seccomp handlers (-OO), and one with them (asserts kept).
@pytest.mark.parametrize(
    "flags", [spawn.python_flags({}), spawn.python_flags({"seccomp": [{}]})], ids=["OO", "plain"]
)
def test_connection_accepted_as_the_listener_closes(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    result = _run(tmp_path, INTERLEAVING, flags)
    # Before, under -OO: "Exception in callback _SelectorSocketTransport._call_connection_lost"
    # ... "TypeError: 'NoneType' object is not iterable" (asyncio.Server woken twice). With the
    # asserts kept, asyncio's failed assert dropped the connection unanswered instead.
    assert result["errors"] == []
    # The connection accepted before the close is served to its end; later ones are refused.
    assert result["served"] == ["status\n"]
    assert result["reply"] == "ok\n"
    assert result["late_refused"] is True
