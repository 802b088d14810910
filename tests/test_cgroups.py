"""The supervisor's cgroup, computed as runc resolves the container's (pure functions), and the
token bucket that limits what a container can make its supervisor do."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pytest
from retinue.host import cgroups
from retinue.ratelimit import DropLog, TokenBucket

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"


@pytest.mark.parametrize(
    ("path", "systemd", "own", "expected"),
    [
        ("/docker/abc", False, "/", "/docker/abc"),
        ("/kubepods/burstable/pod1/abc", False, "/", "/kubepods/burstable/pod1/abc"),
        ("/a/../../b", False, "/", "/b"),  # '..' never climbs out of the hierarchy
        ("rel/x", False, "/shim", "/shim/rel/x"),  # relative: to the caller's own cgroup
        ("../../x", False, "/shim", "/shim/x"),
        ("", False, "/shim", "/shim/ID"),  # no path: the id, relative
        ("system.slice:docker:abc", True, "/", "/system.slice/docker-abc.scope"),
        (
            "kubepods-burstable-pod1.slice:cri-containerd:abc",
            True,
            "/",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/"
            "cri-containerd-abc.scope",
        ),
        (":runc:abc", True, "/", "/system.slice/runc-abc.scope"),
        ("", True, "/", "/system.slice/runc-ID.scope"),
        ("machine.slice:x:my.slice", True, "/", "/machine.slice/my.slice"),
    ],
)
def test_container_path_as_runc_resolves_it(
    path: str, systemd: bool, own: str, expected: str
) -> None:
    assert cgroups.container_path(path, "ID", systemd, own) == expected


# What runc 1.1.5 computes for the same spec, read from its source (v1.1.5 tag):
# libcontainer/specconv CreateCgroupConfig (the systemd path is split on ':' uncleaned; the
# cgroupfs one is CleanPath'ed), fs/paths.go subsysPath (v1: relative to the caller's own
# cgroup), fs2/defaultpath.go _defaultDirPath (v2: relative to the *parent* of the caller's own
# cgroup), systemd/common.go ExpandSlice and getUnitName, systemd/v1.go getSubsystemPath (pid
# 1's cgroup, `init.scope` trimmed, then slice and unit), systemd/v2.go initPath (slice and unit
# on the unified mount).
POD = "kubepods-burstable-pod1.slice"
POD_PATH = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"


@pytest.mark.parametrize(
    ("path", "systemd", "own", "v2", "init", "expected"),
    [
        # cgroupfs, v2: relative to the parent of the caller's cgroup
        ("/kubepods/burstable/pod1/C", False, "/a/b", True, "/", "/kubepods/burstable/pod1/C"),
        ("rel/C", False, "/user.slice/session-1.scope", True, "/", "/user.slice/rel/C"),
        ("", False, "/shim", True, "/", "/ID"),
        ("", False, "/", True, "/", "/ID"),
        ("../../C", False, "/a/b", True, "/", "/a/C"),
        # cgroupfs, v1: relative to the caller's cgroup itself
        ("rel/C", False, "/user.slice/session-1.scope", False, "/",
         "/user.slice/session-1.scope/rel/C"),
        # systemd, v2: on the mount point; `own` and `init` play no part
        (f"{POD}:cri-containerd:C", True, "/a", True, "/x", f"{POD_PATH}/cri-containerd-C.scope"),
        ("system.slice::C", True, "/", True, "/", "/system.slice/-C.scope"),
        ("-.slice:p:C", True, "/", True, "/", "/p-C.scope"),
        (f"{POD}:p:my.slice", True, "/", True, "/", f"{POD_PATH}/my.slice"),
        # systemd, v1: below pid 1's cgroup without init.scope
        (f"{POD}:cri-containerd:C", True, "/a", False, "/init.scope",
         f"{POD_PATH}/cri-containerd-C.scope"),
        ("system.slice:docker:C", True, "/", False, "/docker/outer",
         "/docker/outer/system.slice/docker-C.scope"),
        ("system.slice:docker:C", True, "/", False, "/docker/outer/init.scope",
         "/docker/outer/system.slice/docker-C.scope"),
    ],
)
def test_container_path_on_v2_and_with_systemd_as_runc_1_1_computes_it(
    path: str, systemd: bool, own: str, v2: bool, init: str, expected: str
) -> None:
    assert cgroups.container_path(path, "ID", systemd, own, v2=v2, init=init) == expected


@pytest.mark.parametrize(
    ("driver", "path", "container", "supervisor", "sidecar"),
    [
        ("cgroupfs", "/kubepods/burstable/pod1/C", "/kubepods/burstable/pod1/C",
         "/kubepods/burstable/pod1/C.retinue", "/kubepods/burstable/pod1/C.retinue-svc"),
        ("systemd", f"{POD}:cri-containerd:C", f"{POD_PATH}/cri-containerd-C.scope",
         f"{POD_PATH}/cri-containerd-C.retinue", f"{POD_PATH}/cri-containerd-C.retinue-svc"),
    ],
)
def test_every_piece_of_a_supervised_container_sits_in_the_pod(
    driver: str, path: str, container: str, supervisor: str, sidecar: str
) -> None:
    """The supervisor and a sidecar beside the container (in the pod's cgroup or slice, never
    a unit name systemd would take for its own), an exec service in the container's cgroup (a
    runc scope is delegated: Delegate=yes), on v1 and v2 alike."""
    from retinue.spec.sibling import sidecar_cgroup

    for v2 in (False, True):
        got = cgroups.container_path(path, "ID", driver == "systemd", "/", v2=v2)
        assert got == container
        assert cgroups.sibling(got) == supervisor
        assert posixpath.join(got, cgroups.SUB_PREFIX + "svc") == f"{container}/retinue-svc"
        assert sidecar_cgroup(got, "svc") == sidecar


@pytest.mark.parametrize(
    "path",
    ["a:b", "bad--slice.slice:p:n", "x.slice:p:n/m", "a-.slice:p:n", "-a.slice:p:n",
     ".slice:p:n", "a/b.slice:p:n", "nota-slice:p:n"],
)
def test_bad_systemd_paths_are_refused(path: str) -> None:
    with pytest.raises(cgroups.CgroupError):
        cgroups.container_path(path, "ID", True, "/")


def test_the_sibling_is_beside_the_container_and_not_a_unit() -> None:
    assert cgroups.sibling("/docker/abc") == "/docker/abc.retinue"
    assert cgroups.sibling("/kubepods/pod1/abc") == "/kubepods/pod1/abc.retinue"
    assert cgroups.sibling("/system.slice/docker-abc.scope") == "/system.slice/docker-abc.retinue"
    assert cgroups.sibling("/abc") == "/abc.retinue"
    with pytest.raises(cgroups.CgroupError):
        cgroups.sibling("/")


def test_hybrid_hosts_use_v1_with_comounted_controllers_once() -> None:
    own = {"cpu": "/", "cpuacct": "/", "memory": "/sandbox", "pids": "/", "": "/"}
    place = cgroups.placement("", "c1", False, HYBRID, own, 0.5, 64 << 20)
    assert place == {
        "v2": False,
        "dirs": [
            ["/sys/fs/cgroup/cpu,cpuacct", "/c1.retinue", "cpu"],
            ["/sys/fs/cgroup/memory", "/sandbox/c1.retinue", "memory"],
            ["/sys/fs/cgroup/pids", "/c1.retinue", "pids"],
        ],
        "cpu": 0.5,
        "memory": 64 << 20,
        "origin": own,  # where the supervisor goes back to before its cgroup is removed
    }


def test_a_relative_path_on_a_unified_host_is_below_the_caller_s_parent() -> None:
    place = cgroups.placement("", "c1", False, UNIFIED, {"": "/sandbox/shim"}, 0.1, 0)
    assert place["dirs"] == [["/sys/fs/cgroup", "/sandbox/c1.retinue", ""]]


def test_unified_hosts_use_one_v2_directory() -> None:
    place = cgroups.placement("/docker/c1", "c1", False, UNIFIED, {"": "/"}, 0.1, 0)
    assert place["v2"] and place["dirs"] == [["/sys/fs/cgroup", "/docker/c1.retinue", ""]]
    assert cgroups.directories(place) == ["/sys/fs/cgroup/docker/c1.retinue"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64M", 64 << 20), ("1G", 1 << 30), ("512k", 512 << 10), ("100", 100), ("0", 0),
     ("64MB", 64 << 20), ("lots", None), ("", None), ("-1M", None), ("1.5G", None)],
)
def test_sizes(text: str, expected: int | None) -> None:
    assert cgroups.parse_size(text) == expected


def test_cpu_quota() -> None:
    assert cgroups.cfs_quota(0.1) == 10_000
    assert cgroups.cfs_quota(2) == 200_000
    assert cgroups.cfs_quota(0) == -1


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.wait_time(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) and not bucket.take(0.1)
    assert sum(bucket.take(t / 100) for t in range(11, 111)) == pytest.approx(10, abs=1)


def test_drops_are_said_once_per_window() -> None:
    drops = DropLog(window=10, now=0.0)
    said = [drops.drop(t / 10) for t in range(0, 250)]  # 25 s of drops, 10 a second
    lines = [n for n in said if n is not None]
    assert lines[0] == 1 and len(lines) == 3 and sum(lines) == drops.total - drops.dropped


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-3", {0, 1, 2, 3}), ("0,2-3,7", {0, 2, 3, 7}), ("1", {1}), ("", set()), ("0-1\n", {0, 1})],
)
def test_cpu_lists_round_trip(text: str, cpus: set[int]) -> None:
    assert cgroups.parse_cpu_list(text) == cpus
    assert cgroups.parse_cpu_list(cgroups.format_cpu_list(cpus)) == cpus
    assert cgroups.format_cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


@pytest.mark.parametrize("text", ["a", "3-1", "-1", "1-"])
def test_bad_cpu_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        cgroups.parse_cpu_list(text)


def test_a_bound_is_written_only_where_it_is_stricter_than_the_ancestors() -> None:
    assert cgroups.stricter(1.0, 0.5) == 0  # the pod's 500m holds it
    assert cgroups.stricter(0.5, 0.5) == 0  # an equal copy would block the pod's shrink on v1
    assert cgroups.stricter(0.2, 0.5) == 0.2
    assert cgroups.stricter(0.2, None) == 0.2
    assert cgroups.stricter(0, 0.5) == 0


@pytest.mark.parametrize(
    ("text", "cores"), [("max 100000", None), ("50000 100000", 0.5), ("20000", 0.2)],
)
def test_cpu_max(text: str, cores: float | None) -> None:
    assert cgroups.parse_cpu_max(text) == cores


@pytest.mark.parametrize(
    ("text", "limit"),
    [("max\n", None), ("9223372036854771712\n", None), ("134217728\n", 128 << 20), ("-1", None)],
)
def test_memory_limits_v1_and_v2(text: str, limit: int | None) -> None:
    assert cgroups.parse_memory_limit(text) == limit


def test_the_ceiling_is_the_strictest_bound_up_to_the_mount() -> None:
    bounds = {"/m/kubepods": 4.0, "/m/kubepods/burstable/pod1": 0.5, "/m": 0.1}
    got = cgroups.ceiling("/m/kubepods/burstable/pod1/c", "/m/kubepods", bounds.get)
    assert got == (0.5, "/m/kubepods/burstable/pod1")  # /m is above the mount: not read
    assert cgroups.ceiling("/m/x", "/m", {}.get) == (None, "")


def test_an_update_s_cpu_bound_reads_unchanged_values_from_the_container(
    tmp_path: Path,
) -> None:
    d = tmp_path / "c"
    d.mkdir()
    (d / "cpu.cfs_quota_us").write_text("40000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    dirs = {"/m": str(d)}
    assert cgroups.updated_cores(dirs, 20000, None) == 0.2
    assert cgroups.updated_cores(dirs, None, 200000) == 0.2
    assert cgroups.updated_cores(dirs, -1, None) is None
    assert cgroups.updated_cores(dirs, None, None) == 0.4
