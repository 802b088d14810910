"""`retinue-runtime run` for a container with services: create, the gate, start, wait, delete;
the exit code is the main process's, as with runc run."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import termios
import time

from conftest import Rig, main_args, read_pty_until, set_pty_size, wait_for

LATE = 'ev "svc start"; sleep 0.3; ev "svc ready"; touch /tmp/ready; exec sleep 1000\n'
READY_FILE = '[ready]\nfile = "/tmp/ready"\ntimeout = "2s"\ninterval = "20ms"\n'


def run(rig: Rig, cid: str, body: str, *options: str,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    bundle = rig.bundle(main_args(body), env=["RETINUE_SERVICES=svc"])
    out = rig.base / f"{cid}.run.out"
    with open(out, "w") as f:
        r = subprocess.run(rig.rt_argv("run", *options, "--bundle", str(bundle), cid),
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
    r.stdout = out.read_text()
    return r


def test_run_gates_and_returns_the_main_exit_code(rig: Rig, container_id: str) -> None:
    rig.service("svc", LATE, READY_FILE)
    r = run(rig, container_id, 'ev main; echo "hello from main"; exit 7')
    assert r.returncode == 7, (r.stdout, rig.log_entries())
    assert "hello from main" in r.stdout
    words = [w for _, w in rig.events()]
    assert words.index("svc ready") < words.index("main")
    # Deleted afterwards, with its supervisor and state; the service never kept it alive.
    assert rig.state(container_id) is None
    wait_for(lambda: not rig.leftovers(container_id), 5)
    assert rig.errors() == [] and rig.warnings() == []


def test_run_exit_zero(rig: Rig, container_id: str) -> None:
    rig.service("svc", LATE, READY_FILE)
    r = run(rig, container_id, "ev main")
    assert r.returncode == 0, r.stdout
    wait_for(lambda: not rig.leftovers(container_id), 5)


def test_run_with_a_service_that_never_gets_ready(rig: Rig, container_id: str) -> None:
    rig.service("svc", 'echo "svc: no config"; exec sleep 1000\n',
                '[ready]\nfile = "/tmp/never"\ntimeout = "1s"\n')
    r = run(rig, container_id, "ev main; echo ran > /shared/marker")
    assert r.returncode == 1
    message = ('retinue: service "svc" not ready after 1s: still running; '
               "last output: svc: no config")
    assert rig.errors() == [message]
    assert message in r.stdout  # stderr, merged
    assert not (rig.shared / "marker").exists()
    assert rig.state(container_id) is None
    wait_for(lambda: not rig.leftovers(container_id), 5)


def test_run_detach(rig: Rig, container_id: str) -> None:
    rig.service("svc", LATE, READY_FILE)
    t0 = time.monotonic()
    r = run(rig, container_id, 'ev main; trap "exit 0" TERM; sleep 1000 & wait', "--detach")
    assert r.returncode == 0, (r.stdout, rig.log_entries())
    assert time.monotonic() - t0 < 5
    assert rig.runc_status(container_id) == "running"
    assert rig.service_status(container_id, "svc")["state"] == "ready"
    wait_for(lambda: any(w == "main" for _, w in rig.events()))
    assert rig.rt("kill", container_id, "TERM").returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    assert rig.rt("delete", container_id).returncode == 0
    wait_for(lambda: not rig.leftovers(container_id), 5)


def test_run_forwards_signals(rig: Rig, container_id: str) -> None:
    rig.service("svc", LATE, READY_FILE)
    bundle = rig.bundle(main_args('trap "ev main-term; exit 5" TERM; ev main; sleep 1000 & wait'),
                        env=["RETINUE_SERVICES=svc"])
    out = rig.base / "run.out"
    with open(out, "w") as f:
        proc = subprocess.Popen(rig.rt_argv("run", "--bundle", str(bundle), container_id),
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(w == "main" for _, w in rig.events()))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any(w == "main-term" for _, w in rig.events())
    wait_for(lambda: not rig.leftovers(container_id), 5)
    assert rig.state(container_id) is None


def test_run_main_killed_by_a_signal(rig: Rig, container_id: str) -> None:
    rig.service("svc", LATE, READY_FILE)
    bundle = rig.bundle(main_args("ev main; sleep 1000 & wait"), env=["RETINUE_SERVICES=svc"])
    with open(rig.base / "run.out", "w") as f:
        proc = subprocess.Popen(rig.rt_argv("run", "--bundle", str(bundle), container_id),
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(w == "main" for _, w in rig.events()))
        assert rig.runc("kill", container_id, "KILL").returncode == 0
        assert proc.wait(10) == 128 + 9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: not rig.leftovers(container_id), 5)


def test_run_with_a_terminal(rig: Rig, container_id: str) -> None:
    """`run` of a container with services and `process.terminal`, no console socket, from a
    terminal (a pty here), as people try runc by hand: the gate holds the entrypoint, the
    container gets a terminal of its own with the caller's window size (and its changes), what
    the user types reaches it, the exit code is main's, the caller's terminal is restored."""
    rig.service("svc", LATE, READY_FILE)

    def terminal(spec: dict[str, dict[str, object]]) -> None:
        spec["process"]["terminal"] = True

    body = ('ev main; test -t 0 && test -t 1 && echo "is a tty"; echo "size $(stty size)"; '
            'read -r line; echo "got $line"; read -r _; echo "size $(stty size)"; exit 5')
    bundle = rig.bundle(main_args(body), env=["RETINUE_SERVICES=svc"], edit=terminal)
    master, slave = os.openpty()
    set_pty_size(slave, 33, 111)
    before = termios.tcgetattr(slave)

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(rig.rt_argv("run", "--bundle", str(bundle), container_id),
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty)
    seen = bytearray()
    try:
        read_pty_until(master, b"size 33 111\r\n", seen)
        assert b"is a tty\r\n" in seen
        assert not termios.tcgetattr(slave)[3] & termios.ICANON  # the caller's side is raw
        set_pty_size(master, 40, 120)  # the caller's terminal is resized: SIGWINCH to the shim
        os.write(master, b"hello\r")  # raw mode on our side: the container's pty cooks it
        read_pty_until(master, b"got hello\r\n", seen)
        os.write(master, b"\r")
        read_pty_until(master, b"size 40 120\r\n", seen)
        assert proc.wait(timeout=20) == 5, bytes(seen)
        assert termios.tcgetattr(slave) == before  # raw mode undone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    words = [w for _, w in rig.events()]
    assert words.index("svc ready") < words.index("main")
    assert rig.state(container_id) is None
    wait_for(lambda: not rig.leftovers(container_id), 5)


def test_run_with_a_terminal_forwards_signals(rig: Rig, container_id: str) -> None:
    """A signal to `run` reaches the container's main process through the terminal relay."""
    rig.service("svc", LATE, READY_FILE)

    def terminal(spec: dict[str, dict[str, object]]) -> None:
        spec["process"]["terminal"] = True

    body = "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done"
    bundle = rig.bundle(main_args(body), env=["RETINUE_SERVICES=svc"], edit=terminal)
    master, slave = os.openpty()
    proc = subprocess.Popen(rig.rt_argv("run", "--bundle", str(bundle), container_id),
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    seen = bytearray()
    try:
        read_pty_until(master, b"ready\r\n", seen)
        proc.send_signal(signal.SIGTERM)
        read_pty_until(master, b"got-term\r\n", seen)
        assert proc.wait(timeout=20) == 9, bytes(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    assert rig.state(container_id) is None
    wait_for(lambda: not rig.leftovers(container_id), 5)
