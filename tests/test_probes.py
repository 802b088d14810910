"""The liveness/readiness probes: HTTP and TCP from inside another network namespace, and a probe
command that hangs. Real namespaces and processes: `unshare --net` makes the namespace, a tiny
HTTP server (python -m http.server) listens on its loopback only."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from retinue.supervisor import probes, procs

UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


@pytest.fixture
def netns_server(tmp_path: os.PathLike[str]) -> Iterator[tuple[int, int]]:
    """(pid, port) of an HTTP server alone in a new network namespace; / answers 200,
    /missing 404."""
    port = 18080
    proc = subprocess.Popen(
        [UNSHARE, "--net", "sh", "-c",
         f"ip link set lo up 2>/dev/null || busybox ip link set lo up; "
         f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1"],
        cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with open(f"/proc/{proc.pid}/net/tcp") as f:
                if f":{port:04X} " in f.read():
                    break
            assert time.monotonic() < deadline, "the test server did not listen"
            time.sleep(0.05)
        yield proc.pid, port
    finally:
        proc.kill()
        proc.wait()


def _pidfd(pid: int) -> int:
    return os.pidfd_open(pid)


def test_http_probe_runs_in_the_target_namespace(netns_server: tuple[int, int]) -> None:
    pid, port = netns_server
    fd = _pidfd(pid)
    try:
        ok, what = asyncio.run(probes.http_get(fd, "127.0.0.1", port, "/", 2))
        assert (ok, what) == (True, "HTTP 200")
        ok, what = asyncio.run(probes.http_get(fd, "127.0.0.1", port, "/missing", 2))
        assert (ok, what) == (False, "HTTP 404")
        ok, what = asyncio.run(probes.tcp_connect(fd, "127.0.0.1", port, 2))
        assert ok, what
    finally:
        os.close(fd)
    # From the host's namespace nothing listens there: the probe really used the other one.
    own = _pidfd(os.getpid())
    try:
        ok, what = asyncio.run(probes.http_get(own, "127.0.0.1", port, "/", 2))
        assert not ok and "Connection refused" in what, what
    finally:
        os.close(own)


def test_http_probe_that_hangs_times_out() -> None:
    """A server that accepts and never answers: the probe gives up after its timeout."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    own = _pidfd(os.getpid())
    try:
        started = time.monotonic()
        ok, what = asyncio.run(probes.http_get(own, "127.0.0.1", port, "/", 0.3))
        took = time.monotonic() - started
    finally:
        os.close(own)
        listener.close()
    assert not ok and "no answer within 300ms" in what, what
    assert took < 2


def test_probe_of_an_exited_process_fails_cleanly() -> None:
    proc = subprocess.Popen(["true"])
    fd = _pidfd(proc.pid)
    proc.wait()
    try:
        ok, what = asyncio.run(probes.http_get(fd, "127.0.0.1", 1, "/", 1))
    finally:
        os.close(fd)
    assert not ok and "network namespace" in what, what


def test_exec_inside_kills_a_command_that_hangs(tmp_path: os.PathLike[str]) -> None:
    """A stand-in for `runc exec --detach --pid-file`: starts a sleeper (with a child), writes
    its pid and exits. The sleeper outlives the timeout and is killed, its child too."""
    pid_file = os.path.join(str(tmp_path), "probe.pid")
    child_file = os.path.join(str(tmp_path), "child.pid")
    script = (
        f"sh -c 'sleep 100 & echo $! > {child_file}; echo started; exec sleep 100' &"
        f" echo $! > {pid_file}"
    )

    async def main() -> tuple[int | None, str, bytes]:
        reaper = procs.Reaper(asyncio.get_running_loop())
        procs.become_subreaper()
        out: list[bytes] = []
        try:
            status, why = await probes.exec_inside(
                reaper, ["/bin/sh", "-c", script], pid_file, 0.5, out.append
            )
        finally:
            reaper.close()
        return status, why, b"".join(out)

    started = time.monotonic()
    status, why, out = asyncio.run(main())
    assert status is None and why == "still running after 500ms: killed"
    assert time.monotonic() - started < 5
    assert b"started" in out
    with open(child_file) as f:
        child = int(f.read())
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        try:
            os.waitpid(child, os.WNOHANG)  # we are its subreaper: reap it
        except ChildProcessError:
            pass
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{child}")
