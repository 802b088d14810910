"""`retinue demo`: one busybox container through retinue-runtime, step by step.

It shows what a new user needs to see: the edits `retinue plan` predicts, a one-shot task
finishing before the services that need it, services starting in dependency order, the entrypoint
held until they are ready, `retinue status`, a manual restart of one service (its drain hook
first), a sidecar-placed service (its own container from its own image, sharing the app's
network), and the end: the main process exits first, then retinue-init (the container's PID 1)
has the services stopped gracefully in reverse order, and only then does the container stop.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import click

from .. import config_source
from ..layout import CONFIG_ENV
from . import rootfs

CONTAINER_ID = "retinue-demo"
SCRIPT = r"""
echo "[main] started: the gate opened: setup was done, web, metrics and httpd were ready"
echo "[main] GET http://127.0.0.1:8081/ -> $(wget -qO- http://127.0.0.1:8081/)"
echo "[main] RETINUE_GREETING=$RETINUE_GREETING"
echo "[main] /retinue/demo, a read-only bind mount from the host:"
sed 's/^/[main]   | /' /retinue/demo/README
if touch /retinue/demo/probe 2>/dev/null; then echo "[main] writable?!"
else echo "[main] writing there fails: read-only"; fi
echo "[main] GET http://127.0.0.1:8080/ -> $(wget -qO- http://127.0.0.1:8080/)"
echo "[main] /tmp/metrics.prom -> $(cat /tmp/metrics.prom)"
sleep 4
echo "[main] exiting with status 0"
"""

SIDECAR_IMAGE = "demo-sidecar"
# Not in configs/services: the shipped configuration must pass `retinue check` on a machine where
# no image was imported. The demo writes its own copy of the configuration with this one added.
SIDECAR_TOML = f"""\
description = "demo sidecar: busybox httpd on :8081, its own container from its own image"
placement = "container"        # a sibling container sharing the app's network, not runc exec
image = "{SIDECAR_IMAGE}"        # imported beforehand: `retinue image import`
command = ["/bin/httpd", "-f", "-p", "127.0.0.1:8081", "-h", "/var/www"]
user = "nobody"
required = true
requires = ["metrics"]         # started last, so stopped first

[ready]
http = "http://127.0.0.1:8081/"
timeout = "10s"

[resources]
memory = "32M"                 # the sidecar's own cgroup

[stop]
timeout = "2s"
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
    from ..config import settings as config

    shipped, _ = config_source()
    if not os.path.isfile(shipped):
        # The demo copies the configuration it is given (make demo names the repository's).
        click.echo(f"retinue: {shipped}: no configuration to run the demo with; set "
                   "RETINUE_CONFIG (make demo uses configs/config.toml)", err=True)
        return 1
    # Service logs outlive their containers; start the demo's from scratch.
    shutil.rmtree(os.path.join(config.load().settings.log_dir, CONTAINER_ID), ignore_errors=True)
    _step(f"building the image {SIDECAR_IMAGE} (busybox httpd) and a demo configuration with it")
    layout = _sidecar_layout(workdir)
    demo_config = _demo_config(workdir)
    os.environ[CONFIG_ENV] = demo_config
    click.echo(f"RETINUE_CONFIG={demo_config}: the shipped one, plus services/httpd.toml")
    _step(f"retinue image import {SIDECAR_IMAGE} {layout}")
    imported = subprocess.run([admin, "image", "import", SIDECAR_IMAGE, layout])
    shutil.rmtree(layout)
    if imported.returncode:
        return imported.returncode
    _step("building a busybox-static rootfs and a bundle whose env has RETINUE_DEMO=1")
    rootfs.build(os.path.join(bundle, "rootfs"))
    spec = rootfs.default_spec(["sh", "-c", SCRIPT])
    # The policy attaches web and metrics; the container asks for the sidecar httpd itself.
    spec["process"]["env"] += ["RETINUE_DEMO=1", "RETINUE_SERVICES=httpd"]
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
    _step("retinue status   (setup: done, a one-shot; httpd: a sidecar, from its image)")
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
    _step(f"retinue image rm {SIDECAR_IMAGE}   (no sidecar runs it any more)")
    subprocess.run([admin, "image", "rm", SIDECAR_IMAGE])
    shutil.rmtree(os.path.join(workdir, "images"), ignore_errors=True)
    _step("retinue status   (nothing left)")
    subprocess.run([admin, "status"])
    return 0


def _sidecar_layout(workdir: str) -> str:
    """An OCI image layout of a busybox rootfs with a page to serve, made with umoci."""
    image_root = rootfs.build(os.path.join(workdir, "sidecar-rootfs"))
    with open(os.path.join(image_root, "var", "www", "index.html"), "w") as f:
        f.write(f"hello from the sidecar (image {SIDECAR_IMAGE})\n")
    layout = os.path.join(workdir, "sidecar-layout")
    image = f"{layout}:demo"
    for argv in (
        ["init", "--layout", layout],
        ["new", "--image", image],
        ["insert", "--image", image, image_root, "/"],
        ["config", "--image", image, "--config.cmd", "/bin/httpd"],
        ["gc", "--layout", layout],
    ):
        subprocess.run(["umoci", *argv], check=True, capture_output=True)
    shutil.rmtree(image_root)
    return layout


def _demo_config(workdir: str) -> str:
    """A copy of the shipped configuration (RETINUE_CONFIG) under `workdir`, its image store
    there too, with the sidecar service added; returns the copy's config.toml."""
    shipped, _ = config_source()
    src = os.path.dirname(os.path.abspath(shipped))
    dest = os.path.join(workdir, "config")
    shutil.copytree(src, dest, symlinks=True)
    with open(os.path.join(dest, "services", "httpd.toml"), "w") as f:
        f.write(SIDECAR_TOML)
    with open(os.path.join(dest, "config.toml"), "a") as f:
        f.write(f'\n# The demo\'s own image store, removed at its end.\nimage_dir = '
                f'"{os.path.join(workdir, "images")}"\n')
    return os.path.join(dest, "config.toml")


def _watch_the_end(root: str) -> None:
    """Print each service's state as it changes, from the main process's exit (the supervisor's
    phase turns to `stopping` when init says so) to the container's stop."""
    from .. import control
    from ..config import settings as config
    from ..host import statedir

    settings = config.load().settings
    container_dir = statedir.container_dir(settings.state_dir, root, CONTAINER_ID)
    seen: dict[str, str] = {}
    since: float | None = None
    while True:  # until the supervisor is gone: it goes with the container
        try:
            reply = control.status(container_dir, 5)
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
