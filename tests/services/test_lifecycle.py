"""A container's end whatever dies first: the supervisor in the middle of the gate, a client
whose supervisor resets the connection. Nothing may be left: no runc container, no state
directory, no cgroup (the supervisor's `<cgroup>.retinue`, the services' `retinue-NAME`), no
process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FOREVER, Rig, main_args, processes_mentioning, wait_for

SLOW = ('ev "$RETINUE_SERVICE start"; (sleep 30; touch /tmp/slow.ready) & '
        'exec sleep 1000\n')
QUICK = 'ev "$RETINUE_SERVICE start"; exec sleep 1000\n'
ADMIN_BIN = os.path.join(sys.prefix, "bin", "retinue")


def cgroups_of(cid: str) -> list[str]:
    """Every cgroup directory, in every hierarchy, whose path names the container."""
    found = []
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", hierarchy)
        if os.path.islink(top) or not os.path.isdir(top):
            continue
        for dirpath, dirnames, _ in os.walk(top):
            found += [os.path.join(dirpath, d) for d in dirnames if cid in d]
    return sorted(found)


def leftovers(rig: Rig, cid: str, rootfs: Path) -> list[str]:
    found = rig.leftovers(cid)
    if cid in rig.runc("list", "-q").stdout.split():
        found.append(f"runc container {cid}")
    found += [f"cgroup {c}" for c in cgroups_of(cid)]
    root = str(rootfs)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/root") == root:
                    found.append(f"process {entry} {Path(f'/proc/{entry}/cmdline').read_bytes()!r}")
            except OSError:
                pass
    found += [f"process {p} {c}" for p, c in processes_mentioning(cid)]
    return found


def kill_supervisor(rig: Rig, cid: str) -> None:
    (pid,) = rig.supervisor_pids(cid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not rig.supervisor_pids(cid))


def test_supervisor_killed_during_the_gate_leaves_nothing_after_delete(
    rig: Rig, container_id: str, rootfs_dir: Path
) -> None:
    rig.service("quick", QUICK)
    rig.service("slow", SLOW, '[ready]\nfile = "/tmp/slow.ready"\ntimeout = "60s"\n')
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"),
                        env=["RETINUE_SERVICES=quick,slow"])
    assert rig.create(container_id, bundle).returncode == 0
    start = subprocess.Popen(rig.rt_argv("start", container_id), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: {"quick start", "slow start"} <= {w for _, w in rig.events()}, 20)
        kill_supervisor(rig, container_id)
        _, err = start.communicate(timeout=30)
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()
    assert start.returncode == 1
    assert f"the supervisor of container {container_id} is gone" in err, err
    assert "main" not in {w for _, w in rig.events()}
    r = rig.rt("delete", "--force", container_id)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not leftovers(rig, container_id, rootfs_dir), 10)



def resetting_server(path: Path) -> socket.socket:
    """A control socket that accepts, lets the request arrive, then closes without reading it:
    the client's recv gets ECONNRESET, as when a supervisor dies mid-request."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            time.sleep(0.05)  # the request is in conn's receive queue, unread
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_request_to_a_resetting_supervisor_is_supervisor_gone(tmp_path: Path) -> None:
    from retinue import control

    server = resetting_server(tmp_path / "control.sock")
    try:
        with pytest.raises(control.SupervisorGone):
            control.request(str(tmp_path / "control.sock"), {"op": "status"}, 5)
    finally:
        server.close()


def test_kill_and_delete_when_the_supervisor_resets(rig: Rig, container_id: str) -> None:
    rig.service("quick", QUICK)
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=quick"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    kill_supervisor(rig, container_id)
    sock = rig.container_dir(container_id) / "control.sock"
    sock.unlink()
    server = resetting_server(sock)
    try:
        r = rig.rt("kill", container_id, "KILL")
        assert r.returncode == 0, r.stderr
        assert "internal error" not in r.stderr
        wait_for(lambda: rig.runc_status(container_id) == "stopped")
        r = rig.rt("delete", container_id)
        assert r.returncode == 0, r.stderr
        assert rig.errors() == []
        assert all("is gone" in w for w in rig.warnings()), rig.warnings()
    finally:
        server.close()
    wait_for(lambda: not rig.leftovers(container_id), 5)


def test_gc_deletes_what_the_engine_no_longer_lists(
    rig: Rig, container_id: str, rootfs_dir: Path
) -> None:
    rig.service("quick", QUICK)
    kept, forgotten = container_id, container_id + "-f"
    for cid in (kept, forgotten):
        bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=quick"])
        assert rig.create(cid, bundle).returncode == 0
        assert rig.rt("start", cid).returncode == 0
    # Bad uses say what is wrong and delete nothing.
    for args, code, said in [
        (["--root", str(rig.root)], 2, "--root goes with --keep-ids or --keep-none"),
        (["--keep-none"], 2, "--root goes with --keep-ids or --keep-none"),
        (["--root", str(rig.root), "--keep-none", "--keep-ids", "-"], 2, "not both"),
        (["--root", str(rig.root), "--keep-ids", "-"], 1, "no ids read from --keep-ids"),
    ]:
        r = subprocess.run([ADMIN_BIN, "gc", *args], input="\n", capture_output=True, text=True,
                           timeout=60)
        assert (r.returncode, r.stderr.startswith("retinue: gc: ")) == (code, True), r
        assert said in r.stderr, r.stderr
    assert rig.runc_status(kept) == rig.runc_status(forgotten) == "running"
    r = subprocess.run([ADMIN_BIN, "gc", "--root", str(rig.root), "--keep-ids", "-"],
                       input=f"{kept}\n", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"removed container {forgotten} (not known to its engine)"]
    wait_for(lambda: not leftovers(rig, forgotten, rootfs_dir), 10)
    assert rig.runc_status(kept) == "running"
    assert rig.service_status(kept, "quick")["state"] == "ready"
