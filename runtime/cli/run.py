"""`run` for a container with services: create, the gate, start, then wait like runc run.

runc's own `run` cannot hold the entrypoint while services start, so the shim does what runc run
does in three lower calls. It becomes a child subreaper first, so the container's init (forked by
the lower create, which then exits) is its child: it waits for it, forwards signals to it, deletes
the container afterwards unless --keep, and exits with the container's status (128+signal when a
signal ended it), as runc run does.

With a terminal (`process.terminal`) and no --console-socket, runc run would hold the pty itself;
the lower create needs a console socket for it, so the shim is that socket's other end: it gets
the pty master, puts its own terminal in raw mode, relays both ways, keeps the pty's window size
in step with its own (SIGWINCH), and restores its terminal at the end.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import NoReturn

from .. import argv as runc_argv
from .. import control
from ..errors import RetinueError
from ..host import runclog

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


def create_argv(
    args: runc_argv.RuncArgs, lower: str, pid_file: str, console_socket: str = ""
) -> list[str]:
    """The lower create with run's own flags (detach, keep, no-subreaper) left out."""
    out = [lower, *args.argv[1 : args.command_index], "create"]
    value_flags = runc_argv.SUBCOMMAND_VALUE_FLAGS["create"]
    for name, value in args.options.items():
        if name in RUN_ONLY or name == "pid-file":
            continue
        out += [f"--{name}", value] if name in value_flags else [f"--{name}"]
    if console_socket:
        out += ["--console-socket", console_socket]
    return [*out, "--pid-file", pid_file, args.container_id]


def _lower(lower: str, globals_: list[str], *rest: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([lower, *globals_, *rest], capture_output=True, stdin=subprocess.DEVNULL)


def run(
    args: runc_argv.RuncArgs, lower: str, globals_: list[str], container_dir: str,
    terminal: bool = False,
) -> NoReturn:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise RetinueError("prctl(PR_SET_CHILD_SUBREAPER) failed")
    container_id = args.container_id
    user_pid_file = args.option("pid-file")
    pid_file = user_pid_file or os.path.join(container_dir, "init.pid")
    # Detached, runc itself refuses a terminal without a console socket: let it say so.
    own_console = terminal and not args.option("console-socket") and not _detached(args)
    master = -1
    if own_console:
        created, master = _create_with_console(args, lower, pid_file)
    else:
        created = subprocess.run(create_argv(args, lower, pid_file))
    if created.returncode != 0:
        # The lower create reported its own error (stderr, --log); the supervisor sees the
        # container never existed and cleans up.
        sys.exit(created.returncode)
    try:
        reply = control.start(container_dir)
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
    restore = None
    if master >= 0:
        restore = _own_terminal(master)
    try:
        started = _lower(lower, globals_, "start", container_id)
        if started.returncode != 0:
            sys.stderr.buffer.write(started.stderr)
            _delete(lower, globals_, container_dir, container_id)
            sys.exit(started.returncode)
        if _detached(args):
            sys.exit(0)
        status = _relay(master, init_pid) if master >= 0 else _wait(init_pid)
    finally:
        if restore is not None:
            restore()
    # Without retinue-init (a container with only sidecars), the supervisor stops them after
    # the main process on its own: `run` returns once they have stopped, as with init.
    try:
        control.stop(container_dir, force=False, timeout=60)
    except (control.SupervisorGone, OSError, ValueError):
        pass
    if "keep" not in args.options:
        result = _lower(lower, globals_, "delete", "--force", container_id)
        if result.returncode != 0:
            runclog.log(args, "warning", f"retinue: delete {container_id}: {result.stderr!r}")
    sys.exit(status)


def _detached(args: runc_argv.RuncArgs) -> bool:
    return "detach" in args.options or "d" in args.options


def _create_with_console(
    args: runc_argv.RuncArgs, lower: str, pid_file: str
) -> tuple[subprocess.CompletedProcess[bytes], int]:
    """The lower create with a console socket of ours; (its result, the pty master or -1).

    The lower runtime connects and sends the master during create: the connection waits in the
    listen backlog, so it is accepted once create has returned.
    """
    directory = tempfile.mkdtemp(prefix="retinue-console-")
    path = os.path.join(directory, "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(1)
        created = subprocess.run(create_argv(args, lower, pid_file, path))
        if created.returncode != 0:
            return created, -1
        listener.settimeout(10)
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            raise RetinueError(f"{lower} create sent no terminal to {path}") from None
        with conn:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
        if not fds:
            raise RetinueError(f"{lower} create sent no terminal to {path}")
        return created, fds[0]
    finally:
        listener.close()
        try:
            os.unlink(path)
        except OSError:
            pass
        os.rmdir(directory)


def _own_terminal(master: int) -> Callable[[], None]:
    """Raw mode on our terminal (if stdin is one) and its window size on the pty; SIGWINCH
    keeps the size in step. Returns what restores our terminal."""
    import fcntl
    import termios
    import tty

    def resize(*_: object) -> None:
        try:
            size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    if not os.isatty(0):
        return lambda: None
    saved = termios.tcgetattr(0)
    resize()
    # The kernel signals the pty's foreground group itself when its size changes.
    signal.signal(signal.SIGWINCH, resize)
    tty.setraw(0)

    def restore() -> None:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)

    return restore


def _relay(master: int, pid: int) -> int:
    """Copy stdin to the pty and the pty to stdout until the container's init has exited and
    the pty is drained; return init's status as _wait does."""
    readers = [master, 0]
    status: int | None = None
    while True:
        try:
            ready, _, _ = select.select(readers, [], [], 0.1 if status is None else 0)
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave fd is closed
                data = b""
            if not data:
                break
            _write_all(1, data)
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                _write_all(master, data)
            else:
                readers.remove(0)  # our stdin ended; the container's output still comes
        if status is None:
            status = _reap(pid)
        elif master not in ready:
            break  # init is gone and the pty has nothing more
    os.close(master)
    return _wait(pid) if status is None else status


def _reap(pid: int) -> int | None:
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    if reaped == 0:
        return None
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


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
        control.delete(container_dir, force=False, timeout=60)
    except (control.SupervisorGone, OSError):
        pass
    _lower(lower, globals_, "delete", "--force", container_id)
