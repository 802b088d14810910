"""A service's sub-cgroup where runc looks for it, and `kill --all` while a container ends
(issue 15 items 18 and 19), on real runc.

runc records the container's cgroups at create (its state.json) and uses that record for
`exec --cgroup` and `kill --all`, whatever has moved the container's init since.
"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import FOREVER, Rig, main_args, wait_for

MEMORY = Path("/sys/fs/cgroup/memory")


def memory_cgroup(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(x for x in f.read().splitlines() if ":memory:" in x).split(":", 2)[2]


def test_a_service_starts_after_something_moved_init_to_another_cgroup(
    rig: Rig, container_id: str
) -> None:
    """runtime-tools' validation moves a created container's init; `runc exec --cgroup` still
    joins the sub-cgroup of the cgroup runc recorded, so that is where it must exist."""
    rig.service("idle", "ev idle; exec sleep 1000\n")
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=idle"])
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    state = rig.state(container_id)
    assert state is not None
    init = int(state["pid"])
    recorded = memory_cgroup(init)
    elsewhere = MEMORY / f"retinue-test-moved-{container_id}"
    elsewhere.mkdir()
    try:
        (elsewhere / "cgroup.procs").write_text(str(init))
        assert memory_cgroup(init) != recorded
        r = rig.rt("start", container_id)
        assert r.returncode == 0, (r.stderr, rig.log_entries())
        status = rig.service_status(container_id, "idle")
        assert status["state"] == "ready", status
        # In its sub-cgroup of the container's cgroup as runc recorded it.
        assert memory_cgroup(int(status["pid"])) == f"{recorded}/retinue-idle"
        assert rig.rt("delete", "--force", container_id).returncode == 0
    finally:
        deadline = time.monotonic() + 10
        while elsewhere.exists():
            try:
                elsewhere.rmdir()
            except OSError:
                assert time.monotonic() < deadline, (elsewhere / "cgroup.procs").read_text()
                time.sleep(0.05)
    assert not (MEMORY / recorded.lstrip("/")).exists()


def test_recorded_dirs_maps_each_path_to_its_hierarchy() -> None:
    from retinue.host import cgroups

    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "33 25 0:29 / /sys/fs/cgroup/net_cls rw - cgroup cgroup rw,net_cls\n"
    )
    paths = {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct/a/c1",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/a/c1",
        "memory": "/sys/fs/cgroup/memory/a/c1",
        "net_cls": "/sys/fs/cgroup/net_cls/a/c1",
        "": "/sys/fs/cgroup/unified/a/c1",
        "misc": "/sys/fs/cgroup/misc/a/c1",  # not mounted here: nothing to make
    }
    assert cgroups.recorded_dirs(paths, mountinfo) == {
        "/sys/fs/cgroup/cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/a/c1",
        "/sys/fs/cgroup/memory": "/sys/fs/cgroup/memory/a/c1",
        "/sys/fs/cgroup/net_cls": "/sys/fs/cgroup/net_cls/a/c1",
        "/sys/fs/cgroup/unified": "/sys/fs/cgroup/unified/a/c1",
    }


def test_recorded_path_is_the_memory_path_else_the_v2_one_in_its_hierarchy() -> None:
    from retinue.host import cgroups

    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    )
    v1 = {"memory": "/sys/fs/cgroup/memory/a/c1", "": "/sys/fs/cgroup/unified/a/c1"}
    assert cgroups.recorded_path(v1, mountinfo) == "/a/c1"
    v2 = {"": "/sys/fs/cgroup/a/c1"}
    assert cgroups.recorded_path(v2, "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n") \
        == "/a/c1"
    assert cgroups.recorded_path({"pids": "/sys/fs/cgroup/pids/a/c1"}, mountinfo) is None


def test_kill_all_never_races_the_removal_of_service_sub_cgroups(
    rig: Rig, container_id: str
) -> None:
    """`runc kill --all` walks the container's cgroup tree (and so does a delete of a container
    without its own PID namespace); a sub-cgroup removed meanwhile failed it with "no such file
    or directory". The supervisor leaves the sub-cgroups of a container that still exists to
    the lower runtime's delete (runc removes a cgroup's children with it): it never removes one
    while an engine may still walk the tree. Here kill --all runs in a loop while each container
    ends by itself and its supervisor exits."""
    names = [f"s{i}" for i in range(6)]
    for name in names:
        rig.service(name, "exec sleep 1000\n")
    bundle = rig.bundle(main_args("while [ ! -e /shared/go ]; do sleep 0.02; done; exit 0"),
                        env=[f"RETINUE_SERVICES={','.join(names)}"])
    failures = []
    for i in range(8):
        cid = f"{container_id}-{i}"
        assert rig.create(cid, bundle).returncode == 0, rig.log_entries()
        assert rig.rt("start", cid).returncode == 0, rig.log_entries()
        recorded = memory_cgroup(int(rig.state(cid)["pid"]))  # type: ignore[index]
        (rig.shared / "go").touch()
        wait_for(lambda c=cid: rig.runc_status(c) == "stopped", timeout=20)
        while rig.supervisor_pids(cid):
            r = rig.runc("kill", "--all", cid, "KILL")
            if r.returncode != 0:
                failures.append(r.stderr)
        r = rig.runc("kill", "--all", cid, "KILL")
        if r.returncode != 0:
            failures.append(r.stderr)
        # What runc recorded is still whole until its delete: nothing walks a half-removed tree.
        left = [n for n in names if (MEMORY / recorded.lstrip("/") / f"retinue-{n}").is_dir()]
        assert left == names, (i, rig.service_log(cid, names[0]))
        assert rig.rt("delete", cid).returncode == 0
        assert not (MEMORY / recorded.lstrip("/")).exists()
        (rig.shared / "go").unlink()
    assert failures == []
