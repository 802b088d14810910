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

Nothing is unpacked before every blob is verified: an OCI source from its index down (each
manifest, config and layer has the size and digest its descriptor declares), a `docker save`
archive as the OCI layout skopeo made of it. `image_max_size` bounds an image three ways, each
before the bytes it counts are written: the sizes its descriptors declare (and an archive's own
size), the bytes actually read while verifying (never more than declared), and the bytes its
layers unpack to (gzip and zstd layers are decompressed and counted, not written). skopeo and
umoci also run with RLIMIT_FSIZE at that size, so no file they write can outgrow it.

The store is root's alone (0700 from IMAGE_DIR down; one left open is narrowed whenever it is
used): an image is kept exactly as it says, setuid programs, device nodes and world-writable
directories included, because that is what its sidecar must get inside its container; on the
host, the one place where such files could give a local user root, nobody but root reaches them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

from .. import layout
from ..errors import RetinueError

DEFAULT_IMAGE_DIR = layout.DEFAULT_IMAGE_DIR
IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}\Z")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
# A service names an image by name, by digest, or by name pinned to a digest.
PINNED = re.compile(r"([a-z0-9][a-z0-9._-]{0,127})@(sha256:[0-9a-f]{64})\Z")
# The local transports skopeo reads; a registry (docker://) is refused on purpose.
LOCAL_TRANSPORTS = ("oci", "oci-archive", "docker-archive")
# Where runc must find mount points: created at import, never later in a shared rootfs.
MOUNT_POINTS = ("proc", "sys", "dev", "tmp", "run")
DEFAULT_MAX_SIZE = "4G"
MIN_MAX_SIZE = 1 << 20
# index.json, manifests and configs are read whole, as JSON: more than this is not one.
MAX_JSON = 4 << 20
BLOB_DIGEST = re.compile(r"(sha256):([0-9a-f]{64})\Z|(sha512):([0-9a-f]{128})\Z")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
CHUNK = 1 << 20
# The GOARCH name of this machine, as image platforms are written.
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
    os.uname().machine, os.uname().machine
)


class ImageError(RetinueError):
    """An image could not be imported, found or removed; the message names it and why."""


def secure_store(store: str, create: bool = False) -> None:
    """Make the store root-only from its top, narrowing one left open.

    Called by everything that uses the store as root (import, rm, a sidecar's start), so an
    upgrade closes an existing store without an administrator's step."""
    for path in (store, os.path.join(store, "sha256"), os.path.join(store, "names")):
        try:
            if create and path == store:
                os.makedirs(store, mode=0o700, exist_ok=True)
            st = os.stat(path)
            if st.st_uid != os.geteuid():
                raise ImageError(
                    f"image_dir: {path} belongs to uid {st.st_uid}, not to uid {os.geteuid()}: "
                    "whoever owns it can change the images sidecars run; give it to root"
                )
            if stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(path, 0o700)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ImageError(f"image_dir: {path}: {e.strerror}") from None


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


def max_size_bytes(value: str | int) -> int | None:
    """`image_max_size` in bytes; None when it is not a size of at least 1M."""
    from .cgroups import parse_size

    size = value if isinstance(value, int) and not isinstance(value, bool) else (
        parse_size(value) if isinstance(value, str) and value.strip() else None
    )
    return size if size is not None and size >= MIN_MAX_SIZE else None


def _run(argv: list[str], what: str, max_file: int | None = None, tmp: str | None = None
         ) -> None:
    def limit() -> None:
        # Each file the tool writes stops at image_max_size (SIGXFSZ, restored by subprocess).
        import resource

        assert max_file is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file, max_file))

    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              preexec_fn=limit if max_file else None,
                              env={**os.environ, "TMPDIR": tmp} if tmp else None)
    except FileNotFoundError:
        raise ImageError(
            f"{what}: {argv[0]} is not installed (Debian: apt-get install {argv[0]})"
        ) from None
    if done.returncode == -signal.SIGXFSZ:
        raise ImageError(f"{what}: {argv[0]} wrote a file past image_max_size ({max_file} bytes)")
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ImageError(f"{what}: {argv[0]} failed: {detail[-1] if detail else done.returncode}")


# ---------------------------------------------------------------------------------------------
# Verifying a layout before anything is unpacked.


class _Layout:
    """The files of an OCI layout, in a directory or in an OCI archive (read in place)."""

    def __init__(self, path: str, archive: bool) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if archive:
            self.tar = tarfile.open(path)  # noqa: SIM115 (closed by close())
            for info in self.tar.getmembers():
                if info.isreg():
                    self.members[os.path.normpath(info.name).lstrip("/")] = info

    def label(self, name: str) -> str:
        return f"{self.path}:{name}" if self.tar else os.path.join(self.path, name)

    def open(self, name: str) -> tuple[IO[bytes], int]:
        """The file and its size; ImageError when it is missing or not a regular file."""
        if self.tar is not None:
            info = self.members.get(name)
            f = self.tar.extractfile(info) if info is not None else None
            if info is None or f is None:
                raise ImageError(f"{self.label(name)}: no such file in the archive")
            return f, info.size
        try:
            fd = os.open(os.path.join(self.path, name), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise ImageError(f"{self.label(name)}: {e.strerror}") from None
        f = os.fdopen(fd, "rb")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            f.close()
            raise ImageError(f"{self.label(name)}: not a regular file")
        return f, st.st_size

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _descriptor(desc: object, what: str) -> tuple[str, str, int, str]:
    """(digest, blob path in the layout, declared size, media type) of a descriptor."""
    if not isinstance(desc, dict):
        raise ImageError(f"{what}: expected a descriptor, got {desc!r:.100}")
    digest, size = desc.get("digest"), desc.get("size")
    m = BLOB_DIGEST.match(digest) if isinstance(digest, str) else None
    if m is None:
        raise ImageError(f"{what}: expected a sha256 or sha512 digest, got {digest!r:.100}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{what} {digest}: expected a size in bytes, got {size!r:.100}")
    algo, hexa = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return str(digest), f"blobs/{algo}/{hexa}", size, str(desc.get("mediaType") or "")


def _unpacker(media_type: str) -> Callable[[bytes], int] | None:
    """For a layer's media type, a function giving how many bytes each chunk unpacks to."""
    if media_type.endswith("gzip"):
        inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)

        def gunzip(chunk: bytes) -> int:
            n = 0
            while chunk:
                n += len(inflate.decompress(chunk, CHUNK))
                chunk = inflate.unconsumed_tail
            return n

        return gunzip
    if media_type.endswith("zstd"):
        return None  # counted by zstd itself, below
    return len


def _zstd_size(f: IO[bytes], counted: Callable[[int], None]) -> None:
    """Count what a zstd layer unpacks to through `zstd -dc` (`counted` stops it past the
    bound). Python has no zstd of its own before 3.14."""
    if not _real(f):  # an archive member (already verified): zstd needs a file to read
        with tempfile.TemporaryFile() as tmp:
            shutil.copyfileobj(f, tmp)
            tmp.seek(0)
            _zstd_size(tmp, counted)
        return
    try:
        proc = subprocess.Popen(["zstd", "-dcq"], stdin=f.fileno(), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ImageError("a zstd layer: zstd is not installed (Debian: apt-get install zstd)"
                         ) from None
    assert proc.stdout is not None
    with proc.stdout:
        try:
            while chunk := proc.stdout.read(CHUNK):
                counted(len(chunk))
        finally:
            proc.kill()
            proc.wait()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise ImageError(f"a zstd layer: not zstd (zstd exited with {proc.returncode})")


def _real(f: IO[bytes]) -> bool:
    try:
        f.fileno()
    except (OSError, AttributeError, ValueError):
        return False
    return True


def _check_blob(layout: _Layout, desc: object, what: str, counted: Callable[[int], None]
                ) -> bytes | None:
    """Verify one blob's size and digest (reading at most its declared size and one byte);
    its bytes when it is JSON to read (manifests, configs), else None."""
    digest, name, declared, media_type = _descriptor(desc, what)
    label = f"{what} {digest} ({layout.label(name)})"
    is_json = what in ("manifest", "index", "config")
    if is_json and declared > MAX_JSON:
        raise ImageError(f"{label}: declares {declared} bytes, more than {MAX_JSON} for JSON")
    f, actual = layout.open(name)
    with f:
        if actual > declared:  # before reading a byte; the reads below still stop there
            raise ImageError(f"{label}: has more than the {declared} bytes its descriptor declares")
        if actual < declared:
            raise ImageError(f"{label}: {actual} bytes, not the {declared} its descriptor declares")
        h = hashlib.new(digest.split(":", 1)[0])
        kept = bytearray()
        unpacked = _unpacker(media_type) if what == "layer" else None
        read = 0
        while read <= declared:
            chunk = f.read(min(CHUNK, declared + 1 - read))
            if not chunk:
                break
            read += len(chunk)
            h.update(chunk)
            if is_json:
                kept += chunk
            if unpacked is not None:
                try:
                    counted(unpacked(chunk))
                except zlib.error as e:
                    raise ImageError(f"{label}: not the gzip its media type says: {e}") from None
        if read > declared:
            raise ImageError(f"{label}: has more than the {declared} bytes its descriptor declares")
        if read < declared:
            raise ImageError(f"{label}: {read} bytes, not the {declared} its descriptor declares")
        if what == "layer" and unpacked is None:
            f.seek(0)
            _zstd_size(f, counted)
    if h.hexdigest() != digest.split(":", 1)[1]:
        raise ImageError(
            f"{label}: its content is {h.name}:{h.hexdigest()}, not the digest its "
            "descriptor declares"
        )
    return bytes(kept) if is_json else None


def _json(data: bytes | None, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data or b"")
    except ValueError as e:
        raise ImageError(f"{what}: not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what}: expected a JSON object")
    return value


def _manifests(layout: _Layout, index: dict[str, Any], ref: str | None, where: str,
               depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """(digest, manifest) of every image the index (and the indexes it names) lists,
    each verified against its descriptor."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"{where}: no manifests")
    for desc in entries:
        annotations = (desc.get("annotations") if isinstance(desc, dict) else None) or {}
        if ref and depth == 0 and annotations.get("org.opencontainers.image.ref.name") != ref:
            continue
        platform = desc.get("platform") if isinstance(desc, dict) else None
        if isinstance(platform, dict) and (
            platform.get("os"), platform.get("architecture")
        ) != ("linux", HOST_ARCH):
            continue  # skopeo picks this host's platform; a layout may hold only its blobs
        digest, _, _, media_type = _descriptor(desc, "manifest")
        if media_type in INDEX_TYPES:
            if depth > 4:
                raise ImageError(f"index {digest}: indexes nested more than 4 deep")
            nested = _json(_check_blob(layout, desc, "index", lambda _: None), f"index {digest}")
            yield from _manifests(layout, nested, None, f"index {digest}", depth + 1)
            continue
        data = _check_blob(layout, desc, "manifest", lambda _: None)
        yield digest, _json(data, f"manifest {digest}")


def verify_layout(path: str, archive: bool, ref: str | None, max_size: int, shown: str) -> None:
    """Every blob an image's index leads to has the digest and size its descriptor declares,
    and the image fits `max_size` (`shown` as configured): declared, read and unpacked."""
    layout = _Layout(path, archive)
    try:
        f, size = layout.open("index.json")
        with f:
            if size > MAX_JSON:
                raise ImageError(f"{layout.label('index.json')}: more than {MAX_JSON} bytes")
            index = _json(f.read(MAX_JSON), layout.label("index.json"))
        found = list(_manifests(layout, index, ref, layout.label("index.json")))
        if not found:
            raise ImageError(
                f"{layout.label('index.json')}: no image "
                + (f"named {ref!r} " if ref else "")
                + f"for linux/{HOST_ARCH}"
            )
        blobs = []
        for digest, manifest in found:
            layers = manifest.get("layers")
            if not isinstance(layers, list):
                raise ImageError(f"manifest {digest}: expected a list of layers")
            blobs += [("config", manifest.get("config"))] + [("layer", d) for d in layers]
        # Fail before reading anything big: on what the descriptors declare.
        declared = sum(_descriptor(d, w)[2] for w, d in blobs)
        if declared > max_size:
            raise ImageError(
                f"declares more than image_max_size ({shown}) in all: {declared} bytes"
            )
        unpacked = 0
        for what, desc in blobs:
            digest = _descriptor(desc, what)[0]

            def count(n: int, digest: str = digest) -> None:
                nonlocal unpacked
                unpacked += n
                if unpacked > max_size:
                    raise ImageError(
                        f"layer {digest} unpacks to more than image_max_size ({shown})"
                    )

            data = _check_blob(layout, desc, what, count)
            if what == "config":
                _json(data, f"config {digest}")
    except (OSError, tarfile.TarError) as e:
        raise ImageError(f"{path}: {e}") from None
    finally:
        layout.close()


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


def import_image(
    store: str, name: str, source: str, max_size: str | int = DEFAULT_MAX_SIZE
) -> dict[str, Any]:
    """Import SOURCE as NAME; unpacks only when the digest is new. Returns the name's record."""
    if not IMAGE_NAME.match(name):
        raise ImageError(
            f"image name: expected lowercase letters, digits, '.', '_' or '-', got {name!r}"
        )
    limit = max_size_bytes(max_size)
    if limit is None:
        raise ImageError(f'image_max_size: expected a size like "4G", got {max_size!r}')
    ref = source_ref(source)
    transport, _, rest = ref.partition(":")
    # PATH, or PATH:REFERENCE (skopeo's syntax) when PATH itself has no colon.
    path, _, tag = rest.partition(":") if not os.path.exists(rest) else (rest, "", "")
    try:
        # skopeo unpacks an archive whole before it copies anything: first, its own size.
        if transport != "oci" and os.path.getsize(path) > limit:
            raise ImageError(
                f"{os.path.getsize(path)} bytes, more than image_max_size ({max_size})"
            )
        if transport != "docker-archive":  # which is verified as the layout skopeo makes
            verify_layout(path, transport == "oci-archive", tag or None, limit, str(max_size))
    except ImageError as e:
        raise ImageError(f"{source}: {e}") from None
    secure_store(store, create=True)
    tmp_root = os.path.join(store, "tmp")
    os.makedirs(tmp_root, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(store, "names"), mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(dir=tmp_root)
    try:
        layout = os.path.join(work, "layout")
        _run(["skopeo", "--insecure-policy", "copy", "--quiet", ref, f"oci:{layout}:retinue"],
             f"{source}: reading the image", limit, tmp=work)
        if transport == "docker-archive":
            try:
                verify_layout(layout, False, None, limit, str(max_size))
            except ImageError as e:
                raise ImageError(f"{source}: {e}") from None
        digest, config = _layout_manifest(layout)
        final = image_path(store, digest)
        if not os.path.isdir(final):
            staged = os.path.join(work, "image")
            os.mkdir(staged)
            rootfs = os.path.join(staged, "rootfs")
            _run(["umoci", "raw", "unpack", "--image", f"{layout}:retinue", rootfs],
                 f"{source}: unpacking {digest}", limit)
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
