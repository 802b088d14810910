"""Where retinue keeps per-container state: `STATE_DIR/<runc root, escaped>/<container id>`.

Container ids are unique only within one runc `--root` (Docker's and containerd's namespaces each
have their own), so the root is part of the key. The hot path calls `container_dir` and one
`os.path.isdir`: nothing here may import anything.
"""

from __future__ import annotations

import os


def valid_id(container_id: str) -> bool:
    """runc's own rule (`^[\\w+\\-.]+$`), minus the names that are path components."""
    if not container_id or container_id in (".", ".."):
        return False
    return all(c.isalnum() or c in "_+-." for c in container_id) and container_id.isascii()


def root_key(root: str) -> str:
    return os.path.abspath(root).strip("/").replace("%", "%25").replace("/", "%2F") or "%2F"


def root_from_key(key: str) -> str:
    """The runc root a `root_key` was made from."""
    if key == "%2F":
        return "/"
    return "/" + key.replace("%2F", "/").replace("%25", "%")


def container_dir(state_dir: str, root: str, container_id: str) -> str:
    return os.path.join(state_dir, root_key(root), container_id)


SECCOMP_DIR = "/run/retinue/seccomp"


def seccomp_listener(state_dir: str, bundle: str) -> str:
    """The seccomp agent's socket, a short hash of the bundle in a fixed root-only directory.

    runc connects to this path as given and a unix address holds at most 107 bytes, hence the
    hash. It names the bundle, not the container id: the path is written into the bundle's
    profile, so a bundle reused for the next container by hand keeps the same profile.
    """
    import hashlib

    key = hashlib.sha256(f"{state_dir}\0{os.path.abspath(bundle)}".encode())
    return f"{SECCOMP_DIR}/{key.hexdigest()[:24]}.sock"


# `STATE_DIR/ids/<id>/<root key>` exists while a supervisor owns that container: the sh launcher
# checks `ids/<id>` with one test, without the root-key escaping it cannot do cheaply.
MARKERS = "ids"


def _split(container_dir: str) -> tuple[str, str, str]:
    parent, container_id = os.path.split(container_dir)
    state_dir, key = os.path.split(parent)
    return state_dir, key, container_id


def add_marker(container_dir: str) -> None:
    state_dir, key, container_id = _split(container_dir)
    directory = os.path.join(state_dir, MARKERS, container_id)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.close(os.open(os.path.join(directory, key), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def remove_marker(container_dir: str) -> None:
    state_dir, key, container_id = _split(container_dir)
    directory = os.path.join(state_dir, MARKERS, container_id)
    try:
        os.unlink(os.path.join(directory, key))
        os.rmdir(directory)
    except OSError:
        pass  # already gone, or another root's container with the same id keeps it


def remove(container_dir: str) -> None:
    """Everything a container's supervisor keeps in the state directory.

    A supervisor that exits removes this itself; this is for one that was killed, so it also
    removes the seccomp listener it left behind, unless something still answers there (the
    listener path names the bundle, and another container may have been created from it).
    """
    import shutil

    _remove_stale_listener(os.path.join(container_dir, "plan.json"))
    _remove_stale_cgroup(os.path.join(container_dir, "plan.json"))
    shutil.rmtree(container_dir, ignore_errors=True)
    remove_marker(container_dir)


def _remove_stale_cgroup(plan_path: str) -> None:
    """The cgroup of a supervisor that was killed (rmdir: only once nothing is left in it)."""
    import json

    from . import cgroups

    try:
        with open(plan_path) as f:
            place = json.load(f).get("cgroup")
        if place:
            cgroups.remove(place, timeout=0.5, if_empty=True)
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        pass


def _remove_stale_listener(plan_path: str) -> None:
    import json
    import socket

    try:
        with open(plan_path) as f:
            listener = json.load(f).get("seccomp_listener")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(listener, str) or not listener.startswith(SECCOMP_DIR + "/"):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(listener)
    except ConnectionRefusedError:
        try:
            os.unlink(listener)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        probe.close()
