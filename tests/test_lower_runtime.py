"""A container keeps the lower runtime it was created with until it is deleted.

A supervised container records its lower runtime in its state; start, kill and delete go to that
one even after the configuration names another. (Once a container has stopped, its supervisor
and that record are gone: a later delete goes to the runtime configured then.)
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BundleFactory = Callable[..., Path]
ConfigFactory = Callable[..., Path]

POLICY = """
[[attach]]
name = "broker"
when.always = true

[[attach.seccomp]]
syscalls = ["sethostname"]
handler = "deny"
"""


def wrapper(path: Path, log: Path) -> str:
    """A lower runtime that notes each subcommand it was given, then is runc."""
    path.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {RUNC} "$@"\n')
    path.chmod(0o755)
    return str(path)


def call(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryFile() as out:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60)


def test_a_container_keeps_its_lower_runtime(
    shim: str,
    make_config: ConfigFactory,
    make_bundle: BundleFactory,
    runc_root: str,
    container_id: str,
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    state = f'state_dir = "{tmp_path}/state"\nlog_dir = "{tmp_path}/log"\n'
    cfg = make_config(POLICY, extra=f'runtime = "{wrapper(tmp_path / "a", first)}"\n{state}')
    bundle = make_bundle(["sleep", "100"])
    rt = [shim, "--root", runc_root]
    assert call([*rt, "create", "--bundle", str(bundle), container_id]).returncode == 0
    assert call([*rt, "start", container_id]).returncode == 0
    cfg.write_text(f'runtime = "{wrapper(tmp_path / "b", second)}"\n{state}')
    time.sleep(0.1)  # past the configuration cache's clock margin
    # sleep as PID 1 ignores SIGTERM: the container is still running for the delete.
    assert call([*rt, "kill", container_id, "TERM"]).returncode == 0
    assert call([*rt, "delete", "--force", container_id]).returncode == 0
    used_first = first.read_text()
    assert "kill" in used_first and "delete" in used_first
    assert not second.exists() or container_id not in second.read_text()
