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


# The registry: `/run/retinue/ids/<id>/<root key>` exists while a supervisor owns that container,
# whatever the configuration. Engines call later subcommands with another environment than create
# (Podman: kill, pause, resume, delete with none at all), so a container must be found without
# its configuration: the entry names the container's state directory and records what it was
# created with. The sh launcher checks `ids/<id>` with one test, without the root-key escaping it
# cannot do cheaply.
REGISTRY = "/run/retinue/ids"
MARKERS = "ids"  # its name in the default state_dir, which `retinue status` skips
_ENTRY_VERSION = "1"


class Registered:
    """What a container was created with: its state directory, config file, lower runtime."""

    __slots__ = ("config", "container_dir", "explicit", "log_dir", "lower")

    def __init__(
        self, container_dir: str, config: str, explicit: bool, lower: str, log_dir: str
    ) -> None:
        self.container_dir = container_dir
        self.config = config
        self.explicit = explicit
        self.lower = lower
        self.log_dir = log_dir


def _entry_path(root: str, container_id: str) -> str:
    return os.path.join(REGISTRY, container_id, root_key(root))


def _split(container_dir: str) -> tuple[str, str, str]:
    parent, container_id = os.path.split(container_dir)
    state_dir, key = os.path.split(parent)
    return state_dir, key, container_id


def _write_entry(path: str, fields: list[str]) -> None:
    """Atomically, root-only; retried once if a concurrent removal took the id's directory."""
    blob = "\0".join([_ENTRY_VERSION, *fields]).encode("utf-8", "surrogateescape")
    tmp = f"{path}.{os.getpid()}.tmp"
    for attempt in (1, 2):
        try:
            os.makedirs(os.path.dirname(REGISTRY), mode=0o700, exist_ok=True)
            try:
                os.mkdir(REGISTRY, 0o700)
            except FileExistsError:
                os.chmod(REGISTRY, 0o700)  # older versions made it 0755: ids are not for users
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, blob)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise


def register(
    container_dir: str, config: str, explicit: bool, lower: str, log_dir: str
) -> None:
    """Record a supervised container in the registry (before its lower create runs)."""
    _, key, container_id = _split(container_dir)
    path = os.path.join(REGISTRY, container_id, key)
    _write_entry(path, [container_dir, config, "1" if explicit else "", lower, log_dir])


def lookup(root: str, container_id: str) -> Registered | None:
    """The registry's entry for a container, or None (no entry, or one this cannot read)."""
    try:
        with open(_entry_path(root, container_id), "rb") as f:
            fields = f.read(1 << 16).decode("utf-8", "surrogateescape").split("\0")
    except (OSError, ValueError):
        return None
    if len(fields) != 6 or fields[0] != _ENTRY_VERSION or not fields[1].startswith("/"):
        return None
    _, container_dir, config, explicit, lower, log_dir = fields
    return Registered(container_dir, config, explicit == "1", lower, log_dir)


def add_marker(container_dir: str) -> None:
    """An entry for a container whose state directory is being made, unless one already names
    it; `register` completes it with what the container was created with."""
    _, key, container_id = _split(container_dir)
    path = os.path.join(REGISTRY, container_id, key)
    found = _read_dir(path)
    if found != container_dir:
        _write_entry(path, [container_dir, "", "", "", ""])


def _read_dir(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            fields = f.read(1 << 16).decode("utf-8", "surrogateescape").split("\0")
    except (OSError, ValueError):
        return None
    return fields[1] if len(fields) > 1 else None


def remove_marker(container_dir: str) -> None:
    """Remove the container's entry, if it names this state directory (a stale removal never
    takes the entry of a newer container with the same id and root)."""
    _, key, container_id = _split(container_dir)
    directory = os.path.join(REGISTRY, container_id)
    path = os.path.join(directory, key)
    if _read_dir(path) != container_dir:
        return
    try:
        os.unlink(path)
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
    shutil.rmtree(container_dir, ignore_errors=True)
    remove_marker(container_dir)


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
