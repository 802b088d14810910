"""dockerd killed while `docker run`s wait for their gates (the start of a container with
services lasts as long as its services take to be ready): once dockerd is back, `docker rm -f`
must remove everything of each container, whatever dockerd made of it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import engines
import pytest
from conftest import ADMIN
from support import config_text, main_command, read_events
from test_docker_faults import everything_of

pytestmark = [pytest.mark.docker]


GATE = """#!/bin/sh
read -r up _ < /proc/uptime; echo "$up gate-start" >> /shared/events
while [ ! -e /shared/open ]; do sleep 0.05; done
touch /tmp/gate.ready
exec sleep 1000
"""


@pytest.fixture
def own_config(e2e_dir: Path, tmp_path: Path) -> Path:
    """The session's state and log directories; one service whose readiness the test opens."""
    etc = tmp_path / "etc"
    (etc / "files" / "gate").mkdir(parents=True)
    (etc / "services").mkdir()
    run = etc / "files" / "gate" / "run.sh"
    run.write_text(GATE)
    run.chmod(0o755)
    (etc / "services" / "gate.toml").write_text(
        'files = "files/gate"\ncommand = ["run.sh"]\n'
        '[ready]\nfile = "/tmp/gate.ready"\ntimeout = "30s"\n')
    (etc / "policy.toml").write_text("")
    (etc / "config.toml").write_text(config_text(e2e_dir))
    return etc / "config.toml"


@pytest.fixture
def own_docker(
    e2e_dir: Path, rootfs_dir: Path, shim: str, own_config: Path
) -> Iterator[engines.Dockerd]:
    """A dockerd of this test's own: it gets killed."""
    with engines.dockerd(e2e_dir / "dkc", {"retinue": shim},
                         env={"RETINUE_CONFIG": str(own_config)}) as dk:
        dk.import_rootfs(rootfs_dir)
        yield dk


def restart(dk: engines.Dockerd) -> None:
    argv = [str(a) for a in dk.process.args]  # type: ignore[union-attr]
    dk.process = engines._start(argv, dk.log_path, engines._daemon_env({}))
    sock = dk.host.removeprefix("unix://")
    engines._wait_ready(dk.process, lambda: engines._docker_ping(sock), "dockerd", dk.log_path,
                        60)


@pytest.mark.parametrize("back", ["before the gates open", "after the mains started"])
def test_dockerd_killed_during_gated_starts_then_rm_f_leaves_nothing(
    own_docker: engines.Dockerd, e2e_dir: Path, tmp_path: Path, back: str, own_config: Path
) -> None:
    dk = own_docker
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "events").touch(0o666)
    names = [f"crash{i}" for i in range(3)]
    runs = [subprocess.Popen(
        [engines.DOCKER, "run", "-d", "--name", name, "--runtime", "retinue",
         "--network", "none", "-v", f"{shared}:/shared", "-e", "RETINUE_SERVICES=gate",
         dk.image, *main_command(f"ev main-{name}; sleep 1000")],
        env=dk.client_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in names]
    try:
        deadline = time.monotonic() + 30
        while sum(w == "gate-start" for _, w in read_events(shared)) < len(names):
            assert time.monotonic() < deadline, read_events(shared)
            time.sleep(0.02)
        # Every start waits for its gate: dockerd dies, and comes back while they still wait.
        os.kill(dk.process.pid, signal.SIGKILL)
        dk.process.wait()
        ids = [r.communicate(timeout=30)[0].strip() for r in runs]
    finally:
        for r in runs:
            if r.poll() is None:
                r.kill()
                r.wait()
    assert all(len(i) == 64 for i in ids), ids
    if back == "before the gates open":
        restart(dk)
    (shared / "open").touch()
    # The starts go on without dockerd: every main process runs.
    deadline = time.monotonic() + 30
    while sum(w.startswith("main-") for _, w in read_events(shared)) < len(names):
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)
    if back == "after the mains started":
        restart(dk)
    time.sleep(1)
    # `docker rm -f` removes what dockerd still knows of; when it no longer knew a running
    # one, `retinue gc` with Docker's list of ids removes everything of retinue's and the
    # lower container; containerd keeps its records of the task (deleted with ctr).
    for name in names:
        dk.docker("rm", "-f", name, check=False)
    known = dk.docker("ps", "-aq", "--no-trunc").stdout
    keep = ["--keep-ids", "-"] if known.strip() else ["--keep-none"]
    root = dk.exec_root / "runtime-runc" / "moby"
    r = subprocess.run([ADMIN, "gc", "--root", str(root), *keep], input=known, text=True,
                       capture_output=True, env={**os.environ, "RETINUE_CONFIG": str(own_config)},
                       timeout=120)
    assert r.returncode == 0, r.stderr
    retinue_part = [x for cid in ids for x in everything_of(dk, e2e_dir, cid)
                    if "containerd task" not in x and "containerd-shim" not in x]
    assert not retinue_part, "\n".join(retinue_part)
    for cid in ids:
        dk.containerd.ctr("--namespace", "moby", "tasks", "delete", "--force", cid, check=False)
        dk.containerd.ctr("--namespace", "moby", "containers", "delete", cid, check=False)
    deadline = time.monotonic() + 20
    while left := [x for cid in ids for x in everything_of(dk, e2e_dir, cid)]:
        if time.monotonic() > deadline:
            pytest.fail("left behind:\n" + "\n".join(left) + "\n"
                        + engines._tail(dk.log_path, 30, True))
        time.sleep(0.2)
