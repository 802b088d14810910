"""The host's state directory: nothing a container does can fill or shape it, nothing else is
ever removed as if it were one, it is root-only, and a create that fails leaves none behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import FOREVER, Rig, main_args, wait_for
from retinue.config import cache as confcache
from retinue.host import statedir

SLEEP = 'ev "$RETINUE_SERVICE start"; exec sleep 1000\n'
# busybox has no sd_notify client: `logger` sends one datagram to /dev/log, pointed at the socket.
NOTIFY = ('sleep 0.3; ln -sf "$NOTIFY_SOCKET" /dev/log; '
          'logger "$(printf "x\\nREADY=1")" & exec sleep 1000\n')
DEPTH = 5000


def hook_path(rig: Rig) -> str:
    return str(Path(rig.shim).with_name("retinue-hook"))


def run_hook(
    rig: Rig, stage: str, directory: Path | str, cid: str = "x"
) -> subprocess.CompletedProcess[str]:
    state = {"ociVersion": "1.0.2", "id": cid, "status": "stopped", "pid": 0, "bundle": "/"}
    return subprocess.run([hook_path(rig), stage, str(directory)], input=json.dumps(state),
                          capture_output=True, text=True, timeout=30)


def plant_deep_tree(directory: Path, depth: int = DEPTH) -> None:
    """directory/d/d/d/... `depth` levels, a file at the bottom (deeper than PATH_MAX: by fds)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)


def kill_supervisor(rig: Rig, cid: str) -> None:
    (pid,) = rig.supervisor_pids(cid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not rig.supervisor_pids(cid))


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


# -- 1. the notify channel ----------------------------------------------------------------------

def test_a_container_cannot_write_into_the_host_state_dir(rig: Rig, container_id: str) -> None:
    """The container sees each notify socket (read-only), never a writable host directory:
    what it writes or builds under /run/retinue never reaches the host's state directory, and
    the service's READY=1 still gets through."""
    rig.service("ntf", NOTIFY, '[ready]\nnotify = true\ntimeout = "5s"\n')
    main = ("if echo x > /run/retinue/filler; then ev wrote; else ev write-refused; fi; "
            "cd /run/retinue && for i in 1 2 3 4 5 6 7 8 9 10; do mkdir d && cd d; done; "
            "ev tree-done; if echo x > /run/retinue/ntf.sock; then ev sock-written; fi; "
            + FOREVER)
    bundle = rig.bundle(main_args(main), env=["RETINUE_SERVICES=ntf"])
    assert rig.create(container_id, bundle).returncode == 0
    r = rig.rt("start", container_id)
    assert r.returncode == 0, (r.stderr, rig.errors())
    assert rig.service_status(container_id, "ntf")["state"] == "ready"
    wait_for(lambda: any(w == "tree-done" for _, w in rig.events()))
    words = [w for _, w in rig.events()]
    assert "write-refused" in words and "wrote" not in words and "sock-written" not in words
    directory = rig.container_dir(container_id)
    notify = directory / "notify"
    assert sorted(p.name for p in notify.iterdir()) == ["ntf.sock"]
    assert notify.stat().st_mode & 0o777 == 0o700
    assert not list(directory.rglob("filler")) and not (notify / "d").exists()
    spec = json.loads((bundle / "config.json").read_text())
    ours = [m for m in spec["mounts"] if m["destination"].startswith("/run/retinue")]
    assert ours == [{"destination": "/run/retinue/ntf.sock", "type": "bind",
                     "source": f"{notify}/ntf.sock",
                     "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}]


def test_a_deep_tree_in_the_state_dir_is_removed_by_the_supervisor(
    rig: Rig, container_id: str
) -> None:
    rig.service("svc", SLEEP)
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=svc"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    directory = rig.container_dir(container_id)
    plant_deep_tree(directory / "notify")
    r = rig.rt("delete", "--force", container_id)
    assert r.returncode == 0, (r.stderr, rig.errors())
    assert rig.errors() == []
    # Generous: 5,000 levels take ~1 s to remove on an idle machine, and these are shared.
    wait_for(lambda: not rig.leftovers(container_id), 60)
    log = (rig.log_dir / container_id / "supervisor.log").read_text()
    assert "Traceback" not in log and "Error" not in log, log


def test_a_deep_tree_in_a_stale_state_dir_is_removed_by_delete(
    rig: Rig, container_id: str
) -> None:
    rig.service("svc", SLEEP)
    bundle = rig.bundle(env=["RETINUE_SERVICES=svc"])
    assert rig.create(container_id, bundle).returncode == 0
    kill_supervisor(rig, container_id)
    plant_deep_tree(rig.container_dir(container_id) / "notify")
    r = rig.rt("delete", "--force", container_id)
    assert r.returncode == 0, (r.stderr, rig.errors())
    assert rig.errors() == []
    assert not rig.leftovers(container_id)
    assert rig.state(container_id) is None


# -- 5. the hook removes nothing but a retinue container's state ---------------------------------

def test_poststop_hook_refuses_a_directory_that_is_not_container_state(
    rig: Rig, container_id: str
) -> None:
    victim = rig.base / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "precious").write_text("keep me\n")
    r = run_hook(rig, "poststop", victim)
    assert r.returncode == 1
    assert f"{victim}: not a retinue container state directory" in r.stderr
    assert (victim / "precious").read_text() == "keep me\n"
    # Shaped like one (STATE/KEY/ID, under a real state directory), but without the marker
    # only retinue writes: refused too.
    rig.service("svc", SLEEP)
    assert rig.create(container_id, rig.bundle(env=["RETINUE_SERVICES=svc"])).returncode == 0
    lookalike = rig.container_dir(container_id).parent / "lookalike"
    link = rig.container_dir(container_id).parent / "link"
    lookalike.mkdir(mode=0o700)
    try:
        (lookalike / "precious").write_text("keep me\n")
        assert run_hook(rig, "poststop", lookalike).returncode == 1
        assert (lookalike / "precious").exists()
        # A symlink to a container's state directory (its supervisor gone) is not one either.
        kill_supervisor(rig, container_id)
        link.symlink_to(rig.container_dir(container_id))
        r = run_hook(rig, "poststop", link)
        assert r.returncode == 1 and "not a retinue container state directory" in r.stderr
        assert rig.container_dir(container_id).is_dir()
    finally:
        if link.is_symlink():
            link.unlink()
        statedir.remove_tree(str(lookalike))


def test_poststop_hook_removes_the_state_a_dead_supervisor_left(
    rig: Rig, container_id: str
) -> None:
    rig.service("svc", SLEEP)
    assert rig.create(container_id, rig.bundle(env=["RETINUE_SERVICES=svc"])).returncode == 0
    kill_supervisor(rig, container_id)
    plant_deep_tree(rig.container_dir(container_id) / "pids")
    r = run_hook(rig, "poststop", rig.container_dir(container_id), container_id)
    assert r.returncode == 0, r.stderr
    assert not rig.container_dir(container_id).exists()
    assert not (Path(statedir.REGISTRY) / container_id).exists()
    rig.runc("delete", "--force", container_id)


# -- 6. root-only ---------------------------------------------------------------------------------

def test_every_state_level_is_root_only(rig: Rig, container_id: str) -> None:
    rig.service("ntf", NOTIFY, "[ready]\nnotify = true\n")
    assert rig.create(container_id, rig.bundle(env=["RETINUE_SERVICES=ntf"])).returncode == 0
    directory = rig.container_dir(container_id)
    levels = [rig.state_dir, Path(statedir.REGISTRY), Path(statedir.REGISTRY) / container_id,
              directory.parent, directory, *[p for p in directory.iterdir() if p.is_dir()],
              Path(confcache.CACHE_DIR), Path(confcache.CACHE_DIR).parent]
    if os.path.isdir(statedir.SECCOMP_DIR):
        levels.append(Path(statedir.SECCOMP_DIR))
    for d in levels:
        assert d.stat().st_mode & 0o777 == 0o700, d
    # The sockets bind-mounted into the container, alone, for a process of any uid: a notify
    # socket and retinue-init's (the supervisor answers only the peer that is the init).
    assert not [p for p in directory.rglob("*") if p.stat().st_mode & 0o077
                and p.name not in ("ntf.sock", "init.sock")]


# -- 9. a create that cannot complete leaves nothing, and says why --------------------------------

def test_a_read_only_log_dir_is_named(rig: Rig, container_id: str) -> None:
    rig.service("svc", SLEEP)
    bundle = rig.bundle(env=["RETINUE_SERVICES=svc"])
    with tmpfs(rig.log_dir, "ro,size=64k"):
        r = rig.create(container_id, bundle)
        assert r.returncode == 1
        want = f"retinue: {rig.log_dir}/{container_id}: cannot create: Read-only file system"
        assert rig.errors() == [want]
    assert not rig.leftovers(container_id)
    assert rig.state(container_id) is None


def test_no_space_in_the_state_dir_leaves_nothing(rig: Rig, container_id: str) -> None:
    rig.service("svc", SLEEP)
    bundle = rig.bundle(env=["RETINUE_SERVICES=svc"])
    with tmpfs(rig.state_dir, "size=16k,mode=0700") as state:
        with open(state / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"x" * 4096)
                    f.flush()
            except OSError:
                pass
        r = rig.create(container_id, bundle)
        assert r.returncode == 1
        (error,) = rig.errors()
        assert error.startswith(f"retinue: cannot prepare {rig.container_dir(container_id)}")
        assert error.endswith("No space left on device"), error
        listed = rig.retinue("status", "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed
        leftover = [str(p) for p in state.rglob("*") if p.name != "filler" and not p.is_dir()]
        assert leftover == []
        assert not [p for p in state.rglob("*") if container_id in p.name]
        assert rig.rt("delete", "--force", container_id).returncode == 0
        (state / "filler").unlink()
        for key in list(state.iterdir()):
            statedir.remove_tree(str(key))
    assert rig.state(container_id) is None


def test_a_partial_state_dir_is_not_listed_and_delete_removes_it(
    rig: Rig, container_id: str
) -> None:
    """As a create killed midway leaves it: the directory and its id marker, no plan, no
    supervisor."""
    rig.service("svc", SLEEP)
    # A first create makes the state directory's levels and the config cache.
    assert rig.create("other", rig.bundle(env=["RETINUE_SERVICES=svc"])).returncode == 0
    directory = rig.container_dir(container_id)
    (directory / "pids").mkdir(parents=True)
    (directory / "process").mkdir()
    marker = Path(statedir.REGISTRY) / container_id / directory.parent.name
    statedir.add_marker(str(directory))
    assert marker.is_file()
    listed = json.loads(rig.retinue("status", "--json").stdout)
    assert [c["id"] for c in listed] == ["other"]
    r = rig.retinue("status", container_id)
    assert r.returncode == 1 and "no container" in r.stderr
    r = rig.rt("delete", "--force", container_id)
    assert r.returncode == 0, (r.stderr, rig.errors())
    assert not directory.exists() and not marker.parent.exists()
    # A create killed before its directory was complete leaves it under a temporary name (and
    # maybe the id marker): not listed, removed by delete, and by the next create of that id.
    temp = directory.parent / f"{container_id}~999999999"
    (temp / "process").mkdir(parents=True)
    statedir.add_marker(str(directory))
    assert [c["id"] for c in json.loads(rig.retinue("status", "--json").stdout)] == ["other"]
    r = rig.rt("delete", "--force", container_id)
    assert r.returncode == 0, (r.stderr, rig.errors())
    assert not temp.exists() and not marker.parent.exists()
    (temp / "process").mkdir(parents=True)
    assert [c["id"] for c in json.loads(rig.retinue("status", "--json").stdout)] == ["other"]
    assert rig.create(container_id, rig.bundle(env=["RETINUE_SERVICES=svc"])).returncode == 0
    assert not temp.exists()
    assert sorted(c["id"] for c in json.loads(rig.retinue("status", "--json").stdout)) == [
        "other", container_id]


# -- 11. file readiness counts only a file this run made ------------------------------------------

def test_file_readiness_needs_a_file_this_run_made(rig: Rig, container_id: str) -> None:
    rig.service("old", 'echo "waiting"; exec sleep 1000\n',
                '[ready]\nfile = "/etc/passwd"\ntimeout = "1s"\ninterval = "20ms"\n')
    bundle = rig.bundle(main_args("ev main; sleep 1000"), env=["RETINUE_SERVICES=old"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 1
    assert rig.errors() == [
        'retinue: service "old" not ready after 1s: still running; last output: waiting']
    assert all(w != "main" for _, w in rig.events())


def test_file_readiness_ignores_a_symlink(rig: Rig, container_id: str) -> None:
    rig.service("link", 'ln -s /nowhere /tmp/ready; echo "linked"; exec sleep 1000\n',
                '[ready]\nfile = "/tmp/ready"\ntimeout = "1s"\ninterval = "20ms"\n')
    bundle = rig.bundle(main_args("ev main; sleep 1000"), env=["RETINUE_SERVICES=link"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 1
    assert rig.errors() == [
        'retinue: service "link" not ready after 1s: still running; last output: linked']


def test_file_readiness_accepts_an_existing_file_this_run_touched(
    rig: Rig, container_id: str
) -> None:
    """A file that was there before the run counts once the service changes it (touch)."""
    (rig.shared / "ready").write_text("")
    rig.service("toucher", 'sleep 0.3; ev touched; touch /shared/ready; exec sleep 1000\n',
                '[ready]\nfile = "/shared/ready"\ntimeout = "3s"\ninterval = "20ms"\n')
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=toucher"])
    assert rig.create(container_id, bundle).returncode == 0
    time.sleep(0.05)
    r = rig.rt("start", container_id)
    assert r.returncode == 0, rig.errors()
    wait_for(lambda: any(w == "main" for _, w in rig.events()))
    words = [w for _, w in rig.events()]
    assert words.index("touched") < words.index("main")
