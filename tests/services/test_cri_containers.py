"""Containers as containerd's CRI creates them, through the shim on real runc: a pod's sandbox
passes through untouched; pod annotations choose services per pod or per container; status and
logs know the pod and container names; old log directories are pruned, never a living one's.

The annotations are those of tests/data/cri-*-config.json (captured shape of containerd 1.6/1.7
with `pod_annotations = ["io.retinue.*"]`); the rest of each spec is the rig's runnable one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from conftest import FOREVER, Rig, main_args, wait_for

DATA = Path(__file__).resolve().parent.parent / "data"
SLEEP = "exec sleep 1000\n"
POD = "shop/web-6d4b8f7c9-x2k7q"


def cri_annotations(kind: str, **extra: str) -> dict[str, str]:
    spec: dict[str, Any] = json.loads((DATA / f"cri-{kind}-config.json").read_text())
    annotations: dict[str, str] = spec["annotations"]
    return {**annotations, **extra}


def app(name: str, **extra: str) -> dict[str, str]:
    return cri_annotations("app", **{"io.kubernetes.cri.container-name": name, **extra})


def fingerprint(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


def test_the_sandbox_passes_through_untouched(rig: Rig) -> None:
    """A rule with always = true and the pod annotation io.retinue.services=web: the pause
    container still gets nothing (its start limit used to fail RunPodSandbox)."""
    rig.service("web", SLEEP)
    rig.policy('[[attach]]\nname = "all"\nwhen.always = true\nservices = ["web"]\n')
    annotations = cri_annotations("sandbox")
    assert annotations["io.retinue.services"] == "web"
    bundle = rig.bundle(["sleep", "1000"], annotations=annotations)
    before = fingerprint(bundle / "config.json")
    cid = "sandbox-" + annotations["io.kubernetes.cri.sandbox-id"][:12]
    r = rig.create(cid, bundle)
    assert r.returncode == 0, r.stderr
    assert fingerprint(bundle / "config.json") == before
    assert not rig.container_dir(cid).exists() and not rig.supervisor_pids()
    r = rig.rt("start", cid)
    assert r.returncode == 0, r.stderr
    assert rig.runc_status(cid) == "running"
    assert rig.retinue("status", cid).returncode == 1
    assert rig.rt("delete", "--force", cid).returncode == 0


def test_pod_annotations_choose_per_pod_and_per_container(rig: Rig) -> None:
    for name in ("web", "metrics", "sshd"):
        rig.service(name, SLEEP)
    # Pod-wide web; the sidecar opts out (io.retinue.services.sidecar= in the fixture); the
    # debug container asks for sshd by its name.
    extra = {"io.retinue.services.debug": "sshd"}
    got = {}
    for name in ("app", "sidecar", "debug"):
        cid = f"c-{name}"
        bundle = rig.bundle(main_args(FOREVER), annotations=app(name, **extra))
        assert rig.create(cid, bundle).returncode == 0
        assert rig.rt("start", cid).returncode == 0
        if name == "sidecar":
            assert not rig.container_dir(cid).exists()
            got[name] = []
        else:
            got[name] = [s["name"] for s in rig.status(cid)["services"]]
    assert got == {"app": ["web"], "sidecar": [], "debug": ["sshd"]}


def test_status_and_logs_by_pod_and_container_name(rig: Rig) -> None:
    rig.service("web", 'echo "web of $HOSTNAME"; exec sleep 1000\n')
    first = "4f9e1c2b7a6d5e3f" + "0" * 48
    other = "4fa1" + "1" * 60
    for cid, name in ((first, "app"), (other, "db")):
        bundle = rig.bundle(main_args(FOREVER), annotations=app(name))
        assert rig.create(cid, bundle).returncode == 0
        assert rig.rt("start", cid).returncode == 0

    by_name = rig.retinue("status", "--json", f"{POD}/app")
    assert by_name.returncode == 0, by_name.stderr
    (found,) = json.loads(by_name.stdout)
    assert (found["id"], found["pod"], found["name"]) == (first, POD, "app")
    assert [c["id"] for c in json.loads(rig.retinue("status", "--json", POD).stdout)] == sorted(
        [first, other])
    assert json.loads(rig.retinue("status", "--json", "4f9").stdout)[0]["id"] == first
    ambiguous = rig.retinue("status", "4f")
    assert ambiguous.returncode == 1
    assert ambiguous.stderr == (f"retinue: container id prefix '4f' is ambiguous: "
                                f"{first[:12]}, {other[:12]}\n")
    assert rig.retinue("status", f"{POD}/nope").returncode == 1
    table = rig.retinue("status").stdout.splitlines()
    assert table[0].split()[:3] == ["CONTAINER", "POD/CONTAINER", "SERVICE"]
    assert any(line.split()[:3] == [first[:20], f"{POD}/app", "web"] for line in table), table

    wait_for(lambda: "web of" in rig.service_log(first, "web"))
    for wanted in (f"{POD}/app", "4f9e", first):
        r = rig.retinue("logs", wanted, "web")
        assert r.returncode == 0, r.stderr
        assert "web of" in r.stdout and "started, pid" in r.stdout
    # After the container is gone, by name still; a restart (a new id, the same names) wins.
    assert rig.rt("delete", "--force", first).returncode == 0
    wait_for(lambda: not rig.leftovers(first), 5)
    assert "started, pid" in rig.retinue("logs", f"{POD}/app", "web").stdout
    restarted = "7" * 64
    bundle = rig.bundle(main_args(FOREVER), annotations=app("app"))
    assert rig.create(restarted, bundle).returncode == 0
    # Created, not started: its web has not run yet, and that is the one the name means now.
    r = rig.retinue("logs", f"{POD}/app", "web")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    assert rig.rt("start", restarted).returncode == 0
    wait_for(lambda: "web of" in rig.retinue("logs", f"{POD}/app", "web").stdout)
    missing = rig.retinue("logs", f"{POD}/nope", "web")
    assert missing.returncode == 1 and "no such log" in missing.stderr


def test_old_log_directories_are_pruned_never_a_living_ones(rig: Rig) -> None:
    rig.write_config('log_retention = "1h"\nlog_keep_containers = 1\n')
    rig.service("web", SLEEP)
    # A deleted container's directory from two hours ago, and a living one's.
    ids = ["old-a", "old-b", "live", "new-a", "new-b"]
    for cid in ids:
        bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=web"])
        assert rig.create(cid, bundle).returncode == 0
        assert rig.rt("start", cid).returncode == 0
    for cid in ("old-a", "old-b"):
        assert rig.rt("delete", "--force", cid).returncode == 0
        wait_for(lambda cid=cid: not rig.leftovers(cid), 5)
    # Supervisors exiting prune: old-a's exit kept only itself, old-b's removed old-a.
    assert not (rig.log_dir / "old-a").exists()
    assert (rig.log_dir / "old-b").exists()
    hours_ago = time.time() - 7200
    for cid in ("old-b", "live"):
        for entry in (rig.log_dir / cid).iterdir():
            os.utime(entry, (hours_ago, hours_ago))
    assert rig.rt("delete", "--force", "new-a").returncode == 0
    wait_for(lambda: not rig.leftovers("new-a"), 5)
    assert sorted(p.name for p in rig.log_dir.iterdir()) == ["live", "new-a", "new-b"]
    assert rig.service_status("live", "web")["state"] in ("running", "ready")
