"""A container's owner cannot make an error block the runtime.

containerd's shim reads the runtime's stderr only after the runtime exits, and a pipe holds
64 KiB: an error that repeated a megabyte-long env value or annotation blocked `docker run` for
ever. Every echo of such a value is clipped, and every message bounded.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Rig

BIG = "x" * (1 << 20)


def by_env(rig: Rig) -> Path:
    return rig.bundle(["true"], env=[f"RETINUE_SERVICES={BIG}"])


def by_annotation(rig: Rig) -> Path:
    return rig.bundle(["true"], annotations={"io.retinue.services": BIG})


def by_annotation_name(rig: Rig) -> Path:
    def edit(spec: dict[str, Any]) -> None:
        spec["annotations"] = {BIG: 5}

    return rig.bundle(["true"], edit=edit)


ASKS: dict[str, Callable[[Rig], Path]] = {
    "env": by_env,
    "annotation": by_annotation,
    "annotation name": by_annotation_name,
}


@pytest.mark.parametrize("with_log", [True, False])
@pytest.mark.parametrize("how", list(ASKS))
def test_a_huge_value_gives_a_bounded_error(
    rig: Rig, container_id: str, how: str, with_log: bool
) -> None:
    rig.service("web", "sleep 1000\n")
    bundle = ASKS[how](rig)
    argv = rig.rt_argv("create", "--bundle", str(bundle), container_id)
    if not with_log:
        argv = [rig.shim, "--root", str(rig.root), "create", "--bundle", str(bundle), container_id]
    # stderr is a pipe that nobody reads until the call has returned, as containerd's shim does.
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert 0 < len(err) < 20_000, len(err)
    assert "…" in err
    if with_log:
        (entry,) = rig.errors()
        assert len(entry) < 10_000 and err.rstrip("\n") == entry
    assert rig.state(container_id) is None
