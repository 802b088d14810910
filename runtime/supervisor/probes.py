"""Probes of a running service: TCP connect and HTTP GET in the container's network namespace,
and commands run inside the container (a probe, a drain) that can be ended when they hang.

A TCP or HTTP probe starts no process: a socket belongs for good to the network namespace it
was created in, so one short-lived thread joins the service's namespace (setns through the
service's pidfd: no pid that could have been reused), creates the socket and ends; the
supervisor's loop then connects, sends and reads on it like on any other socket. The thread is
a fresh one each time, so a thread left in the container's namespace can never serve anything
else.

A probe command runs through `runc exec --detach`: the supervisor, a child subreaper, inherits
the probe's process and can end it (and what it started) when it outlives its timeout; killing a
non-detached `runc exec` would leave the process inside the container running.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import threading
from collections.abc import Callable

from ..errors import seconds
from . import procs, readiness

CLONE_NEWNET = 0x40000000
MAX_RESPONSE_LINE = 4096
# What is kept of a probe command's output: its last words are what status shows, and the
# container decides how much it prints (an endless stream took a supervisor to its memory
# limit within a second).
MAX_PROBE_OUTPUT = 4096


class Tail:
    """The last `limit` bytes of a stream, however long it is."""

    __slots__ = ("data", "limit")

    def __init__(self, limit: int = MAX_PROBE_OUTPUT) -> None:
        self.limit = limit
        self.data = b""

    def append(self, chunk: bytes) -> None:
        if len(chunk) >= self.limit:
            self.data = chunk[-self.limit :]
        else:
            self.data = (self.data + chunk)[-self.limit :]

    def last_line(self, width: int) -> str:
        """The last non-empty line, cut to `width` characters ("" if none)."""
        lines = self.data.decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:width] if lines else ""

_libc: ctypes.CDLL | None = None


def _setns(fd: int, nstype: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def socket_in_netns(ns: int, family: int) -> socket.socket:
    """A non-blocking stream socket of the network namespace `ns` (a pidfd or an ns fd)."""
    result: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            _setns(ns, CLONE_NEWNET)
            kind = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
            result.append(socket.socket(family, kind))
        except BaseException as e:  # handed to the caller
            result.append(e)

    # Joined at once: setns and socket take microseconds, and the thread ends (its namespace
    # with it) before anything else could run on it.
    thread = threading.Thread(target=make, name="retinue-netns", daemon=True)
    thread.start()
    thread.join()
    made = result[0]
    if isinstance(made, BaseException):
        raise made
    return made


async def tcp_connect(ns: int, address: str, port: int, timeout: float) -> tuple[bool, str]:
    """Whether a connection to address:port opens from inside `ns`, and what happened."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket_in_netns(ns, family)
    except OSError as e:
        return False, f"cannot enter the network namespace: {e.strerror}"
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
        return True, f"connected to {address}:{port}"
    except TimeoutError:
        return False, f"no connection to {address}:{port} within {seconds(timeout)}"
    except OSError as e:
        return False, f"{address}:{port}: {_why(e)}"
    finally:
        sock.close()


async def http_get(
    ns: int, address: str, port: int, path: str, timeout: float
) -> tuple[bool, str]:
    """An HTTP/1.0 GET from inside `ns`; success is a 2xx or 3xx status (as Kubernetes has it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket_in_netns(ns, family)
    except OSError as e:
        return False, f"cannot enter the network namespace: {e.strerror}"
    loop = asyncio.get_running_loop()
    host = f"[{address}]" if family == socket.AF_INET6 else address
    request = (
        f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: retinue-probe\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    data = b""
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (address, port))
            await loop.sock_sendall(sock, request)
            while b"\n" not in data and len(data) < MAX_RESPONSE_LINE:
                chunk = await loop.sock_recv(sock, MAX_RESPONSE_LINE)
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        return False, f"GET http://{host}:{port}{path}: no answer within {seconds(timeout)}"
    except OSError as e:
        return False, f"GET http://{host}:{port}{path}: {_why(e)}"
    finally:
        sock.close()
    line = data.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return False, f"GET http://{host}:{port}{path}: not an HTTP response: {line[:80]!r}"
    code = int(parts[1])
    return 200 <= code < 400, f"HTTP {code}"


async def exec_inside(
    reaper: procs.Reaper,
    argv: list[str],
    pid_file: str,
    timeout: float,
    output: Callable[[bytes], None],
) -> tuple[int | None, str]:
    """Run `argv` (a `runc exec --detach --pid-file PID_FILE ...` command line) and wait for the
    process it started, at most `timeout` seconds; then SIGKILL it and what it started.

    Returns (wait status, "") once it exited, or (None, why) when it never started or hung.
    `output` gets what it writes (stdout and stderr), as it comes.
    """
    loop = asyncio.get_running_loop()
    try:
        os.unlink(pid_file)
    except FileNotFoundError:
        pass
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def readable() -> None:
        try:
            data = os.read(r, 65536)
        except BlockingIOError:
            return
        if data:
            output(data)
        else:
            loop.remove_reader(r)

    try:
        runc = procs.spawn(argv, stdout=w)
    except OSError as e:
        os.close(r)
        os.close(w)
        return None, f"cannot run {argv[0]}: {e.strerror}"
    os.close(w)
    loop.add_reader(r, readable)
    deadline = loop.time() + timeout
    pid: int | None = None
    pidfd: int | None = None
    runc_exited = False
    try:
        try:
            async with asyncio.timeout_at(deadline):
                status = await asyncio.shield(reaper.wait(runc))
        except TimeoutError:
            # runc itself hangs (a frozen container): end it; what it started is ended below.
            _kill(runc, signal.SIGKILL)
            await reaper.wait(runc)
            status = -1
        runc_exited = True
        pid = started = _read_pid(pid_file)
        if started is None:
            why = "timed out" if status == -1 else procs.describe_status(status)
            return None, f"could not be started (exec {why})"
        try:
            pidfd = os.pidfd_open(started)
        except ProcessLookupError:
            pidfd = None
        if reaper.reaped(started) and pidfd is not None:
            os.close(pidfd)  # the number may already be someone else's
            pidfd = None
        exited = reaper.wait(started)
        try:
            async with asyncio.timeout_at(deadline):
                result = await asyncio.shield(exited)
            pid = None  # reaped: nothing to end
            return result, ""
        except TimeoutError:
            _end(started, pidfd)
            await exited
            pid = None
            return None, f"still running after {seconds(timeout)}: killed"
    finally:
        # Cancelled (the service's run ended, the supervisor stops): nothing may outlive it.
        if not runc_exited:
            _kill(runc, signal.SIGKILL)
        elif pid is not None:
            _end(pid, pidfd)
        if pidfd is not None:
            os.close(pidfd)
        # What is left in the pipe (a grandchild that kept it open is not waited for, nor read
        # for ever while it keeps writing).
        for _ in range(procs.DRAIN_READS):
            try:
                data = os.read(r, 65536)
            except OSError:
                break
            if not data:
                break
            output(data)
        loop.remove_reader(r)
        os.close(r)


def _end(pid: int, pidfd: int | None) -> None:
    """SIGKILL a probe's process and its descendants (through its pidfd: never a reused pid)."""
    if pidfd is None:
        return
    # Its descendants first, while their parent chains still lead to it.
    for victim in _descendants(pid):
        _kill(victim, signal.SIGKILL)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _why(e: OSError) -> str:
    # asyncio's connect puts its own words in strerror; the errno's are the ones to show.
    return os.strerror(e.errno) if e.errno else str(e)


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _descendants(pid: int) -> list[int]:
    return [p for p in readiness.tree(pid) if p != pid]


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


