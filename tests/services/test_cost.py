"""What a container makes its supervisor do is charged to the container, and bounded.

The supervisor (and its helpers) runs in a cgroup beside the container's, with CPU and memory
bounds from config.toml; what the container can make it do (notify datagrams, seccomp
notifications) is rate-limited so that a flood costs the container, not the node. And a service
runs in its own sub-cgroup of the container's, so that a daemon it double-forked is stopped with
it.

CPU figures are read from the supervisor's own cgroup (cpuacct on v1, cpu.stat on v2) over a few
seconds of flood, with the supervisor's CPU bound off: the assertion (< 50 % of one core) is a
functional bound on the limiters, far from what an unlimited supervisor spends (~100 %).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FOREVER, Rig, main_args, processes_mentioning, wait_for
from retinue.cli import rootfs
from retinue.host import cgroups

PYTHON = "/usr/bin/python3.11"
FLOOD_SECONDS = 3.0


@pytest.fixture(scope="module")
def py_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs where the host's /usr (bind-mounted read-only) gives a Python too."""
    path = Path(rootfs.build(str(tmp_path_factory.mktemp("cost-rootfs") / "rootfs")))
    for name, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
        if not os.path.lexists(path / name):
            os.symlink(target, path / name)
    (path / "usr").mkdir(exist_ok=True)
    return path


def with_python(py_rootfs: Path) -> Any:
    def edit(spec: dict[str, Any]) -> None:
        spec["root"]["path"] = str(py_rootfs)
        spec["mounts"].append(
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}
        )

    return edit


def proc_cgroup(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return cgroups.parse_proc_cgroup(f.read())


def mounts() -> tuple[str | None, dict[str, str]]:
    with open("/proc/self/mountinfo") as f:
        return cgroups.parse_mounts(f.read())


def cgroup_dir(pid: int, controller: str) -> str:
    """The directory of pid's cgroup for `controller` (v1), or its v2 cgroup."""
    v2, v1 = mounts()
    if v1:
        return v1[controller] + proc_cgroup(pid)[controller]
    assert v2 is not None
    return v2 + proc_cgroup(pid)[""]


def cpu_seconds(directory: str) -> float:
    """CPU time used by everything in a cgroup (v1 cpuacct, v2 cpu.stat)."""
    if os.path.exists(f"{directory}/cpuacct.usage"):
        return int(Path(f"{directory}/cpuacct.usage").read_text()) / 1e9
    for line in Path(f"{directory}/cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    raise AssertionError(f"no CPU usage in {directory}")


def supervisor_dirs(pid: int) -> list[str]:
    _, v1 = mounts()
    if v1:
        return sorted({cgroup_dir(pid, c) for c in ("cpu", "cpuacct", "memory", "pids") if c in v1})
    return [cgroup_dir(pid, "")]


def the_supervisor(rig: Rig, cid: str) -> int:
    pids = rig.supervisor_pids(cid)
    assert len(pids) == 1, pids
    return pids[0]


def started(rig: Rig, cid: str, bundle: Path) -> None:
    r = rig.create(cid, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    r = rig.rt("start", cid)
    assert r.returncode == 0, (r.stderr, rig.log_entries())


# -- placement ------------------------------------------------------------------------------------


def test_the_supervisor_runs_beside_the_container_within_its_bounds(
    rig: Rig, container_id: str
) -> None:
    rig.write_config('supervisor_cpu = 0.3\nsupervisor_memory = "96M"\n')
    rig.service("svc", "exec sleep 1000\n")
    started(rig, container_id, rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=svc"]))
    sup = the_supervisor(rig, container_id)
    init = rig.state(container_id)["pid"]  # type: ignore[index]
    _, v1 = mounts()
    controllers = ["cpu", "memory"] if v1 else [""]
    for controller in controllers:
        container = proc_cgroup(init)[controller]
        assert proc_cgroup(sup)[controller] == container + ".retinue", controller
    if v1:
        cpu, memory = cgroup_dir(sup, "cpu"), cgroup_dir(sup, "memory")
        assert Path(f"{cpu}/cpu.cfs_quota_us").read_text().strip() == "30000"
        assert Path(f"{cpu}/cpu.cfs_period_us").read_text().strip() == "100000"
        assert int(Path(f"{memory}/memory.limit_in_bytes").read_text()) == 96 << 20
    else:
        d = cgroup_dir(sup, "")
        assert Path(f"{d}/cpu.max").read_text().split() == ["30000", "100000"]
        assert int(Path(f"{d}/memory.max").read_text()) == 96 << 20
    # The service itself runs in its own sub-cgroup of the container's.
    svc_pid = rig.service_status(container_id, "svc")["pid"]
    for controller in controllers:
        assert proc_cgroup(svc_pid)[controller] == proc_cgroup(init)[controller] + "/retinue-svc"
    if v1:
        used = int(Path(f"{cgroup_dir(sup, 'memory')}/memory.max_usage_in_bytes").read_text())
        print(f"supervisor's cgroup peak memory: {used / (1 << 20):.1f} MiB")
    dirs = supervisor_dirs(sup)
    # runc removes the container's cgroup with the services' sub-cgroups in it.
    container_dirs = [cgroup_dir(init, c) for c in controllers]
    r = rig.rt("delete", "--force", container_id)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not any(os.path.exists(d) for d in dirs + container_dirs), 10)


@pytest.mark.parametrize("path", ["delete", "poststop", "killed"])
def test_the_supervisor_cgroup_goes_with_the_container(
    rig: Rig, container_id: str, path: str
) -> None:
    rig.service("svc", "exec sleep 1000\n")
    started(rig, container_id, rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=svc"]))
    sup = the_supervisor(rig, container_id)
    dirs = supervisor_dirs(sup)
    assert dirs and all(d.endswith(".retinue") and os.path.isdir(d) for d in dirs), dirs
    if path == "delete":
        assert rig.rt("delete", "--force", container_id).returncode == 0
    elif path == "poststop":
        # Behind the shim's back: runc's poststop hook tells the supervisor.
        assert rig.runc("delete", "--force", container_id).returncode == 0
    else:
        os.kill(sup, signal.SIGKILL)
        wait_for(lambda: not rig.supervisor_pids(container_id), 5)
        assert rig.rt("delete", "--force", container_id).returncode == 0
    wait_for(lambda: not any(os.path.exists(d) for d in dirs), 10)
    wait_for(lambda: not rig.leftovers(container_id), 10)


def test_check_names_bad_bounds(rig: Rig) -> None:
    rig.write_config(
        'supervisor_cpu = -1\nsupervisor_memory = "lots"\nnotify_rate = 0\nseccomp_rate = 2e6\n'
    )
    r = rig.retinue("check")
    assert r.returncode != 0
    config = str(rig.config_path)
    for expected in (
        f"{config}: supervisor_cpu: expected a number of CPUs from 0.01 to 1024 (0: no bound), "
        "got -1",
        f"{config}: supervisor_memory: expected a size like \"128M\"",
        f"{config}: notify_rate: expected a number per second from 1 to 1000000, got 0",
        f"{config}: seccomp_rate: expected a number per second from 1 to 1000000, got 2000000.0",
    ):
        assert expected in r.stderr + r.stdout, r.stderr + r.stdout
    # NaN is refused where any number is read, before the meaning checks.
    rig.write_config("seccomp_rate = nan\n")
    r = rig.retinue("check")
    assert r.returncode != 0
    assert f"{config}: seccomp_rate: expected a finite number, got a number: nan" in r.stderr


# -- floods ---------------------------------------------------------------------------------------

# READY=1 from the service, then four senders that left its tree (double-forked: each datagram
# costs the supervisor a walk up the sender's ancestry, the costliest case) flood the socket.
NOTIFY_FLOOD = """\
import os, socket
path = os.environ["NOTIFY_SOCKET"]
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", path)
for _ in range(4):
    if os.fork() == 0:
        if os.fork() != 0:
            os._exit(0)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        while True:  # blocking: each sender sleeps while the queue is full
            try:
                s.sendto(b"READY=1", path)
            except OSError:
                pass
    os.wait()
os.execv("/bin/sleep", ["sleep", "1000"])
"""


def measure(directory: str, seconds: float = FLOOD_SECONDS) -> float:
    """The share of one CPU a cgroup used over `seconds`."""
    before, t0 = cpu_seconds(directory), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(directory) - before) / (time.monotonic() - t0)


def test_a_notify_flood_is_bounded(rig: Rig, container_id: str, py_rootfs: Path) -> None:
    rig.write_config("supervisor_cpu = 0\n")  # the limiter is under test, not the cgroup
    rig.service(
        "flood", f'exec {PYTHON} -I -S "$(dirname "$0")/flood.py"\n', "[ready]\nnotify = true\n"
    )
    (rig.files / "flood" / "flood.py").write_text(NOTIFY_FLOOD)
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=flood"],
                        edit=with_python(py_rootfs))
    started(rig, container_id, bundle)
    sup = the_supervisor(rig, container_id)
    share = measure(cgroup_dir(sup, "cpuacct") if mounts()[1] else cgroup_dir(sup, ""))
    print(f"supervisor CPU under a notify flood: {share:.1%} of one core")
    assert share < 0.5
    assert rig.service_status(container_id, "flood")["state"] == "ready"
    assert "notify socket: dropped" in rig.service_log(container_id, "flood")


SYSINFO_FLOOD = """\
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
buf = ctypes.create_string_buffer(128)
children = []
for _ in range(3):  # four callers
    pid = os.fork()
    if pid == 0:
        children = []
        break
    children.append(pid)
n, end = 0, time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    libc.syscall(99, ctypes.byref(buf))
    n += 1
os.write(1, f"calls {n}\\n".encode())
for _ in children:
    os.wait()
"""

SYSINFO_POLICY = """
[[attach]]
name = "si"
when.env = { SI = "1" }
[[attach.seccomp]]
syscalls = ["sysinfo"]
handler = "sysinfo"
"""


def test_a_seccomp_flood_is_bounded(rig: Rig, container_id: str, py_rootfs: Path) -> None:
    rig.write_config("supervisor_cpu = 0\nseccomp_rate = 500\n")
    rig.policy(SYSINFO_POLICY)
    (rig.shared / "si.py").write_text(SYSINFO_FLOOD)
    seconds = FLOOD_SECONDS + 2
    bundle = rig.bundle(
        [PYTHON, "-I", "-S", "/shared/si.py", str(seconds)], env=["SI=1"],
        edit=with_python(py_rootfs),
    )
    started(rig, container_id, bundle)
    sup = wait_for(lambda: rig.supervisor_pids(container_id))[0]
    time.sleep(0.5)
    share = measure(cgroup_dir(sup, "cpuacct") if mounts()[1] else cgroup_dir(sup, ""))
    print(f"supervisor CPU under a sysinfo flood: {share:.1%} of one core")
    assert share < 0.5
    wait_for(lambda: rig.runc_status(container_id) == "stopped", 30)
    out = (rig.base / f"{container_id}.out").read_text()
    calls = sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("calls"))
    # The excess waited: about the rate (and its burst), not the tens of thousands a second
    # an unbounded agent answers.
    assert calls < 500 * (seconds + 1) + 500, calls
    print(f"sysinfo calls answered in {seconds}s at 500/s: {calls}")
    log = (rig.log_dir / container_id / "seccomp.log").read_text()
    assert "notifications/s; its syscalls waited" in log


# -- a service's daemons ------------------------------------------------------------------------

# Two daemons that leave the service's process tree: one in its own session, one orphaned.
DAEMONIZE = 'ev "run"; setsid sleep 987651 & sleep 987652 &\n'


def daemons() -> list[int]:
    return [p for p, c in processes_mentioning("sleep 98765") if c.startswith("sleep")]


def test_a_restarted_service_leaves_no_daemon(rig: Rig, container_id: str) -> None:
    # Each run forks its daemons and exits; the restart path kills what the last run left.
    rig.service(
        "d", DAEMONIZE + "exit 0\n",
        'required = false\n[restart]\npolicy = "always"\ndelay = "300ms"\nmax_delay = "300ms"\n'
        "burst = 100\n",
    )
    started(rig, container_id, rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=d"]))
    wait_for(lambda: sum(1 for _, w in rig.events() if w == "run") >= 4, 20)
    # Only the current run's two daemons may exist (without the kill, 2 per run pile up).
    assert len(daemons()) <= 2, daemons()
    assert rig.rt("delete", "--force", container_id).returncode == 0
    wait_for(lambda: not daemons(), 5)


def no_pid_namespace(spec: dict[str, Any]) -> None:
    # Sharing a PID namespace (the host's here, a pod's under Kubernetes) means the kernel does
    # not end a service's daemons with the container's init: the stop must.
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "pid"]


def test_a_stopped_service_leaves_no_daemon(rig: Rig, container_id: str) -> None:
    rig.service("d", DAEMONIZE + "exec sleep 1000\n")
    bundle = rig.bundle(
        main_args(FOREVER), env=["RETINUE_SERVICES=d"], edit=no_pid_namespace
    )
    started(rig, container_id, bundle)
    wait_for(lambda: len(daemons()) == 2, 5)
    r = rig.rt("kill", container_id, "TERM")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: rig.runc_status(container_id) == "stopped", 15)
    wait_for(lambda: not daemons(), 5)
    assert rig.rt("delete", container_id).returncode == 0
