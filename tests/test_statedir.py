"""The state directory: names, removal, modes, and what of it a container is given."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
from retinue.host import statedir


@pytest.mark.parametrize(
    "root", ["/", "/run/runc", "/var/run/docker/runtime-runc/moby", "/a%2Fb/c%25d", "/x%y"]
)
def test_root_key_round_trip(root: str) -> None:
    key = statedir.root_key(root)
    assert "/" not in key
    assert statedir.root_from_key(key) == root


@pytest.mark.parametrize("container_id", ["", ".", "..", "a/b", "ü", "a b"])
def test_ids_that_could_name_another_path_are_refused(container_id: str) -> None:
    assert not statedir.valid_id(container_id)


def _deep(top: Path, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(depth):
        os.mkdir("d", dir_fd=fd)
        if i % 100 == 0:
            os.close(os.open(f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)


def test_remove_tree_survives_any_depth(tmp_path: Path) -> None:
    """shutil.rmtree raised RecursionError at 1,500 levels; descriptors stay bounded too."""
    top = tmp_path / "state"
    top.mkdir()
    _deep(top, 5000)
    for i in range(50):
        (top / f"wide{i}" / "x").mkdir(parents=True)
    before = len(os.listdir("/proc/self/fd"))
    statedir.remove_tree(str(top))
    assert not top.exists()
    assert len(os.listdir("/proc/self/fd")) == before
    statedir.remove_tree(str(top))  # already gone: nothing to do


def test_remove_tree_follows_no_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep").write_text("x")
    top = tmp_path / "state"
    (top / "a").mkdir(parents=True)
    (top / "a" / "link").symlink_to(outside)
    (top / "link").symlink_to(outside / "keep")
    statedir.remove_tree(str(top))
    assert not top.exists()
    assert (outside / "keep").read_text() == "x" and (outside / "sub").is_dir()
    # A symlink given as the tree itself is removed, not entered.
    link = tmp_path / "link"
    link.symlink_to(outside)
    statedir.remove_tree(str(link))
    assert not os.path.lexists(link) and (outside / "keep").exists()


def test_private_dir_makes_every_level_root_only(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    statedir.private_dir(str(deep))
    for d in (tmp_path / "a", tmp_path / "a" / "b", deep):
        assert d.stat().st_mode & 0o777 == 0o700, d
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    statedir.private_dir(str(old))
    assert old.stat().st_mode & 0o777 == 0o700


def test_a_bundle_edited_for_the_old_notify_directory_is_cleaned() -> None:
    """A bundle reused from a create by an older version (the whole notify directory mounted
    read-write at /run/retinue) gets the per-socket, read-only mounts instead."""
    from retinue import layout
    from retinue.spec import edits

    svc = {"name": "ntf", "files": "/srv/ntf", "ready": "notify"}
    old_mount = {"destination": "/run/retinue", "type": "bind", "source": "/run/retinue/x/notify",
                 "options": ["rbind", "nosuid", "nodev", "noexec"]}
    spec = {"mounts": [old_mount],
            "annotations": {layout.MOUNTS_RECORD_ANNOTATION: "/retinue/ntf,/run/retinue"}}
    edited = edits.edit(spec, [], "/bin/retinue-hook", "/run/retinue/k/c", [svc])
    assert [m["destination"] for m in edited["mounts"]] == ["/retinue/ntf", "/run/retinue/ntf.sock"]
    assert edited["mounts"][1] == {
        "destination": "/run/retinue/ntf.sock", "type": "bind",
        "source": "/run/retinue/k/c/notify/ntf.sock",
        "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
    }
    assert edits.edit(edited, [], "/bin/retinue-hook", "/run/retinue/k/c", [svc]) is edited


def test_registry_records_what_a_container_was_created_with(tmp_path: Path) -> None:
    cid = f"reg-{uuid.uuid4().hex[:12]}"
    root = str(tmp_path / "root")
    first = statedir.container_dir(str(tmp_path / "state"), root, cid)
    statedir.add_marker(first)
    entry = statedir.lookup(root, cid)
    assert entry is not None and entry.container_dir == first and entry.lower == ""
    statedir.register(first, "/etc/x.toml", True, "/usr/sbin/runc", "/var/log/x")
    entry = statedir.lookup(root, cid)
    assert entry is not None
    assert (entry.container_dir, entry.config, entry.explicit, entry.lower, entry.log_dir) == (
        first, "/etc/x.toml", True, "/usr/sbin/runc", "/var/log/x"
    )
    assert stat.S_IMODE(os.stat(statedir.REGISTRY).st_mode) == 0o700
    assert os.listdir(os.path.join(statedir.REGISTRY, cid)) == [statedir.root_key(root)]
    # Another state directory took the same id and root since: a late removal of the first
    # leaves the newer entry alone.
    second = statedir.container_dir(str(tmp_path / "other"), root, cid)
    statedir.register(second, "", False, "/usr/bin/crun", "/var/log/y")
    statedir.remove_marker(first)
    entry = statedir.lookup(root, cid)
    assert entry is not None and entry.lower == "/usr/bin/crun"
    statedir.remove_marker(second)
    assert statedir.lookup(root, cid) is None
    assert not os.path.exists(os.path.join(statedir.REGISTRY, cid))
