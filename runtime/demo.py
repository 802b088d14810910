"""`retinue demo`: one busybox container through retinue-runtime, step by step.

It shows what a new user needs to see: the edits `retinue plan` predicts, services starting in
dependency order, the entrypoint held until they are ready, `retinue status`, and the services
stopped in reverse order when the container goes away.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import click

from . import rootfs

CONTAINER_ID = "retinue-demo"
SCRIPT = r"""
echo "[main] started: the gate opened, so web and metrics were ready before this line"
echo "[main] RETINUE_GREETING=$RETINUE_GREETING"
echo "[main] /retinue/demo, a read-only bind mount from the host:"
sed 's/^/[main]   | /' /retinue/demo/README
if touch /retinue/demo/probe 2>/dev/null; then echo "[main] writable?!"
else echo "[main] writing there fails: read-only"; fi
echo "[main] GET http://127.0.0.1:8080/ -> $(wget -qO- http://127.0.0.1:8080/)"
echo "[main] /tmp/metrics.prom -> $(cat /tmp/metrics.prom)"
sleep 3
echo "[main] exiting with status 0"
"""


def _step(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


def run(workdir: str) -> int:
    bin_dir = os.path.dirname(os.path.abspath(sys.argv[0]))
    shim = os.path.join(bin_dir, "retinue-runtime")
    admin = os.path.join(bin_dir, "retinue")
    bundle = os.path.join(workdir, "bundle")
    root = os.path.join(workdir, "runc-root")
    runtime = [shim, "--root", root]
    if os.path.isdir(root):
        subprocess.run([*runtime, "delete", "--force", CONTAINER_ID], capture_output=True)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(bundle)
    from . import config

    # Service logs outlive their containers; start the demo's from scratch.
    shutil.rmtree(os.path.join(config.load().settings.log_dir, CONTAINER_ID), ignore_errors=True)
    _step("building a busybox-static rootfs and a bundle whose env has RETINUE_DEMO=1")
    rootfs.build(os.path.join(bundle, "rootfs"))
    spec = rootfs.default_spec(["sh", "-c", SCRIPT])
    spec["process"]["env"].append("RETINUE_DEMO=1")
    spec["mounts"].append(
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}
    )
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f, indent="\t")
    _step(f"retinue plan {bundle}   (what create will change; it changes nothing)")
    subprocess.run([admin, "plan", "--id", CONTAINER_ID, "--root", root, bundle], check=True)
    _step(f"retinue-runtime --root {root} create --bundle {bundle} {CONTAINER_ID}")
    created = subprocess.run([*runtime, "create", "--bundle", bundle, CONTAINER_ID])
    if created.returncode:
        return created.returncode
    click.echo("created: the supervisor is up, the services are not started yet")
    _step(f"retinue-runtime start {CONTAINER_ID}   (returns once every required service is ready)")
    began = time.monotonic()
    started = subprocess.run([*runtime, "start", CONTAINER_ID])
    click.echo(
        f"start returned after {time.monotonic() - began:.2f}s (status {started.returncode})"
    )
    if started.returncode:
        subprocess.run([*runtime, "delete", "--force", CONTAINER_ID])
        return started.returncode
    time.sleep(1.5)
    _step("retinue status")
    subprocess.run([admin, "status", CONTAINER_ID])
    while _status(root) == "running":
        time.sleep(0.2)
    _step(f"the main process exited; retinue-runtime delete {CONTAINER_ID}")
    subprocess.run([*runtime, "delete", CONTAINER_ID])
    for service in ("web", "metrics"):
        _step(f"retinue logs {CONTAINER_ID} {service}   (kept after the container is gone)")
        subprocess.run([admin, "logs", CONTAINER_ID, service])
    _step("retinue status   (nothing left)")
    subprocess.run([admin, "status"])
    return 0


def _status(root: str) -> str:
    out = subprocess.run(
        ["runc", "--root", root, "state", CONTAINER_ID], capture_output=True, text=True
    )
    try:
        return str(json.loads(out.stdout).get("status"))
    except ValueError:
        return "gone"
