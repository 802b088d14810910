"""Issue 11 on real runc: a service from its own image, in its own container, in the app's
network namespace.

The images are built here from this machine's own Debian programs (tests/imagekit.py): nginx
with its shared libraries (a program a scratch app could never run inside itself) and
busybox-static; `retinue image import` takes them as OCI layouts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import imagekit
import pytest
from conftest import FOREVER, RUNC, Rig, main_args, mounts_under, wait_for

PORT = 8080


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sidecar-images")
    nginx = imagekit.nginx_rootfs(base / "nginx", PORT)
    busybox = imagekit.busybox_rootfs(base / "busybox")
    return {
        "nginx": imagekit.oci_layout(
            nginx, base / "nginx-layout",
            ["/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/nginx/nginx.conf"],
        ),
        "busybox": imagekit.oci_layout(busybox, base / "busybox-layout", ["sleep", "1000"]),
    }


def setup(rig: Rig, layouts: dict[str, Path], *names: str) -> Path:
    images = rig.base / "images"
    rig.write_config(f'image_dir = "{images}"\n')
    for name in names:
        r = rig.retinue("image", "import", name, str(layouts[name]), timeout=120)
        assert r.returncode == 0, r.stderr
    return images


def sidecar(rig: Rig, name: str, toml: str) -> None:
    (rig.etc / "services" / f"{name}.toml").write_text(toml)


def siblings(rig: Rig) -> list[str]:
    root = rig.state_dir / "sidecars"
    if not root.exists():
        return []
    return subprocess.run([RUNC, "--root", str(root), "list", "-q"], capture_output=True,
                          text=True).stdout.split()


def sibling_state(rig: Rig, sid: str) -> dict[str, object]:
    r = subprocess.run([RUNC, "--root", str(rig.state_dir / "sidecars"), "state", sid],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    state: dict[str, object] = json.loads(r.stdout)
    return state


def cgroup_dirs_named(fragment: str) -> list[str]:
    found = []
    for hierarchy in ("memory", "pids", "cpu,cpuacct"):
        top = f"/sys/fs/cgroup/{hierarchy}"
        for root, dirs, _ in os.walk(top):
            found += [os.path.join(root, d) for d in dirs if fragment in d]
    return found


NGINX = f'placement = "container"\nimage = "nginx"\nuser = "65534:65534"\n[ready]\ntcp = {PORT}\n'


def test_a_scratch_app_reaches_an_nginx_sidecar_before_its_first_line(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    setup(rig, layouts, "nginx")
    sidecar(rig, "web", NGINX + '[resources]\nmemory = "64M"\npids = 32\n')
    rootfs = rig.base / "scratch"
    rootfs.mkdir()
    shutil.copy("/bin/busybox", rootfs / "busybox")  # static: the app's whole image

    def scratch(spec: dict[str, object]) -> None:
        spec["root"] = {"path": str(rootfs), "readonly": True}
        spec["mounts"] = [m for m in spec["mounts"]  # type: ignore[attr-defined]
                          if m["destination"] in ("/proc", "/dev")]

    bundle = rig.bundle(
        ["/busybox", "sh", "-c",
         f"/busybox wget -q -O - http://127.0.0.1:{PORT}/ && /busybox sleep 1000"],
        env=["RETINUE_SERVICES=web"], edit=scratch,
    )
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    # The gate held the entrypoint until nginx listened: its very first request succeeds.
    wait_for(lambda: "hello" in (rig.base / f"{container_id}.out").read_text())
    assert (rig.base / f"{container_id}.out").read_text() == "hello from the nginx sidecar\n"
    sid = f"{container_id}.web"
    assert siblings(rig) == [sid]
    state = sibling_state(rig, sid)
    annotations = state["annotations"]
    assert isinstance(annotations, dict)
    assert annotations["io.retinue.sidecar-of"] == container_id
    app_pid = rig.state(container_id)["pid"]  # type: ignore[index]
    side_pid = state["pid"]
    # Its network, IPC and UTS namespaces are the app's; its PID and mount namespaces its own.
    for ns, same in (("net", True), ("ipc", True), ("uts", True), ("pid", False),
                     ("mnt", False)):
        assert (os.readlink(f"/proc/{app_pid}/ns/{ns}")
                == os.readlink(f"/proc/{side_pid}/ns/{ns}")) is same, ns
    # Its own cgroup beside the app's, with its limits.
    with open(f"/proc/{side_pid}/cgroup") as f:
        line = next(x for x in f.read().splitlines() if ":memory:" in x)
    path = line.split(":", 2)[2]
    assert path.endswith(".retinue-web")
    limit = Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read_text()
    assert int(limit) == 64 << 20
    assert Path(f"/sys/fs/cgroup/pids{path}/pids.max").read_text().strip() == "32"
    status = rig.service_status(container_id, "web")
    assert status["state"] == "ready"
    assert status.get("placement") == "container"
    assert str(status.get("image", "")).startswith("sha256:")
    assert status["resources"] == {"memory": 64 << 20, "cpu": 0.0, "pids": 32}
    table = rig.retinue("status", container_id).stdout
    assert f"web (sidecar {status['image'][7:19]})  ready" in table, table
    log = rig.service_log(container_id, "web")
    assert "nginx/1.22" in log or "nginx/" in log, log
    # The app stops first; the sidecar after it; nothing of it is left.
    assert rig.rt("kill", container_id, "KILL").returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped", timeout=20)
    wait_for(lambda: siblings(rig) == [], timeout=20)
    assert rig.rt("delete", container_id).returncode == 0
    assert cgroup_dirs_named(f"{container_id}.retinue-") == []


HOG = (
    'placement = "container"\nimage = "busybox"\n'
    "command = [\"sh\", \"-c\", \"echo hog-start; x=$(head -c 300000000 /dev/zero | tr '\\\\0' a); "
    'echo survived"]\n'
    '[resources]\nmemory = "16M"\n'
    '[restart]\npolicy = "always"\ndelay = "100ms"\nburst = 100\n'
)


def test_a_sidecar_past_its_memory_limit_is_oom_killed_and_restarted_the_app_untouched(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    setup(rig, layouts, "busybox")
    sidecar(rig, "hog", HOG)
    bundle = rig.bundle(main_args(f"ev main-start; {FOREVER}"), env=["RETINUE_SERVICES=hog"])
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: rig.service_status(container_id, "hog")["restarts"] >= 2, timeout=60)
    log = rig.service_log(container_id, "hog")
    assert log.count("hog-start") >= 2
    # Its child was OOM-killed; retinue-init, the sibling's PID 1, exits 128 + 9.
    assert "exited with status 137" in log, log
    assert "out of memory: the kernel killed 1 process(es) at its memory limit (16M)" in log, log
    assert "survived" not in log
    assert rig.runc_status(container_id) == "running"
    assert [w for _, w in rig.events()].count("main-start") == 1
    assert rig.rt("delete", "--force", container_id).returncode == 0
    wait_for(lambda: siblings(rig) == [], timeout=20)


IDLE = 'placement = "container"\nimage = "busybox"\ncommand = ["sleep", "1000"]\n'


def test_a_sidecar_lands_beside_the_apps_recorded_cgroup_after_something_moved_init(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    """runtime-tools' validation moves a created container's init before start; the sidecar's
    cgroup goes beside the app's cgroup as runc recorded it (where the app's accounting and,
    under CRI, the pod's are), not beside wherever init happens to be."""
    setup(rig, layouts, "busybox")
    sidecar(rig, "idle", IDLE)
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=idle"])
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    init = int(rig.state(container_id)["pid"])  # type: ignore[index]

    def memory_cgroup(pid: int) -> str:
        with open(f"/proc/{pid}/cgroup") as f:
            return next(x for x in f.read().splitlines() if ":memory:" in x).split(":", 2)[2]

    recorded = memory_cgroup(init)
    memory = Path("/sys/fs/cgroup/memory")
    elsewhere = memory / f"retinue-test-moved-{container_id}"
    elsewhere.mkdir()
    try:
        (elsewhere / "cgroup.procs").write_text(str(init))
        assert memory_cgroup(init) != recorded
        r = rig.rt("start", container_id)
        assert r.returncode == 0, (r.stderr, rig.log_entries())
        status = rig.service_status(container_id, "idle")
        assert status["state"] == "ready", (status, rig.service_log(container_id, "idle"))
        side_pid = int(sibling_state(rig, f"{container_id}.idle")["pid"])  # type: ignore[call-overload]
        assert memory_cgroup(side_pid) == f"{recorded}.retinue-idle"
    finally:
        assert rig.rt("delete", "--force", container_id).returncode == 0
        wait_for(lambda: siblings(rig) == [], timeout=20)
        deadline = time.monotonic() + 10
        while elsewhere.exists():
            try:
                elsewhere.rmdir()
            except OSError:
                assert time.monotonic() < deadline, (elsewhere / "cgroup.procs").read_text()
                time.sleep(0.05)
    assert cgroup_dirs_named(f"{container_id}.retinue-") == []
    assert cgroup_dirs_named(f"retinue-test-moved-{container_id}") == []


def test_two_containers_share_one_unpacked_image_and_rm_refuses_it(
    rig: Rig, layouts: dict[str, Path]
) -> None:
    images = setup(rig, layouts, "busybox")
    sidecar(rig, "idle", IDLE)
    ids = ["share-a", "share-b"]
    for cid in ids:
        bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=idle"])
        assert rig.create(cid, bundle).returncode == 0, rig.log_entries()
        assert rig.rt("start", cid).returncode == 0, rig.log_entries()
    wait_for(lambda: sorted(siblings(rig)) == [f"{c}.idle" for c in ids])
    roots = set()
    for cid in ids:
        pid = sibling_state(rig, f"{cid}.idle")["pid"]
        st = os.stat(f"/proc/{pid}/root/bin/busybox")
        roots.add((st.st_dev, st.st_ino))
    assert len(roots) == 1  # one file on disk, seen by both
    assert len(os.listdir(images / "sha256")) == 1
    r = rig.retinue("image", "rm", "busybox")
    assert r.returncode == 1 and "in use by 2 container(s)" in r.stderr, r.stderr
    for cid in ids:
        assert rig.rt("delete", "--force", cid).returncode == 0
    wait_for(lambda: siblings(rig) == [], timeout=20)
    r = rig.retinue("image", "rm", "busybox")
    assert r.returncode == 0, r.stderr
    assert os.listdir(images / "sha256") == []


@pytest.mark.parametrize("remover", ["gc", "delete"])
def test_the_sidecar_of_a_killed_supervisor_is_removed(
    rig: Rig, container_id: str, layouts: dict[str, Path], remover: str
) -> None:
    setup(rig, layouts, "busybox")
    sidecar(rig, "idle", IDLE)
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=idle"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: siblings(rig) == [f"{container_id}.idle"])
    r = rig.retinue("gc")
    assert r.returncode == 0 and r.stdout == ""  # supervised: not an orphan
    for pid in rig.supervisor_pids(container_id):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not rig.supervisor_pids(container_id))
    if remover == "gc":
        r = rig.retinue("gc")
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"removed sidecar {container_id}.idle\n"
        assert siblings(rig) == []
    assert rig.rt("delete", "--force", container_id).returncode == 0
    assert siblings(rig) == []


def test_nothing_is_left_after_many_cycles(
    rig: Rig, layouts: dict[str, Path]
) -> None:
    setup(rig, layouts, "busybox")
    sidecar(rig, "idle", IDLE + '[resources]\nmemory = "8M"\n')
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=idle"])
    started = time.monotonic()
    for i in range(20):
        cid = f"cycle-{i}"
        assert rig.create(cid, bundle).returncode == 0, rig.log_entries()
        assert rig.rt("start", cid).returncode == 0, rig.log_entries()
        assert siblings(rig) == [f"{cid}.idle"]
        assert rig.rt("delete", "--force", cid).returncode == 0
        assert siblings(rig) == []
    print(f"20 cycles in {time.monotonic() - started:.1f}s")
    assert cgroup_dirs_named(".retinue-idle") == []
    assert os.listdir(rig.state_dir / "sidecars") == []


SHIPPER = (
    'placement = "container"\nimage = "busybox"\nshare = ["/shared"]\n'
    "command = [\"sh\", \"-c\", \"trap 'echo flushed; exit 0' TERM; "
    "until head -c 100 /shared/job.out; do sleep 0.05; done; echo; sleep 1000 & wait\"]\n"
)


def test_a_job_whose_shipper_sidecar_reads_its_output_and_flushes_after_it(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    setup(rig, layouts, "busybox")
    sidecar(rig, "shipper", SHIPPER)
    bundle = rig.bundle(main_args("echo job-output > /shared/job.out; sleep 0.3; exit 3"),
                        env=["RETINUE_SERVICES=shipper"])
    out_path = rig.base / "run.out"
    with open(out_path, "w") as out:
        proc = subprocess.run(
            rig.rt_argv("run", "--bundle", str(bundle), container_id),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=60,
        )
    assert proc.returncode == 3, out_path.read_text()
    log = rig.service_log(container_id, "shipper")
    # It read the app's file through `share`, then was stopped after the job had exited.
    assert log.index("job-output") < log.index("stopping with SIGTERM") < log.index("flushed")
    assert siblings(rig) == []
    # Read-only: the sidecar cannot write into the app's files.
    assert not (rig.shared / "from-sidecar").exists()


def test_a_shared_path_never_resolves_outside_the_app_root(tmp_path: Path) -> None:
    from retinue.supervisor.apphandles import ShareError, resolve_in_root

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("app's own\n")
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../etc", root / "up")
    os.symlink("loop", root / "loop")
    assert resolve_in_root(str(root), "/abs/passwd") == "/etc/passwd"
    assert resolve_in_root(str(root), "/up/passwd") == "/etc/passwd"
    assert resolve_in_root(str(root), "/../../etc") == "/etc"
    with pytest.raises(ShareError, match="share: /loop: too many symbolic links"):
        resolve_in_root(str(root), "/loop")
    with pytest.raises(ShareError, match="share: /nope: No such file or directory"):
        resolve_in_root(str(root), "/nope")


def test_an_exec_probe_runs_inside_the_sidecar(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    setup(rig, layouts, "busybox")
    sidecar(rig, "slow", 'placement = "container"\nimage = "busybox"\n'
            'command = ["sh", "-c", "sleep 0.5; echo > /tmp/up; sleep 1000"]\n'
            '[ready]\nexec = ["sh", "-c", "test -f /tmp/up"]\ninterval = "100ms"\n')
    bundle = rig.bundle(main_args(f"ev main-start; {FOREVER}"), env=["RETINUE_SERVICES=slow"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    began = time.monotonic()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    assert time.monotonic() - began >= 0.5  # the gate waited for the probe
    assert rig.service_status(container_id, "slow")["state"] == "ready"
    assert rig.rt("delete", "--force", container_id).returncode == 0
    assert siblings(rig) == []


def test_an_exec_service_past_its_memory_limit_is_oom_killed_in_its_sub_cgroup(
    rig: Rig, container_id: str
) -> None:
    """[resources] with exec placement: the service's sub-cgroup of the app's (runc exec
    --cgroup) gets the limits; the app, in the parent, is untouched."""
    rig.service("hog", "echo hog-start; x=$(head -c 300000000 /dev/zero | tr '\\0' a)\n"
                "echo survived\n",
                toml='[resources]\nmemory = "16M"\npids = 20\n'
                     '[restart]\npolicy = "always"\ndelay = "100ms"\nburst = 100\n')
    bundle = rig.bundle(main_args(f"ev main-start; {FOREVER}"), env=["RETINUE_SERVICES=hog"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: rig.service_status(container_id, "hog")["restarts"] >= 2, timeout=60)
    log = rig.service_log(container_id, "hog")
    assert "killed by SIGKILL" in log and "survived" not in log, log
    app_pid = rig.state(container_id)["pid"]  # type: ignore[index]
    with open(f"/proc/{app_pid}/cgroup") as f:
        path = next(x for x in f.read().splitlines() if ":memory:" in x).split(":", 2)[2]
    sub = Path(f"/sys/fs/cgroup/memory{path}/retinue-hog")
    assert int((sub / "memory.limit_in_bytes").read_text()) == 16 << 20
    assert int(Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read_text()) > 16 << 20
    assert rig.runc_status(container_id) == "running"
    assert [w for _, w in rig.events()].count("main-start") == 1
    assert rig.rt("delete", "--force", container_id).returncode == 0


def test_a_sidecar_joins_the_user_namespace_of_an_app_that_has_one(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    # The mapped root is "others" to the host's directories on the way to both roots.
    os.chmod(rig.base, 0o755)
    setup(rig, layouts, "busybox")
    sidecar(rig, "idle", IDLE)
    app_root = rig.base / "approot"
    imagekit.busybox_rootfs(app_root)
    for point in ("proc", "dev", "sys", "tmp", "shared", ".retinue"):
        (app_root / point).mkdir()
    for name in ("init", "init.sock"):
        (app_root / ".retinue" / name).touch()

    def userns(spec: dict[str, object]) -> None:
        spec["root"] = {"path": str(app_root), "readonly": True}
        linux = spec["linux"]
        assert isinstance(linux, dict)
        linux["namespaces"].append({"type": "user"})
        for key in ("uidMappings", "gidMappings"):
            linux[key] = [{"containerID": 0, "hostID": 200000, "size": 65536}]

    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=idle"], edit=userns)
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    app_pid = rig.state(container_id)["pid"]  # type: ignore[index]
    side_pid = sibling_state(rig, f"{container_id}.idle")["pid"]
    for ns in ("user", "net"):
        assert os.readlink(f"/proc/{app_pid}/ns/{ns}") == os.readlink(f"/proc/{side_pid}/ns/{ns}")
    assert Path(f"/proc/{side_pid}/uid_map").read_text().split() == ["0", "200000", "65536"]
    assert rig.rt("delete", "--force", container_id).returncode == 0
    assert siblings(rig) == []


def test_a_sidecar_health_probe_runs_inside_it_and_restarts_it(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    setup(rig, layouts, "busybox")
    sidecar(rig, "flaky", 'placement = "container"\nimage = "busybox"\n'
            'command = ["sh", "-c", "echo > /tmp/ok; sleep 0.5; rm /tmp/ok; sleep 1000"]\n'
            '[health]\nexec = ["sh", "-c", "test -f /tmp/ok"]\ninterval = "100ms"\n'
            'failures = 2\n[restart]\ndelay = "100ms"\n')
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=flaky"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: rig.service_status(container_id, "flaky")["restarts"] >= 1, timeout=20)
    log = rig.service_log(container_id, "flaky")
    assert "health check failed 2 times in a row" in log, log
    assert rig.runc_status(container_id) == "running"
    assert rig.rt("delete", "--force", container_id).returncode == 0
    assert siblings(rig) == []


def test_a_sidecar_that_cannot_start_says_why_in_its_log(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    """Issue 15 item 15: every failed start says its reason in the service's log, beside the
    "restarting in" that follows it (a share that is not there, runc's own error)."""
    setup(rig, layouts, "busybox")
    restart = 'required = false\n[restart]\npolicy = "always"\ndelay = "100ms"\nburst = 50\n'
    sidecar(rig, "noshare", IDLE + 'share = ["/not-in-the-app"]\n' + restart)
    # runc refuses it: the working directory is a file.
    sidecar(rig, "badcwd", IDLE + 'working_dir = "/bin/busybox"\n' + restart)
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=noshare,badcwd"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    for name in ("noshare", "badcwd"):
        wait_for(lambda n=name: rig.service_log(container_id, n).count("restarting in") >= 2,
                 timeout=30)
    noshare = rig.service_log(container_id, "noshare").splitlines()
    badcwd = rig.service_log(container_id, "badcwd").splitlines()
    # The reason is a retinue line of its own, just before each "restarting in".
    for lines, reason in ((noshare, "share: /not-in-the-app: No such file or directory"),
                          (badcwd, "not a directory")):
        for i, line in enumerate(lines):
            if "restarting in" in line:
                assert i > 0 and lines[i - 1].startswith("retinue: "), lines
                assert "could not be started" in lines[i - 1] and reason in lines[i - 1], lines
    assert rig.rt("delete", "--force", container_id).returncode == 0
    wait_for(lambda: siblings(rig) == [], timeout=20)


def test_a_share_swapped_for_a_symlink_never_gives_the_sidecar_a_host_directory(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    """Issue 15 item 2: the app swaps its shared directory with a symlink to a host directory,
    over and over, while its sidecar restarts; the sidecar never sees the host's file."""
    setup(rig, layouts, "busybox")
    secret = rig.base / "root-only"
    secret.mkdir(mode=0o700)
    (secret / "marker").write_text("HOST-MARKER\n")
    (secret / "marker").chmod(0o600)
    sidecar(rig, "reader", 'placement = "container"\nimage = "busybox"\nshare = ["/shared/d"]\n'
            'command = ["sh", "-c", "cat /shared/d/marker /shared/d/own 2>/dev/null; exit 0"]\n'
            'required = false\n'
            '[restart]\npolicy = "always"\ndelay = "10ms"\nmax_delay = "20ms"\nburst = 100000\n')
    swap = (f"mkdir -p /shared/d; echo APP-OWN > /shared/d/own; while :; do "
            f"mv /shared/d /shared/d.real; ln -s {secret} /shared/d; "
            f"rm /shared/d; mv /shared/d.real /shared/d; done")
    bundle = rig.bundle(main_args(swap), env=["RETINUE_SERVICES=reader"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    began = time.monotonic()
    starts = 0
    while time.monotonic() - began < 40:
        starts = rig.service_status(container_id, "reader")["restarts"]
        log = rig.service_log(container_id, "reader")
        if starts >= 150 or "HOST-MARKER" in log:
            break
        time.sleep(0.5)
    log = rig.service_log(container_id, "reader")
    leaks, own = log.count("HOST-MARKER"), log.count("APP-OWN")
    print(f"{starts} starts in {time.monotonic() - began:.1f}s: {leaks} saw the host's file, "
          f"{own} the app's own directory")
    assert rig.rt("delete", "--force", container_id).returncode == 0
    wait_for(lambda: siblings(rig) == [], timeout=20)
    assert leaks == 0, log[-2000:]
    assert own > 0, log[-2000:]  # the race was run: shares did reach the sidecar


HOLDING_RUNC = """#!/bin/sh
# runc, except that a sidecar's STEP (delete or create) waits while GATE/hold exists, and a
# sidecar's create records the namespaces the sidecar joined in GATE/joined.
case " $* " in
*" --root SIDEROOT STEP "*)
  : > GATE/waiting
  while [ -e GATE/hold ]; do sleep 0.02; done;;
esac
case " $* " in
*" --root SIDEROOT create "*)
  prev=
  for arg in "$@"; do [ "$prev" = --pid-file ] && pid_file=$arg; prev=$arg; done
  RUNC "$@"; rc=$?
  if [ $rc = 0 ]; then
    pid=$(cat "$pid_file")
    { readlink /proc/$pid/ns/net; readlink /proc/$pid/ns/uts; } > GATE/joined.tmp
    mv GATE/joined.tmp GATE/joined
  fi
  exit $rc;;
esac
exec RUNC "$@"
"""


def take_pid(pid: int) -> subprocess.Popen[bytes]:
    """A process with its own network and UTS namespaces that has pid `pid` (free now)."""
    mine = os.readlink("/proc/self/ns/net")
    for _ in range(300):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(["unshare", "-n", "-u", "sleep", "120"])
        if proc.pid == pid:
            wait_for(lambda: os.readlink(f"/proc/{pid}/ns/net") != mine)
            return proc
        proc.kill()
        proc.wait()
    raise AssertionError(f"could not get pid {pid} again")


@pytest.mark.parametrize("step", ["delete", "create"])
def test_a_sidecar_restarting_after_the_apps_init_died_never_joins_the_pids_next_owner(
    rig: Rig, container_id: str, layouts: dict[str, Path], step: str
) -> None:
    """Issue 15 item 8: the sidecar restarts; while the lower runtime deletes its last run
    (before anything of the app is opened) or creates the new one, the app's PID 1 dies and
    its pid goes to another process. The sidecar never joins that process's namespaces, and
    the start is refused with the reason."""
    images = setup(rig, layouts, "busybox")
    gate = rig.base / "gate"
    gate.mkdir()
    wrapper = rig.base / "holding-runc"
    wrapper.write_text(HOLDING_RUNC.replace("GATE", str(gate)).replace("RUNC", RUNC)
                       .replace("SIDEROOT", str(rig.state_dir / "sidecars")).replace("STEP", step))
    wrapper.chmod(0o755)
    rig.write_config(f'image_dir = "{images}"\nruntime = "{wrapper}"\n')
    sidecar(rig, "idle", IDLE + 'required = false\n[restart]\npolicy = "always"\ndelay = "100ms"\n')
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=idle"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    sid = f"{container_id}.idle"
    wait_for(lambda: siblings(rig) == [sid] and sibling_state(rig, sid)["status"] == "running")
    app_pid = rig.state(container_id)["pid"]  # type: ignore[index]
    app_net = os.readlink(f"/proc/{app_pid}/ns/net")
    (gate / "hold").touch()
    (gate / "waiting").unlink(missing_ok=True)
    (gate / "joined").unlink()  # the first run's
    os.kill(int(sibling_state(rig, sid)["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    wait_for(lambda: (gate / "waiting").exists(), timeout=20)
    os.kill(app_pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{app_pid}"), timeout=20)
    impostor = take_pid(app_pid)
    try:
        theirs = [os.readlink(f"/proc/{app_pid}/ns/{ns}") for ns in ("net", "uts")]
        assert theirs[0] != app_net
        (gate / "hold").unlink()
        wait_for(lambda: not rig.supervisor_pids(container_id), timeout=30)
        joined = (gate / "joined").read_text().split() if (gate / "joined").exists() else []
        print(f"app {app_net}, next owner of pid {app_pid} {theirs}, sidecar joined {joined}")
        assert not set(joined) & set(theirs), (joined, theirs)
        if step == "delete":
            assert joined == []  # refused before anything was created
        log = rig.service_log(container_id, "idle")
        assert f"the app container's init (pid {app_pid}) has exited" in log, log
    finally:
        impostor.kill()
        impostor.wait()
    assert rig.rt("delete", "--force", container_id).returncode == 0
    assert siblings(rig) == []


@pytest.mark.parametrize("remover", ["gc", "delete"])
def test_a_share_staged_by_a_killed_supervisor_is_unmounted_and_the_apps_files_kept(
    rig: Rig, container_id: str, layouts: dict[str, Path], remover: str
) -> None:
    """Issue 15 item 2: a share is mounted on its staging point only while the sibling is
    created; a supervisor killed then leaves it, and `retinue gc` or the delete unmounts it
    without removing anything through it."""
    images = setup(rig, layouts, "busybox")
    gate = rig.base / "gate"
    gate.mkdir()
    wrapper = rig.base / "holding-runc"
    wrapper.write_text(HOLDING_RUNC.replace("GATE", str(gate)).replace("RUNC", RUNC)
                       .replace("SIDEROOT", str(rig.state_dir / "sidecars"))
                       .replace("STEP", "create"))
    wrapper.chmod(0o755)
    rig.write_config(f'image_dir = "{images}"\nruntime = "{wrapper}"\n')
    (rig.shared / "d").mkdir()
    (rig.shared / "d" / "own").write_text("APP-OWN\n")
    sidecar(rig, "reader", IDLE + 'share = ["/shared/d"]\nrequired = false\n')
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=reader"])
    (gate / "hold").touch()
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    starting = subprocess.Popen(rig.rt_argv("start", container_id), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (gate / "waiting").exists(), timeout=20)
    staged = str(rig.container_dir(container_id) / "sidecars" / "reader" / "share" / "0")
    assert mounts_under(staged) == [staged]
    for pid in rig.supervisor_pids(container_id):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not rig.supervisor_pids(container_id))
    (gate / "hold").unlink()
    starting.wait(timeout=30)
    if remover == "gc":
        r = rig.retinue("gc")
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"unmounted share {staged}\n"
        assert mounts_under(staged) == []
    assert rig.rt("delete", "--force", container_id).returncode == 0
    assert mounts_under(str(rig.base)) == []
    assert siblings(rig) == []
    assert (rig.shared / "d" / "own").read_text() == "APP-OWN\n"


def test_a_share_on_the_apps_root_reaches_the_sidecar_and_a_symlink_in_it_stays_inside(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    """A share that is on the app's root (no bind mount of its own): opened below the root's
    host directory, and a symlink in the path resolved against the app's root."""
    setup(rig, layouts, "busybox")
    app_root = rig.base / "approot"
    imagekit.busybox_rootfs(app_root)
    for point in ("proc", "dev", "sys", "tmp", "shared", ".retinue"):
        (app_root / point).mkdir(exist_ok=True)
    for name in ("init", "init.sock"):
        (app_root / ".retinue" / name).touch()
    (app_root / "srv" / "conf").mkdir(parents=True)
    (app_root / "srv" / "conf" / "app.conf").write_text("APP-CONF\n")
    os.symlink("/srv/conf", app_root / "conf")  # absolute: the app's /srv, not the host's

    def own_root(spec: dict[str, object]) -> None:
        spec["root"] = {"path": str(app_root), "readonly": True}

    sidecar(rig, "reader", 'placement = "container"\nimage = "busybox"\nshare = ["/conf"]\n'
            'command = ["sh", "-c", "head -1 /conf/app.conf; sleep 1000"]\n')
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=reader"], edit=own_root)
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: "APP-CONF" in rig.service_log(container_id, "reader"))
    assert rig.rt("delete", "--force", container_id).returncode == 0
    assert siblings(rig) == []


def as_nobody(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    # Through a shell: setpriv keeps its capabilities until its own execve, so a path it
    # execs directly is walked with root's.
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
         "/bin/sh", "-c", 'exec "$@"', "sh", *map(str, argv)],
        capture_output=True, text=True, timeout=30,
    )


def test_the_image_store_is_root_only_and_a_sidecar_still_gets_its_image_as_it_is(
    rig: Rig, container_id: str
) -> None:
    # An image with what a host user must never reach: setuid and setgid root programs (the
    # host's own `id` runs from the store with the host's libraries), a device node and a
    # world-writable directory.
    root = imagekit.busybox_rootfs(rig.base / "hostile", ("sh", "sleep", "stat", "touch"))
    (root / "usr" / "bin").mkdir(parents=True)
    for name, mode in (("id", 0o4755), ("gid", 0o2755)):
        shutil.copy("/usr/bin/id", root / "usr" / "bin" / name)
        os.chmod(root / "usr" / "bin" / name, mode)
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(root / "null", 0o666)
    (root / "drop").mkdir(mode=0o777)
    os.chmod(root / "drop", 0o777)
    layout = imagekit.oci_layout(root, rig.base / "hostile-layout", ["sleep", "1000"])
    images = rig.base / "images"
    rig.write_config(f'image_dir = "{images}"\n')
    r = rig.retinue("image", "import", "hostile", str(layout), timeout=120)
    assert r.returncode == 0, r.stderr
    rootfs = images / "sha256" / r.stdout.split()[1][7:] / "rootfs"
    # Every directory above the store lets others through: only the store itself may stop them.
    os.chmod(rig.base, 0o755)
    for parent in images.parents:
        assert parent.stat().st_mode & 0o001, parent
    def nobody_is_kept_out() -> None:
        assert as_nobody("ls", images).returncode != 0
        ran = as_nobody(rootfs / "usr" / "bin" / "id")
        assert ran.returncode != 0 and "euid=0" not in ran.stdout, ran
        assert "egid=0" not in as_nobody(rootfs / "usr" / "bin" / "gid").stdout
        assert as_nobody("stat", rootfs / "null").returncode != 0
        assert as_nobody("touch", rootfs / "drop" / "x").returncode != 0
        assert not (rootfs / "drop" / "x").exists()

    nobody_is_kept_out()
    assert stat.S_IMODE(images.stat().st_mode) == 0o700
    # A store an older version left open to everyone is narrowed when a sidecar starts from it.
    for path in (images, images / "sha256", images / "names"):
        os.chmod(path, 0o755)
    sidecar(rig, "hostile", 'placement = "container"\nimage = "hostile"\nuser = "65534:65534"\n')
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=hostile"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    assert stat.S_IMODE(images.stat().st_mode) == 0o700
    nobody_is_kept_out()
    # A host user with the sidecar's own uid reaches its root through /proc/PID/root, as for
    # any container without a user namespace; the kernel honours setuid bits only inside the
    # mount's own namespace, so from there they give nothing.
    # (Through the service's process: the sidecar's retinue-init is non-dumpable, so its own
    # /proc/PID/root is closed to every host user.)
    sid = f"{container_id}.hostile"
    init_pid = sibling_state(rig, sid)["pid"]
    assert as_nobody("ls", f"/proc/{init_pid}/root/").returncode != 0
    with open(f"/proc/{init_pid}/task/{init_pid}/children") as f:
        side_pid = int(f.read().split()[0])
    ran = as_nobody(f"/proc/{side_pid}/root/usr/bin/id")
    assert ran.returncode == 0 and "euid=0" not in ran.stdout, ran
    assert "egid=0" not in as_nobody(f"/proc/{side_pid}/root/usr/bin/gid").stdout

    def inside(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNC, "--root", str(rig.state_dir / "sidecars"), "exec", sid,
                               *argv], capture_output=True, text=True, timeout=30)

    listed = inside("stat", "-c", "%n %a %F %t,%T", "/usr/bin/id", "/usr/bin/gid", "/drop",
                    "/null")
    assert listed.stdout.splitlines() == [
        "/usr/bin/id 4755 regular file 0,0", "/usr/bin/gid 2755 regular file 0,0",
        "/drop 777 directory 0,0", "/null 666 character special file 1,3",
    ], listed
    # ... and a read-only one: no sidecar can leave anything there for the next.
    wrote = inside("touch", "/drop/x")
    assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr, wrote
    assert not (rootfs / "drop" / "x").exists()
    assert rig.rt("delete", "--force", container_id).returncode == 0
    assert siblings(rig) == []


FLUSHER = (
    'placement = "container"\nimage = "busybox"\n'
    "command = [\"sh\", \"-c\", \"trap 'echo flushed; exit 0' TERM; echo up; "
    'sleep 1000 & wait"]\n'
)


def test_an_all_sidecar_container_keeps_its_entrypoint_as_pid_1(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    """No exec service: no retinue-init. The app's own entrypoint is PID 1 in its PID namespace;
    the engine's SIGTERM reaches it at once; the supervisor sees it exit (its pidfd) and only
    then stops the sidecar, gracefully; the exit code is the main's own."""
    setup(rig, layouts, "busybox")
    sidecar(rig, "flusher", FLUSHER)
    body = f"tr '\\0' ' ' < /proc/1/cmdline > /shared/pid1; ev main; {FOREVER}"
    bundle = rig.bundle(main_args(body), env=["RETINUE_SERVICES=flusher"])
    original = json.loads((bundle / "config.json").read_text())["process"]["args"]
    r = rig.retinue("plan", "--id", container_id, "--root", str(rig.root), str(bundle))
    assert r.returncode == 0, r.stderr
    assert "# init: none; the container's entrypoint stays PID 1" in r.stdout, r.stdout
    assert '+      "/.retinue/init",' not in r.stdout  # the app's args (the sidecar has one)
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    edited = json.loads((bundle / "config.json").read_text())
    assert edited["process"]["args"] == original
    assert "io.retinue.init" not in edited["annotations"]
    assert all(m["destination"] != "/.retinue/init" for m in edited["mounts"])
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: "main" in [w for _, w in rig.events()])
    assert (rig.shared / "pid1").read_text().startswith("sh -c ")
    wait_for(lambda: "up" in rig.service_log(container_id, "flusher"))
    t0 = time.monotonic()
    assert rig.rt("kill", container_id, "TERM").returncode == 0
    assert time.monotonic() - t0 < 0.5  # kill does not wait for the sidecar
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    assert "main-term" in [w for _, w in rig.events()]
    # Nobody deleted the container yet: the supervisor stopped the sidecar on the main's exit.
    wait_for(lambda: siblings(rig) == [], timeout=20)
    log = rig.service_log(container_id, "flusher")
    assert log.index("stopping with SIGTERM") < log.index("flushed"), log
    assert rig.rt("delete", container_id).returncode == 0
    assert rig.errors() == [] and rig.warnings() == []


def test_fate_sharing_without_init_ends_the_main_with_its_own_code(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    setup(rig, layouts, "busybox")
    sidecar(rig, "upstream", 'placement = "container"\nimage = "busybox"\n'
            'command = ["sh", "-c", "sleep 0.5; exit 1"]\non_failure = "stop-container"\n'
            '[restart]\npolicy = "no"\n')
    bundle = rig.bundle(main_args('trap "ev main-term; exit 5" TERM; ev main; '
                                  "sleep 1000 & wait"), env=["RETINUE_SERVICES=upstream"])
    out = rig.base / "run.out"
    with open(out, "w") as f:
        proc = subprocess.run(rig.rt_argv("run", "--bundle", str(bundle), container_id),
                              stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                              timeout=60)
    # No init to report a distinct code: the main's SIGTERM handler chose it.
    assert proc.returncode == 5, out.read_text()
    assert "main-term" in [w for _, w in rig.events()]
    assert "stopping the container" in rig.service_log(container_id, "upstream")
    assert siblings(rig) == []


def test_init_true_still_injects_init_with_sidecars_only(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    setup(rig, layouts, "busybox")
    sidecar(rig, "idle", IDLE)
    rig.policy('[[attach]]\nname = "tini-like"\nwhen.always = true\ninit = true\n'
               'services = ["idle"]\n')
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"))
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    edited = json.loads((bundle / "config.json").read_text())
    assert edited["process"]["args"][0] == "/.retinue/init"
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: "main" in [w for _, w in rig.events()])
    assert rig.rt("kill", container_id, "TERM").returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    assert siblings(rig) == []  # init waited for the sidecar's stop before it exited
    assert rig.rt("delete", container_id).returncode == 0


def test_without_init_the_stop_budget_caps_a_sidecar_that_ignores_sigterm(
    rig: Rig, container_id: str, layouts: dict[str, Path]
) -> None:
    setup(rig, layouts, "busybox")
    rig.write_config(f'image_dir = "{rig.base / "images"}"\nstop_budget = "1s"\n')
    sidecar(rig, "stubborn", 'placement = "container"\nimage = "busybox"\n'
            "command = [\"sh\", \"-c\", \"trap '' TERM; echo up; while :; do sleep 1; done\"]\n"
            '[stop]\ntimeout = "30s"\n')
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=stubborn"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: "up" in rig.service_log(container_id, "stubborn"))
    assert rig.rt("kill", container_id, "TERM").returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    t0 = time.monotonic()
    wait_for(lambda: siblings(rig) == [], timeout=20)
    assert time.monotonic() - t0 < 5  # the budget (1 s), not the service's 30 s stop timeout
    assert "stop budget of 1s spent: killed" in rig.service_log(container_id, "stubborn")
    assert rig.rt("delete", container_id).returncode == 0
