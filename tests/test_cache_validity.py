"""The configuration caches are never trusted after a configuration file changed, however it
was changed (issue 15, item 3).

An administrator (or a tool) replaces policy.toml or a service file in one of the usual ways,
several of which give the new file an mtime older than the caches, or the old file's inode, size
and times again. The next create must attach exactly what `retinue plan` (which always reads the
files) says: the sh launcher's cache and Python's compiled cache must both see the change.

Each case first creates the container with the old configuration (nothing or the old service
attaches, and the caches are then warm and trusted), replaces a file, and compares the next
create with `plan`: real runc, through the installed launcher.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from retinue.config import cache as confcache

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BundleFactory = Callable[..., Path]
TIMEOUT = 60
LONG_AGO = "2 hours ago"

# Same size before and after, so that only the key's times or inode can tell them apart. The
# old rule's witness (MODA) is not in the spec: the sh launcher passes it without Python.
OLD_POLICY = '[[attach]]\nname = "r"\nwhen.env = { MODA = "x" }\nenv = { ATTACHED = "1" }\n'
NEW_POLICY = OLD_POLICY.replace("MODA", "MODE")
SERVICE_POLICY = '[[attach]]\nname = "s"\nwhen.env = { MODE = "x" }\nservices = ["web"]\n'
OLD_SERVICE = 'files = "files/aaaa"\ncommand = ["run.sh"]\n'
NEW_SERVICE = OLD_SERVICE.replace("aaaa", "bbbb")

MEANS = [
    "cp -p",
    "mv",
    "rsync -a",
    "install",
    "install -p",
    "editor rename",
    "write, touch -d in the past",
    "same-size write, times put back (touch -r)",
    "configmap ..data swap",
]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Output in files, not pipes: a created container holds its stdio open."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              timeout=TIMEOUT)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            argv, proc.returncode, out.read().decode(), err.read().decode()
        )


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, timeout=TIMEOUT)


class Layout:
    """etc/config.toml with policy.toml and services/ beside it, either plain files or, for
    the configmap means, symlinks through `..data` to a versioned directory (as the kubelet
    projects a ConfigMap)."""

    def __init__(self, tmp: Path, policy: str, service: str | None, configmap: bool) -> None:
        self.tmp, self.etc, self.configmap = tmp, tmp / "etc", configmap
        self.etc.mkdir()
        for name in ("aaaa", "bbbb"):
            files = self.etc / "files" / name
            files.mkdir(parents=True)
            (files / "run.sh").write_text("#!/bin/sh\nexec sleep 1000\n")
            (files / "run.sh").chmod(0o755)
        data = self.etc / "..v1" if configmap else self.etc
        self._fill(data, policy, service)
        if configmap:
            os.symlink("..v1", self.etc / "..data")
            os.symlink("..data/policy.toml", self.etc / "policy.toml")
            os.symlink("..data/services", self.etc / "services")
        self.config = self.etc / "config.toml"
        self.config.write_text(
            f'runtime = "{RUNC}"\nstate_dir = "{tmp}/state"\nlog_dir = "{tmp}/log"\n'
        )

    @staticmethod
    def _fill(d: Path, policy: str, service: str | None) -> None:
        d.mkdir(exist_ok=True)
        (d / "policy.toml").write_text(policy)
        (d / "services").mkdir()
        if service is not None:
            (d / "services" / "web.toml").write_text(service)

    def replace(self, relative: str, text: str, means: str) -> None:
        """Put `text` at etc/RELATIVE by `means`, as an administrator would."""
        target = self.etc / relative
        stage = self.tmp / "stage" / target.name
        stage.parent.mkdir(exist_ok=True)
        stage.write_text(text)
        sh("touch", "-d", LONG_AGO, str(stage))  # prepared long ago, deployed now
        if means == "cp -p":
            sh("cp", "-p", str(stage), str(target))
        elif means == "mv":
            sh("mv", str(stage), str(target))
        elif means == "rsync -a":
            if shutil.which("rsync") is None:
                pytest.skip("rsync is not installed (make deps installs it)")
            sh("rsync", "-a", str(stage), str(target))
        elif means == "install":
            sh("install", "-m", "0644", str(stage), str(target))
        elif means == "install -p":
            sh("install", "-p", "-m", "0644", str(stage), str(target))
        elif means == "editor rename":
            tmp = target.parent / f".{target.name}.swp"
            tmp.write_text(text)
            os.rename(tmp, target)
        elif means == "write, touch -d in the past":
            target.write_text(text)
            sh("touch", "-d", LONG_AGO, str(target))
        elif means == "same-size write, times put back (touch -r)":
            ref = self.tmp / "times"
            sh("cp", "-p", str(target), str(ref))
            with open(target, "r+") as f:  # in place: same inode
                f.write(text)
                f.truncate()
            sh("touch", "-r", str(ref), str(target))
        elif means == "configmap ..data swap":
            # A new version directory, copied with its times (cp -a), then ..data swapped by
            # rename, which is what the kubelet's atomic writer does.
            shutil.copytree(self.etc / "..v1", self.etc / "..v2", symlinks=True)
            (self.etc / "..v2" / relative).write_text(text)
            sh("touch", "-d", LONG_AGO, str(self.etc / "..v2" / relative))
            os.symlink("..v2", self.etc / "..data_tmp")
            os.rename(self.etc / "..data_tmp", self.etc / "..data")
        else:
            raise AssertionError(means)


@pytest.fixture
def env_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    used: list[Path] = []

    def use(cfg: Path) -> None:
        monkeypatch.setenv("RETINUE_CONFIG", str(cfg))
        used.append(cfg)

    yield use
    for cfg in used:
        for cached in [*confcache.cache_files(str(cfg)), confcache.sh_cache_file(str(cfg))]:
            with contextlib.suppress(OSError):
                os.unlink(cached)


def _lines(spec: object) -> list[str]:
    out = json.dumps(spec, indent=2, ensure_ascii=False).splitlines(keepends=True)
    out[-1] += "\n"
    return out


def _create_matches_plan(shim: str, admin: str, bundle: Path, root: str, cid: str) -> str:
    """Create through the launcher; the diff it made must be the one `plan` printed. Returns
    what plan said (its comment lines), for the caller to check which version it saw."""
    cfg = bundle / "config.json"
    pristine = cfg.read_text()
    planned = run([admin, "plan", "--id", cid, "--root", root, str(bundle)])
    assert planned.returncode == 0, planned.stderr
    before = json.loads(pristine)
    created = run([shim, "--root", root, "create", "--bundle", str(bundle), cid])
    try:
        assert created.returncode == 0, created.stderr
        after = json.loads(cfg.read_text())
    finally:
        deleted = run([shim, "--root", root, "delete", "--force", cid])
        cfg.write_text(pristine)
    assert deleted.returncode == 0, deleted.stderr
    shown = str(cfg).lstrip("/")
    made = list(difflib.unified_diff(_lines(before), _lines(after), f"a/{shown}", f"b/{shown}"))
    said = [line for line in planned.stdout.splitlines(keepends=True)]
    header = [line for line in said if line.startswith("# ")]
    diff = [line for line in said if not line.startswith("# ")]
    if not made:
        assert not header and "passed through untouched" in planned.stdout, planned.stdout
    else:
        assert diff[: len(made)] == made, (planned.stdout, "".join(made))
    return "".join(said)


def _warm(shim: str, root: str) -> None:
    """Let Python write both caches, then wait out the clock margin so they are trusted."""
    for _ in range(2):
        r = run([shim, "--root", root, "list"])
        assert r.returncode == 0, r.stderr
        time.sleep(0.1)


@pytest.mark.parametrize("means", MEANS)
def test_a_replaced_policy_is_seen_by_the_next_create(
    means: str, tmp_path: Path, shim: str, make_bundle: BundleFactory, runc_root: str,
    container_id: str, env_config: Callable[[Path], None],
) -> None:
    layout = Layout(tmp_path, OLD_POLICY, None, configmap=means.startswith("configmap"))
    env_config(layout.config)
    admin = str(Path(shim).parent / "retinue")
    bundle = make_bundle(["true"], env=["MODE=x"])
    _warm(shim, runc_root)
    said = _create_matches_plan(shim, admin, bundle, runc_root, container_id)
    assert "no rule selects" in said
    _warm(shim, runc_root)

    layout.replace("policy.toml", NEW_POLICY, means)
    said = _create_matches_plan(shim, admin, bundle, runc_root, container_id)
    assert "# rules: r\n" in said


@pytest.mark.parametrize("means", MEANS)
def test_a_replaced_service_file_is_seen_by_the_next_create(
    means: str, tmp_path: Path, shim: str, make_bundle: BundleFactory, runc_root: str,
    container_id: str, env_config: Callable[[Path], None],
) -> None:
    layout = Layout(tmp_path, SERVICE_POLICY, OLD_SERVICE, configmap=means.startswith("configmap"))
    env_config(layout.config)
    admin = str(Path(shim).parent / "retinue")
    bundle = make_bundle(["true"], env=["MODE=x"])
    _warm(shim, runc_root)
    said = _create_matches_plan(shim, admin, bundle, runc_root, container_id)
    assert "files/aaaa" in said
    _warm(shim, runc_root)

    layout.replace("services/web.toml", NEW_SERVICE, means)
    said = _create_matches_plan(shim, admin, bundle, runc_root, container_id)
    assert "files/bbbb" in said and "files/aaaa" not in said


@pytest.mark.parametrize("means", ["rsync -a", "cp -a", "mv"])
def test_a_services_directory_that_appears_is_seen_by_the_next_create(
    means: str, tmp_path: Path, shim: str, make_bundle: BundleFactory, runc_root: str,
    container_id: str, env_config: Callable[[Path], None],
) -> None:
    """No services directory and no rule: nothing can attach, and the sh launcher passes every
    create. A directory deployed with its old times must end that at once."""
    layout = Layout(tmp_path, "", None, configmap=False)
    (layout.etc / "services").rmdir()
    env_config(layout.config)
    admin = str(Path(shim).parent / "retinue")
    plain = make_bundle(["true"], name="plain")
    _warm(shim, runc_root)
    said = _create_matches_plan(shim, admin, plain, runc_root, container_id)
    assert "passed through untouched" in said
    _warm(shim, runc_root)

    stage = tmp_path / "stage" / "services"
    stage.mkdir(parents=True)
    (stage / "web.toml").write_text(OLD_SERVICE)
    sh("touch", "-d", LONG_AGO, str(stage / "web.toml"), str(stage))
    if means == "rsync -a":
        if shutil.which("rsync") is None:
            pytest.skip("rsync is not installed (make deps installs it)")
        sh("rsync", "-a", f"{stage}/", str(layout.etc / "services"))
    elif means == "cp -a":
        sh("cp", "-a", str(stage), str(layout.etc / "services"))
    else:
        sh("mv", str(stage), str(layout.etc / "services"))
    bundle = make_bundle(["true"], annotations={"io.retinue.services": "web"})
    said = _create_matches_plan(shim, admin, bundle, runc_root, container_id)
    assert "# services: web\n" in said
