"""What retinue leaves in /run collects itself (issue 15, item 14): the per-root directories of
the state directory once their last container is gone, and configuration cache entries that
nothing can use any more; `retinue gc` collects what older versions left. Never a living
container's state, never an entry a caller still reads."""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from conftest import Rig, wait_for
from retinue.config import cache as confcache

SLEEP = "exec sleep 1000\n"


def _ids() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"a-{tag}", f"b-{tag}"


def test_the_last_delete_of_a_root_removes_its_directory(rig: Rig) -> None:
    rig.service("s", SLEEP)
    first, second = _ids()
    for cid in (first, second):
        r = rig.create(cid, rig.bundle(env=["RETINUE_SERVICES=s"]))
        assert r.returncode == 0, (r.stderr, rig.errors())
    root_dir = rig.container_dir(first).parent
    assert sorted(p.name for p in root_dir.iterdir()) == sorted([first, second])

    assert rig.rt("delete", "--force", first).returncode == 0
    wait_for(lambda: not rig.container_dir(first).exists())
    assert root_dir.is_dir()  # the other container still lives there
    assert rig.container_dir(second).is_dir()

    assert rig.rt("delete", "--force", second).returncode == 0
    wait_for(lambda: not root_dir.exists())
    # A create in that root makes it again.
    r = rig.create(first, rig.bundle(env=["RETINUE_SERVICES=s"]))
    assert r.returncode == 0, (r.stderr, rig.errors())
    assert rig.container_dir(first).is_dir()


def _cached(config: Path, shim: str) -> None:
    """Let the launcher's Python write `config`'s cache entries (after the clock margin)."""
    env = {**os.environ, "RETINUE_CONFIG": str(config)}
    for _ in range(2):
        r = subprocess.run([shim, "list"], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        time.sleep(0.1)
    assert confcache.cache_files(str(config)), "no cache entry written"
    assert os.path.exists(confcache.sh_cache_file(str(config)))


def test_gc_collects_empty_roots_and_dead_cache_entries(rig: Rig, tmp_path: Path) -> None:
    rig.service("s", SLEEP)
    living, _ = _ids()
    r = rig.create(living, rig.bundle(env=["RETINUE_SERVICES=s"]))
    assert r.returncode == 0, (r.stderr, rig.errors())
    living_dir = rig.container_dir(living)
    # What older versions and failed creates left: empty per-root directories.
    empty = [rig.state_dir / f"tmp%2Fgone{i}" for i in range(3)]
    for d in empty:
        d.mkdir(mode=0o700)
    reserved = [rig.state_dir / n for n in ("cache", "seccomp", "sidecars", "ids")]
    for d in reserved:
        d.mkdir(mode=0o700, exist_ok=True)

    # A configuration whose directory is gone (a test's, a removed install's), an entry no
    # version can read, a temp file its writer left when it died.
    other = tmp_path / "other" / "etc"
    other.mkdir(parents=True)
    (other / "config.toml").write_text(f'state_dir = "{tmp_path}/other/s"\n')
    (other / "policy.toml").write_text("")
    _cached(other / "config.toml", rig.shim)
    gone = [*confcache.cache_files(str(other / "config.toml")),
            confcache.sh_cache_file(str(other / "config.toml"))]
    shutil.rmtree(tmp_path / "other")
    _cached(rig.config_path, rig.shim)
    mine = [*confcache.cache_files(str(rig.config_path)),
            confcache.sh_cache_file(str(rig.config_path))]
    prefix = str(rig.config_path).replace("/", "%")
    junk = Path(confcache.CACHE_DIR) / f"{prefix}.0badf00d"
    junk.write_bytes(marshal.dumps({"key": (1, 2, 3)}))
    left_tmp = Path(confcache.CACHE_DIR) / f"{prefix}.sh.999999.tmp"
    left_tmp.write_text("")
    os.utime(left_tmp, (time.time() - 3600, time.time() - 3600))

    r = rig.retinue("gc")
    assert r.returncode == 0, r.stderr
    for d in empty:
        assert not d.exists()
        assert f"removed empty state directory {d}\n" in r.stdout
    for path in [*gone, str(junk), str(left_tmp)]:
        assert not os.path.exists(path), path
    assert "cache" not in r.stdout  # the host's cache: other callers' leftovers go unlisted
    assert all(d.is_dir() for d in reserved)
    assert living_dir.is_dir() and rig.runc_status(living) == "created"
    assert all(os.path.exists(p) for p in mine), mine
    # Nothing a live configuration's callers read goes, however often gc runs.
    again = rig.retinue("gc")
    assert (again.returncode, again.stdout) == (0, ""), again.stderr
    assert all(os.path.exists(p) for p in mine)


def test_a_cache_write_collects_its_configurations_dead_entries(rig: Rig) -> None:
    """Every reinstall and every caller's PATH gets an entry of its own: the next write of the
    same configuration's cache removes those nothing can read."""
    _cached(rig.config_path, rig.shim)
    prefix = str(rig.config_path).replace("/", "%")
    junk = Path(confcache.CACHE_DIR) / f"{prefix}.0badf00d"
    junk.write_bytes(marshal.dumps({"key": (1, 2, 3)}))
    (rig.etc / "policy.toml").write_text("# changed\n")  # the next call loads and writes again
    time.sleep(0.1)
    _cached(rig.config_path, rig.shim)
    assert not junk.exists()
