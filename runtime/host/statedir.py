"""Where retinue keeps per-container state: `STATE_DIR/<runc root, escaped>/<container id>`.

Container ids are unique only within one runc `--root` (Docker's and containerd's namespaces each
have their own), so the root is part of the key. The hot path calls `container_dir` and one
`os.path.isdir`: nothing here may import anything but layout (which imports nothing).
"""

from __future__ import annotations

import errno
import os

from .. import layout
from ..layout import MARKERS as MARKERS
from ..layout import NOT_ROOTS as NOT_ROOTS
from ..layout import REGISTRY as REGISTRY
from ..layout import SECCOMP_DIR as SECCOMP_DIR
from ..layout import STATE_FILE as STATE_FILE

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any


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
# (layout.REGISTRY; its name in the default state_dir, layout.MARKERS, `retinue status` skips.)
_ENTRY_VERSION = "1"

# Beside each complete entry, `RECORDS/<root key>%<id>` holds the lower runtime alone, one line,
# for the sh launcher: `state`, `exec`, `ps`... of a supervised container need no supervisor,
# and engines call `state` often; the launcher reads this with the `read` builtin instead of
# starting Python to read the entry. No root key contains `%` but in its escapes and no valid id
# contains `%`, so the name is unambiguous; nor is `%lower` an id, so the records' directory
# sits inside the registry, out of the default state directory's root keys. Root-only like the
# registry, written atomically, removed before the entry; the launcher also checks the entry
# itself and that the path is an absolute executable file, and goes to Python when anything is
# missing.
RECORDS = REGISTRY + "/%lower"


def record_path(root_key_: str, container_id: str) -> str:
    return os.path.join(RECORDS, f"{root_key_}%{container_id}")


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
                os.chmod(REGISTRY, 0o700)  # whoever made it: ids are not for users
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
    _write_record(key, container_id, lower)


def _write_record(key: str, container_id: str, lower: str) -> None:
    """The sh launcher's copy of the entry's lower runtime (see RECORDS); none when the path is
    not one line it can read back exactly, or cannot be written (a name too long): without it
    the launcher asks Python, which reads the entry."""
    record = record_path(key, container_id)
    if not lower.startswith("/") or "\n" in lower or "\0" in lower:
        _unlink_record(record)
        return
    tmp = f"{record}.{os.getpid()}.tmp"
    try:
        try:
            os.mkdir(RECORDS, 0o700)
        except FileExistsError:
            os.chmod(RECORDS, 0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (lower + "\n").encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)
        os.replace(tmp, record)
    except OSError:
        _unlink_record(tmp)
        _unlink_record(record)


def _unlink_record(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
        _unlink_record(record_path(key, container_id))  # a previous container's, if any
        _write_entry(path, [container_dir, "", "", "", ""])


def _read_dir(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            fields = f.read(1 << 16).decode("utf-8", "surrogateescape").split("\0")
    except (OSError, ValueError):
        return None
    return fields[1] if len(fields) > 1 else None


def private_dir(path: str) -> None:
    """Make `path` a directory only its owner can enter (the state is root's alone).

    Every level created here is 0700 (os.makedirs gives missing parents 0755), and an existing
    `path` that others can enter is narrowed: a state directory of mode 0755 would let any
    local user list the ids of every container with services.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent != path and not os.path.isdir(parent):
            private_dir(parent)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # made at the same time by another create
        return
    if mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as e:
            # Nothing can be made below a read-only one either: what the caller makes next
            # fails and names the path it could not create.
            if e.errno != errno.EROFS:
                raise


# STATE_FILE is written last into every container's state directory, only by retinue: what makes
# a directory one (for `retinue status` and the poststop hook, which must remove nothing else).


def _state_text(container_dir: str) -> bytes:
    _, key, container_id = _split(container_dir)
    return f"retinue container state\n{key}\n{container_id}\n".encode()


def write_state_file(directory: str, container_dir: str) -> None:
    """Mark `directory` (being built, to be renamed to `container_dir`) as complete."""
    fd = os.open(
        os.path.join(directory, STATE_FILE),
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
        0o600,
    )
    try:
        os.write(fd, _state_text(container_dir))
    finally:
        os.close(fd)


def _state_file_ok(dir_fd: int, container_dir: str) -> bool:
    try:
        fd = os.open(STATE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        want = _state_text(container_dir)
        return (
            st.st_uid == os.geteuid()
            and st.st_mode & 0o170000 == 0o100000  # a regular file
            and os.read(fd, len(want) + 1) == want
        )
    finally:
        os.close(fd)


def is_complete(container_dir: str) -> bool:
    """Whether `container_dir` is a container's state directory as retinue completed it (not
    what a create that failed midway, or anything else, left there)."""
    try:
        fd = os.open(container_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return _state_file_ok(fd, container_dir)
    finally:
        os.close(fd)


def refuse_removal(container_dir: str) -> str | None:
    """Why `container_dir` is not a container's state directory that retinue made, or None.

    For the poststop hook, whose argument anyone who writes a spec can choose: it must remove
    nothing else. The path must be STATE/KEY/ID without symlinks below STATE, every level owned
    by us and writable by nobody else (so nobody else planted what follows), STATE must have
    registered the container (STATE/ids/ID/KEY), and the directory must hold the state file
    retinue wrote for exactly this path.
    """
    if not os.path.isabs(container_dir) or os.path.normpath(container_dir) != container_dir:
        return "not a normalized absolute path"
    state_dir, key, container_id = _split(container_dir)
    if not valid_id(container_id) or key in ("", *NOT_ROOTS):
        return "not STATE_DIR/ROOT/ID"
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    fds: list[int] = []
    try:
        fds.append(os.open(state_dir, flags))
        fds.append(os.open(key, flags | os.O_NOFOLLOW, dir_fd=fds[-1]))
        fds.append(os.open(container_id, flags | os.O_NOFOLLOW, dir_fd=fds[-1]))
        for fd in fds:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return "a level of it is not ours alone"
        entry = os.path.join(REGISTRY, container_id, key)
        registered = os.stat(entry, follow_symlinks=False)
        if (
            registered.st_uid != os.geteuid()
            or registered.st_mode & 0o170000 != 0o100000
            or _read_dir(entry) != container_dir
        ):
            return "retinue did not register it"
        if not _state_file_ok(fds[2], container_dir):
            return f"no {STATE_FILE} of retinue's in it"
    except OSError as e:
        return e.strerror or str(e)
    finally:
        for fd in fds:
            os.close(fd)
    return None


def temp_dir(container_dir: str) -> str:
    """Where a create builds `container_dir` before renaming it into place; `~` is not allowed
    in an id, so nothing reads it as a container."""
    return f"{container_dir}~{os.getpid()}"


def sweep(container_dir: str) -> None:
    """Remove what creates of this container that were killed midway left: their temporary
    directories and, without a state directory, the id marker."""
    parent, container_id = os.path.split(container_dir)
    try:
        names = os.listdir(parent)
    except OSError:
        return
    building = False
    for name in names:
        head, sep, pid = name.partition("~")
        if head != container_id or not sep or not pid.isdigit():
            continue
        if int(pid) != os.getpid() and _alive(int(pid)):
            building = True  # a create of this id is under way
            continue
        try:
            remove_tree(os.path.join(parent, name))
        except OSError:
            pass
    if not building and not os.path.isdir(container_dir):
        remove_marker(container_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_marker(container_dir: str) -> None:
    """Remove the container's entry, if it names this state directory (a stale removal never
    takes the entry of a newer container with the same id and root)."""
    _, key, container_id = _split(container_dir)
    directory = os.path.join(REGISTRY, container_id)
    path = os.path.join(directory, key)
    if _read_dir(path) != container_dir:
        return
    _unlink_record(record_path(key, container_id))  # first: the launcher trusts it with the entry
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
    from .. import planfile

    plan = planfile.recorded(container_dir)
    _remove_stale_listener(plan)
    _remove_stale_cgroup(plan)
    if not unmount_staged(container_dir):
        return
    # Out of the way at once, then emptied: the supervisor, the hook and `delete` can all be
    # removing it at the same moment, and none may meet a half-removed directory.
    doomed = temp_dir(container_dir)
    try:
        os.rename(container_dir, doomed)
    except OSError:
        doomed = container_dir  # gone already, or cannot be moved: remove it where it is
    try:
        remove_tree(doomed)
    except OSError:
        pass  # what cannot be removed (a mount point) stays; the rest is gone
    remove_marker(container_dir)
    # The root's directory too once it is empty (a conformance run leaves hundreds of roots);
    # a create that made it a moment ago makes it again (supervisor.spawn.prepare).
    try:
        os.rmdir(os.path.dirname(container_dir))
    except OSError:
        pass


def collect_empty_roots(state_dir: str) -> list[str]:
    """Remove the roots' directories that hold no container (left by creates that failed);
    rmdir takes only an empty one. Returns what was removed."""
    removed = []
    try:
        keys = os.listdir(state_dir)
    except OSError:
        return []
    for key in keys:
        if key in NOT_ROOTS:
            continue
        path = os.path.join(state_dir, key)
        try:
            os.rmdir(path)
        except OSError:
            continue  # not empty, not a directory, or gone
        removed.append(path)
    return removed


def unmount_staged(container_dir: str) -> bool:
    """Detach the sidecar shares a supervisor killed during a sibling's create left mounted in
    its state directory (supervisor/apphandles.py); False if one is still there, and then the
    directory must not be removed: a walk would go through the mount into the app's files."""
    if not os.path.isdir(os.path.join(container_dir, layout.SIDECARS)):
        return True
    from . import mounts

    return mounts.clear(container_dir)


# Directories deeper than this below the top are moved up to the top before they are entered:
# the number of open descriptors stays bounded whatever the depth of the tree.
_MAX_OPEN = 32


def remove_tree(path: str) -> None:
    """Remove `path` and everything under it, however deep, without recursion.

    Every step is relative to a descriptor of a directory already inside the tree, and nothing
    is followed: a symlink is unlinked, never entered, and a directory on another filesystem (a
    mount point) is not entered (its rmdir fails). A tree that a container could shape (1,500
    levels) broke shutil.rmtree with RecursionError; this is bounded in stack and descriptors.
    Raises OSError if something could not be removed; a missing `path` is not an error.
    """
    parent, name = os.path.split(os.path.abspath(path))
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    pfd = os.open(parent, flags)
    try:
        try:
            top = os.open(name, flags | os.O_NOFOLLOW, dir_fd=pfd)
        except FileNotFoundError:
            return
        except OSError as e:
            import errno

            if e.errno not in (errno.ENOTDIR, errno.ELOOP):  # ELOOP: a symlink
                raise
            os.unlink(name, dir_fd=pfd)
            return
        try:
            _empty(top)
        finally:
            os.close(top)
        os.rmdir(name, dir_fd=pfd)
    finally:
        os.close(pfd)


def _empty(top: int) -> None:
    device = os.fstat(top).st_dev
    # One frame per open directory: its descriptor, its name in the directory of the frame
    # below, and the subdirectories in it still to empty.
    frames: list[tuple[int, str, list[str]]] = [(top, "", _scan(top))]
    moved = 0
    try:
        while frames:
            fd, name, pending = frames[-1]
            if not pending:
                frames.pop()
                if frames:
                    os.close(fd)
                    os.rmdir(name, dir_fd=frames[-1][0])
                continue
            sub = pending.pop()
            if len(frames) >= _MAX_OPEN:
                moved += 1
                while _exists(top, f".retinue-rm.{moved}"):
                    moved += 1
                os.rename(sub, f".retinue-rm.{moved}", src_dir_fd=fd, dst_dir_fd=top)
                frames[0][2].append(f".retinue-rm.{moved}")
                continue
            try:
                child = os.open(
                    sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except FileNotFoundError:
                continue
            except OSError:  # no longer a directory (or a symlink now): unlink, never enter
                _unlink(fd, sub)
                continue
            if os.fstat(child).st_dev != device:
                os.close(child)
                os.rmdir(sub, dir_fd=fd)  # a mount point: EBUSY, and nothing under it touched
                continue
            frames.append((child, sub, _scan(child)))
    finally:
        for fd, _, _ in frames[1:]:
            os.close(fd)


def _scan(fd: int) -> list[str]:
    """Unlink everything in the directory `fd` but its subdirectories; returns those."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) or _unlink(fd, entry.name):
                subdirs.append(entry.name)
    return subdirs


def _unlink(fd: int, name: str) -> bool:
    """Unlink a non-directory; True if it turned out to be a directory after all."""
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        return True
    return False


def _exists(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _remove_stale_cgroup(plan: dict[str, Any]) -> None:
    """The cgroup of a supervisor that was killed (rmdir: only once nothing is left in it)."""
    from . import cgroups

    try:
        place = plan.get("cgroup")
        if place:
            cgroups.remove(place, timeout=0.5, if_empty=True)
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        pass


def _remove_stale_listener(plan: dict[str, Any]) -> None:
    import socket

    listener = plan.get("seccomp_listener")
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
