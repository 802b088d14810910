"""Issue 16 item 7 on real runc: a container with a user namespace (uid/gid mappings, as
`hostUsers: false` or `podman --userns` give it) with services attached.

The mapped root (container uid 0, host uid HOST_ROOT) makes the mount points of the attachments
(/.retinue, /run/retinue, the services' files) inside the rootfs: the rootfs here is a copy
chowned to it, as an idmapped or chowned image is on a node. A rootfs the mapped root cannot
write is refused with a message that says so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FOREVER, Rig, main_args, wait_for
from test_sidecar import layouts, setup, sibling_state, siblings, sidecar  # noqa: F401 (fixture)

HOST_ROOT = 300000
SIZE = 65536


def chowned_copy(src: Path, dst: Path, uid: int) -> Path:
    """The rootfs as the mapped root owns it (what `podman --userns=auto` does to an image)."""
    shutil.copytree(src, dst, symlinks=True)
    for root, dirs, files in os.walk(dst):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            os.lchown(p, uid + st.st_uid, uid + st.st_gid)
    os.lchown(dst, uid, uid)
    return dst


def with_userns(rootfs: Path) -> Callable[[dict[str, object]], None]:
    def edit(spec: dict[str, object]) -> None:
        spec["root"] = {"path": str(rootfs), "readonly": True}
        linux = spec["linux"]
        assert isinstance(linux, dict)
        linux["namespaces"].append({"type": "user"})
        for key in ("uidMappings", "gidMappings"):
            linux[key] = [{"containerID": 0, "hostID": HOST_ROOT, "size": SIZE}]
    return edit


@pytest.fixture
def mapped_rootfs(rig: Rig, rootfs_dir: Path) -> Path:
    # The mapped root is "others" to the host directories on the way to its rootfs.
    os.chmod(rig.base, 0o755)
    return chowned_copy(rootfs_dir, rig.base / "mapped-rootfs", HOST_ROOT)


def test_exec_service_in_a_user_namespace(rig: Rig, container_id: str,
                                          mapped_rootfs: Path) -> None:
    """The exec service runs as the mapped root, gates the entrypoint, and the container stops
    cleanly; retinue-init is PID 1 and finds its socket."""
    rig.service("hello", "ev hello-start $(id -u) $(cat /proc/self/uid_map); "
                         "echo > /tmp/hello.ready; exec sleep 1000",
                toml='[ready]\nfile = "/tmp/hello.ready"\n')
    bundle = rig.bundle(main_args("ev main-start $(id -u); " + FOREVER),
                        env=["RETINUE_SERVICES=hello"], edit=with_userns(mapped_rootfs))
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: "main-start 0" in [w for _, w in rig.events()])
    words = [w for _, w in rig.events()]
    started = next(w for w in words if w.startswith("hello-start"))
    assert started.split()[1:] == ["0", "0", str(HOST_ROOT), str(SIZE)], started
    assert rig.event_time(started) <= rig.event_time("main-start 0")
    assert rig.service_status(container_id, "hello")["state"] == "ready"
    pid = rig.state(container_id)["pid"]  # type: ignore[index]
    assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", str(HOST_ROOT), str(SIZE)]
    assert rig.rt("kill", container_id, "TERM").returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped", timeout=15)
    assert "main-term" in [w for _, w in rig.events()]
    assert rig.rt("delete", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: not rig.leftovers(container_id))


def test_rootfs_the_mapped_root_cannot_write_is_refused_clearly(
    rig: Rig, container_id: str, rootfs_dir: Path
) -> None:
    """The rootfs belongs to the host's root and has no /.retinue: the mapped root could not
    make the mount points. create fails naming the path and the mapping; nothing is left."""
    os.chmod(rig.base, 0o755)
    plain = rig.base / "host-rootfs"
    shutil.copytree(rootfs_dir, plain, symlinks=True)
    (plain / "shared").mkdir(exist_ok=True)  # the test's own mount: only retinue's are missing
    rig.service("hello", "exec sleep 1000")
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=hello"],
                        edit=with_userns(plain))
    r = rig.create(container_id, bundle)
    assert r.returncode != 0
    errors = rig.errors()
    assert errors, rig.log_entries()
    assert errors[-1].startswith(f"retinue: {plain}: the container has a user namespace (its "
                                 f"root is host uid {HOST_ROOT}) and /"), errors
    assert "belongs to uid 0 gid 0 (mode 0755)" in errors[-1], errors
    assert "chowned to 300000 or idmapped" in errors[-1], errors
    assert not rig.supervisor_pids(container_id)
    assert rig.runc_status(container_id) is None
    wait_for(lambda: not rig.leftovers(container_id))


def test_exec_service_and_sidecar_in_a_user_namespace(
    rig: Rig, container_id: str, mapped_rootfs: Path, layouts: dict[str, Path]  # noqa: F811
) -> None:
    """Both placements at once: the exec service inside the app, the sidecar in its own rootfs
    joining the app's user namespace (same mapping), both running before the entrypoint."""
    setup(rig, layouts, "busybox")
    sidecar(rig, "side", 'placement = "container"\nimage = "busybox"\n'
            'command = ["sh", "-c", "echo $(id -u) > /tmp/side; exec sleep 1000"]\n')
    rig.service("hello", "ev hello-start; exec sleep 1000")
    bundle = rig.bundle(main_args("ev main-start; " + FOREVER),
                        env=["RETINUE_SERVICES=hello,side"], edit=with_userns(mapped_rootfs))
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: "main-start" in [w for _, w in rig.events()])
    assert rig.event_time("hello-start") <= rig.event_time("main-start")
    app_pid = rig.state(container_id)["pid"]  # type: ignore[index]
    side_pid = sibling_state(rig, f"{container_id}.side")["pid"]
    assert os.readlink(f"/proc/{app_pid}/ns/user") == os.readlink(f"/proc/{side_pid}/ns/user")
    assert Path(f"/proc/{side_pid}/uid_map").read_text().split() == [
        "0", str(HOST_ROOT), str(SIZE)]
    assert {s["name"]: s["state"] for s in rig.status(container_id)["services"]} == {
        "hello": "ready", "side": "ready"}
    assert rig.rt("delete", "--force", container_id).returncode == 0
    assert siblings(rig) == []
    wait_for(lambda: not rig.leftovers(container_id))
