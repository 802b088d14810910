"""On real runc: a supervised container's state, ps, exec, pause and resume without Python.

The launcher used here has a Python that does not exist: every call that works went to runc from
sh, through the registry's record (statedir.RECORDS); kill still needs Python (127).
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from pathlib import Path

from conftest import FOREVER, Rig, main_args, wait_for
from retinue.cli import launcher
from retinue.host import statedir


def test_state_ps_exec_pause_resume_skip_python(
    rig: Rig, container_id: str, tmp_path: Path
) -> None:
    rig.service("web", "sleep 1000\n")
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=web"])
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, r.stderr
    hooks = json.loads((bundle / "config.json").read_text())["hooks"]
    assert sorted(hooks) == ["createRuntime", "poststop"]  # no poststart: see edits.ADDED_STAGES
    record = statedir.record_path(statedir.root_key(str(rig.root)), container_id)
    entry = statedir.lookup(str(rig.root), container_id)
    assert entry is not None
    assert Path(record).read_text() == entry.lower + "\n"
    bin_dir = tmp_path / "nopython"
    launcher.write(str(bin_dir), "/nonexistent/python3", sysconfig.get_paths()["purelib"])
    nopy = str(bin_dir / "retinue-runtime")

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [nopy, "--root", str(rig.root), *args], capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=60,
        )

    assert json.loads(call("state", container_id).stdout)["status"] == "created"
    assert rig.rt("start", container_id).returncode == 0
    assert json.loads(call("state", container_id).stdout)["status"] == "running"
    assert rig.status(container_id)["phase"] == "running"
    # Services only, no seccomp handler: the supervisor runs without docstrings (spawn.py).
    (pid,) = rig.supervisor_pids(container_id)
    assert b"-OO" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    for sub in ("pause", "resume"):
        r = call(sub, container_id)
        assert r.returncode == 0, (sub, r.stderr)
    r = call("ps", "--format", "json", container_id)
    assert r.returncode == 0 and json.loads(r.stdout), r.stderr
    r = call("exec", container_id, "/bin/echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
    assert call("kill", container_id, "KILL").returncode == 127
    assert rig.rt("kill", container_id, "KILL").returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    assert rig.rt("delete", container_id).returncode == 0
    wait_for(lambda: not os.path.exists(record))
