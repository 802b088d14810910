"""Shared fixtures: a busybox-static rootfs, bundles, the shim's launchers, private runc roots.

Everything runs against the real runc (and crun where this host lets it) as root. Nothing here
mocks a runtime.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from retinue.cli import launcher, rootfs
from retinue.config import cache as confcache

REPO = Path(__file__).resolve().parent.parent
RUNC = shutil.which("runc") or "/usr/sbin/runc"
CRUN = shutil.which("crun") or "/usr/bin/crun"


@pytest.fixture(scope="session")
def rootfs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One busybox-static rootfs per session; bundles copy it."""
    return Path(rootfs.build(str(tmp_path_factory.mktemp("rootfs") / "rootfs")))


@pytest.fixture(scope="session")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """retinue-runtime and retinue-hook launchers for this session's installed package."""
    d = tmp_path_factory.mktemp("bin")
    python = os.path.join(sys.prefix, "bin", "python3")
    launcher.write(str(d), python, sysconfig.get_paths()["purelib"])
    return d


@pytest.fixture(scope="session")
def shim(bin_dir: Path) -> str:
    return str(bin_dir / "retinue-runtime")


@pytest.fixture
def runc_root(tmp_path: Path) -> Iterator[str]:
    """A private runc --root; every container left in it is force-deleted afterwards."""
    root = tmp_path / "runc-root"
    root.mkdir()
    yield str(root)
    listed = subprocess.run(
        [RUNC, "--root", str(root), "list", "-q"], capture_output=True, text=True
    ).stdout.split()
    for cid in listed:
        subprocess.run([RUNC, "--root", str(root), "delete", "-f", cid], capture_output=True)


@pytest.fixture
def container_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path, rootfs_dir: Path) -> BundleFactory:
    """make_bundle(args, env=[...], annotations={...}, name="bundle") -> bundle directory.

    The rootfs is a bind of the session rootfs path through the spec's root.path, so making a
    bundle costs one small JSON file.
    """

    def make(
        args: list[str] | None = None,
        env: list[str] | None = None,
        annotations: dict[str, str] | None = None,
        name: str = "bundle",
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> Path:
        b = tmp_path / name
        b.mkdir()
        spec = rootfs.default_spec(args or ["sh", "-c", "true"])
        spec["root"] = {"path": str(rootfs_dir), "readonly": True}
        if env:
            spec["process"]["env"].extend(env)
        # The shared rootfs is read-only; give each container a writable /tmp of its own.
        spec["mounts"].append(
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        )
        if annotations:
            spec["annotations"] = annotations
        if edit:
            edit(spec)
        (b / "config.json").write_text(json.dumps(spec, indent="\t"))
        return b

    return make


ConfigFactory = Callable[..., Path]


@pytest.fixture
def make_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConfigFactory]:
    """make_config(policy_toml, config_toml_extra="") -> config.toml path, set as RETINUE_CONFIG.

    The shim's compiled-config cache entries for these files are removed afterwards, so test runs
    do not pile files up in /run/retinue/cache.
    """
    made: list[Path] = []

    def make(policy: str = "", extra: str = "", name: str = "etc") -> Path:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        (d / "policy.toml").write_text(policy)
        (d / "services").mkdir(exist_ok=True)
        cfg = d / "config.toml"
        cfg.write_text(extra)
        monkeypatch.setenv("RETINUE_CONFIG", str(cfg))
        made.append(cfg)
        return cfg

    yield make
    for cfg in made:
        for cached in [*confcache.cache_files(str(cfg)), confcache.sh_cache_file(str(cfg))]:
            with contextlib.suppress(OSError):
                os.unlink(cached)
