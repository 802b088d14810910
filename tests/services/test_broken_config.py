"""A broken configuration never takes down the containers already there.

Containers with services, and plain ones, are created under a good configuration; then the
configuration is broken in each of the ways `retinue check` catches (invalid TOML, a service of
the wrong type, a policy naming a missing service). state, exec, kill and delete keep working
(the supervised container's services get their graceful stop), and a new create fails with the
check's message, changing nothing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ADMIN, FOREVER, Rig, main_args, wait_for

POLITE = (
    'trap \'ev "stopping $RETINUE_SERVICE"; exit 0\' TERM\n'
    'ev "$RETINUE_SERVICE start"\n'
    "sleep 1000 & wait\n"
)


def invalid_toml(rig: Rig) -> None:
    rig.config_path.write_text(rig.config_path.read_text() + "state_dir = \n")


def wrong_type(rig: Rig) -> None:
    path = rig.etc / "services" / "web.toml"
    path.write_text(path.read_text() + 'required = "yes"\n')


def missing_service(rig: Rig) -> None:
    rig.policy('[[attach]]\nname = "all"\nwhen.always = true\nservices = ["nope"]\n')


BREAKS: dict[str, Callable[[Rig], None]] = {
    "invalid TOML": invalid_toml,
    "service of the wrong type": wrong_type,
    "policy naming a missing service": missing_service,
}


def check_message(rig: Rig) -> str:
    r = subprocess.run([ADMIN, "check"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.startswith("retinue: "), r
    return r.stderr.splitlines()[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("how", list(BREAKS))
def test_containers_outlive_a_broken_configuration(
    rig: Rig, container_id: str, how: str
) -> None:
    rig.service("web", POLITE)
    supervised, plain = f"{container_id}-s", f"{container_id}-p"
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=web"])
    assert rig.create(supervised, bundle).returncode == 0
    assert rig.create(plain, rig.bundle(["sleep", "1000"])).returncode == 0
    for cid in (supervised, plain):
        r = rig.rt("start", cid)
        assert r.returncode == 0, r.stderr
    wait_for(lambda: "main" in [w for _, w in rig.events()])

    time.sleep(0.06)  # past the configuration cache's clock margin
    BREAKS[how](rig)
    message = check_message(rig)

    for cid in (supervised, plain):
        r = rig.rt("state", cid)
        assert r.returncode == 0, r.stderr
        # Nothing but runc's JSON on stdout, nothing on stderr (containerd reads both as one).
        assert (json.loads(r.stdout)["status"], r.stderr) == ("running", "")
        r = rig.rt("exec", cid, "true")
        assert (r.returncode, r.stderr) == (0, ""), cid

    r = rig.rt("kill", supervised, "TERM")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "stopping web" in [w for _, w in rig.events()])
    r = rig.rt("kill", plain, "KILL")
    assert r.returncode == 0, r.stderr
    for cid in (supervised, plain):
        wait_for(lambda cid=cid: rig.runc_status(cid) == "stopped")  # type: ignore[misc]
        r = rig.rt("delete", cid)
        assert r.returncode == 0, r.stderr
        assert rig.state(cid) is None
    assert rig.errors() == []
    # Calls that read the configuration say in --log what they did instead.
    assert rig.warnings(), "no warning for a pass-through under a broken configuration"
    assert all("the configuration cannot be used" in w for w in rig.warnings())

    # A new create needs the policy: it fails with the check's message and changes nothing.
    new = rig.bundle(main_args("ev new"), env=["RETINUE_SERVICES=web"])
    before = digest(new / "config.json")
    r = rig.create(container_id, new)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines()[0] == message
    assert rig.errors() == [r.stderr.rstrip("\n")]
    assert digest(new / "config.json") == before
    assert rig.state(container_id) is None
    assert not rig.leftovers()
