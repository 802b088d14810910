"""The agent's promises, in real runc containers: every notification answered, nothing hangs.

exec'd processes get their own connection; a target killed mid-notification is dropped cleanly;
hostile arguments get the kernel's errno; a dead agent means ENOSYS, never a hang; no busy loop
after a container exits; no notify fd reaches a child; only root may connect.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from retinue.seccomp import agent as agent_mod
from retinue.seccomp.api import CONTINUE, Handler, Reply, Request, value

from .conftest import ContainerFactory, InProcessAgent
from .test_handlers import MKNOD_RULES, NO_CAPS, StartAgent, probe, results, sh


def rule(
    syscalls: list[str],
    handler: str,
    errno_: int = errno.ENOSYS,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "name": handler,
        "syscalls": syscalls,
        "handler": handler,
        "args": [],
        "settings": settings or {},
        "errno": errno_,
    }


class Gate(Handler):
    """mkdir of a path containing 'slow' waits (on a worker) until released; others CONTINUE."""

    name = "gate"
    blocking = True
    entered = threading.Event()
    release = threading.Event()
    pids: list[int] = []  # noqa: RUF012
    outcomes: list[str] = []  # noqa: RUF012

    def handle(self, req: Request) -> Reply:
        path = req.read_path(0)
        if b"slow" not in path:
            return CONTINUE
        Gate.pids.append(req.pid)
        Gate.entered.set()
        Gate.release.wait(20)
        try:
            req.check()
        except Exception:
            Gate.outcomes.append("gone")
            raise
        Gate.outcomes.append("answered")
        return value(0)


class Boom(Handler):
    name = "boom"

    def handle(self, req: Request) -> Reply:
        raise RuntimeError("handler bug")


class Nonsense(Handler):
    name = "nonsense"

    def handle(self, req: Request) -> Reply:
        return "yes"  # type: ignore[return-value]


REGISTRY: dict[str, type[Handler]] = {"gate": Gate, "boom": Boom, "nonsense": Nonsense}


@pytest.fixture
def gate() -> Iterator[type[Gate]]:
    Gate.entered.clear()
    Gate.release.clear()
    Gate.pids.clear()
    Gate.outcomes.clear()
    yield Gate
    Gate.release.set()


def test_each_exec_gets_its_own_connection(
    inprocess_agent: Any, make_container: ContainerFactory
) -> None:
    a: InProcessAgent = inprocess_agent([rule(["mkdir"], "audit")])
    c = make_container(["sleep", "30"], a.rules, a.listener)
    c.start_detached()
    try:
        assert a.wait_for(lambda: a.agent.stats.connections == 1)
        first = c.exec("mkdir", "/tmp/e1")
        assert first.returncode == 0, first.stderr
        second = c.exec("mkdir", "/tmp/e2")
        assert second.returncode == 0, second.stderr
        assert a.agent.stats.connections == 3
        statuses = [ln for ln in a.lines if "serving pid" in ln]
        assert "(creating)" in statuses[0] and all("(running)" in s for s in statuses[1:])
        audited = [ln for ln in a.lines if "seccomp audit:" in ln]
        assert any("/tmp/e1" in ln for ln in audited) and any("/tmp/e2" in ln for ln in audited)
        # Each exec'd process's filter is released when it exits: only init's fd stays.
        assert a.wait_for(lambda: a.agent.stats.targets == 1)
    finally:
        c.runc("delete", "-f", c.id)
    assert a.wait_for(lambda: a.agent.stats.targets == 0)


def test_target_killed_mid_notification_is_dropped_and_others_go_on(
    inprocess_agent: Any, make_container: ContainerFactory, gate: type[Gate]
) -> None:
    a: InProcessAgent = inprocess_agent([rule(["mkdir"], "gate")], REGISTRY)
    c = make_container(["sh", "-c", "mkdir /tmp/slow & sleep 30"], a.rules, a.listener)
    c.start_detached()
    try:
        assert gate.entered.wait(10), "the notification never reached the handler"
        # While that notification waits on a worker, the container's other syscalls are served.
        t0 = time.monotonic()
        fast = c.exec("mkdir", "/tmp/fast")
        assert fast.returncode == 0, fast.stderr
        assert time.monotonic() - t0 < 5
        os.kill(gate.pids[0], signal.SIGKILL)
        time.sleep(0.2)
        gate.release.set()
        assert a.wait_for(lambda: gate.outcomes == ["gone"])
        assert a.wait_for(lambda: a.agent.stats.vanished >= 1)
        again = c.exec("mkdir", "/tmp/again")
        assert again.returncode == 0, again.stderr
        assert a.agent.alive
    finally:
        c.runc("delete", "-f", c.id)


def test_internal_errors_answer_the_configured_errno(
    inprocess_agent: Any, make_container: ContainerFactory
) -> None:
    a: InProcessAgent = inprocess_agent(
        [rule(["mkdir"], "boom", errno.EIO), rule(["rmdir"], "nonsense", errno.EXDEV)], REGISTRY
    )
    c = make_container(
        sh(probe("mkdir", "/tmp/x"), "rmdir /tmp; echo rmdir=$?"), a.rules, a.listener
    )
    out = c.run()
    assert out.returncode == 0, out.stderr
    assert results(out.stdout)[0] == {"ret": -1, "errno": "EIO"}
    assert "rmdir=1" in out.stdout
    assert "Invalid cross-device link" in out.stderr  # EXDEV
    assert a.agent.stats.errors == 2
    assert any("handler boom failed on mkdir; answered EIO" in ln for ln in a.lines)


def test_hostile_arguments_get_the_kernel_errno(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent(
        MKNOD_RULES
        + '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "audit"\n'
        + '[[rule]]\nsyscalls = ["mount"]\nhandler = "mount"\n'
    )
    c = make_container(
        sh(
            probe("mkdir-long", "5000"),  # longer than PATH_MAX
            probe("mkdir-badptr", "0x1"),  # unmapped
            probe("mkdir-badptr", "0xffffffffffffff00"),  # kernel address
            probe("mkdir-pageend"),  # runs into an unreadable page, no NUL
            probe("mknod-badptr", "0x10"),
            probe("mknod", "/dev/" + "x" * 5000, "c", "10", "229"),
            probe("mount-badptr", "0x1000"),
            probe("mkdir", "/tmp/still-fine"),
        ),
        agent.rules,
        agent.listener,
        caps=NO_CAPS,
    )
    out = c.run()
    assert out.returncode == 0, out.stderr
    got = [r["errno"] for r in results(out.stdout)]
    assert got == [
        "ENAMETOOLONG",
        "EFAULT",
        "EFAULT",
        "EFAULT",
        "EFAULT",
        "ENAMETOOLONG",
        "EFAULT",
        "",
    ]
    log = agent.log
    assert "string longer than 4095 bytes" in log
    assert "cannot read target memory" in log
    assert "Traceback" not in log


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_agent_killed_gives_enosys_not_a_hang(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent(
        '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "deny"\nsettings = { errno = "EACCES" }\n'
    )
    c = make_container(
        sh(probe("mkdir", "/tmp/a"), probe("sleep-then", "1.5", "mkdir", "/tmp/b")),
        agent.rules,
        agent.listener,
    )
    run = subprocess.Popen(
        ["runc", "--root", c.root, "run", "--bundle", str(c.bundle), c.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while "seccomp deny" not in agent.log:
            assert time.monotonic() < deadline, agent.log
            time.sleep(0.02)
        agent.kill(signal.SIGKILL)
        stdout, _ = run.communicate(timeout=20)
    finally:
        if run.poll() is None:
            run.kill()
            c.runc("delete", "-f", c.id)
    first, second = results(stdout)
    assert first["errno"] == "EACCES"
    assert second["errno"] == "ENOSYS"


def test_pending_syscall_fails_with_enosys_when_the_agent_dies(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent(
        '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "deny"\nsettings = { errno = "EACCES" }\n'
    )
    c = make_container(
        sh(
            probe("mkdir", "/tmp/a"),
            "touch /tmp/ready",
            probe("sleep-then", "0.5", "mkdir", "/tmp/b"),
        ),
        agent.rules,
        agent.listener,
    )
    run = subprocess.Popen(
        ["runc", "--root", c.root, "run", "--bundle", str(c.bundle), c.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while "seccomp deny" not in agent.log:
            assert time.monotonic() < deadline, agent.log
            time.sleep(0.02)
        # Frozen, the agent reads nothing: the second mkdir waits in the kernel.
        agent.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        assert run.poll() is None
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(10)
        stdout, _ = run.communicate(timeout=20)
    finally:
        if run.poll() is None:
            run.kill()
            c.runc("delete", "-f", c.id)
    assert [r["errno"] for r in results(stdout)] == ["EACCES", "ENOSYS"]


def test_stopping_the_agent_closes_every_notify_fd(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent(
        '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "deny"\nsettings = { errno = "EACCES" }\n'
    )
    c = make_container(
        sh(
            "mkdir /tmp/x 2>/dev/null; echo $? > /tmp/rc1",
            "while [ ! -e /tmp/go ]; do sleep 0.05; done",
            "mkdir /tmp/y 2>/tmp/err; echo $? > /tmp/rc2",
            "sleep 30",
        ),
        agent.rules,
        agent.listener,
    )
    c.start_detached()
    try:
        root = Path(f"/proc/{c.state()['pid']}/root")
        deadline = time.monotonic() + 10
        while not (root / "tmp/rc1").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert (root / "tmp/rc1").read_text().strip() == "1"
        agent.kill(signal.SIGTERM)
        assert agent.proc.returncode == 0
        assert not os.path.exists(agent.listener)
        (root / "tmp/go").write_text("")
        while not (root / "tmp/rc2").exists():
            assert time.monotonic() < deadline + 10
            time.sleep(0.02)
        assert "Function not implemented" in (root / "tmp/err").read_text()
        # runc exec needs the listener for the new process's filter: it fails, loudly.
        out = c.exec("true", timeout=10)
        assert out.returncode != 0 and "failed to connect with seccomp agent" in out.stderr
    finally:
        c.runc("delete", "-f", c.id)


def test_no_busy_loop_after_the_container_exits(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent('[[rule]]\nsyscalls = ["mkdir"]\nhandler = "audit"\n')
    c = make_container(sh("mkdir /tmp/x"), agent.rules, agent.listener)
    assert c.run().returncode == 0
    deadline = time.monotonic() + 5
    while "filter released" not in agent.log:
        assert time.monotonic() < deadline, agent.log
        time.sleep(0.02)
    before = _cpu_ticks(agent.proc.pid)
    time.sleep(1.0)
    assert _cpu_ticks(agent.proc.pid) - before <= 2  # clock ticks (10 ms each)


def _notify_fds(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if "seccomp" in target:
            found.append(f"{fd} -> {target}")
    return found


def test_no_notify_fd_reaches_a_child(
    inprocess_agent: Any, make_container: ContainerFactory, tmp_path: Path
) -> None:
    from .conftest import rules_from_toml

    _, rules = rules_from_toml(tmp_path, MKNOD_RULES)
    a: InProcessAgent = inprocess_agent(rules)
    c = make_container(["sleep", "30"], a.rules, a.listener, caps=NO_CAPS)
    c.start_detached()
    try:
        assert a.wait_for(lambda: a.agent.stats.targets == 1)
        assert _notify_fds(os.getpid()), "the agent should hold the container's notify fd"
        made = c.exec("mknod", "/dev/fuse", "c", "10", "229")
        assert made.returncode == 0, made.stderr
        helpers = a.routes.namespaces.pids()
        assert helpers, "the mknod went through a helper process"
        for pid in helpers:
            assert _notify_fds(pid) == []
        # Any child of the agent's process: fds are close-on-exec.
        child = subprocess.Popen(["sleep", "5"], close_fds=False)
        try:
            time.sleep(0.2)
            assert _notify_fds(child.pid) == []
        finally:
            child.kill()
            child.wait()
    finally:
        c.runc("delete", "-f", c.id)


def test_only_root_may_connect(inprocess_agent: Any) -> None:
    # A directory others may traverse: this test connects as nobody.
    shared = Path(tempfile.mkdtemp(prefix="retinue-sc-"))
    shared.chmod(0o755)
    a: InProcessAgent = inprocess_agent([rule(["mkdir"], "audit")], directory=shared)
    st = os.stat(a.listener)
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == 0
    # Even with the file opened up, the peer's uid is checked.
    os.chmod(a.listener, 0o666)
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({a.listener!r})\n"
        "s.settimeout(5)\n"
        "try:\n"
        "    s.sendall(b'{}')\n"
        "    print(s.recv(1) == b'')\n"
        "except (BrokenPipeError, ConnectionResetError):\n"
        "    print(True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], user=65534, capture_output=True, text=True, timeout=15
    )
    assert out.stdout.strip() == "True", out.stderr
    assert a.wait_for(lambda: a.agent.stats.rejected == 1)
    assert any("refused a connection from uid 65534" in ln for ln in a.lines)
    a.stop()
    shutil.rmtree(shared)


def test_protocol_garbage_is_refused_without_harm(inprocess_agent: Any) -> None:
    a: InProcessAgent = inprocess_agent([rule(["mkdir"], "audit")])
    for payload, fds in (
        (b"not json", []),
        (b'{"fds": ["seccompFd"], "pid": 1, "state": {}}', [os.open("/dev/null", os.O_RDONLY)]),
    ):
        s = socket.socket(socket.AF_UNIX)
        s.connect(a.listener)
        socket.send_fds(s, [payload], fds)
        for fd in fds:
            os.close(fd)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        assert s.recv(1) == b""
        s.close()
    assert a.wait_for(lambda: a.agent.stats.rejected == 2)
    assert any("invalid JSON" in ln for ln in a.lines)
    assert any("not a seccomp notify fd" in ln for ln in a.lines)
    assert a.agent.stats.targets == 0


def test_agent_module_exports_the_supervisor_api() -> None:
    assert callable(agent_mod.serve) and callable(agent_mod.bind)
    assert callable(agent_mod.Routes.from_rules)
