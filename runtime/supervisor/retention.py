"""Per-container log directories: what they belong to, and pruning those of deleted containers.

`LOG_DIR/<id>/` outlives its container so that `retinue logs` works after the fact; every
restart of a Kubernetes container is a new id, so the directories pile up. A supervisor prunes
them when it exits (off the create and start paths): those of deleted containers older than
`log_retention`, and beyond the newest `log_keep_containers`. A directory is never removed while
its container lives: its marker `STATE_DIR/ids/<id>` exists from before the supervisor starts
until its state is removed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from .. import layout
from ..host import statedir

RECORD = "container.json"
# Every directory a supervisor made has it: anything else in LOG_DIR is not ours to remove.
OURS = layout.SUPERVISOR_LOG
DEFAULT_KEEP = 100


def record(log_dir: str, plan: Mapping[str, Any]) -> None:
    """Write what `retinue logs` needs to find this directory by name once the container is gone."""
    names = {
        "id": plan["id"],
        "root": plan["root"],
        "pod": plan.get("pod", ""),
        "name": plan.get("name", ""),
        "created": time.time(),
    }
    tmp = os.path.join(log_dir, f".{RECORD}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # as the services' logs, whatever the umask
    with os.fdopen(fd, "w") as f:
        json.dump(names, f)
    os.replace(tmp, os.path.join(log_dir, RECORD))


def read_record(directory: str) -> dict[str, Any]:
    try:
        with open(os.path.join(directory, RECORD)) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _last_written(directory: str) -> float:
    newest = 0.0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return newest
    for entry in entries:
        try:
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except OSError:
            continue
    return newest


def alive(state_dir: str, container_id: str) -> bool:
    # The registry is global (one entry per id and runc root), so a container with this id
    # under any state directory keeps its logs: they are named by the id alone.
    return os.path.lexists(os.path.join(statedir.REGISTRY, container_id)) or os.path.lexists(
        os.path.join(state_dir, statedir.MARKERS, container_id)
    )


def prune(
    log_root: str, state_dir: str, max_age: float, keep: int, now: float | None = None
) -> list[str]:
    """Remove the log directories of deleted containers last written more than `max_age`
    seconds ago (0: no age limit), and all but the `keep` newest; returns those removed."""
    import shutil  # ~15 ms, and only once the container is gone: never on the way to its start

    now = time.time() if now is None else now
    try:
        names = os.listdir(log_root)
    except OSError:
        return []
    dead: list[tuple[float, str]] = []
    for name in names:
        directory = os.path.join(log_root, name)
        if (
            not statedir.valid_id(name)
            or not os.path.isfile(os.path.join(directory, OURS))
            or alive(state_dir, name)
        ):
            continue
        dead.append((_last_written(directory), directory))
    dead.sort(reverse=True)
    removed = []
    for rank, (written, directory) in enumerate(dead):
        if rank >= keep or (max_age > 0 and now - written > max_age):
            # Checked again right before: a container may have been created with this id since.
            if alive(state_dir, os.path.basename(directory)):
                continue
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed
