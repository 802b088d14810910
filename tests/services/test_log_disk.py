"""A full log filesystem (issue 15 item 4): no log write ends a supervisor, one container's
output cannot starve another's (its cap, the node's floor of free space), and a refused create
leaves nothing behind.

The log directory (and, for the refused create, the state directory) is a small tmpfs of its
own, filled by a chatty service of one container, on real runc.
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FOREVER, Rig, main_args, wait_for


def quiet(banner: int = 6000) -> str:
    """A service that says `banner` bytes when it starts (as many print their configuration),
    then waits."""
    return (
        'trap \'ev "$RETINUE_SERVICE stop"; exit 0\' TERM\n'
        f'yes "$RETINUE_SERVICE banner" | head -c {banner}; echo\n'
        'ev "$RETINUE_SERVICE start"; sleep 1000 & wait\n'
    )


QUIET = quiet()


def flood(mb: int) -> str:
    """A service that writes `mb` MiB of lines, says where it ended, then stays quiet."""
    return (
        'yes "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz" '
        f"| head -c {mb << 20}; echo THE-END; ev flooded; exec sleep 1000\n"
    )


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True)


def umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def left(rig: Rig, cid: str) -> list[str]:
    """What the container left behind, but the test's own tmpfs mounts."""
    ours = {f"mount {rig.log_dir}", f"mount {rig.state_dir}"}
    return [x for x in rig.leftovers(cid) if x not in ours] + supervisor_cgroups(cid)


def supervisor_cgroups(cid: str) -> list[str]:
    return [d for name in (cid, cid + ".retinue")
            for d in glob.glob(f"/sys/fs/cgroup/*/{name}") + glob.glob(f"/sys/fs/cgroup/{name}")]


@pytest.fixture
def log_tmpfs(rig: Rig) -> Iterator[Path]:
    mount_tmpfs(rig.log_dir, "4m")
    try:
        yield rig.log_dir
    finally:
        # Before the rig's own check: every supervisor holds its logs open.
        for cid in rig.runc("list", "-q").stdout.split():
            rig.rt("delete", "--force", cid)
        wait_for(lambda: not rig.supervisor_pids(), 10)
        umount(rig.log_dir)


def start(rig: Rig, cid: str, services: str) -> None:
    bundle = rig.bundle(main_args(FOREVER), env=[f"RETINUE_SERVICES={services}"])
    r = rig.create(cid, bundle)
    assert r.returncode == 0, (r.stderr, rig.errors())
    r = rig.rt("start", cid)
    assert r.returncode == 0, (r.stderr, rig.errors())


def restart(rig: Rig, cid: str, service: str) -> None:
    r = rig.retinue("restart", cid, service)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert rig.service_status(cid, service)["state"] == "ready"


def test_a_full_log_filesystem_ends_no_supervisor(
    rig: Rig, log_tmpfs: Path, container_id: str
) -> None:
    # No cap and no floor: the flood fills the filesystem, as it did in the issue.
    rig.write_config(
        "log_max_bytes = 2097152\nlog_keep = 2\nlog_max_container_bytes = 0\n"
        'log_min_free = "0"\n'
    )
    rig.service("base", QUIET, '[ready]\nnotify = false\n')
    rig.service("top", QUIET, 'after = ["base"]\n[ready]\nnotify = false\n')
    rig.service("flood", flood(8))
    quiet, chatty = container_id, "c" + container_id
    start(rig, quiet, "base,top")
    start(rig, chatty, "flood")
    wait_for(lambda: "flooded" in [w for _, w in rig.events()], 20)
    assert free(log_tmpfs) < 64 << 10

    # The other container's supervisor lives on, listed, its services still supervised.
    restart(rig, quiet, "top")
    status = rig.status(quiet)
    assert status["phase"] == "running"
    top = rig.service_status(quiet, "top")
    assert top["log_dropped"] > 0, top
    assert status["logs"]["writing"] is False
    assert "No space left on device" in status["logs"]["why"]
    table = rig.retinue("status", quiet).stdout
    assert f"{quiet[:20]}: service output is being dropped (No space left on device)" in table
    assert rig.status(chatty)["logs"]["dropped"] > 0
    # A create meanwhile works (its own logs are dropped too) and leaves nothing once deleted.
    third = "d" + container_id
    start(rig, third, "base")
    assert rig.rt("delete", "--force", third).returncode == 0
    wait_for(lambda: not left(rig, third), 10)

    # Space returns: the next write says what was lost, in the service's log and supervisor.log.
    for f in (log_tmpfs / chatty).glob("flood.log*"):
        os.truncate(f, 0)
    restart(rig, quiet, "top")
    log = rig.service_log(quiet, "top")
    assert "retinue: " in log and " of output in " in log and "No space left on device" in log
    assert "started by" in log.rsplit("dropped", 1)[1]
    supervisor_log = (log_tmpfs / quiet / "supervisor.log").read_text()
    assert "top.log: dropped " in supervisor_log, supervisor_log
    assert rig.status(quiet)["logs"]["writing"] is True

    # And the stop is still in order: top before base.
    assert rig.rt("delete", "--force", quiet).returncode == 0
    wait_for(lambda: not left(rig, quiet), 10)
    stops = [w for _, w in rig.events() if w.endswith(" stop")]
    assert stops[-2:] == ["top stop", "base stop"], rig.events()


def test_the_node_floor_stops_service_output_and_says_so(
    rig: Rig, log_tmpfs: Path, container_id: str
) -> None:
    rig.write_config(
        "log_max_bytes = 8388608\nlog_max_container_bytes = 0\nlog_min_free = \"50%\"\n"
    )
    # More than the flood can leave above the floor (one pipe read, 64 KiB).
    rig.service("quiet", quiet(100_000), '[ready]\nnotify = false\n')
    rig.service("flood", flood(6))
    other, chatty = container_id, "c" + container_id
    start(rig, other, "quiet")
    start(rig, chatty, "flood")
    wait_for(lambda: "flooded" in [w for _, w in rig.events()], 20)
    # 2 MiB of the 4 MiB stay free (one read's worth may pass between two checks).
    assert free(log_tmpfs) >= (2 << 20) - (128 << 10)
    logs = rig.status(chatty)["logs"]
    assert logs["writing"] is False and "below log_min_free (2.0M)" in logs["why"], logs
    # The other container: alive, supervised, its own output held back as well.
    restart(rig, other, "quiet")
    wait_for(lambda: rig.status(other)["logs"]["writing"] is False, 5)
    assert free(log_tmpfs) >= (2 << 20) - (128 << 10)
    for f in (log_tmpfs / chatty).glob("flood.log*"):
        os.truncate(f, 0)
    restart(rig, other, "quiet")
    assert "below log_min_free" in rig.service_log(other, "quiet")
    assert rig.status(other)["logs"]["writing"] is True


def test_a_container_cap_keeps_its_newest_output_and_its_other_services(
    rig: Rig, container_id: str
) -> None:
    cap = 1536 << 10
    rig.write_config(
        f"log_max_bytes = 1048576\nlog_keep = 3\nlog_max_container_bytes = {cap}\n"
        'log_min_free = "0"\n'
    )
    rig.service("quiet", QUIET, '[ready]\nnotify = false\n')
    rig.service("flood", flood(5))
    start(rig, container_id, "quiet,flood")
    wait_for(lambda: "flooded" in [w for _, w in rig.events()], 20)
    wait_for(lambda: "THE-END" in rig.service_log(container_id, "flood"), 5)
    directory = rig.log_dir / container_id
    assert du(directory) <= cap, sorted((f.name, f.stat().st_size) for f in directory.iterdir())
    # The flood gave up its own oldest output, never the other service's log.
    assert "started, pid" in rig.service_log(container_id, "quiet")
    assert rig.status(container_id)["logs"]["max_bytes"] == cap


def test_a_refused_create_leaves_nothing(rig: Rig, container_id: str) -> None:
    mount_tmpfs(rig.state_dir, "64k")
    try:
        filler = rig.state_dir / "filler"
        with open(filler, "wb") as f:
            try:
                f.write(b"x" * (128 << 10))
            except OSError:
                pass
        rig.service("base", QUIET, '[ready]\nnotify = false\n')
        bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=base"])
        r = rig.create(container_id, bundle)
        assert r.returncode != 0
        assert "No space left on device" in r.stderr, r.stderr
        assert left(rig, container_id) == []
        assert rig.state(container_id) is None
    finally:
        umount(rig.state_dir)


@pytest.mark.parametrize(("extra", "message"), [
    ("log_max_container_bytes = 1000\n",
     "log_max_container_bytes: expected 0 (no cap) or at least 1048576, got 1000"),
    ("log_max_container_bytes = -1\n",
     "log_max_container_bytes: expected 0 (no cap) or at least 1048576, got -1"),
    ('log_min_free = "lots"\n',
     'log_min_free: expected a size like "256M" or a percentage like "5%" (at most 50%; '
     "\"0\": no floor), got 'lots'"),
    ('log_min_free = "90%"\n', "log_min_free: expected a size like \"256M\""),
    ("log_min_free = 5\n", "log_min_free: expected a string, got an integer: 5"),
])
def test_log_space_settings_are_checked(rig: Rig, extra: str, message: str) -> None:
    rig.write_config(extra)
    r = rig.retinue("check")
    assert r.returncode == 1, r.stdout
    assert f"{rig.config_path}: {message}" in r.stderr, r.stderr
