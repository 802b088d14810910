"""State directory names: the runc root is part of the key, and `retinue status` reads it back."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
from retinue import statedir


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
