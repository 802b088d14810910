"""Capture the config.json files Docker and containerd hand to an OCI runtime.

    .venv/bin/python tests/e2e/capture.py    # rewrites tests/data/{docker,containerd}-config.json

A runtime wrapper registered with the engine copies the bundle's config.json on `create` and
execs runc. The private daemons' paths (under a temporary work directory) are then replaced by
the engines' standard ones (/var/lib/docker, /run/containerd, ...) so that the files read like
those of a default installation; nothing else is changed, byte for byte (the engines write
compact JSON, and the round-trip tests depend on that).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import engines  # noqa: E402

DATA = HERE.parent / "data"
DOCKER_COMMAND = ("sh", "-c", "echo captured")
CONTAINERD_COMMAND = ("sh", "-c", "echo captured")


def write_wrapper(path: Path, dest: Path, runtime: str = engines.RUNC) -> Path:
    """A runc wrapper that copies BUNDLE/config.json to dest/<bundle name>.json on create."""
    path.write_text(
        "#!/bin/sh\n"
        "# Keeps the engine's config.json as it was handed over, then runs the real runtime.\n"
        "prev=\n"
        'for arg; do\n'
        '  if [ "$prev" = --bundle ] || [ "$prev" = -b ]; then\n'
        f'    cp "$arg/config.json" {shlex.quote(str(dest))}/"$(basename "$arg").json"\n'
        "  fi\n"
        '  prev=$arg\n'
        "done\n"
        f'exec {shlex.quote(runtime)} "$@"\n'
    )
    path.chmod(0o755)
    return path


def captured(dest: Path) -> bytes:
    files = sorted(dest.glob("*.json"))
    if len(files) != 1:
        raise RuntimeError(f"{dest}: expected one captured config.json, found {len(files)}")
    return files[0].read_bytes()


def _standardise(raw: bytes, replacements: list[tuple[str, str]]) -> bytes:
    text = raw.decode()
    for private, standard in replacements:
        text = text.replace(private, standard)
    json.loads(text)  # still valid
    return text.encode()


def capture_docker(dk: engines.Dockerd, runtime_name: str, dest: Path) -> bytes:
    """Run one default container (Docker's default seccomp profile) and return its config.json."""
    dk.docker("run", "--rm", "--network", "none", "--runtime", runtime_name, dk.image,
              *DOCKER_COMMAND)
    return _standardise(captured(dest), [
        (str(dk.data_root), "/var/lib/docker"),
        (str(dk.exec_root), "/var/run/docker"),
        (dk.containerd.address, "/run/containerd/containerd.sock"),
        (dk.cgroup_parent, "/docker"),
    ])


def capture_containerd(ctd: engines.Containerd, wrapper: Path, dest: Path) -> bytes:
    """Run one default `ctr run` container and return its config.json."""
    container_id = "captured"
    ctd.run(container_id, *CONTAINERD_COMMAND, runc_binary=str(wrapper), rm=True)
    return _standardise(captured(dest), [
        (f"{ctd.cgroup_parent}/{container_id}", f"/default/{container_id}"),
        (str(ctd.workdir), "/run/containerd"),
    ])


def main() -> None:
    from retinue.cli import rootfs

    with tempfile.TemporaryDirectory(prefix="rt-capture-") as tmp:
        work = Path(tmp)
        rootfs_dir = Path(rootfs.build(str(work / "rootfs")))
        for name in ("docker", "containerd"):
            (work / f"{name}-out").mkdir()
        docker_wrapper = write_wrapper(work / "docker-capture", work / "docker-out")
        ctd_wrapper = write_wrapper(work / "ctd-capture", work / "containerd-out")
        with engines.dockerd(work / "e", {"capture": str(docker_wrapper)}) as dk:
            dk.import_rootfs(rootfs_dir)
            docker_json = capture_docker(dk, "capture", work / "docker-out")
            ctd = dk.containerd
            ctd.import_rootfs(rootfs_dir)
            containerd_json = capture_containerd(ctd, ctd_wrapper, work / "containerd-out")
    DATA.mkdir(exist_ok=True)
    for name, data in (("docker", docker_json), ("containerd", containerd_json)):
        target = DATA / f"{name}-config.json"
        target.write_bytes(data)
        print(f"{target}: {len(data)} bytes")


if __name__ == "__main__":
    os.umask(0o022)
    main()
