"""`retinue demo`: one busybox container through retinue-runtime, step by step.

It shows what a new user needs to see: the edits `retinue plan` predicts, a one-shot task
finishing before the services that need it, services starting in dependency order, the entrypoint
held until they are ready, `retinue status`, a manual restart of one service (its drain hook
first), and the end: the
main process exits first, then retinue-init (the container's PID 1) has the services stopped
gracefully in reverse order, and only then does the container stop.
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
echo "[main] started: the gate opened: setup was done, web and metrics were ready"
echo "[main] RETINUE_GREETING=$RETINUE_GREETING"
echo "[main] /retinue/demo, a read-only bind mount from the host:"
sed 's/^/[main]   | /' /retinue/demo/README
if touch /retinue/demo/probe 2>/dev/null; then echo "[main] writable?!"
else echo "[main] writing there fails: read-only"; fi
echo "[main] GET http://127.0.0.1:8080/ -> $(wget -qO- http://127.0.0.1:8080/)"
echo "[main] /tmp/metrics.prom -> $(cat /tmp/metrics.prom)"
sleep 5
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
    time.sleep(1)
    _step("retinue status   (setup: done, a one-shot; web: ready and healthy)")
    subprocess.run([admin, "status", CONTAINER_ID])
    _step(f"retinue restart {CONTAINER_ID} web   (its drain hook first; the app keeps running)")
    subprocess.run([admin, "restart", CONTAINER_ID, "web"])
    _step("the main process exits; its services stop after it, in reverse order")
    _watch_the_end(root)
    _step(f"retinue-runtime delete {CONTAINER_ID}")
    subprocess.run([*runtime, "delete", CONTAINER_ID])
    for service in ("setup", "web", "metrics"):
        _step(f"retinue logs {CONTAINER_ID} {service}   (kept after the container is gone)")
        subprocess.run([admin, "logs", CONTAINER_ID, service])
    _step("retinue status   (nothing left)")
    subprocess.run([admin, "status"])
    return 0


def _watch_the_end(root: str) -> None:
    """Print each service's state as it changes, from the main process's exit (the supervisor's
    phase turns to `stopping` when init says so) to the container's stop."""
    from . import config, statedir
    from .supervisor import control

    settings = config.load().settings
    sock = os.path.join(
        statedir.container_dir(settings.state_dir, root, CONTAINER_ID), control.SOCKET_NAME
    )
    seen: dict[str, str] = {}
    since: float | None = None
    while True:  # until the supervisor is gone: it goes with the container
        try:
            reply = control.request(sock, {"op": "status"}, 5)
        except (control.SupervisorGone, OSError, ValueError):
            break
        if since is None and reply.get("phase") == "stopping":
            since = time.monotonic()
            click.echo("+0.00s  main process exited (retinue-init told the supervisor)")
        # Ends before beginnings, when one poll sees both: one service stops after another.
        services = sorted(reply.get("services") or [], key=lambda s: s["state"] == "stopping")
        for svc in services:
            if since is not None and seen.get(svc["name"]) != svc["state"]:
                click.echo(f"+{time.monotonic() - since:.2f}s  {svc['name']}: {svc['state']}")
            seen[svc["name"]] = svc["state"]
        time.sleep(0.01)
    if since is not None:
        # The supervisor answers no more once the last service has stopped and init exits.
        for name, state in seen.items():
            if state == "stopping":
                click.echo(f"+{time.monotonic() - since:.2f}s  {name}: stopped")
    while _status(root) == "running":
        time.sleep(0.01)
    if since is not None:
        click.echo(f"+{time.monotonic() - since:.2f}s  container stopped (retinue-init exited)")


def _status(root: str) -> str:
    out = subprocess.run(
        ["runc", "--root", root, "state", CONTAINER_ID], capture_output=True, text=True
    )
    try:
        return str(json.loads(out.stdout).get("status"))
    except ValueError:
        return "gone"
