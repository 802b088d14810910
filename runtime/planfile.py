"""plan.json, the supervisor's input: its one writer (the shim's create) and its readers.

Its shape is `compiled.Plan` (for mypy); at run time it is a plain dict. The shim writes it into
the state directory under construction; the supervisor reads it once at start; the shim's later
calls, `retinue status` and the cleanup of a killed supervisor read what a container was created
with, and must cope with a file that is missing or damaged.
"""

from __future__ import annotations

import json
import os

from .layout import PLAN

TYPE_CHECKING = False  # typing costs ~10 ms on the create path; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from .compiled import Plan


def path(container_dir: str) -> str:
    return os.path.join(container_dir, PLAN)


def write(container_dir: str, plan: Plan) -> None:
    """Into a directory being built: a new file, root's alone."""
    fd = os.open(path(container_dir), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as f:
        json.dump(plan, f)


def load(container_dir: str) -> Plan:
    """The plan as written; OSError or ValueError when it cannot be read (the supervisor's)."""
    with open(path(container_dir)) as f:
        plan: Plan = json.load(f)
    return plan


def recorded(container_dir: str) -> dict[str, Any]:
    """What the container was created with; empty if it cannot be read or is no object."""
    try:
        with open(path(container_dir)) as f:
            plan = json.load(f)
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) else {}
