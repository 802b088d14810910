"""userns.check_mount_points: which mount points a user-namespaced container's root can make.

On real directories (the tests run as root and chown them); the end-to-end behaviour is in
tests/services/test_userns.py (runc) and tests/e2e/test_podman.py (--userns=auto).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from retinue.errors import RetinueError
from retinue.host import userns

ROOT = 300000


def spec(rootfs: Path, mounts: list[dict[str, Any]], user: bool = True) -> dict[str, Any]:
    namespaces = [{"type": "mount"}] + ([{"type": "user"}] if user else [])
    mapping = [{"containerID": 0, "hostID": ROOT, "size": 65536}]
    return {"root": {"path": str(rootfs)}, "mounts": mounts,
            "linux": {"namespaces": namespaces, "uidMappings": mapping, "gidMappings": mapping}}


def bind(destination: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": "/x",
            "options": ["bind", "ro", *options]}


def check(rootfs: Path, ours: list[dict[str, Any]],
          theirs: list[dict[str, Any]] | None = None, user: bool = True) -> None:
    theirs = theirs or []
    before = spec(rootfs, theirs, user)
    userns.check_mount_points(before, {**before, "mounts": [*theirs, *ours]}, "/")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "run").mkdir(parents=True)
    (r / "tmp").mkdir(mode=0o1777)
    os.chmod(r / "tmp", 0o1777)
    return r


def test_a_host_owned_rootfs_is_refused_naming_the_directory(rootfs: Path) -> None:
    with pytest.raises(RetinueError) as e:
        check(rootfs, [bind("/.retinue/init")])
    message = str(e.value)
    assert message.startswith(f"{rootfs}: the container has a user namespace (its root is host "
                              f"uid {ROOT}) and /.retinue does not exist")
    assert "for /.retinue/init" in message and "/ belongs to uid 0 gid 0 (mode 0755)" in message


def test_what_the_mapped_root_can_make_passes(rootfs: Path) -> None:
    os.chown(rootfs, ROOT, ROOT)  # its own rootfs (chowned or idmapped)
    check(rootfs, [bind("/.retinue/init"), bind("/retinue/web")])


def test_a_mapped_owner_needs_a_mapped_group_too(rootfs: Path) -> None:
    os.chown(rootfs, ROOT, 0)  # capabilities count only when both are mapped
    os.chmod(rootfs, 0o555)
    with pytest.raises(RetinueError):
        check(rootfs, [bind("/.retinue/init")])
    os.chmod(rootfs, 0o755)  # the owner's own bits
    check(rootfs, [bind("/.retinue/init")])


def test_group_and_others_bits(rootfs: Path) -> None:
    os.chown(rootfs / "tmp", 0, 0)
    check(rootfs, [bind("/tmp/x")])  # 1777
    (rootfs / "g").mkdir()
    os.chmod(rootfs / "g", 0o775)
    os.chown(rootfs / "g", 0, ROOT)
    check(rootfs, [bind("/g/x")])


def test_existing_points_and_unknowable_cases_pass(rootfs: Path) -> None:
    (rootfs / ".retinue").mkdir()
    (rootfs / ".retinue" / "init").touch()
    check(rootfs, [bind("/.retinue/init")])  # made in the image
    check(rootfs, [bind("/run/retinue/web.sock")],
          theirs=[{"destination": "/run", "type": "tmpfs", "source": "tmpfs"}])
    os.symlink("/elsewhere", rootfs / "link")
    check(rootfs, [bind("/link/x")])  # runc resolves it in the rootfs: not ours to guess
    check(rootfs, [bind("/new/x", "idmap")])
    check(rootfs, [bind("/new/x")], user=False)
