"""Mount points under a directory: list them, detach them (staging mounts of sidecar shares).

A directory that still has something mounted below it must never be removed recursively: a
bind mount of a directory on the same filesystem has the same st_dev, so a walk that only
stops at other devices would delete the mounted directory's files (the app's, or the host's).
"""

from __future__ import annotations

import ctypes
import errno
import os

MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)


def unmount(target: str) -> None:
    """Detach the mount at `target` (and what is mounted under it); gone already is fine."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, os.strerror(err), target)


def remove_point(path: str) -> None:
    """Remove a mount point once nothing is mounted on it (an empty directory or a file); one
    still in use, or already gone, is left as it is: never a recursive removal."""
    try:
        if os.path.isdir(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def mounted_under(path: str) -> list[str]:
    """The mount points at or below `path` in this mount namespace, deepest first."""
    top = os.path.abspath(path).rstrip("/") or "/"
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = set()
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == top or point.startswith(top + "/"):
            found.add(point)
    return sorted(found, key=len, reverse=True)


def clear(path: str) -> bool:
    """Detach every mount at or below `path`; True when none is left (it may be removed)."""
    for point in mounted_under(path):
        try:
            unmount(point)
        except OSError:
            pass
    return not mounted_under(path)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        digits = field[i + 1:i + 4]
        if field[i] == "\\" and len(digits) == 3 and digits.isdigit():
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
