"""Every engine's calling convention: a container keeps what it was created with.

Podman runs kill, pause, resume and delete with an empty environment: no PATH, no
RETINUE_CONFIG. A container created with RETINUE_CONFIG set must still reach its supervisor and
its lower runtime on every later call, whatever that call's environment (none, or another
configuration); and runc must be found without PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import FOREVER, Rig, main_args, wait_for
from retinue.host import statedir

POLITE = (
    'trap \'ev "stopping $RETINUE_SERVICE"; exit 0\' TERM\n'
    'ev "$RETINUE_SERVICE start"\n'
    "sleep 1000 & wait\n"
)


def bare(
    rig: Rig, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """retinue-runtime with exactly `env` (default: none at all), as Podman calls it."""
    return subprocess.run(
        rig.rt_argv(*args), capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=60, env=env or {},
    )


def created(rig: Rig, cid: str) -> None:
    rig.service("web", POLITE)
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=web"])
    r = rig.create(cid, bundle)
    assert r.returncode == 0, r.stderr


def assert_everything_gone(rig: Rig, cid: str) -> None:
    wait_for(lambda: not rig.leftovers(cid), 10)
    assert rig.state(cid) is None
    assert statedir.lookup(str(rig.root), cid) is None
    assert not os.path.exists(os.path.join(statedir.REGISTRY, cid))


def test_empty_environment_start_state_kill_delete(rig: Rig, container_id: str) -> None:
    created(rig, container_id)
    entry = statedir.lookup(str(rig.root), container_id)
    assert entry is not None
    assert (entry.config, entry.explicit) == (str(rig.config_path), True)
    assert entry.container_dir == str(rig.container_dir(container_id))
    r = bare(rig, "start", container_id)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    words = wait_for(lambda: "main" in (w := [w for _, w in rig.events()]) and w)
    # The gate held the entrypoint until the service had started: the configuration it was
    # created with was used, not the (absent) one of this call.
    assert "web start" in words and words.index("web start") < words.index("main")
    r = bare(rig, "state", container_id)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "running"
    for sub in ("pause", "resume"):
        r = bare(rig, sub, container_id)
        assert r.returncode == 0, (sub, r.stderr)
    r = bare(rig, "kill", container_id, "TERM")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "stopping web" in [w for _, w in rig.events()])
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    r = bare(rig, "delete", container_id)
    assert r.returncode == 0, r.stderr
    assert_everything_gone(rig, container_id)
    assert rig.errors() == []


def test_start_with_another_configuration(rig: Rig, container_id: str, tmp_path: Path) -> None:
    """RETINUE_CONFIG set for create only: start reads another (empty) configuration, yet the
    services start and the gate holds."""
    created(rig, container_id)
    other = tmp_path / "other.toml"
    other.write_text(f'state_dir = "{tmp_path}/other-state"\n')
    env = {"PATH": os.environ["PATH"], "RETINUE_CONFIG": str(other)}
    r = bare(rig, "start", container_id, env=env)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    words = wait_for(lambda: "main" in (w := [w for _, w in rig.events()]) and w)
    assert "web start" in words and words.index("web start") < words.index("main")
    r = bare(rig, "delete", "--force", container_id, env=env)
    assert r.returncode == 0, r.stderr
    assert "stopping web" in [w for _, w in rig.events()]
    assert_everything_gone(rig, container_id)


def test_plain_container_without_path(rig: Rig, container_id: str) -> None:
    """Nothing attached: every call still reaches runc, found in its usual directory."""
    bundle = rig.bundle(["sleep", "1000"])
    assert rig.create(container_id, bundle).returncode == 0
    assert statedir.lookup(str(rig.root), container_id) is None
    for args in (
        ["start", container_id],
        ["state", container_id],
        ["pause", container_id],
        ["resume", container_id],
        ["kill", container_id, "KILL"],
    ):
        r = bare(rig, *args)
        assert r.returncode == 0, (args, r.stderr)
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    r = bare(rig, "delete", container_id)
    assert r.returncode == 0, r.stderr
    assert rig.state(container_id) is None
