"""What the e2e tests attach, shared by their conftest and the tests."""

from __future__ import annotations

import json
from pathlib import Path

# Selects by env (Docker cannot set annotations) or by annotation (containerd, Kubernetes).
POLICY = """\
[[attach]]
name = "demo"
when.env = { RETINUE_DEMO = "1" }
mounts = [{ source = "demo", destination = "/retinue/demo" }]
env = { RETINUE_GREETING = "hello from retinue" }

[[attach]]
name = "annotated"
when.annotations = { "io.retinue.test/attach" = "yes" }
mounts = [{ source = "demo", destination = "/retinue/demo" }]
env = { RETINUE_GREETING = "hello by annotation" }

# Both engines mount /dev/shm: retinue must refuse to mount over it, and say so.
[[attach]]
name = "collide"
when.env = { RETINUE_COLLIDE = "1" }
mounts = [{ source = "demo", destination = "/dev/shm" }]
"""

DEMO_TEXT = "mounted by retinue for the e2e tests\n"


def config_text(e2e_dir: Path, runtime: str = "") -> str:
    """The e2e config.toml; `runtime` is retinue's lower runtime (empty: runc on PATH)."""
    return (
        f"runtime = {json.dumps(runtime)}\n"
        'policy = "policy.toml"\n'
        'services = "services"\n'
        f'state_dir = "{e2e_dir / "state"}"\n'
        f'log_dir = "{e2e_dir / "log"}"\n'
    )
