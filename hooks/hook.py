"""`retinue-hook STAGE CONTAINER_DIR`: run by runc at createRuntime, poststart and poststop.

runc runs it in its own namespaces with the container's OCI state on stdin. A hook that fails
fails the container's create (createRuntime) or is only logged (poststart, poststop), so this
program validates its input strictly and exits non-zero with one line on stderr, which runc
includes in its own error.
"""

from __future__ import annotations

import os
import sys

STAGES = ("createRuntime", "poststart", "poststop")


def fail(msg: str) -> int:
    os.write(2, f"retinue-hook: {msg}\n".encode())
    return 1


def read_state() -> dict[str, object]:
    import json

    data = b""
    while chunk := os.read(0, 65536):
        data += chunk
    state = json.loads(data)
    if not isinstance(state, dict) or not isinstance(state.get("id"), str):
        raise ValueError("OCI state on stdin has no container id")
    return state


def main() -> int:
    argv = sys.argv
    if len(argv) != 3 or argv[1] not in STAGES:
        return fail(f"usage: retinue-hook {{{'|'.join(STAGES)}}} CONTAINER_DIR (got {argv[1:]})")
    try:
        read_state()
    except ValueError as e:
        return fail(f"{argv[1]}: invalid OCI state on stdin: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
