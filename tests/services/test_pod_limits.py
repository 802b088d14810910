"""Issue 16 items 1 and 2 by hand with runc: a container in a pod cgroup with limits, as the
kubelet's cgroupfs driver makes it (/kubepods/burstable/pod<uid> in every v1 hierarchy, the pod's
CPU quota and memory limit on it), and `update` of a container whose services run.

On cgroup v1 a child's CFS quota may not exceed its parent's, and a parent's cpuset may not
shrink below a child's: the supervisor's sibling cgroup and the services' sub-cgroups must fit
the pod's and the container's limits, and follow the container's when it is updated.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imagekit
import pytest
from conftest import FOREVER, RUNC, Rig, main_args, wait_for
from podcgroup import CFS_PERIOD, Pod, cgroup_of, hierarchy, read


@pytest.fixture
def make_pod(rig: Rig) -> Iterator[Any]:
    pods: list[Pod] = []

    def make(cpu_quota: int, memory: int) -> Pod:
        pods.append(Pod(cpu_quota, memory))
        return pods[-1]

    yield make
    rig.cleanup()  # the containers first (the rig's own check follows)
    left: list[str] = []
    for pod in pods:
        wait_for(lambda pod=pod: not pod.remove(), timeout=10)  # type: ignore[misc]
        left += pod.remove()
    assert not left, f"left behind: {left}"


def in_pod(pod: Pod, cid: str, quota: int, memory: int, cpus: str = "") -> Any:
    """The container's spec as the CRI makes it: its cgroup in the pod's, with its limits."""

    def edit(spec: dict[str, Any]) -> None:
        cpu: dict[str, Any] = {"quota": quota, "period": CFS_PERIOD}
        if cpus:
            cpu["cpus"] = cpus
        spec["linux"]["cgroupsPath"] = f"{pod.path}/{cid}"
        spec["linux"].setdefault("resources", {}).update(
            {"cpu": cpu, "memory": {"limit": memory}}
        )

    return edit


def started(rig: Rig, cid: str, bundle: Path) -> None:
    r = rig.create(cid, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    r = rig.rt("start", cid)
    assert r.returncode == 0, (r.stderr, rig.log_entries())


@pytest.mark.parametrize(
    ("cpu", "memory", "quota", "limit"),
    [
        # The old defaults, above the pod's limits: the pod's bound them, no own bound.
        (1.0, "128M", -1, None),
        # Below the pod's: the supervisor's own.
        (0.2, "48M", 20_000, 48 << 20),
    ],
)
def test_a_container_in_a_pod_below_one_cpu_starts_with_its_services(
    rig: Rig, container_id: str, make_pod: Any, cpu: float, memory: str, quota: int,
    limit: int | None,
) -> None:
    pod = make_pod(cpu_quota=50_000, memory=100 << 20)  # limits: cpu: 500m, memory: 100Mi
    rig.write_config(f'supervisor_cpu = {cpu}\nsupervisor_memory = "{memory}"\n')
    # The service asks for more CPU than the container has: it gets the container's.
    rig.service("svc", "exec sleep 1000\n", toml='[resources]\ncpu = 0.8\nmemory = "32M"\n')
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=svc"],
                        edit=in_pod(pod, container_id, 40_000, 80 << 20))
    started(rig, container_id, bundle)
    sup = rig.supervisor_pids(container_id)[0]
    sibling = f"{pod.path}/{container_id}.retinue"
    assert cgroup_of(sup, "cpu") == hierarchy("cpu") + sibling
    assert cgroup_of(sup, "memory") == hierarchy("memory") + sibling
    assert int(read(f"{hierarchy('cpu')}{sibling}/cpu.cfs_quota_us")) == quota
    memory_limit = int(read(f"{hierarchy('memory')}{sibling}/memory.limit_in_bytes"))
    if limit is None:
        assert memory_limit > 1 << 62  # none of its own: the pod's 100M holds
        log = (rig.log_dir / container_id / "supervisor.log").read_text()
        assert f"0.5 CPUs /sys/fs/cgroup/cpu{pod.path} allows" in log, log
        assert f"{100 << 20} bytes /sys/fs/cgroup/memory{pod.path} allows" in log, log
    else:
        assert memory_limit == limit
    svc = rig.service_status(container_id, "svc")
    assert svc["state"] == "ready", svc
    sub = cgroup_of(svc["pid"], "cpu")
    assert sub.endswith(f"{pod.path}/{container_id}/retinue-svc")
    assert read(f"{sub}/cpu.cfs_quota_us") == "-1"  # 0.8 is not below the container's 0.4
    assert int(read(cgroup_of(svc["pid"], "memory") + "/memory.limit_in_bytes")) == 32 << 20
    assert rig.rt("delete", "--force", container_id).returncode == 0
    wait_for(lambda: not rig.leftovers(container_id), 10)


def update(rig: Rig, cid: str, *flags: str, resources: dict[str, Any] | None = None) -> None:
    """`update` as Docker gives flags, or as containerd's shim gives --resources - on stdin."""
    args = ["update", *flags, "--resources", "-", cid] if resources else ["update", *flags, cid]
    r = subprocess.run(rig.rt_argv(*args), capture_output=True, text=True, timeout=60,
                       input=json.dumps(resources) if resources else None)
    assert r.returncode == 0, (args, r.stderr, rig.errors())
    assert not rig.warnings(), rig.warnings()


IDLE_SIDECAR = 'placement = "container"\nimage = "busybox"\ncommand = ["sleep", "1000"]\n'


def test_update_of_a_container_with_services_succeeds_and_they_follow(
    rig: Rig, container_id: str, make_pod: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    base = tmp_path_factory.mktemp("pod-images")
    layout = imagekit.oci_layout(imagekit.busybox_rootfs(base / "busybox"),
                                 base / "busybox-layout", ["sleep", "1000"])
    rig.write_config(f'image_dir = "{rig.base / "images"}"\n')
    r = rig.retinue("image", "import", "busybox", str(layout), timeout=120)
    assert r.returncode == 0, r.stderr
    pod = make_pod(cpu_quota=150_000, memory=256 << 20)
    rig.service("svc", "exec sleep 1000\n",
                toml='[resources]\ncpu = 0.3\nmemory = "32M"\npids = 20\n')
    (rig.etc / "services" / "side.toml").write_text(IDLE_SIDECAR)
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=svc,side"],
                        edit=in_pod(pod, container_id, 100_000, 128 << 20, cpus="0-1"))
    started(rig, container_id, bundle)
    init = rig.state(container_id)["pid"]  # type: ignore[index]
    svc = rig.service_status(container_id, "svc")
    side = rig.service_status(container_id, "side")
    assert svc["state"] == side["state"] == "ready", (svc, side)

    def files(controller: str, key: str) -> tuple[str, str]:
        """(the container's value, the exec service's)."""
        return (read(f"{cgroup_of(init, controller)}/{key}"),
                read(f"{cgroup_of(svc['pid'], controller)}/{key}"))

    assert files("cpuset", "cpuset.cpus") == ("0-1", "0-1")
    # The static CPU manager pins the container to one CPU (docker update --cpuset-cpus 0).
    update(rig, container_id, "--cpuset-cpus", "0")
    assert files("cpuset", "cpuset.cpus") == ("0", "0")
    # Another CPU entirely, then back to both, as the kubelet sends it (containerd's shim).
    update(rig, container_id, resources={"cpu": {"cpus": "1"}})
    assert files("cpuset", "cpuset.cpus") == ("1", "1")
    update(rig, container_id, resources={"cpu": {"cpus": "0-1", "quota": 20_000,
                                                 "period": CFS_PERIOD}})
    assert files("cpuset", "cpuset.cpus") == ("0-1", "0-1")
    # A quota below the service's own: the container's bounds it; its own comes back after.
    assert files("cpu", "cpu.cfs_quota_us") == ("20000", "-1")
    update(rig, container_id, "--cpu-quota", "80000")
    assert files("cpu", "cpu.cfs_quota_us") == ("80000", "30000")
    update(rig, container_id, "--memory", "24M", "--pids-limit", "10")
    container_memory, service_memory = files("memory", "memory.limit_in_bytes")
    assert container_memory == str(24 << 20)
    assert int(service_memory) > 1 << 62  # 32M is not below 24M: the container's holds it
    assert files("pids", "pids.max") == ("10", "20")
    update(rig, container_id, "--memory", "128M")
    assert files("memory", "memory.limit_in_bytes") == (str(128 << 20), str(32 << 20))
    # A CPU the host does not have: refused with the file and the value named, nothing moved.
    r = subprocess.run(rig.rt_argv("update", "--cpuset-cpus", "0-1,4095", container_id),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r
    assert "cpuset.cpus: cannot write '0-1,4095'" in r.stderr, r.stderr
    assert "cpuset.cpus: cannot write" in rig.errors()[-1]
    assert files("cpuset", "cpuset.cpus") == ("0-1", "0-1")
    # Everything still runs: the app, the exec service (same process), the sidecar.
    assert rig.runc_status(container_id) == "running"
    assert rig.service_status(container_id, "svc")["pid"] == svc["pid"]
    assert rig.service_status(container_id, "side")["state"] == "ready"
    assert os.path.exists(f"/proc/{svc['pid']}")
    assert subprocess.run([RUNC, "--root", str(rig.root), "state", container_id],
                          capture_output=True).returncode == 0
    assert rig.rt("delete", "--force", container_id).returncode == 0
    wait_for(lambda: not rig.leftovers(container_id), 10)


def test_the_supervisor_s_own_cost_is_charged_to_its_cgroup(rig: Rig, container_id: str) -> None:
    """Its interpreter's start and its memory, not only what it ran once inside: memory stays
    charged to the cgroup it was allocated in, so the supervisor must be in its own before its
    interpreter starts (a RuntimeClass `overhead` sized from that cgroup would be too small)."""
    rig.service("svc", "exec sleep 1000\n")
    started(rig, container_id, rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=svc"]))
    sup = rig.supervisor_pids(container_id)[0]
    memory = int(read(cgroup_of(sup, "memory") + "/memory.usage_in_bytes"))
    cpu_ms = int(read(cgroup_of(sup, "cpuacct") + "/cpuacct.usage")) / 1e6
    # A supervisor's USS is ~9 MB and its interpreter's start ~50-80 ms of CPU.
    assert memory > 4 << 20, memory
    assert cpu_ms > 30, cpu_ms
    assert rig.rt("delete", "--force", container_id).returncode == 0
    wait_for(lambda: not rig.leftovers(container_id), 10)
