"""`run` for a container with services: create, the gate, start, then wait like runc run.

runc's own `run` cannot hold the entrypoint while services start, so the shim does what runc run
does in three lower calls. It becomes a child subreaper first, so the container's init (forked by
the lower create, which then exits) is its child: it waits for it, forwards signals to it, deletes
the container afterwards unless --keep, and exits with the container's status (128+signal when a
signal ended it), as runc run does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from typing import NoReturn

from . import argv as runc_argv
from . import runclog
from .errors import RetinueError
from .supervisor import control

PR_SET_CHILD_SUBREAPER = 36
RUN_ONLY = frozenset({"detach", "d", "keep", "no-subreaper"})
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)


def create_argv(args: runc_argv.RuncArgs, lower: str, pid_file: str) -> list[str]:
    """The lower create with run's own flags (detach, keep, no-subreaper) left out."""
    out = [lower, *args.argv[1 : args.command_index], "create"]
    value_flags = runc_argv.SUBCOMMAND_VALUE_FLAGS["create"]
    for name, value in args.options.items():
        if name in RUN_ONLY or name == "pid-file":
            continue
        out += [f"--{name}", value] if name in value_flags else [f"--{name}"]
    return [*out, "--pid-file", pid_file, args.container_id]


def _lower(lower: str, globals_: list[str], *rest: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([lower, *globals_, *rest], capture_output=True, stdin=subprocess.DEVNULL)


def run(args: runc_argv.RuncArgs, lower: str, globals_: list[str], container_dir: str) -> NoReturn:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise RetinueError("prctl(PR_SET_CHILD_SUBREAPER) failed")
    container_id = args.container_id
    user_pid_file = args.option("pid-file")
    pid_file = user_pid_file or os.path.join(container_dir, "init.pid")
    created = subprocess.run(create_argv(args, lower, pid_file))
    if created.returncode != 0:
        # The lower create reported its own error (stderr, --log); the supervisor sees the
        # container never existed and cleans up.
        sys.exit(created.returncode)
    socket_path = os.path.join(container_dir, control.SOCKET_NAME)
    try:
        reply = control.request(socket_path, {"op": "start"})
        error = None if reply.get("ok") else str(reply.get("error"))
    except control.SupervisorGone:
        error = f"the supervisor of container {container_id} is gone; the container is not started"
    if error:
        _delete(lower, globals_, container_dir, container_id)
        raise RetinueError(error)
    with open(pid_file) as f:
        init_pid = int(f.read().strip())
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: _forward(init_pid, signum))
    started = _lower(lower, globals_, "start", container_id)
    if started.returncode != 0:
        sys.stderr.buffer.write(started.stderr)
        _delete(lower, globals_, container_dir, container_id)
        sys.exit(started.returncode)
    if "detach" in args.options or "d" in args.options:
        sys.exit(0)
    status = _wait(init_pid)
    if "keep" not in args.options:
        result = _lower(lower, globals_, "delete", "--force", container_id)
        if result.returncode != 0:
            runclog.log(args, "warning", f"retinue: delete {container_id}: {result.stderr!r}")
    sys.exit(status)


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.waitstatus_to_exitcode(status)


def _delete(lower: str, globals_: list[str], container_dir: str, container_id: str) -> None:
    try:
        control.request(os.path.join(container_dir, control.SOCKET_NAME), {"op": "delete"}, 60)
    except (control.SupervisorGone, OSError):
        pass
    _lower(lower, globals_, "delete", "--force", container_id)
