"""Entry point: `python -m retinue.supervisor CONTAINER_DIR READY_FD` (spawned by the shim)."""

from __future__ import annotations

import sys

# asyncio imports ssl (and with it libssl and libcrypto) for TLS transports, which a supervisor
# never opens: 1.2 MB of private memory in every supervisor, and ~5 ms of its start (issue 12).
# Blocked only while asyncio loads: a seccomp handler may still import ssl itself.
_SSL_BLOCKED = "ssl" not in sys.modules
if _SSL_BLOCKED:
    sys.modules["ssl"] = None  # type: ignore[assignment]  # import ssl -> ImportError

import asyncio  # noqa: E402
import os  # noqa: E402

from .. import layout, planfile  # noqa: E402
from ..host import cgroups, statedir  # noqa: E402
from . import retention  # noqa: E402
from .logs import DiagnosticLog  # noqa: E402
from .server import ControlServer  # noqa: E402
from .supervisor import Supervisor  # noqa: E402

if _SSL_BLOCKED:
    del sys.modules["ssl"]


def main() -> None:
    container_dir, ready_fd = sys.argv[1], int(sys.argv[2])
    plan = planfile.load(container_dir)
    log_dir = os.path.join(plan["log_dir"], plan["id"])
    # Every file it makes (logs, the seccomp agent's log) is root's alone, whatever the umask
    # of whoever ran the create.
    os.umask(0o077)
    statedir.private_dir(log_dir)
    # Our own diagnostics (a traceback if something is very wrong) go next to the services' logs.
    fd = os.open(
        os.path.join(log_dir, layout.SUPERVISOR_LOG),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
        0o600,
    )
    os.fchmod(fd, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    # The log filesystem fills up (other containers' output): a line that cannot be written
    # is dropped and counted, never an exception that ends the supervisor.
    sys.stderr = DiagnosticLog(2)
    # The shim's spawn put us in our cgroup before this interpreter started (spawn._enter);
    # at the end we go back where the shim was, so that it can be removed.
    place = plan.get("cgroup")
    origin = (place or {}).get("origin") or {}
    try:
        try:
            retention.record(log_dir, plan)
        except OSError as e:  # `retinue logs` then finds it by id only
            print(f"{log_dir}: cannot record the container's names: {e.strerror}",
                  file=sys.stderr, flush=True)

        async def run() -> None:
            sup = Supervisor(container_dir, plan)
            await sup.run(ready_fd, ControlServer(sup))

        asyncio.run(run())
    finally:
        # Whatever ended us (a refused create included): the cgroup goes with us.
        if place:
            cgroups.leave(place, origin)
            for d in cgroups.remove(place, timeout=2.0):
                print(f"cgroup {d} is still busy; left in place", file=sys.stderr, flush=True)
    # Off the create and start paths: the container is gone, its engine is not waiting on us.
    state_dir = os.path.dirname(os.path.dirname(container_dir))
    try:
        retention.prune(
            plan["log_dir"],
            state_dir,
            plan.get("log_retention", 0),
            plan.get("log_keep_containers", retention.DEFAULT_KEEP),
        )
    except OSError as e:
        print(f"pruning old log directories in {plan['log_dir']}: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
