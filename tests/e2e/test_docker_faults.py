"""Through a private dockerd: a container's supervisor killed while `docker start` waits for
its services, then `docker rm -f`. Nothing may be left: no containerd task or shim, no runc
container, no state directory, no cgroup, no process of the container."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import engines
import pytest
from conftest import services_footprint
from support import main_command, read_events

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


def cgroups_naming(cid: str) -> list[str]:
    found = []
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", hierarchy)
        if os.path.islink(top) or not os.path.isdir(top):
            continue
        for dirpath, dirnames, _ in os.walk(top):
            found += [os.path.join(dirpath, d) for d in dirnames if cid in d]
    return sorted(found)


def processes_naming(cid: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cgroup = Path(f"/proc/{entry}/cgroup").read_text()
        except OSError:
            continue
        if cid in cmdline or cid in cgroup:
            found.append(f"process {entry}: {cmdline.strip()[:200]}")
    return found


def everything_of(docker: engines.Dockerd, e2e_dir: Path, cid: str) -> list[str]:
    left = sorted(f for f in services_footprint(e2e_dir) if cid in f)
    tasks = docker.containerd.ctr("--namespace", "moby", "tasks", "ls", "-q",
                                  check=False).stdout.split()
    left += [f"containerd task {t}" for t in tasks if t == cid]
    left += [f"cgroup {c}" for c in cgroups_naming(cid)]
    left += processes_naming(cid)
    return left


def supervisor_of(e2e_dir: Path, cid: str) -> int:
    """The pid of the container's supervisor, 0 if it has none (yet)."""
    found = [f for f in services_footprint(e2e_dir) if f.startswith("supervisor ") and cid in f]
    return int(found[0].split()[1].rstrip(":")) if found else 0


@pytest.mark.parametrize("moment", ["at create", "during the gate", "after start"])
def test_a_killed_supervisor_then_rm_f_leaves_nothing(
    docker: engines.Dockerd, docker_name: str, shared: Path, e2e_dir: Path, moment: str
) -> None:
    cid = docker.docker(
        "create", "--name", docker_name, "--runtime", "retinue", "--network", "none",
        "-v", f"{shared}:/shared", "-e", "RETINUE_SERVICES=db,late", docker.image,
        *main_command("ev main; sleep 1000"),
    ).stdout.strip()
    start = subprocess.Popen(
        [engines.DOCKER, "start", docker_name], env=docker.client_env, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        if moment == "at create":
            # `docker start` runs the runtime's create, then its start: kill the supervisor as
            # soon as the create has spawned it.
            deadline = time.monotonic() + 20
            while not (pid := supervisor_of(e2e_dir, cid)):
                assert time.monotonic() < deadline, "no supervisor"
                time.sleep(0.005)
            os.kill(pid, signal.SIGKILL)
        if moment == "during the gate":
            deadline = time.monotonic() + 20
            while not any(w == "late-start" for _, w in read_events(shared)):
                assert time.monotonic() < deadline, "the late service never started"
                time.sleep(0.02)
            os.kill(supervisor_of(e2e_dir, cid), signal.SIGKILL)
        _, err = start.communicate(timeout=60)
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()
    if moment == "after start":
        assert start.returncode == 0, err
        os.kill(supervisor_of(e2e_dir, cid), signal.SIGKILL)
    else:
        assert start.returncode != 0
        # Killed before it was ready, the create itself fails; after, the start does.
        assert (f"the supervisor of container {cid} is gone" in err
                or "retinue: the supervisor did not start" in err), err
        assert not any(w == "main" for _, w in read_events(shared))
    docker.docker("rm", "-f", docker_name)
    deadline = time.monotonic() + 15
    while left := everything_of(docker, e2e_dir, cid):
        if time.monotonic() > deadline:
            pytest.fail("left behind:\n" + "\n".join(left) + "\n" + docker.log_tail(10))
        time.sleep(0.2)
