"""`retinue demo`: one busybox container through retinue-runtime, showing what was attached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import click

from . import rootfs

SCRIPT = r"""
echo "inside the container:"
echo "  RETINUE_GREETING=$RETINUE_GREETING"
echo "  /retinue/demo (read-only bind mount from the host):"
ls -l /retinue/demo | sed 's/^/    /'
sed 's/^/    | /' /retinue/demo/README
if touch /retinue/demo/probe 2>/dev/null; then echo "  writable?! "; else echo "  writing there fails: read-only"; fi
"""


def run(workdir: str) -> int:
    bin_dir = os.path.dirname(os.path.abspath(sys.argv[0]))
    shim = os.path.join(bin_dir, "retinue-runtime")
    admin = os.path.join(bin_dir, "retinue")
    bundle = os.path.join(workdir, "bundle")
    root = os.path.join(workdir, "runc-root")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(bundle)
    click.secho("== building a busybox-static rootfs", bold=True)
    rootfs.build(os.path.join(bundle, "rootfs"))
    spec = rootfs.default_spec(["sh", "-c", SCRIPT])
    spec["process"]["env"].append("RETINUE_DEMO=1")
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f, indent="\t")
    click.secho(f"== retinue plan {bundle}   (what create will change; changes nothing)", bold=True)
    subprocess.run([admin, "plan", "--id", "demo", "--root", root, bundle], check=True)
    click.secho(f"== {shim} --root {root} run demo", bold=True)
    status = subprocess.run([shim, "--root", root, "run", "demo"], cwd=bundle).returncode
    click.secho(f"== exit status {status} (the container's own)", bold=True)
    return status
