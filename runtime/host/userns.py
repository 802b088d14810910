"""Whether a user-namespaced container's root can make the mount points retinue adds.

In a user namespace runc makes missing mount points as the container's root, which is an
unprivileged host uid (the mapping of uid 0): it may write only directories whose owner and
group are mapped into the namespace (then its capabilities apply), or that grant write to it
as to anyone else. A rootfs owned by the host's root (not chowned for the mapping, not idmapped)
has none of those, and runc's error ("mkdir .../retinue: permission denied") does not say why.
This check says it before anything is started. Imported only for specs with a user namespace.
"""

from __future__ import annotations

import os
import stat

from ..errors import RetinueError
from ..spec.bundle import has_user_namespace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _host_id(mappings: list[dict[str, Any]], container_id: int) -> int | None:
    for m in mappings:
        start, host, size = m.get("containerID"), m.get("hostID"), m.get("size")
        if isinstance(start, int) and isinstance(host, int) and isinstance(size, int) \
                and start <= container_id < start + size:
            return host + container_id - start
    return None


def _mapped(mappings: list[dict[str, Any]], host_id: int) -> bool:
    for m in mappings:
        host, size = m.get("hostID"), m.get("size")
        if isinstance(host, int) and isinstance(size, int) and host <= host_id < host + size:
            return True
    return False


def _can_create_in(st: os.stat_result, uids: list[dict[str, Any]], gids: list[dict[str, Any]],
                   root_uid: int, root_gid: int) -> bool:
    """Whether the container's root may add an entry to directory `st` (as the kernel decides:
    capabilities count only on inodes whose owner and group are both mapped)."""
    if _mapped(uids, st.st_uid) and _mapped(gids, st.st_gid):
        return True
    wx = stat.S_IWOTH | stat.S_IXOTH
    if st.st_uid == root_uid:
        wx = stat.S_IWUSR | stat.S_IXUSR
    elif st.st_gid == root_gid:
        wx = stat.S_IWGRP | stat.S_IXGRP
    return st.st_mode & wx == wx


def check_mount_points(spec: dict[str, Any], edited: dict[str, Any], bundle: str) -> None:
    """Raise RetinueError naming the first mount point retinue added that the container's root
    could not create in its rootfs. Unknown cases (symlinks on the way, a point under another
    mount, no mapping for root, idmapped mounts) pass: runc decides there."""
    if not has_user_namespace(edited):
        return
    linux = edited.get("linux") or {}
    uids, gids = linux.get("uidMappings") or [], linux.get("gidMappings") or []
    root_uid, root_gid = _host_id(uids, 0), _host_id(gids, 0)
    root = (edited.get("root") or {}).get("path")
    if root_uid is None or root_gid is None or not isinstance(root, str):
        return
    rootfs = os.path.join(bundle, root)
    theirs = [m.get("destination") for m in spec.get("mounts") or [] if isinstance(m, dict)]
    if any(isinstance(m, dict) and (m.get("uidMappings") or "idmap" in (m.get("options") or []))
           for m in edited.get("mounts") or []):
        return
    ours = [m.get("destination") for m in edited.get("mounts") or []
            if isinstance(m, dict) and m.get("destination") not in theirs]
    for destination in ours:
        if not isinstance(destination, str) or not destination.startswith("/"):
            continue
        parts = [p for p in destination.split("/") if p]
        for i in range(len(parts)):
            sub = "/" + "/".join(parts[: i + 1])
            if any(isinstance(t, str) and (sub + "/").startswith(t.rstrip("/") + "/")
                   for t in theirs):
                break  # under one of the container's own mounts: whatever that brings
            parent = os.path.join(rootfs, *parts[:i])
            try:
                st = os.lstat(os.path.join(rootfs, *parts[: i + 1]))
            except FileNotFoundError:
                pst = os.lstat(parent)
                if not _can_create_in(pst, uids, gids, root_uid, root_gid):
                    raise RetinueError(
                        f"{rootfs}: the container has a user namespace (its root is host uid "
                        f"{root_uid}) and {sub} does not exist in its rootfs, so runc would "
                        f"have to create it as that uid for {destination}, but "
                        f"{'/' + '/'.join(parts[:i])} belongs to uid {pst.st_uid} gid "
                        f"{pst.st_gid} (mode {stat.S_IMODE(pst.st_mode):04o}). Give the "
                        f"container a rootfs its root owns (chowned to {root_uid} or "
                        f"idmapped, as podman --userns=auto and hostUsers: false do), or "
                        f"create {sub} in the image"
                    ) from None
                break
            except OSError:
                break
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                break
