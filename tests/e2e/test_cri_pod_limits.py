"""Issue 16 items 1 and 2 through containerd's CRI, driven as the kubelet drives it on a
production node: the pod's cgroup made first, as the kubelet's cgroupfs driver makes it
(/kubepods/burstable/pod<uid>, limits: cpu 500m and a memory limit near the supervisor's), given
as the sandbox's cgroup_parent; a container with CPU and memory limits and services in it; then
UpdateContainerResources with a cpuset and a new quota while the services run, as the static CPU
manager and an in-place resize send it. The session's configuration keeps the default supervisor
bounds, which are above what the pod allows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import engines
import grpc
import pytest
from conftest import service_status, services_footprint
from cri.client import CRI
from podcgroup import CFS_PERIOD, Pod, cgroup_of, hierarchy, read
from support import HELPERS, main_command

pytestmark = [pytest.mark.cri, pytest.mark.usefixtures("no_leftovers")]

Admin = Callable[..., CompletedProcess[str]]
SERVICE = "podsvc"
POD_QUOTA = 50_000  # limits: cpu 500m
POD_MEMORY = 120 << 20  # below the supervisor's default bound (128M)


@pytest.fixture(scope="module")
def pod_service(retinue_config: Path) -> Iterator[str]:
    """An exec service with limits of its own: more CPU than the container gets at first."""
    etc = retinue_config.parent
    files = etc / "files" / SERVICE
    files.mkdir(parents=True)
    (files / "run.sh").write_text("#!/bin/sh\n" + HELPERS + "exec sleep 100000\n")
    (files / "run.sh").chmod(0o755)
    toml = etc / "services" / f"{SERVICE}.toml"
    toml.write_text(f'files = "files/{SERVICE}"\ncommand = ["run.sh"]\n'
                    '[resources]\ncpu = 0.3\nmemory = "32M"\n')
    yield SERVICE
    toml.unlink()
    shutil.rmtree(files)


@pytest.fixture(scope="module")
def cri(e2e_dir: Path, rootfs_dir: Path, shim: str, retinue_config: Path,
        pod_service: str) -> Iterator[CRI]:
    reason = engines.available(engines.CONTAINERD, engines.CTR, engines.RUNC)
    if reason:
        pytest.skip(reason)
    with engines.cri_containerd(e2e_dir / "cri-pods", rootfs_dir, {"runc": None, "retinue": shim},
                                env={"RETINUE_CONFIG": str(retinue_config)}) as ctd:
        client = CRI(ctd.address)
        try:
            client.wait_ready()
            yield client
        finally:
            client.close()


@pytest.fixture
def pod(cri: CRI) -> Iterator[Pod]:
    """The pod's cgroup, made before RunPodSandbox as the kubelet makes it; after the test, the
    pod is stopped and removed through the CRI and its cgroup must be empty."""
    made = Pod(cpu_quota=POD_QUOTA, memory=POD_MEMORY)
    try:
        yield made
    finally:
        for sandbox in cri.pods():
            if sandbox.metadata.uid == made.uid:
                with contextlib.suppress(grpc.RpcError):
                    cri.stop_pod(sandbox.id)
                    cri.remove_pod(sandbox.id)
        deadline = time.monotonic() + 10
        while (left := made.remove()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"left in the pod's cgroup: {left}"


def test_a_pod_below_one_cpu_runs_services_and_follows_updates(
    cri: CRI, pod: Pod, e2e_dir: Path, retinue_admin: Admin, pod_service: str
) -> None:
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    name = f"p-{uuid.uuid4().hex[:8]}"
    config = cri.pod_config(name, cgroup_parent=pod.path, log_dir=e2e_dir / "cri-pod-logs" / name)
    config.metadata.uid = pod.uid
    pod_id = cri.run_pod(config, "retinue")
    app = cri.container_config(
        "app", engines.APP_IMAGE, main_command("while :; do sleep 0.1; done"),
        env={"RETINUE_SERVICES": pod_service},
        resources={"cpu_period": CFS_PERIOD, "cpu_quota": 40_000,
                   "memory_limit_in_bytes": 96 << 20},
    )
    cid = cri.create(pod_id, app, config)
    cri.start(cid)  # before: "cannot put the supervisor in its cgroup: ... Invalid argument"
    status = service_status(retinue_admin, cid)
    svc = status["by_name"][pod_service]
    assert svc["state"] == "ready", svc
    # The supervisor beside the container, inside the pod: its own bounds only where they are
    # below the pod's, which holds it otherwise.
    sibling = f"{hierarchy('cpu')}{pod.path}/{cid}.retinue"
    assert os.path.isdir(sibling), os.listdir(f"{hierarchy('cpu')}{pod.path}")
    quota = int(read(f"{sibling}/cpu.cfs_quota_us"))
    assert quota == -1 or 0 < quota < POD_QUOTA, quota
    memory = int(read(f"{hierarchy('memory')}{pod.path}/{cid}.retinue/memory.limit_in_bytes"))
    assert memory > 1 << 62 or memory < POD_MEMORY, memory
    container = f"{pod.path}/{cid}"
    sub = f"{container}/retinue-{pod_service}"
    assert cgroup_of(svc["pid"], "cpu") == hierarchy("cpu") + sub
    assert read(f"{hierarchy('cpu')}{sub}/cpu.cfs_quota_us") == "30000"

    def cpuset() -> tuple[str, str]:
        top = hierarchy("cpuset")
        return read(f"{top}{container}/cpuset.cpus"), read(f"{top}{sub}/cpuset.cpus")

    # The static CPU manager pins the container to CPU 0, with a quota below the service's.
    cri.update(cid, cpu_period=CFS_PERIOD, cpu_quota=20_000, cpuset_cpus="0",
               memory_limit_in_bytes=96 << 20)
    assert cpuset() == ("0", "0")
    assert read(f"{hierarchy('cpu')}{container}/cpu.cfs_quota_us") == "20000"
    assert read(f"{hierarchy('cpu')}{sub}/cpu.cfs_quota_us") == "-1"
    # Back to the shared pool, and a larger quota: the service's own bound comes back.
    cri.update(cid, cpu_period=CFS_PERIOD, cpu_quota=45_000, cpuset_cpus="0-1",
               memory_limit_in_bytes=96 << 20)
    assert cpuset() == ("0-1", "0-1")
    assert read(f"{hierarchy('cpu')}{sub}/cpu.cfs_quota_us") == "30000"
    # The service ran through it all, the same process.
    after = service_status(retinue_admin, cid)["by_name"][pod_service]
    assert after["state"] == "ready" and after["pid"] == svc["pid"], after
    cri.stop(cid, timeout=5)
    cri.remove(cid)
    cri.stop_pod(pod_id)
    cri.remove_pod(pod_id)
    deadline = time.monotonic() + 10
    while {f for f in services_footprint(e2e_dir) if cid in f}:
        assert time.monotonic() < deadline, services_footprint(e2e_dir)
        time.sleep(0.1)
