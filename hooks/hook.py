"""`retinue-hook STAGE CONTAINER_DIR`: run by runc at createRuntime, poststart and poststop.

runc runs it in the runtime's namespaces with the container's OCI state on stdin. It forwards the
state, unparsed, to the container's supervisor (json alone would double this program's start-up
time, and it runs on every create). With no supervisor (nothing but mounts and env attached, or
the supervisor already gone) there is nothing to tell and it succeeds; at poststop it removes a
state directory that a dead supervisor left behind, and refuses to remove anything else.
"""

from __future__ import annotations

import os
import sys

STAGES = ("createRuntime", "poststart", "poststop")
# retinue.control's SOCKET_NAME (layout.CONTROL_SOCKET), VERSION, via_fd and encode, repeated:
# that module imports json and socket, which would double this program's start-up time
# (tests/test_control.py checks that the bytes sent are the ones retinue.control.encode makes of
# the same request; tests/test_edits_values.py that the name is layout's).
SOCKET_NAME = "control.sock"
VERSION = 1
# json.dumps's short escapes; any other character below 0x20 is \u00XX.
_SHORT = {"\"": '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
          "\b": "\\b", "\f": "\\f"}


def fail(msg: str) -> int:
    os.write(2, f"retinue-hook: {msg}\n".encode())
    return 1


def _json_string(text: str) -> str:
    out = ['"']
    for c in text:
        if c in _SHORT:
            out.append(_SHORT[c])
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def encode_request(stage: str, state: bytes) -> bytes:
    """The hook request as retinue.control.encode(retinue.control.hook_request(...)) makes it."""
    return (
        f'{{"v":{VERSION},"op":"hook","stage":'
        + _json_string(stage)
        + ',"state":'
        + _json_string(state.decode("utf-8", "replace"))
        + "}\n"
    ).encode()


def tell_supervisor(container_dir: str, stage: str, state: bytes) -> int:
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            # Through /proc/self/fd: the socket's full path can exceed a unix address's 107 bytes
            # (Docker's runc root plus a 64-character id).
            fd = os.open(container_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{fd}/{SOCKET_NAME}")
            finally:
                os.close(fd)
        except OSError:
            if stage == "poststop" and os.path.lexists(container_dir):
                return remove_left_state(container_dir)
            return 0
        sock.sendall(encode_request(stage, state))
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    finally:
        sock.close()
    if b'"ok": true' not in reply and b'"ok":true' not in reply:
        return fail(f"{stage}: supervisor answered {reply.decode('utf-8', 'replace').strip()!r}")
    return 0


def remove_left_state(container_dir: str) -> int:
    """Remove the state directory a dead supervisor left, and nothing else: the argument comes
    from a spec, and a spec can name any directory."""
    from retinue.host import statedir

    refused = statedir.refuse_removal(container_dir)
    if refused is not None and os.path.lexists(container_dir):  # not removed meanwhile
        return fail(
            f"poststop: {container_dir}: not a retinue container state directory ({refused}); "
            "not removed"
        )
    statedir.remove(container_dir)
    return 0


def main() -> int:
    argv = sys.argv
    if len(argv) != 3 or argv[1] not in STAGES or not argv[2].startswith("/"):
        return fail(f"usage: retinue-hook {{{'|'.join(STAGES)}}} CONTAINER_DIR (got {argv[1:]})")
    data = b""
    while chunk := os.read(0, 65536):
        data += chunk
    if not data.strip().startswith(b"{"):
        return fail(f"{argv[1]}: expected the OCI state (a JSON object) on stdin")
    return tell_supervisor(argv[2], argv[1], data)


if __name__ == "__main__":
    sys.exit(main())
