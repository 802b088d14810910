"""The sh launchers' fast paths: which calls skip Python, and that nothing stale is trusted.

A launcher is first used with a working Python (so that Python writes the configuration caches),
then rewritten at the same path with a Python that does not exist: a call the sh script settles
itself still works, a call it hands to Python fails with 127. That tells the two paths apart
without timing anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from retinue.cli import launcher
from retinue.config import cache as confcache
from retinue.host import lower, statedir

RUNC = shutil.which("runc") or "/usr/sbin/runc"
NO_PYTHON = 127
ConfigFactory = Callable[..., Path]


@pytest.fixture
def fast(tmp_path: Path, make_config: ConfigFactory) -> dict[str, object]:
    state = tmp_path / "state"
    cfg = make_config("", extra=f'state_dir = "{state}"\n')
    bin_dir = tmp_path / "bin"
    site = sysconfig.get_paths()["purelib"]
    launcher.write(str(bin_dir), os.path.join(sys.prefix, "bin", "python3"), site)
    shim = str(bin_dir / "retinue-runtime")
    root = str(tmp_path / "root")
    # Let Python write the caches, and wait out the clock margin so they are trusted.
    assert call(shim, "--root", root, "list").returncode == 0
    time.sleep(0.1)
    assert call(shim, "--root", root, "list").returncode == 0
    launcher.write(str(bin_dir), "/nonexistent/python3", site)
    return {"shim": shim, "root": root, "config": cfg, "state": state, "bin": bin_dir}


def call(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env=env,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["state", "nope"],
        ["kill", "nope", "KILL"],
        ["delete", "-f", "nope"],
        ["start", "nope"],
        ["ps", "nope"],
        ["events", "nope"],
        ["--version"],
        ["--help"],
        ["pause", "nope"],
        ["update", "--pids-limit", "5", "nope"],
    ],
)
def test_pass_through_skips_python(fast: dict[str, object], args: list[str]) -> None:
    shim, root = str(fast["shim"]), str(fast["root"])
    ours = call(shim, "--root", root, *args)
    theirs = call(RUNC, "--root", root, *args)
    assert ours.returncode != NO_PYTHON, ours.stderr
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)


@pytest.mark.parametrize("args", [["create", "x"], ["run", "x"], ["--log-format", "json", "run"]])
def test_create_and_run_go_to_python(fast: dict[str, object], args: list[str]) -> None:
    assert call(str(fast["shim"]), "--root", str(fast["root"]), *args).returncode == NO_PYTHON


def test_a_supervised_container_goes_to_python(fast: dict[str, object]) -> None:
    """Every call about a container with a supervisor goes to Python, which sends it to the lower
    runtime the container was created with; other containers' calls pass straight through."""
    cid = f"svc-{uuid.uuid4().hex[:8]}"
    container_dir = statedir.container_dir(str(fast["state"]), str(fast["root"]), cid)
    os.makedirs(container_dir)
    statedir.add_marker(container_dir)
    shim, root = str(fast["shim"]), str(fast["root"])
    try:
        for args in (
            ["start", cid],
            ["kill", "--all", cid, "TERM"],
            ["delete", "--force", cid],
            ["state", cid],
            ["pause", cid],
            ["resume", cid],
            ["exec", "--process", "/p.json", "--detach", cid],
            ["exec", "--user", "0", "-e", "A=1", cid, "true"],
            ["ps", "--format", "json", cid],
            ["update", "--pids-limit", "5", cid],
            ["events", "--interval", "1s", cid],
            ["--log-format", "json", "kill", cid],
        ):
            assert call(shim, "--root", root, *args).returncode == NO_PYTHON, args
        # Other containers pass straight through, even with this id as a flag's value.
        for args in (
            ["state", "other"],
            ["kill", "other"],
            ["exec", "--cwd", cid, "other", "true"],
            ["exec", f"--cwd={cid}", "other", "true"],
            ["update", "--memory", cid, "other"],
        ):
            assert call(shim, "--root", root, *args).returncode not in (0, NO_PYTHON), args
    finally:
        statedir.remove(container_dir)
    assert call(shim, "--root", root, "kill", cid).returncode == 1


def test_a_changed_configuration_is_not_trusted(fast: dict[str, object]) -> None:
    shim, root = str(fast["shim"]), str(fast["root"])
    etc = Path(str(fast["config"])).parent
    (etc / "policy.toml").write_text("# changed\n")
    assert call(shim, "--root", root, "list").returncode == NO_PYTHON


def test_a_new_service_file_is_not_trusted(fast: dict[str, object]) -> None:
    shim, root = str(fast["shim"]), str(fast["root"])
    (Path(str(fast["config"])).parent / "services" / "new.toml").write_text("")
    assert call(shim, "--root", root, "list").returncode == NO_PYTHON


def test_another_environment_is_not_trusted(fast: dict[str, object]) -> None:
    shim, root = str(fast["shim"]), str(fast["root"])
    env = dict(os.environ)
    assert call(shim, "--root", root, "list", env=env).returncode == 0
    assert (
        call(shim, "--root", root, "list", env={**env, "PATH": "/usr/sbin:/usr/bin"}).returncode
        == NO_PYTHON
    )
    relative = os.path.relpath(str(fast["config"]))
    assert (
        call(shim, "--root", root, "list", env={**env, "RETINUE_CONFIG": relative}).returncode
        == NO_PYTHON
    )
    assert (
        call(shim, "--root", root, "list", env={**env, "RETINUE_CONFIG": ""}).returncode
        == NO_PYTHON
    )


def test_hook_without_a_supervisor_skips_python(fast: dict[str, object], tmp_path: Path) -> None:
    hook = str(Path(str(fast["bin"])) / "retinue-hook")
    state = b'{"ociVersion": "1.0.2", "id": "x", "pid": 1, "status": "creating", "bundle": "/"}'
    for stage in ("createRuntime", "poststart", "poststop"):
        gone = subprocess.run([hook, stage, str(tmp_path / "nothing")], input=state, timeout=30)
        assert gone.returncode == 0
    (tmp_path / "dir").mkdir()
    there = subprocess.run([hook, "poststop", str(tmp_path / "dir")], input=state, timeout=30)
    assert there.returncode == NO_PYTHON
    wrong = subprocess.run([hook, "prestart", str(tmp_path / "nothing")], input=state, timeout=30)
    assert wrong.returncode == NO_PYTHON


@pytest.mark.parametrize("tail", [b"\n", b"", b"\n\n  "])
def test_hook_without_a_supervisor_reads_all_its_input(
    fast: dict[str, object], tmp_path: Path, tail: bytes
) -> None:
    """More than a pipe holds, lines or none: the writer (runc) never meets a closed pipe."""
    hook = str(Path(str(fast["bin"])) / "retinue-hook")
    state = b'{"id": "x", "annotations": {"a": "' + b"x" * 200_000 + b'"}}' + tail
    p = subprocess.Popen([hook, "createRuntime", str(tmp_path / "nothing")],
                         stdin=subprocess.PIPE)
    assert p.stdin is not None
    p.stdin.write(state)  # BrokenPipeError if the hook stopped reading
    p.stdin.close()
    assert p.wait(timeout=30) == 0


def test_an_empty_environment_skips_python(tmp_path: Path, make_config: ConfigFactory) -> None:
    """Podman calls kill, pause, resume and delete without PATH. dash's $PATH is then its
    default, which is the PATH Python uses for such callers too: the sh cache serves them, and
    engines calling with that PATH, alike."""
    cfg = make_config("", extra=f'state_dir = "{tmp_path / "state"}"\n')
    bin_dir = tmp_path / "bin"
    site = sysconfig.get_paths()["purelib"]
    launcher.write(str(bin_dir), os.path.join(sys.prefix, "bin", "python3"), site)
    shim, root = str(bin_dir / "retinue-runtime"), str(tmp_path / "root")
    bare = {"RETINUE_CONFIG": str(cfg)}
    default = {"RETINUE_CONFIG": str(cfg), "PATH": lower.DEFAULT_PATH}
    assert call(shim, "--root", root, "list", env=bare).returncode == 0
    time.sleep(0.1)
    assert call(shim, "--root", root, "list", env=default).returncode == 0
    launcher.write(str(bin_dir), "/nonexistent/python3", site)
    for env in (bare, default, bare):
        r = call(shim, "--root", root, "list", env=env)
        assert r.returncode == 0, (env, r.stderr)
    with contextlib.suppress(OSError):
        os.unlink(confcache.sh_cache_file(str(cfg)))


def test_a_cache_without_fresh_sends_creates_to_python(
    fast: dict[str, object], tmp_path: Path
) -> None:
    """An older version's sh cache has no `fresh` (issue 15, item 3): its creates go to Python,
    silently (a create's stderr is the container's)."""
    shim, root = str(fast["shim"]), str(fast["root"])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "process": {"args": ["sh"]}}')
    settled = call(shim, "--root", root, "create", "--bundle", str(bundle), "x")
    assert settled.returncode not in (0, NO_PYTHON), settled.stderr  # runc's own refusal
    cache = Path(confcache.sh_cache_file(str(fast["config"])))
    st = cache.stat()
    text = cache.read_text()
    start = text.index("\nfresh() {") + 1
    end = text.index(" ]; }\n", start) + len(" ]; }\n")
    cache.write_text(text[:start] + text[end:])
    os.utime(cache, ns=(st.st_atime_ns, st.st_mtime_ns))
    old = call(shim, "--root", root, "create", "--bundle", str(bundle), "x")
    assert old.returncode == NO_PYTHON
    assert "fresh: not found" not in old.stderr, old.stderr
