"""State directory names: the runc root is part of the key, and `retinue status` reads it back."""

from __future__ import annotations

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
