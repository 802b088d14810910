"""Service images: imported by the administrator, unpacked once per manifest digest, shared.

A sidecar-placed service runs from its own image. Creating a container must never reach a
registry nor unpack anything (it would be slow, and a node's network is not the container's
business), so images come in ahead of time with `retinue image import NAME SOURCE`: skopeo
normalises any local source (an OCI layout, an OCI archive, a `docker save` archive) into an OCI
layout, umoci unpacks its root filesystem, and the result lands under the manifest's digest:

    IMAGE_DIR/sha256/HEX/rootfs      the root filesystem, mounted read-only by every sibling
    IMAGE_DIR/sha256/HEX/image.json  {"digest", "config": the image config's `config` section}
    IMAGE_DIR/names/NAME.json        {"name", "digest", "source", "imported"}

Two names (or two imports) of the same image share one unpacked copy. Everything is written
under IMAGE_DIR/tmp first and renamed into place, so a failed import leaves nothing behind.

The store is root's alone (0700 from IMAGE_DIR down; one an older version left open is narrowed
whenever it is used): an image is kept exactly as it says, setuid programs, device nodes and
world-writable directories included, because that is what its sidecar must get inside its
container; on the host, the one place where such files could give a local user root, nobody but
root reaches them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from typing import Any

from .errors import RetinueError

DEFAULT_IMAGE_DIR = "/var/lib/retinue/images"
IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}\Z")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
# A service names an image by name, by digest, or by name pinned to a digest.
PINNED = re.compile(r"([a-z0-9][a-z0-9._-]{0,127})@(sha256:[0-9a-f]{64})\Z")
# The local transports skopeo reads; a registry (docker://) is refused on purpose.
LOCAL_TRANSPORTS = ("oci", "oci-archive", "docker-archive")
# Where runc must find mount points: created at import, never later in a shared rootfs.
MOUNT_POINTS = ("proc", "sys", "dev", "tmp", "run")


class ImageError(RetinueError):
    """An image could not be imported, found or removed; the message names it and why."""


def secure_store(store: str, create: bool = False) -> None:
    """Make the store root-only from its top, narrowing one an older version left open.

    Called by everything that uses the store as root (import, rm, a sidecar's start), so an
    upgrade closes an existing store without an administrator's step."""
    if create:
        os.makedirs(store, mode=0o700, exist_ok=True)
    for path in (store, os.path.join(store, "sha256"), os.path.join(store, "names")):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if st.st_uid != os.geteuid():
            raise ImageError(
                f"image_dir: {path} belongs to uid {st.st_uid}, not to uid {os.geteuid()}: "
                "whoever owns it can change the images sidecars run; give it to root"
            )
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o700)


def check_reference(ref: str) -> str | None:
    """None when `ref` is a valid image reference (NAME, sha256:HEX or NAME@sha256:HEX)."""
    if IMAGE_NAME.match(ref) or DIGEST.match(ref) or PINNED.match(ref):
        return None
    return (
        "expected an image name (lowercase letters, digits, '.', '_', '-'), a digest "
        f"sha256:<64 hex> or NAME@sha256:<64 hex>, got {ref!r}"
    )


def source_ref(source: str) -> str:
    """The skopeo reference of a local SOURCE: TRANSPORT:PATH given, or guessed from PATH."""
    transport, sep, rest = source.partition(":")
    if sep and transport in LOCAL_TRANSPORTS:
        path = rest.split(":", 1)[0] if transport == "oci" else rest
        if not os.path.exists(path):
            raise ImageError(f"{source}: {path}: no such file or directory")
        return source
    if sep and re.fullmatch(r"[a-z][a-z0-9-]*", transport) and not os.path.exists(source):
        raise ImageError(
            f"{source}: only local images can be imported ({', '.join(LOCAL_TRANSPORTS)}); "
            "retinue never pulls from a registry"
        )
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "oci-layout")):
            raise ImageError(f"{source}: a directory without an oci-layout file: not an OCI layout")
        return f"oci:{source}"
    if not os.path.isfile(source):
        raise ImageError(f"{source}: no such file or directory")
    try:
        with tarfile.open(source) as tar:
            names = {n.lstrip("./") for n in tar.getnames()}
    except (tarfile.TarError, OSError) as e:
        raise ImageError(f"{source}: not a tar archive: {e}") from None
    if "oci-layout" in names:
        return f"oci-archive:{source}"
    if "manifest.json" in names:
        return f"docker-archive:{source}"
    raise ImageError(
        f"{source}: neither an OCI archive (no oci-layout) nor a docker save archive "
        "(no manifest.json)"
    )


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageError(
            f"{what}: {argv[0]} is not installed (Debian: apt-get install {argv[0]})"
        ) from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ImageError(f"{what}: {argv[0]} failed: {detail[-1] if detail else done.returncode}")


def _layout_manifest(layout: str) -> tuple[str, dict[str, Any]]:
    """(manifest digest, image config's `config`) of the one image in an OCI layout."""
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    (entry,) = index["manifests"]
    digest = entry["digest"]
    algo, hexa = digest.split(":", 1)
    with open(os.path.join(layout, "blobs", algo, hexa)) as f:
        manifest = json.load(f)
    c_algo, c_hex = manifest["config"]["digest"].split(":", 1)
    with open(os.path.join(layout, "blobs", c_algo, c_hex)) as f:
        config = json.load(f).get("config") or {}
    return digest, config


def behind_view(rootfs: str, store: str, argv: list[str], unshare: str) -> list[str]:
    """`argv` (the lower runtime's create of a sibling) in a mount namespace of its own where
    `store` itself shows the image's rootfs (a bind mount only that namespace has).

    A sibling in the app's user namespace prepares its root as the app's mapped root, which
    the host's permissions treat as "others": it cannot pass the root-only store. Rather than
    open the store, the lower runtime gets a view of the one rootfs at a path it can reach;
    the view dies with the namespace (the container keeps its own copy), so nothing is left
    to clean up and no host user ever sees it.
    """
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
            "retinue-image-view", rootfs, store, *argv]


def image_path(store: str, digest: str) -> str:
    return os.path.join(store, *digest.split(":", 1))


def import_image(store: str, name: str, source: str) -> dict[str, Any]:
    """Import SOURCE as NAME; unpacks only when the digest is new. Returns the name's record."""
    if not IMAGE_NAME.match(name):
        raise ImageError(
            f"image name: expected lowercase letters, digits, '.', '_' or '-', got {name!r}"
        )
    ref = source_ref(source)
    secure_store(store, create=True)
    tmp_root = os.path.join(store, "tmp")
    os.makedirs(tmp_root, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(store, "names"), mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(dir=tmp_root)
    try:
        layout = os.path.join(work, "layout")
        _run(["skopeo", "--insecure-policy", "copy", "--quiet", ref, f"oci:{layout}:retinue"],
             f"{source}: reading the image")
        digest, config = _layout_manifest(layout)
        final = image_path(store, digest)
        if not os.path.isdir(final):
            staged = os.path.join(work, "image")
            os.mkdir(staged)
            rootfs = os.path.join(staged, "rootfs")
            _run(["umoci", "raw", "unpack", "--image", f"{layout}:retinue", rootfs],
                 f"{source}: unpacking {digest}")
            os.chmod(rootfs, 0o755)
            for point in MOUNT_POINTS:
                target = os.path.join(rootfs, point)
                if not os.path.lexists(target):
                    os.mkdir(target)
                    # runc gives a tmpfs the mode of the directory it covers.
                    os.chmod(target, 0o1777 if point == "tmp" else 0o755)
            # Where a sibling's retinue-init is mounted: made now, never in the shared copy later.
            init_dir = os.path.join(rootfs, ".retinue")
            if not os.path.lexists(init_dir):
                os.mkdir(init_dir, 0o755)
                with open(os.path.join(init_dir, "init"), "w"):
                    pass
            _write_json(os.path.join(staged, "image.json"), {"digest": digest, "config": config})
            os.makedirs(os.path.dirname(final), mode=0o700, exist_ok=True)
            try:
                os.rename(staged, final)
            except OSError:
                if not os.path.isdir(final):  # else: a concurrent import of the same image won
                    raise
        record = {"name": name, "digest": digest, "source": source, "imported": time.time()}
        _write_json(os.path.join(store, "names", f"{name}.json"), record, work)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_json(path: str, data: object, tmp_dir: str | None = None) -> None:
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def names(store: str) -> list[dict[str, Any]]:
    out = []
    try:
        entries = sorted(os.listdir(os.path.join(store, "names")))
    except OSError:
        return []
    for entry in entries:
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(store, "names", entry)) as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue
    return out


def digests(store: str) -> list[str]:
    try:
        return sorted(f"sha256:{h}" for h in os.listdir(os.path.join(store, "sha256")))
    except OSError:
        return []


def resolve(store: str, ref: str) -> dict[str, Any]:
    """{"digest", "rootfs", "config"} of an imported image named by `ref`."""
    error = check_reference(ref)
    if error:
        raise ImageError(f"image: {error}")
    pinned = PINNED.match(ref)
    if DIGEST.match(ref):
        digest = ref
    else:
        name = pinned.group(1) if pinned else ref
        try:
            with open(os.path.join(store, "names", f"{name}.json")) as f:
                digest = json.load(f)["digest"]
        except (OSError, ValueError, KeyError):
            raise ImageError(
                f"image {name!r}: not imported into {store} (retinue image import {name} SOURCE)"
            ) from None
        if pinned and digest != pinned.group(2):
            raise ImageError(
                f"image {ref!r}: {name} is now {digest}, not the pinned digest"
            )
    path = image_path(store, digest)
    try:
        with open(os.path.join(path, "image.json")) as f:
            config = json.load(f).get("config") or {}
    except (OSError, ValueError):
        raise ImageError(f"image {ref!r}: {digest} is not unpacked in {store}") from None
    return {"digest": digest, "rootfs": os.path.join(path, "rootfs"), "config": config}


def remove(store: str, ref: str, in_use: dict[str, list[str]]) -> list[str]:
    """Remove a name (and its unpacked image once no other name has it) or a digest.

    `in_use` maps digests to the sibling containers running them: those are refused.
    Returns what was removed.
    """
    error = check_reference(ref)
    if error:
        raise ImageError(f"image: {error}")
    secure_store(store)
    records = names(store)
    if DIGEST.match(ref):
        digest, dropped = ref, [r["name"] for r in records if r.get("digest") == ref]
        if not os.path.isdir(image_path(store, digest)) and not dropped:
            raise ImageError(f"image {ref}: not in {store}")
    else:
        found = [r for r in records if r.get("name") == ref.split("@")[0]]
        if not found:
            raise ImageError(f"image {ref!r}: no such image in {store}")
        digest, dropped = found[0]["digest"], [ref.split("@")[0]]
    users = in_use.get(digest, [])
    others = [r["name"] for r in records if r.get("digest") == digest and r["name"] not in dropped]
    if users and not others:
        raise ImageError(
            f"image {ref!r} ({digest}) is in use by {len(users)} container(s): "
            f"{', '.join(sorted(users)[:5])}"
        )
    removed = []
    for name in dropped:
        os.unlink(os.path.join(store, "names", f"{name}.json"))
        removed.append(name)
    if not others and os.path.isdir(image_path(store, digest)):
        # Renamed away first: a sibling created meanwhile finds no half-removed rootfs.
        doomed = os.path.join(store, "tmp", f"rm-{digest.split(':')[1]}")
        os.makedirs(os.path.join(store, "tmp"), mode=0o700, exist_ok=True)
        os.rename(image_path(store, digest), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(digest)
    return removed


def size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total
