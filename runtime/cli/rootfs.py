"""A minimal root filesystem from Debian's busybox-static, for the demo and the tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

BUSYBOX = "/bin/busybox"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def build(path: str) -> str:
    """Create `path` as a rootfs with busybox and one symlink per applet; returns `path`."""
    if not os.path.exists(BUSYBOX):
        raise FileNotFoundError(f"{BUSYBOX}: install Debian's busybox-static")
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "root", "run", "var/www", "mnt"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    target = os.path.join(path, "bin", "busybox")
    shutil.copy2(BUSYBOX, target)
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = os.path.join(path, "bin", applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    for name, text in (("passwd", PASSWD), ("group", GROUP), ("hostname", "retinue\n")):
        with open(os.path.join(path, "etc", name), "w") as f:
            f.write(text)
    return path


def default_spec(args: list[str]) -> dict[str, Any]:
    """`runc spec`'s default, made non-interactive and run with `args`."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["runc", "spec", "--bundle", tmp], check=True)
        with open(os.path.join(tmp, "config.json")) as f:
            spec: dict[str, Any] = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": "rootfs", "readonly": False}
    return spec
