"""Entry point: `python -m retinue.supervisor CONTAINER_DIR READY_FD` (spawned by the shim)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from .core import Supervisor

PLAN = "plan.json"


def main() -> None:
    container_dir, ready_fd = sys.argv[1], int(sys.argv[2])
    with open(os.path.join(container_dir, PLAN)) as f:
        plan = json.load(f)
    log_dir = os.path.join(plan["log_dir"], plan["id"])
    os.makedirs(log_dir, mode=0o750, exist_ok=True)
    # Our own diagnostics (a traceback if something is very wrong) go next to the services' logs.
    fd = os.open(
        os.path.join(log_dir, "supervisor.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
        0o640,
    )
    os.dup2(fd, 2)
    os.close(fd)

    async def run() -> None:
        await Supervisor(container_dir, plan).run(ready_fd)

    asyncio.run(run())


if __name__ == "__main__":
    main()
