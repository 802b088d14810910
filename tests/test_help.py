"""`-h`/`--help` anywhere answers as runc does, without reading the bundle or touching anything.

With a rule that attaches (and spawns a supervisor), `create -h ID` once rewrote config.json and
spawned a supervisor, and `run -h` failed for want of ./config.json.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from retinue.host import statedir

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BundleFactory = Callable[..., Path]
ConfigFactory = Callable[..., Path]

POLICY = """
[[attach]]
name = "broker"
when.always = true
env = { ATTACHED = "1" }

[[attach.seccomp]]
syscalls = ["sethostname"]
handler = "deny"
"""


def call(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    r = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30
    )
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["run", "-h"],
        ["run", "--help"],
        ["create", "-h", "ID"],
        ["create", "--bundle", "BUNDLE", "--help", "ID"],
        ["create", "-help=true", "ID"],
        ["-h", "create", "ID"],
        ["--help"],
        ["start", "-h", "ID"],
        ["kill", "ID", "-h"],
        ["delete", "--help", "ID"],
        ["state", "-h", "ID"],
        ["exec", "-h", "ID"],
    ],
)
def test_help_is_runcs_and_touches_nothing(
    args: list[str],
    shim: str,
    make_config: ConfigFactory,
    make_bundle: BundleFactory,
    runc_root: str,
    container_id: str,
    tmp_path: Path,
) -> None:
    make_config(POLICY, f'state_dir = "{tmp_path}/state"\nlog_dir = "{tmp_path}/log"\n')
    bundle = make_bundle(["true"])
    spec = bundle / "config.json"
    before = hashlib.sha256(spec.read_bytes()).hexdigest(), os.stat(spec).st_mtime_ns
    argv = [a.replace("ID", container_id).replace("BUNDLE", str(bundle)) for a in args]
    # In the bundle (runc's default) and in a directory without one.
    for cwd in (bundle, tmp_path):
        ours = call([shim, "--root", runc_root, *argv], cwd)
        theirs = call([RUNC, "--root", runc_root, *argv], cwd)
        assert ours == theirs
        assert ours[1], "runc printed no help"
    assert (hashlib.sha256(spec.read_bytes()).hexdigest(), os.stat(spec).st_mtime_ns) == before
    assert not (tmp_path / "state").exists()
    assert statedir.lookup(runc_root, container_id) is None
    assert subprocess.run(
        [RUNC, "--root", runc_root, "list", "-q"], capture_output=True, text=True
    ).stdout == ""


def test_help_false_is_not_help(
    shim: str, make_config: ConfigFactory, make_bundle: BundleFactory, runc_root: str,
    container_id: str, tmp_path: Path,
) -> None:
    """`-h=false` asks for no help: the create is a create, with the policy applied."""
    make_config('[[attach]]\nname = "a"\nwhen.always = true\nenv = { ATTACHED = "1" }\n')
    bundle = make_bundle(["true"])
    with tempfile.TemporaryFile() as out:
        # Files, not pipes: the created container holds its stdio open.
        code = subprocess.run(
            [shim, "--root", runc_root, "create", "-h=false", "--bundle", str(bundle),
             container_id],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=30,
        ).returncode
        out.seek(0)
        assert code == 0, out.read()
    assert "ATTACHED=1" in spec_env(bundle)


def spec_env(bundle: Path) -> list[str]:
    import json

    env: list[str] = json.loads((bundle / "config.json").read_text())["process"]["env"]
    return env
