"""Faults: a supervisor killed with SIGKILL, a lower create that fails, and many cycles that
must leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import FOREVER, Rig, main_args, processes_mentioning, wait_for

SLEEP = 'ev "$RETINUE_SERVICE start"; exec sleep 1000\n'


def kill_supervisor(rig: Rig, cid: str) -> None:
    (pid,) = rig.supervisor_pids(cid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not rig.supervisor_pids(cid))


def gone_message(rig: Rig, cid: str) -> str:
    return (f"retinue: the supervisor of container {cid} is gone (killed or crashed; see "
            f"{rig.log_dir}/{cid}/supervisor.log)")


def test_a_killed_supervisor_never_takes_the_container_down(rig: Rig, container_id: str) -> None:
    rig.service("svc", SLEEP)
    bundle = rig.bundle(main_args('while :; do ev tick; sleep 0.1; done'),
                        env=["RETINUE_SERVICES=svc"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    service_pid = rig.service_status(container_id, "svc")["pid"]
    kill_supervisor(rig, container_id)
    ticks = len(rig.events())
    time.sleep(0.5)
    # The container and its service keep running.
    assert rig.runc_status(container_id) == "running"
    assert len(rig.events()) >= ticks + 3
    os.kill(service_pid, 0)
    # `retinue status` says so.
    status = rig.status(container_id)
    assert status["phase"] == "supervisor gone" and status["services"] == []
    # kill: a warning, and the signal still reaches the container.
    r = rig.rt("kill", container_id, "KILL")
    assert r.returncode == 0, r.stderr
    assert rig.warnings() == [f"{gone_message(rig, container_id)}; its services were not stopped"]
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    # delete: a warning naming what happened, and the clean-up the supervisor could not do.
    r = rig.rt("delete", container_id)
    assert r.returncode == 0, r.stderr
    assert rig.warnings()[1] == (
        f"{gone_message(rig, container_id)}; removed its state {rig.container_dir(container_id)}"
    )
    assert rig.errors() == []
    wait_for(lambda: not rig.leftovers(container_id), 5)
    assert rig.state(container_id) is None


def test_start_after_the_supervisor_died(rig: Rig, container_id: str) -> None:
    rig.service("svc", SLEEP)
    bundle = rig.bundle(main_args("ev main; echo ran > /shared/marker; sleep 1000"),
                        env=["RETINUE_SERVICES=svc"])
    assert rig.create(container_id, bundle).returncode == 0
    kill_supervisor(rig, container_id)
    expected = (f"{gone_message(rig, container_id)}: its services cannot run, so the container "
                "is not started; delete it and create it again")
    r = rig.rt("start", container_id)
    assert r.returncode == 1
    assert r.stderr == expected + "\n"
    assert rig.errors() == [expected]
    rig.runc_log.unlink()
    r = rig.rt("start", container_id, log_format="text")
    assert r.returncode == 1
    assert r.stderr == expected + "\n"
    (line,) = rig.runc_log.read_text().splitlines()
    assert line.startswith("time=") and " level=error msg=" in line
    rig.runc_log.unlink()
    time.sleep(0.2)
    assert not (rig.shared / "marker").exists()
    # Ended, as after a failed gate: engines delete only a stopped task.
    assert rig.runc_status(container_id) == "stopped"
    r = rig.rt("delete", container_id)
    assert r.returncode == 0, r.stderr
    assert rig.warnings() == [
        f"{gone_message(rig, container_id)}; removed its state {rig.container_dir(container_id)}"
    ]
    wait_for(lambda: not rig.leftovers(container_id), 5)
    assert rig.state(container_id) is None


def test_a_failed_lower_create_leaves_nothing(rig: Rig, container_id: str) -> None:
    rig.service("svc", SLEEP)

    def missing_rootfs(spec: dict[str, object]) -> None:
        spec["root"] = {"path": str(rig.base / "no-such-rootfs"), "readonly": True}

    bundle = rig.bundle(env=["RETINUE_SERVICES=svc"], edit=missing_rootfs)
    r = rig.create(container_id, bundle)
    assert r.returncode != 0
    assert rig.errors(), rig.runc_log.read_text()
    assert "no-such-rootfs" in rig.errors()[-1]
    assert rig.state(container_id) is None
    # The supervisor saw the create fail and went away with its state.
    wait_for(lambda: not rig.leftovers(container_id), 5)
    assert not rig.supervisor_pids()
    # The id can be used again.
    good = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=svc"])
    r = rig.create(container_id, good)
    assert r.returncode == 0, r.stderr
    assert rig.rt("start", container_id).returncode == 0
    assert rig.service_status(container_id, "svc")["state"] == "ready"


def test_a_second_create_with_the_same_id_keeps_the_first(rig: Rig, container_id: str) -> None:
    rig.service("svc", SLEEP)
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=svc"])
    assert rig.create(container_id, bundle).returncode == 0
    (first,) = rig.supervisor_pids(container_id)
    r = rig.create(container_id, rig.bundle(env=["RETINUE_SERVICES=svc"]))
    assert r.returncode != 0
    assert "already exists" in r.stderr
    # The first container's supervisor is untouched and still serves it.
    assert rig.supervisor_pids(container_id) == [first]
    assert rig.rt("start", container_id).returncode == 0
    assert rig.service_status(container_id, "svc")["state"] == "ready"


def test_another_containers_hooks_are_ignored(rig: Rig, container_id: str) -> None:
    """Two containers created from one bundle at once can run each other's hooks: a supervisor
    must not act on a hook about another container (watch its init, stop at its poststop)."""
    rig.service("svc", SLEEP)
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=svc"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    hook = str(Path(rig.shim).with_name("retinue-hook"))
    other = rig.state(container_id) or {}
    other.update(id="someone-else", pid=1, status="stopped")
    for stage in ("createRuntime", "poststop"):
        r = subprocess.run([hook, stage, str(rig.container_dir(container_id))],
                           input=json.dumps(other), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    time.sleep(0.3)
    assert rig.supervisor_pids(container_id)
    status = rig.status(container_id)
    assert status["init_pid"] == (rig.state(container_id) or {}).get("pid")
    assert status["services"][0]["state"] == "ready"
    assert not any(w.startswith("stopping") for _, w in rig.events())


def test_state_and_logs_are_root_only(rig: Rig, container_id: str) -> None:
    rig.service("svc", SLEEP, "[ready]\nnotify = false\n")
    rig.service("ntf", 'logger "$(printf "x\\nREADY=1")" & exec sleep 1000\n',
                "[ready]\nnotify = true\n")
    bundle = rig.bundle(env=["RETINUE_SERVICES=svc,ntf"])
    assert rig.create(container_id, bundle).returncode == 0
    directory = rig.container_dir(container_id)
    for d in (directory.parent, directory):
        assert d.stat().st_mode & 0o777 == 0o700, d
    assert (directory / "control.sock").stat().st_mode & 0o777 == 0o600
    # Only the notify sockets are shared with the container (bind-mounted at /run/retinue).
    assert (directory / "notify" / "ntf.sock").exists()
    assert not (directory / "notify" / "svc.sock").exists()
    logs = rig.log_dir / container_id
    for d in (rig.log_dir, logs):
        assert d.stat().st_mode & 0o777 == 0o700, d
    for f in logs.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
        capture_output=True, text=True, timeout=10,
    )


def test_logs_are_root_only_and_an_open_tree_is_narrowed(rig: Rig, container_id: str) -> None:
    # Left by an older version (or made by hand): a 0755 tree of 0644 files. The rig's base is
    # opened up so that only the log directory's own modes stand between nobody and the logs.
    os.chmod(rig.base, 0o755)
    old = rig.log_dir / "t-older"
    old.mkdir(parents=True)
    os.chmod(rig.log_dir, 0o755)
    os.chmod(old, 0o755)
    mine = rig.log_dir / container_id
    mine.mkdir()
    os.chmod(mine, 0o755)
    (mine / "svc.log").write_text("from before\n")
    os.chmod(mine / "svc.log", 0o644)
    rig.service("svc", SLEEP)
    bundle = rig.bundle(env=["RETINUE_SERVICES=svc"], args=main_args(FOREVER))
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    wait_for(lambda: "started" in rig.service_log(container_id, "svc"))
    listed = as_nobody("ls", str(rig.log_dir))
    assert listed.returncode != 0 and "Permission denied" in listed.stderr, listed
    for target in (mine, mine / "svc.log", mine / "supervisor.log"):
        seen = as_nobody("cat", str(target))
        assert seen.returncode != 0 and "Permission denied" in seen.stderr, (target, seen)
    assert rig.log_dir.stat().st_mode & 0o777 == 0o700
    assert mine.stat().st_mode & 0o777 == 0o700
    for f in mine.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert rig.rt("delete", "--force", container_id).returncode == 0


def snapshot(rig: Rig, rootfs: Path) -> dict[str, object]:
    """What a container of this rig could leave on the host."""
    root = str(rootfs)
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/root") == root:
                    procs.append(entry)
            except OSError:
                pass
    findmnt = subprocess.run(["findmnt", "-rn", "-o", "TARGET,SOURCE"], capture_output=True,
                             text=True).stdout.splitlines()
    with open("/proc/net/unix") as f:
        sockets = [line for line in f if str(rig.base) in line]
    return {
        "container processes": procs,
        "rig processes": [p for p, _ in processes_mentioning(str(rig.base))],
        "mounts": [m for m in findmnt if str(rig.base) in m or root in m],
        "sockets": sockets,
        "state dirs": sorted(str(p) for p in rig.state_dir.glob("*/*")),
        "runc containers": rig.runc("list", "-q").stdout.split(),
    }


def test_a_hundred_cycles_leave_nothing_behind(
    rig: Rig, rootfs_dir: Path
) -> None:
    rig.service("svc", "exec sleep 1000\n")
    # One bundle per worker, reused for each of its containers in turn (as by hand with runc).
    bundles = [rig.bundle(["sleep", "1000"], env=["RETINUE_SERVICES=svc"]) for _ in range(4)]
    before = snapshot(rig, rootfs_dir)
    mounts_before = len(subprocess.run(["findmnt", "-rn"], capture_output=True,
                                       text=True).stdout.splitlines())

    def cycles(worker: int) -> None:
        for i in range(25):
            cid = f"cycle-{worker}-{i}"
            r = rig.create(cid, bundles[worker])
            assert r.returncode == 0, r.stderr
            r = rig.rt("start", cid)
            assert r.returncode == 0, r.stderr
            r = rig.rt("delete", "--force", cid)
            assert r.returncode == 0, r.stderr

    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        for result in [pool.submit(cycles, w) for w in range(4)]:
            result.result()
    took = time.monotonic() - t0
    print(f"100 create/start/delete cycles in {took:.1f}s")
    try:
        wait_for(lambda: snapshot(rig, rootfs_dir) == before, 10)
    except AssertionError:
        pass
    assert snapshot(rig, rootfs_dir) == before
    assert before["container processes"] == [] and before["state dirs"] == []
    mounts_after = len(subprocess.run(["findmnt", "-rn"], capture_output=True,
                                      text=True).stdout.splitlines())
    print(f"host mounts before {mounts_before}, after {mounts_after}")
    assert rig.log_entries() == []
    assert took < 60
