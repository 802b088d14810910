"""Sibling containers on the host: where they live, which are orphans, removing them.

Every sibling is created under retinue's own runtime root (STATE_DIR/sidecars), never the
engine's, so an engine never sees (nor garbage-collects) them and nothing else ever lives
there. Each carries the app's state directory in an annotation: a sibling whose app's
supervisor is gone (the app deleted behind our back, the supervisor killed) is an orphan, and
`retinue gc` removes it.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from .. import layout
from ..spec.sibling import SIDECAR_DIR, SIDECAR_IMAGE, SIDECAR_SERVICE

ROOT_NAME = layout.SIDECARS


def runtime_root(state_dir: str) -> str:
    return os.path.join(state_dir, ROOT_NAME)


def bundle_dir(container_dir: str, service: str) -> str:
    """The sibling's bundle (its config.json), inside the app's state directory."""
    return os.path.join(container_dir, ROOT_NAME, service)


def _lower(
    runtime: str, root: str, *args: str, timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [runtime, "--root", root, *args], capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def listing(runtime: str, root: str) -> list[dict[str, Any]]:
    """{"id", "pid", "status", "annotations"} of every sibling under `root`."""
    if not os.path.isdir(root):
        return []
    out = []
    for sid in _lower(runtime, root, "list", "-q").stdout.split():
        done = _lower(runtime, root, "state", sid)
        try:
            state = json.loads(done.stdout) if done.returncode == 0 else {}
        except ValueError:
            state = {}
        out.append({
            "id": sid,
            "pid": state.get("pid", 0),
            "status": state.get("status", "unknown"),
            "annotations": state.get("annotations") or {},
        })
    return out


def in_use(runtime: str, root: str) -> dict[str, list[str]]:
    """Image digest -> the siblings running it."""
    users: dict[str, list[str]] = {}
    for s in listing(runtime, root):
        digest = s["annotations"].get(SIDECAR_IMAGE)
        if digest:
            users.setdefault(digest, []).append(s["id"])
    return users


def supervised(container_dir: str) -> bool:
    """Whether the app's supervisor still answers (then the sibling is its to manage)."""
    from .. import control

    if not container_dir or not os.path.isdir(container_dir):
        return False
    try:
        control.status(container_dir, 5)
    except (control.SupervisorGone, OSError, ValueError):
        return False
    return True


def remove(runtime: str, root: str, sid: str) -> bool:
    """Kill and delete one sibling; True when it is gone."""
    _lower(runtime, root, "kill", sid, "KILL")
    _lower(runtime, root, "delete", "--force", sid)
    return sid not in _lower(runtime, root, "list", "-q").stdout.split()


def collect(runtime: str, root: str) -> list[str]:
    """Remove every orphaned sibling under `root`; the ids removed."""
    removed = []
    for s in listing(runtime, root):
        if supervised(s["annotations"].get(SIDECAR_DIR, "")):
            continue
        if remove(runtime, root, s["id"]):
            removed.append(s["id"])
            _unstage(s["annotations"])
    return removed


def _unstage(annotations: dict[str, Any]) -> None:
    """The sidecar's shares, if its supervisor was killed while it staged them."""
    container_dir, service = annotations.get(SIDECAR_DIR), annotations.get(SIDECAR_SERVICE)
    if isinstance(container_dir, str) and isinstance(service, str) and container_dir:
        from . import mounts

        mounts.clear(os.path.join(bundle_dir(container_dir, service), "share"))


def unstage_orphans(state_dir: str) -> list[str]:
    """Unmount the shares staged by supervisors that are gone (killed while a sibling was being
    created: the sibling itself then fails, its namespaces being the dead supervisor's
    descriptors); the mount points unmounted."""
    from . import mounts

    top = os.path.abspath(state_dir)
    done = []
    for point in mounts.mounted_under(top):
        parts = os.path.relpath(point, top).split(os.sep)
        # <root key>/<id>/sidecars/<service>/share/<n>
        if len(parts) != 6 or parts[2] != ROOT_NAME or parts[4] != "share":
            continue
        if supervised(os.path.join(top, parts[0], parts[1])):
            continue
        try:
            mounts.unmount(point)
        except OSError:
            continue
        done.append(point)
    return done
