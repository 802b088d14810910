"""What runc's own integration tests check for `run`, `tty`, `hooks` and `seccomp-notify`,
checked here through `retinue-runtime` with a service attached (issue 9).

runc's bats suite cannot run here (its helpers need Go, its images come from the network, and
none of its code may be committed), so each test below names the bats case whose behaviour it
checks (tests/integration/FILE.bats, "test name") and checks it its own way. Every container
here has the service `svc` attached: the gate, retinue-init as PID 1, retinue's own createRuntime
and poststop hooks and the supervisor are all in the way of what runc promises.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Rig, main_args, read_pty_until, set_pty_size, wait_for

SVC = 'ev "svc ready"; touch /tmp/ready; exec sleep 1000\n'
READY_FILE = '[ready]\nfile = "/tmp/ready"\ntimeout = "5s"\ninterval = "20ms"\n'
SERVICES = ["RETINUE_SERVICES=svc"]
Edit = Any


def with_svc(rig: Rig) -> None:
    rig.service("svc", SVC, READY_FILE)


def run(rig: Rig, cid: str, bundle: Path, *options: str,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`run` with stdin from /dev/null, stdout and stderr merged into a file."""
    out = rig.base / f"{cid}.run.out"
    with open(out, "w") as f:
        r = subprocess.run(rig.rt_argv("run", *options, "--bundle", str(bundle), cid),
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
    r.stdout = out.read_text()
    return r


def svc_bundle(rig: Rig, body: str, edit: Edit = None) -> Path:
    return rig.bundle(main_args(body), env=SERVICES, edit=edit)


def gone(rig: Rig, cid: str) -> None:
    assert rig.state(cid) is None
    wait_for(lambda: not rig.leftovers(cid), 10)


# -- run.bats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 7])
def test_run_exit_status(rig: Rig, container_id: str, code: int) -> None:
    """run.bats "runc run": the container's exit status is run's, and the container is gone
    afterwards (state fails)."""
    with_svc(rig)
    r = run(rig, container_id, svc_bundle(rig, f"ev main; exit {code}"))
    assert r.returncode == code, (r.stdout, rig.log_entries())
    words = [w for _, w in rig.events()]
    assert words.index("svc ready") < words.index("main")
    gone(rig, container_id)


def test_run_exit_by_signal(rig: Rig, container_id: str) -> None:
    """run.bats "runc run" (status part): a main process that a signal ends gives 128+N, as
    runc run reports it; the process kills itself, so nothing outside is involved."""
    with_svc(rig)
    r = run(rig, container_id, svc_bundle(rig, "ev main; kill -USR1 $$; sleep 5"))
    assert r.returncode == 128 + signal.SIGUSR1, (r.stdout, rig.log_entries())
    gone(rig, container_id)


def test_run_keep(rig: Rig, container_id: str) -> None:
    """run.bats "runc run --keep": the container stays, stopped, until it is deleted."""
    with_svc(rig)
    r = run(rig, container_id, svc_bundle(rig, "ev main"), "--keep")
    assert r.returncode == 0, (r.stdout, rig.log_entries())
    assert rig.runc_status(container_id) == "stopped"
    assert rig.rt("delete", container_id).returncode == 0
    gone(rig, container_id)


def test_run_detach_without_terminal(rig: Rig, container_id: str) -> None:
    """tty.bats "runc run -d [terminal=false]": `run -d` returns with the container running;
    KILL stops it."""
    with_svc(rig)
    r = run(rig, container_id, rig.bundle(["sleep", "1000"], env=SERVICES), "-d")
    assert r.returncode == 0, (r.stdout, rig.log_entries())
    assert rig.runc_status(container_id) == "running"
    assert rig.rt("kill", container_id, "KILL").returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped", 15)
    assert rig.rt("delete", container_id).returncode == 0
    gone(rig, container_id)


def test_run_without_terminal_in_foreground(rig: Rig, container_id: str) -> None:
    """tty.bats "runc run [terminal=false]": a foreground `run` without a terminal leaves the
    container running, and KILL from another call ends it (and the run)."""
    with_svc(rig)
    bundle = rig.bundle(["sleep", "1000"], env=SERVICES)
    with open(rig.base / "run.out", "w") as f:
        proc = subprocess.Popen(rig.rt_argv("run", "--bundle", str(bundle), container_id),
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: rig.runc_status(container_id) == "running", 15)
        assert rig.rt("kill", container_id, "KILL").returncode == 0
        assert proc.wait(15) == 128 + signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    gone(rig, container_id)


def test_run_create_then_start_without_terminal(rig: Rig, container_id: str) -> None:
    """tty.bats "runc create [terminal=false]": create, start, running, KILL."""
    with_svc(rig)
    assert rig.create(container_id, rig.bundle(["sleep", "1000"], env=SERVICES)).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    assert rig.runc_status(container_id) == "running"
    assert rig.rt("kill", container_id, "KILL").returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped", 15)
    assert rig.rt("delete", container_id).returncode == 0
    gone(rig, container_id)


@pytest.mark.parametrize("what", ["missing", "bad-interpreter"])
def test_run_execve_error(rig: Rig, container_id: str, what: str) -> None:
    """run.bats "runc run [execve error]": a process that cannot be executed makes run fail
    with one clear error naming it, and nothing is left behind. (runc's case is a script with
    a missing interpreter; a missing command is the common one.)"""
    with_svc(rig)
    if what == "missing":
        args = ["/no/such/command", "arg"]
    else:
        script = rig.shared / "run.sh"
        script.write_text("#!/mmnnttbb foo bar\nsh\n")
        script.chmod(0o755)
        args = ["/shared/run.sh"]
    r = run(rig, container_id, rig.bundle(args, env=SERVICES))
    assert r.returncode != 0, r.stdout
    # runc says "exec NAME: no such file or directory"; retinue-init (PID 1 with services)
    # execs the process after start and says so itself, on one line, exiting 127 as a shell.
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    assert f"exec {args[0]}: no such file or directory" in lines[0].lower(), r.stdout
    gone(rig, container_id)


# -- tty.bats ---------------------------------------------------------------------------------


def _terminal(spec: dict[str, Any]) -> None:
    spec["process"]["terminal"] = True


def _run_on_pty(rig: Rig, cid: str, body: str,
                rows: int = 24, cols: int = 80) -> tuple[subprocess.Popen[bytes], int, int]:
    bundle = svc_bundle(rig, body, edit=_terminal)
    master, slave = os.openpty()
    set_pty_size(slave, rows, cols)

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(rig.rt_argv("run", "--bundle", str(bundle), cid),
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty)
    return proc, master, slave


def _finish(proc: subprocess.Popen[bytes], master: int, slave: int) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    os.close(master)
    os.close(slave)


def test_tty_ptsname_size_and_settings(rig: Rig, container_id: str) -> None:
    """tty.bats "runc run [tty ptsname]" (fd 0 is a /dev/pts device) and "runc exec [tty
    consolesize]" (the size the caller's terminal has is the container's, `stty size`), with
    `stty -a` showing a cooked terminal in the container."""
    with_svc(rig)
    body = ('echo "pts=$(readlink /proc/self/fd/0)"; echo "tty=$(tty)"; '
            'echo "size $(stty size)"; stty -a | grep -o " icanon" | sed "s/^/mode/"; exit 3')
    proc, master, slave = _run_on_pty(rig, container_id, body, rows=37, cols=101)
    seen = bytearray()
    try:
        read_pty_until(master, b"size 37 101\r\n", seen, timeout=30)
        read_pty_until(master, b"mode icanon\r\n", seen, timeout=30)
        assert proc.wait(30) == 3, bytes(seen)
    finally:
        _finish(proc, master, slave)
    text = bytes(seen).decode(errors="replace")
    assert "pts=/dev/pts/" in text and "tty=/dev/pts/" in text, text
    gone(rig, container_id)


def test_tty_interrupt_reaches_the_process(rig: Rig, container_id: str) -> None:
    """tty.bats (the terminal is the container's own): ^C typed on the caller's terminal is
    the container's pty's intr character and reaches the process as SIGINT."""
    with_svc(rig)
    body = "trap 'echo got-int; exit 4' INT; echo ready; while :; do sleep 0.1; done"
    proc, master, slave = _run_on_pty(rig, container_id, body)
    seen = bytearray()
    try:
        read_pty_until(master, b"ready\r\n", seen, timeout=30)
        os.write(master, b"\x03")
        read_pty_until(master, b"got-int", seen, timeout=30)
        assert proc.wait(30) == 4, bytes(seen)
    finally:
        _finish(proc, master, slave)
    gone(rig, container_id)


def test_tty_end_of_input(rig: Rig, container_id: str) -> None:
    """tty.bats (the terminal is the container's own): ^D on an empty line is end of input
    for the process's reads; what was typed before it arrives."""
    with_svc(rig)
    body = 'echo ready; cat > /tmp/in; echo "eof $(wc -c < /tmp/in)"; exit 0'
    proc, master, slave = _run_on_pty(rig, container_id, body)
    seen = bytearray()
    try:
        read_pty_until(master, b"ready\r\n", seen, timeout=30)
        os.write(master, b"abc\r")
        time.sleep(0.2)
        os.write(master, b"\x04")
        read_pty_until(master, b"eof 4\r\n", seen, timeout=30)
        assert proc.wait(30) == 0, bytes(seen)
    finally:
        _finish(proc, master, slave)
    gone(rig, container_id)


def test_tty_stdin_not_a_tty(rig: Rig, container_id: str) -> None:
    """tty.bats "runc run [stdin not a tty]": `run` of a container without a terminal, stdin
    from /dev/null: `stty size` fails inside (no tty) and `cat` sees end of input at once."""
    with_svc(rig)
    r = run(rig, container_id, svc_bundle(
        rig, 'cat; echo "cat=$?"; stty size 2>/dev/null; echo "stty=$?"'))
    assert r.returncode == 0, r.stdout
    assert "cat=0" in r.stdout and "stty=1" in r.stdout, r.stdout
    gone(rig, container_id)


# -- hooks.bats -------------------------------------------------------------------------------

# Appends "STAGE <state JSON on stdin>" to hooks.log next to itself: on the host it lives in
# the rig's shared directory, in the container at /shared (the same directory).
HOOK = '#!/bin/sh\nstate=$(cat)\necho "$1 $state" >> "${0%/*}/hooks.log"\n'
# runc 1.1.5 runs createContainer hooks in the container's mount namespace before pivot_root:
# their path is resolved as on the host. Only startContainer's is the container's path.
HOST_STAGES = ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
ORDER = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")


def _own_hooks(rig: Rig) -> Edit:
    script = rig.shared / "hook.sh"
    script.write_text(HOOK)
    script.chmod(0o755)

    def edit(spec: dict[str, Any]) -> None:
        hooks: dict[str, list[dict[str, Any]]] = {}
        for stage in ORDER:
            path = str(script) if stage in HOST_STAGES else "/shared/hook.sh"
            hooks[stage] = [{"path": path, "args": ["hook.sh", stage]}]
        spec["hooks"] = hooks

    return edit


def _hook_log(rig: Rig) -> list[tuple[str, dict[str, Any]]]:
    path = rig.shared / "hooks.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        stage, _, state = line.partition(" ")
        out.append((stage, json.loads(state)))
    return out


def test_own_hooks_run_in_order_with_their_state(rig: Rig, container_id: str) -> None:
    """hooks.bats (all cases: the owner's hooks run) and the runtime-spec's order: every hook
    the bundle's owner gives runs once, in the spec's order, with the container's state on
    stdin, as plain runc runs them (the same statuses per stage), alongside retinue's own
    createRuntime and poststop hooks (the service is ready before main runs, the supervisor is
    gone afterwards)."""
    with_svc(rig)
    bundle = svc_bundle(rig, "ev main; exit 0", edit=_own_hooks(rig))
    # The same bundle under plain runc first: what runc itself hands each stage.
    plain = rig.runc("run", "--bundle", str(bundle), container_id + "-plain")
    assert plain.returncode == 0, plain.stderr
    wait_for(lambda: len(_hook_log(rig)) == len(ORDER), 10)
    runc_status = {stage: state["status"] for stage, state in _hook_log(rig)}
    (rig.shared / "hooks.log").unlink()
    (rig.shared / "events").write_text("")

    r = run(rig, container_id, bundle)
    assert r.returncode == 0, (r.stdout, rig.log_entries())
    wait_for(lambda: len(_hook_log(rig)) == len(ORDER), 10)
    log = _hook_log(rig)
    stages = [stage for stage, _ in log]
    # runc runs poststart (in `start`) and startContainer (in the container's init, once start
    # opens the exec fifo) at the same time: the spec orders both after createContainer only.
    assert stages[:3] == list(ORDER[:3]) and stages[5] == "poststop", stages
    assert sorted(stages[3:5]) == ["poststart", "startContainer"], stages
    for stage, state in log:
        assert state["id"] == container_id, (stage, state)
        assert state["bundle"] == str(bundle), (stage, state)
        assert state["ociVersion"], (stage, state)
    assert {stage: state["status"] for stage, state in log} == runc_status
    assert runc_status["createRuntime"] == "creating" and runc_status["poststop"] == "stopped"
    assert all(state.get("pid") for stage, state in log if stage != "poststop"), log
    words = [w for _, w in rig.events()]
    assert words.index("svc ready") < words.index("main")
    gone(rig, container_id)


@pytest.mark.parametrize("stage", ["prestart", "createRuntime", "createContainer"])
def test_a_failing_own_hook_fails_create(rig: Rig, container_id: str, stage: str) -> None:
    """hooks.bats "runc create [hook fails]" (and "[second createRuntime hook fails]" for
    createRuntime): the owner's second hook of a stage fails, so create fails with runc's
    error naming the hook, and nothing is left behind (no supervisor, no state)."""
    with_svc(rig)

    def edit(spec: dict[str, Any]) -> None:
        spec["hooks"] = {stage: [{"path": "/bin/true"}, {"path": "/bin/false"}]}

    r = rig.create(container_id, rig.bundle(["sleep", "1000"], env=SERVICES, edit=edit))
    assert r.returncode != 0
    text = r.stderr + "\n".join(rig.errors())
    # runc 1.1.5 says "error running hook #1"; later runc adds the stage's name.
    assert "error running hook #1" in text, (text, rig.log_entries())
    rig.rt("delete", "--force", container_id)
    gone(rig, container_id)


@pytest.mark.parametrize(
    "stage", ["prestart", "createRuntime", "createContainer", "startContainer", "poststart"])
def test_a_failing_own_hook_fails_run(rig: Rig, container_id: str, stage: str) -> None:
    """hooks.bats "runc run [hook fails]": run fails with the error naming the hook; the
    process never printed unless the failing hook is poststart (it has started by then)."""
    with_svc(rig)

    def edit(spec: dict[str, Any]) -> None:
        spec["hooks"] = {stage: [{"path": "/bin/true"}, {"path": "/bin/false"}]}

    bundle = rig.bundle(["/bin/echo", "Hello World"], env=SERVICES, edit=edit)
    r = run(rig, container_id, bundle)
    assert r.returncode != 0, r.stdout
    if stage != "poststart":
        assert "Hello World" not in r.stdout, r.stdout
    text = r.stdout + "\n".join(rig.errors())
    assert "error running hook #1" in text, (text, rig.log_entries())
    gone(rig, container_id)


def test_start_container_hook_inherits_process_env(rig: Rig, container_id: str) -> None:
    """hooks.bats "runc run [startContainer hook should inherit process environment]"."""
    with_svc(rig)
    check = rig.shared / "check-env.sh"
    check.write_text('#!/bin/sh -ue\ntest "$ONE" = two\ntest "$FOO" = bar\necho "$HOME"\n')
    check.chmod(0o755)

    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["env"] += ["ONE=two", "FOO=bar"]
        spec["hooks"] = {"startContainer": [{"path": "/shared/check-env.sh"}]}

    r = run(rig, container_id, rig.bundle(["/bin/true"], env=SERVICES, edit=edit))
    assert r.returncode == 0, (r.stdout, rig.log_entries())
    gone(rig, container_id)


@pytest.mark.parametrize("argv", [["cat", "/nosuchfile"], ["busybox", "cat", "/nosuchfile"]])
def test_hook_argv_is_preserved(rig: Rig, container_id: str, argv: list[str]) -> None:
    """hooks.bats "runc run [hook's argv is preserved]": argv[0] reaches the hook as given."""
    with_svc(rig)

    def edit(spec: dict[str, Any]) -> None:
        spec["hooks"] = {"startContainer": [{"path": "/bin/busybox", "args": argv}]}

    r = run(rig, container_id, rig.bundle(["/bin/true"], env=SERVICES, edit=edit))
    assert r.returncode != 0
    text = r.stdout + "\n".join(rig.errors())
    assert "cat: can't open" in text and "/nosuchfile" in text, (text, rig.log_entries())
    gone(rig, container_id)


# -- seccomp-notify.bats ----------------------------------------------------------------------

# struct seccomp_notif is 80 bytes, seccomp_notif_resp 24 (linux/seccomp.h).
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101


class OwnAgent:
    """The container's own seccomp agent (the owner's, not retinue's): takes the notify fd
    from runc by SCM_RIGHTS and answers every notification with ENOMEDIUM."""

    def __init__(self, path: Path, answer: bool = True, let_through: bool = False) -> None:
        self.path = path
        self.answer = answer
        # SECCOMP_USER_NOTIF_FLAG_CONTINUE: the syscall runs as if never notified.
        self.let_through = let_through
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.sock.settimeout(60)
        self.state: dict[str, Any] | None = None  # the first process's (the container's init)
        self.states: list[dict[str, Any]] = []
        self.answered = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        # One connection per process runc starts with the filter: the container's init, and
        # every `runc exec` (retinue's services enter that way) brings its own notify fd.
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._take, args=(conn,), daemon=True).start()

    def _take(self, conn: socket.socket) -> None:
        fds = array.array("i")
        with conn:
            data, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(4 * 4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % 4])
            state = json.loads(data)
        self.states.append(state)
        if self.state is None:
            self.state = state
        for fd in fds[1:]:
            os.close(fd)
        if fds and self.answer:
            self._answer(fds[0])
        elif fds:
            os.close(fds[0])  # the agent is gone: waiting calls fail with ENOSYS

    def _answer(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        try:
            while True:
                events = poller.poll(30_000)
                if not events or events[0][1] & (select.POLLHUP | select.POLLERR):
                    return
                buf = bytearray(80)
                try:
                    fcntl.ioctl(fd, NOTIF_RECV, buf)
                except OSError:
                    continue  # the caller went away before we read it
                (notif_id,) = struct.unpack_from("Q", buf)
                if self.let_through:
                    resp = bytearray(struct.pack("QqiI", notif_id, 0, 0, 1))
                else:
                    resp = bytearray(struct.pack("QqiI", notif_id, 0, -errno.ENOMEDIUM, 0))
                try:
                    fcntl.ioctl(fd, NOTIF_SEND, resp)
                    self.answered += 1
                except OSError:
                    pass
        finally:
            os.close(fd)

    def close(self) -> None:
        # shutdown wakes the accept() blocked in the serving thread; close alone does not.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def _own_listener(agent_path: Path, names: tuple[str, ...] = ("mkdir", "mkdirat"),
                  no_new_privileges: bool = False) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["noNewPrivileges"] = no_new_privileges
        spec["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": str(agent_path),
            "listenerMetadata": "owner's",
            "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_X86_64"],
            "syscalls": [{"names": list(names), "action": "SCMP_ACT_NOTIFY"}],
        }

    return edit


@pytest.mark.parametrize("nnp", [False, True])
def test_own_seccomp_agent_with_a_service(rig: Rig, container_id: str, nnp: bool) -> None:
    """seccomp-notify.bats "runc run [seccomp] (SCMP_ACT_NOTIFY error chmod)" and "(...
    noNewPrivileges false)" / "(... noNewPrivileges true)": the container brings its own
    listenerPath and agent; with a service attached (and no seccomp handler in retinue's
    policy) the container's profile is left as it is: its agent gets the fd and the state, and
    its answer is what the process sees."""
    with_svc(rig)
    agent = OwnAgent(rig.base / "agent.sock")
    try:
        edit = _own_listener(agent.path, no_new_privileges=nnp)
        bundle = svc_bundle(rig, "ev main; mkdir /tmp/foo", edit=edit)
        r = run(rig, container_id, bundle)
        assert r.returncode != 0, r.stdout
        assert "No medium found" in r.stdout, (r.stdout, rig.log_entries())
        assert agent.state is not None and agent.answered >= 1
        assert agent.state["metadata"] == "owner's"
        assert agent.state["state"]["id"] == container_id
    finally:
        agent.close()
    gone(rig, container_id)


def test_own_seccomp_agent_missing_fails_run(rig: Rig, container_id: str) -> None:
    """seccomp-notify.bats "runc run [seccomp] (SCMP_ACT_NOTIFY wrong listener path)" / "(no
    seccompagent)": with a service attached, a listenerPath nobody listens on still fails run,
    before the process runs, and nothing is left behind."""
    with_svc(rig)
    bundle = svc_bundle(rig, "ev main", edit=_own_listener(rig.base / "nobody.sock"))
    r = run(rig, container_id, bundle)
    assert r.returncode != 0, r.stdout
    assert all(w != "main" for _, w in rig.events())
    gone(rig, container_id)


SYSINFO_POLICY = """
[[attach]]
name = "si"
when.env = { SI = "1" }
[[attach.seccomp]]
syscalls = ["sysinfo"]
handler = "sysinfo"
"""


def test_own_agent_and_retinue_handlers_are_refused(rig: Rig, container_id: str) -> None:
    """seccomp-notify.bats has no case for two agents (a filter has one listener): when the
    container's profile already sends notifications to its own listenerPath and retinue's
    policy also wants seccomp handlers, create refuses with an error naming the field and the
    container's path, rather than take the container's agent away; nothing is left behind and
    the container's agent is never called."""
    with_svc(rig)
    rig.policy(SYSINFO_POLICY)
    agent = OwnAgent(rig.base / "agent.sock")
    try:
        edit = _own_listener(agent.path)
        bundle = rig.bundle(["sh", "-c", "mkdir /tmp/x"], env=[*SERVICES, "SI=1"], edit=edit)
        r = rig.create(container_id, bundle)
        assert r.returncode != 0, r.stderr
        errors = rig.errors()
        assert any("linux.seccomp.listenerPath" in e and str(agent.path) in e
                   for e in errors), (errors, r.stderr)
        assert agent.state is None
    finally:
        agent.close()
    assert rig.runc_status(container_id) is None
    gone(rig, container_id)


def test_listener_path_without_notify_is_ignored(rig: Rig, container_id: str) -> None:
    """seccomp-notify.bats "runc run [seccomp] (ignore listener path if no notify act)", with
    a service and with retinue's own handlers: a listenerPath the container's profile never
    uses does not stop retinue's agent from serving the container."""
    with_svc(rig)
    rig.policy(SYSINFO_POLICY)

    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                    "listenerPath": str(rig.base / "nobody.sock"),
                                    "listenerMetadata": "bar"}

    bundle = rig.bundle(main_args("mkdir /tmp/foo && ls -d /tmp/foo && ev main"),
                        env=[*SERVICES, "SI=1"], edit=edit)
    r = run(rig, container_id, bundle)
    assert r.returncode == 0, (r.stdout, rig.log_entries())
    assert any(w == "main" for _, w in rig.events())
    gone(rig, container_id)


def _notify_without_listener(spec: dict[str, Any]) -> None:
    spec["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "",
        "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
    }


def test_notify_without_listener_fails_with_a_service(rig: Rig, container_id: str) -> None:
    """seccomp-notify.bats "runc run [seccomp] (SCMP_ACT_NOTIFY empty listener path and notify
    act)", with a service attached: run fails before the process runs."""
    with_svc(rig)
    r = run(rig, container_id, svc_bundle(rig, "ev main", edit=_notify_without_listener))
    assert r.returncode != 0, r.stdout
    assert all(w != "main" for _, w in rig.events())
    gone(rig, container_id)


def test_notify_without_listener_is_refused_with_retinue_handlers(
    rig: Rig, container_id: str
) -> None:
    """seccomp-notify.bats "runc run [seccomp] (SCMP_ACT_NOTIFY empty listener path and notify
    act)", with retinue's own handlers too: runc refuses such a profile, so retinue must not
    take it as its own (its listenerPath would send the container's NOTIFY syscalls to an
    agent with no handler for them): create fails naming the field, nothing is left behind."""
    with_svc(rig)
    rig.policy(SYSINFO_POLICY)
    bundle = rig.bundle(main_args("ev main"), env=[*SERVICES, "SI=1"],
                        edit=_notify_without_listener)
    r = rig.create(container_id, bundle)
    assert r.returncode != 0, r.stderr
    errors = rig.errors()
    assert any("linux.seccomp.listenerPath" in e and "SCMP_ACT_NOTIFY" in e
               for e in errors), (errors, r.stderr)
    assert rig.runc_status(container_id) is None
    gone(rig, container_id)


@pytest.mark.parametrize("nnp", [False, True])
def test_own_agent_on_important_syscalls(rig: Rig, container_id: str, nnp: bool) -> None:
    """seccomp-notify.bats "runc run [seccomp] (SCMP_ACT_NOTIFY important syscalls
    noNewPrivileges false)" / "(... true)": the container's own agent is notified of execve,
    open, read, close, fcntl (which runc, retinue-init and the services' exec also make) and
    lets them through: the container runs and exits 0 with its service attached."""
    with_svc(rig)
    agent = OwnAgent(rig.base / "agent.sock", let_through=True)
    names = ("execve", "openat", "open", "read", "close", "fcntl")
    try:
        edit = _own_listener(agent.path, names=names, no_new_privileges=nnp)
        r = run(rig, container_id, svc_bundle(rig, "ev main", edit=edit))
        assert r.returncode == 0, (r.stdout, rig.log_entries())
        assert agent.answered > 0
        assert any(w == "main" for _, w in rig.events())
        # The service entered by `runc exec`: its process brought the agent a fd of its own.
        assert len(agent.states) >= 2, agent.states
    finally:
        agent.close()
    gone(rig, container_id)


def test_own_seccomp_agent_gone(rig: Rig, container_id: str) -> None:
    """seccomp-notify.bats "runc run [seccomp] (SCMP_ACT_NOTIFY kill seccompagent)": once the
    container's own agent is gone, its notified syscalls fail with ENOSYS instead of hanging,
    with a service attached as without."""
    with_svc(rig)
    agent = OwnAgent(rig.base / "agent.sock", answer=False)
    try:
        bundle = svc_bundle(rig, "ev main; mkdir /tmp/foo", edit=_own_listener(agent.path))
        r = run(rig, container_id, bundle)
        assert r.returncode != 0, r.stdout
        assert "Function not implemented" in r.stdout, (r.stdout, rig.log_entries())
        assert agent.state is not None
    finally:
        agent.close()
    gone(rig, container_id)


def test_notify_on_write_is_refused(rig: Rig, container_id: str) -> None:
    """seccomp-notify.bats "runc run [seccomp] (SCMP_ACT_NOTIFY write)": runc's own error
    reaches the caller, with a service attached."""
    with_svc(rig)
    agent = OwnAgent(rig.base / "agent.sock")
    try:
        bundle = svc_bundle(rig, "ev main", edit=_own_listener(agent.path, names=("write",)))
        r = run(rig, container_id, bundle)
        assert r.returncode != 0, r.stdout
        text = r.stdout + "\n".join(rig.errors())
        assert "SCMP_ACT_NOTIFY cannot be used for the write syscall" in text, text
    finally:
        agent.close()
    gone(rig, container_id)


def test_start_container_hook_gets_no_extra_fd(rig: Rig, container_id: str) -> None:
    """seccomp-notify.bats "runc run [seccomp] (SCMP_ACT_NOTIFY startContainer hook)": with the
    container's own agent, its startContainer hook has the same open files under retinue (with
    a service) as under plain runc: no seccomp fd, nothing of retinue's."""
    with_svc(rig)
    counts = rig.shared / "fds"

    def edit(spec: dict[str, Any]) -> None:
        _own_listener(rig.base / "agent.sock")(spec)
        spec["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": [
            "sh", "-c", "ls /proc/self/fd/ | wc -l >> /shared/fds"]}]}

    bundle = rig.bundle(["/bin/true"], env=SERVICES, edit=edit)
    for name in ("plain", "retinue"):
        agent = OwnAgent(rig.base / "agent.sock")
        try:
            if name == "plain":
                r = rig.runc("run", "--bundle", str(bundle), container_id + "-plain")
                assert r.returncode == 0, r.stderr
            else:
                r = run(rig, container_id, bundle)
                assert r.returncode == 0, (r.stdout, rig.log_entries())
        finally:
            agent.close()
            (rig.base / "agent.sock").unlink()
    plain, ours = counts.read_text().split()
    assert ours == plain, (plain, ours)
    gone(rig, container_id)


@pytest.mark.parametrize("uid", [0, 2000])
def test_run_default_home(rig: Rig, container_id: str, uid: int) -> None:
    """run.bats "runc run check default home": HOME is what plain runc gives the process (from
    the image's passwd, or its default), with retinue-init in between."""
    with_svc(rig)

    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["user"] = {"uid": uid, "gid": uid}
        spec["process"]["env"] = [e for e in spec["process"]["env"]
                                  if not e.startswith("HOME=")]

    bundle = rig.bundle(["sh", "-c", 'echo "home=$HOME"'], env=SERVICES, edit=edit)
    plain = rig.runc("run", "--bundle", str(bundle), container_id + "-plain")
    assert plain.returncode == 0, plain.stderr
    r = run(rig, container_id, bundle)
    assert r.returncode == 0, (r.stdout, rig.log_entries())
    assert r.stdout.strip() == plain.stdout.strip() and "home=/" in r.stdout, (r.stdout, plain)
    gone(rig, container_id)


@pytest.mark.parametrize("ids", [(0, 0), (1000, 100)])
def test_tty_owner(rig: Rig, container_id: str, ids: tuple[int, int]) -> None:
    """tty.bats "runc run [tty owner]" and "runc run [tty owner] ({u,g}id != 0)": the
    process's terminal belongs to its uid, with the tty group of the /dev/pts mount."""
    with_svc(rig)
    uid, gid = ids

    def edit(spec: dict[str, Any]) -> None:
        _terminal(spec)
        spec["process"]["user"] = {"uid": uid, "gid": gid}

    bundle = rig.bundle(["sh", "-c", 'echo "owner=$(stat -c %u:%g $(tty))"'], env=SERVICES,
                        edit=edit)
    spec = json.loads((bundle / "config.json").read_text())
    pts = next(m for m in spec["mounts"] if m["destination"] == "/dev/pts")
    tty_gid = next(o.split("=")[1] for o in pts.get("options", []) if o.startswith("gid="))
    master, slave = os.openpty()

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(rig.rt_argv("run", "--bundle", str(bundle), container_id),
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty)
    seen = bytearray()
    try:
        read_pty_until(master, f"owner={uid}:{tty_gid}\r\n".encode(), seen, timeout=30)
        assert proc.wait(30) == 0, bytes(seen)
    finally:
        _finish(proc, master, slave)
    gone(rig, container_id)
