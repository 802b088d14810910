"""A pod's cgroup as the kubelet's cgroupfs driver makes it, for tests on real cgroups.

/kubepods/burstable/pod<uid> in every cgroup v1 hierarchy, with the pod's CPU quota and memory
limit, a new cpuset cgroup copying its parent's cpus and mems (as libcontainer does). runc 1.1
also makes the containers' paths in a hybrid host's v2 tree; `remove` takes those too.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from retinue.host import cgroups

CFS_PERIOD = 100_000


def v1_mounts() -> dict[str, list[str]]:
    """Every v1 hierarchy's mount point -> its controllers (name=systemd included)."""
    out: dict[str, list[str]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if " - cgroup " in line:
                mount = line.split()[4]
                out[mount] = line.split(" - ", 1)[1].split()[2].split(",")
    return out


def v2_mount() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if " - cgroup2 " in line]


def hierarchy(controller: str) -> str:
    for mount, options in v1_mounts().items():
        if controller in options:
            return mount
    pytest.skip(f"no cgroup v1 {controller} hierarchy here")


def read(path: str) -> str:
    return Path(path).read_text().strip()


def cgroup_of(pid: int, controller: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return hierarchy(controller) + cgroups.parse_proc_cgroup(f.read())[controller]


class Pod:
    """A pod cgroup /kubepods/burstable/pod<uid> with the pod's limits, in every v1 hierarchy,
    made as the kubelet's cgroupfs driver (libcontainer) makes one: a new cpuset cgroup copies
    its parent's cpus and mems."""

    LEVELS = ("/kubepods", "/kubepods/burstable")

    def __init__(self, cpu_quota: int, memory: int, uid: str = "") -> None:
        self.uid = uid or str(uuid.uuid4())
        self.path = f"/kubepods/burstable/pod{self.uid}"
        for mount, options in v1_mounts().items():
            for level in (*self.LEVELS, self.path):
                d = mount + level
                os.makedirs(d, exist_ok=True)
                if "cpuset" in options:
                    for key in ("cpuset.cpus", "cpuset.mems"):
                        if not read(f"{d}/{key}"):
                            Path(f"{d}/{key}").write_text(read(f"{os.path.dirname(d)}/{key}"))
        cpu = hierarchy("cpu") + self.path
        Path(f"{cpu}/cpu.cfs_period_us").write_text(str(CFS_PERIOD))
        Path(f"{cpu}/cpu.cfs_quota_us").write_text(str(cpu_quota))
        Path(f"{hierarchy('memory')}{self.path}/memory.limit_in_bytes").write_text(str(memory))

    def remove(self) -> list[str]:
        """rmdir the pod's cgroups; what was left in them (the containers') is returned."""
        left = []
        # runc 1.1 also makes the container's path in a hybrid host's v2 tree.
        for mount in [*v1_mounts(), *v2_mount()]:
            d = mount + self.path
            if os.path.isdir(d):
                left += [f"{d}/{e}" for e in os.listdir(d) if os.path.isdir(f"{d}/{e}")]
                try:
                    os.rmdir(d)
                except OSError as e:
                    left.append(f"{d}: {e.strerror}")
            for level in reversed(self.LEVELS):  # shared with other pods: only when empty
                try:
                    os.rmdir(mount + level)
                except OSError:
                    pass
        return left
