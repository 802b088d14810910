"""Which services a container gets: the policy's mandatory ones plus its own choice, and their
dependencies; never a service the administrator did not define or did not make selectable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import Rig, wait_for

SLEEP = "exec sleep 1000\n"
# Records what is mounted under /retinue, and whether it can write there.
MAIN = [
    "sh", "-c",
    # Mount points, not `ls`: the bundles share one rootfs directory, where runc leaves the
    # (empty) mount points of other containers.
    "awk '$2 ~ \"^/retinue/\" { sub(\"/retinue/\", \"\", $2); print $2 }' /proc/mounts "
    "> /shared/mounted; "
    "if touch /retinue/web/x 2>/dev/null; then echo rw; else echo ro; fi > /shared/web-mode; "
    "sleep 1000 & wait",
]


def attached(bundle: Path) -> list[str]:
    spec = json.loads((bundle / "config.json").read_text())
    value = (spec.get("annotations") or {}).get("io.retinue.attached-services", "")
    return [n for n in value.split(",") if n]


def define_all(rig: Rig) -> None:
    rig.service("web", SLEEP)
    rig.service("db", SLEEP)
    rig.service("cache", SLEEP, "required = false\n")
    rig.service("metrics", SLEEP)
    rig.service("app", SLEEP, 'requires = ["db"]\nwants = ["cache"]\nafter = ["metrics"]\n')
    rig.service("agent", SLEEP, "selectable = false\n")


def start_and_list(rig: Rig, cid: str, bundle: Path) -> tuple[list[str], list[str]]:
    """(services the supervisor runs, directories the main process sees under /retinue)."""
    r = rig.create(cid, bundle)
    assert r.returncode == 0, r.stderr
    r = rig.rt("start", cid)
    assert r.returncode == 0, r.stderr
    supervised = [s["name"] for s in rig.status(cid)["services"]]
    mounted = wait_for(lambda: (rig.shared / "mounted").exists() and
                       (rig.shared / "mounted").read_text().split())
    return supervised, sorted(mounted)


def test_env_selects_services(rig: Rig, container_id: str) -> None:
    define_all(rig)
    bundle = rig.bundle(MAIN, env=["RETINUE_SERVICES= web , metrics,web"])
    supervised, mounted = start_and_list(rig, container_id, bundle)
    assert supervised == ["web", "metrics"]
    assert mounted == ["metrics", "web"]
    assert attached(bundle) == ["web", "metrics"]
    # The service's files are read-only inside the container.
    assert wait_for(lambda: (rig.shared / "web-mode").exists() and
                    (rig.shared / "web-mode").read_text().strip()) == "ro"


def test_annotation_selects_services_and_wins_over_env(rig: Rig, container_id: str) -> None:
    define_all(rig)
    bundle = rig.bundle(MAIN, env=["RETINUE_SERVICES=metrics"],
                        annotations={"io.retinue.services": "web"})
    supervised, mounted = start_and_list(rig, container_id, bundle)
    assert supervised == ["web"]
    assert mounted == ["web"]


def test_dependencies_are_pulled_in_and_ordered(rig: Rig, container_id: str) -> None:
    """requires and wants pull services in; after only orders (metrics is not attached)."""
    define_all(rig)
    bundle = rig.bundle(MAIN, annotations={"io.retinue.services": "app"})
    supervised, mounted = start_and_list(rig, container_id, bundle)
    assert sorted(supervised) == ["app", "cache", "db"]
    assert supervised.index("app") > supervised.index("db")
    assert supervised.index("app") > supervised.index("cache")
    assert mounted == ["app", "cache", "db"]


def test_mandatory_services_cannot_be_opted_out_of(rig: Rig, container_id: str) -> None:
    define_all(rig)
    rig.policy(
        '[[attach]]\nname = "base"\nwhen = { env = { TEAM = "pay*" } }\nservices = ["agent"]\n'
    )
    # An empty choice does not remove the mandatory service; a non-selectable service can still
    # be mandatory.
    bundle = rig.bundle(MAIN, env=["TEAM=payments", "RETINUE_SERVICES="],
                        annotations={"io.retinue.services": "web"})
    supervised, mounted = start_and_list(rig, container_id, bundle)
    assert sorted(supervised) == ["agent", "web"]
    assert mounted == ["agent", "web"]
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["annotations"]["io.retinue.attached"] == "base"


def test_no_selection_leaves_the_bundle_alone(rig: Rig, container_id: str) -> None:
    define_all(rig)
    rig.policy('[[attach]]\nname = "base"\nwhen = { env = { TEAM = "pay*" } }\n'
               'services = ["agent"]\n')
    bundle = rig.bundle(["true"], env=["TEAM=search"])
    config = bundle / "config.json"
    before = (config.read_bytes(), os.stat(config).st_mtime_ns)
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, r.stderr
    assert (config.read_bytes(), os.stat(config).st_mtime_ns) == before
    assert not rig.container_dir(container_id).exists()
    assert rig.supervisor_pids() == []


@pytest.mark.parametrize(
    ("env", "annotations", "name", "source"),
    [
        (["RETINUE_SERVICES=web,nope"], None, "nope", "env RETINUE_SERVICES"),
        (None, {"io.retinue.services": "web,agent"}, "agent", "annotation io.retinue.services"),
        (None, {"io.retinue.services": "/etc/passwd"}, "/etc/passwd",
         "annotation io.retinue.services"),
        (["RETINUE_SERVICES=../web"], None, "../web", "env RETINUE_SERVICES"),
    ],
)
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_unknown_or_unselectable_service_fails_create(
    rig: Rig, container_id: str, env: list[str] | None, annotations: dict[str, str] | None,
    name: str, source: str, log_format: str,
) -> None:
    define_all(rig)
    bundle = rig.bundle(MAIN, env=env, annotations=annotations)
    config = bundle / "config.json"
    before = (config.read_bytes(), os.stat(config).st_mtime_ns)
    r = rig.create(container_id, bundle, log_format=log_format)
    assert r.returncode == 1
    message = (
        f"retinue: the container asks for service {name!r} ({source}), which is not defined "
        "(selectable services: app, cache, db, metrics, web)"
    )
    assert r.stderr == message + "\n"
    assert r.stdout == ""
    log = rig.runc_log.read_text().splitlines()
    assert len(log) == 1, log
    if log_format == "json":
        assert rig.errors() == [message]
    else:
        assert log[0].startswith("time=") and " level=error msg=" in log[0]
        assert json.dumps(message) in log[0]
    assert (config.read_bytes(), os.stat(config).st_mtime_ns) == before
    assert rig.state(container_id) is None
    assert rig.leftovers() == []
    assert not (rig.state_dir.exists() and any(rig.state_dir.iterdir()))
