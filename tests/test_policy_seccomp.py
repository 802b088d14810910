"""Seccomp handlers attached by the policy, through the shim and the supervisor, on real runc.

The agent itself is tested in tests/seccomp/; this shows the integration: a policy rule's
`[[attach.seccomp]]` reaches the container's profile, the supervisor serves it, the handler's
answer reaches the container, and nothing is left behind. Also: a bundle reused by hand for a
second container gets the first one's edits replaced, not duplicated.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from retinue.host import statedir

BundleFactory = Callable[..., Path]
ConfigFactory = Callable[..., Path]
TIMEOUT = 60

DENY_MKDIR = """
[[attach]]
name = "broker"
when.env = { BROKER = "1" }

[[attach.seccomp]]
syscalls = ["mkdir", "mkdirat"]
handler = "deny"
settings = { errno = "EACCES" }
"""


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT
        )
        out.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, out.read().decode(), "")


@pytest.fixture
def broker_config(make_config: ConfigFactory, tmp_path: Path) -> Path:
    return make_config(
        DENY_MKDIR, extra=f'state_dir = "{tmp_path}/state"\nlog_dir = "{tmp_path}/log"\n'
    )


def supervisors(container_dir: str) -> set[int]:
    """The supervisor processes of one container (its argv names its state directory)."""
    out = subprocess.run(["pgrep", "-f", container_dir], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def supervisors_gone(container_dir: str, timeout: float = 5.0) -> set[int]:
    """What is left of them once they had `timeout` to exit: the poststop hook returns when the
    supervisor has answered, a moment before its process has removed its state and exited."""
    deadline = time.monotonic() + timeout
    while (left := supervisors(container_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_policy_seccomp_rule_reaches_the_container(
    shim: str,
    broker_config: Path,
    make_bundle: BundleFactory,
    runc_root: str,
    container_id: str,
    tmp_path: Path,
) -> None:
    bundle = make_bundle(["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"], env=["BROKER=1"])
    result = run([shim, "--root", runc_root, "run", "--bundle", str(bundle), container_id])
    assert result.returncode == 0, result.stdout
    assert "Permission denied" in result.stdout and "mkdir=1" in result.stdout
    spec = json.loads((bundle / "config.json").read_text())
    listener = statedir.seccomp_listener(str(tmp_path / "state"), str(bundle))
    assert spec["linux"]["seccomp"]["listenerPath"] == listener
    log = (tmp_path / "log" / container_id / "seccomp.log").read_text()
    assert f"seccomp deny: container={container_id}" in log and "syscall=mkdir" in log
    # Nothing left: no supervisor, no listener, no state directory.
    container_dir = statedir.container_dir(str(tmp_path / "state"), runc_root, container_id)
    assert supervisors_gone(container_dir) == set()
    assert not os.path.exists(listener)
    assert not os.path.exists(container_dir)


def test_unbrokered_container_keeps_its_profile(
    shim: str, broker_config: Path, make_bundle: BundleFactory, runc_root: str, container_id: str
) -> None:
    bundle = make_bundle(["sh", "-c", "mkdir /tmp/x && echo made"])
    raw = (bundle / "config.json").read_bytes()
    result = run([shim, "--root", runc_root, "run", "--bundle", str(bundle), container_id])
    assert (result.returncode, result.stdout) == (0, "made\n")
    assert (bundle / "config.json").read_bytes() == raw


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            'syscalls = ["write"]\nhandler = "audit"',
            "attach[0].seccomp[0].syscalls[0]: runc refuses SCMP_ACT_NOTIFY on write",
        ),
        (
            'syscalls = ["openat"]\nhandler = "audit"',
            "attach[0].seccomp[0].syscalls[0]: runc-init makes openat before the container's "
            "process starts",
        ),
        (
            'syscalls = ["mkdir"]\nhandler = "nosuch"',
            "attach[0].seccomp[0].handler: unknown handler 'nosuch'",
        ),
        (
            'syscalls = ["mkdir"]',
            "attach[0].seccomp[0].handler: missing (required)",
        ),
    ],
)
def test_check_refuses_what_cannot_work(
    make_config: ConfigFactory, rule: str, expected: str, bin_dir: Path
) -> None:
    cfg = make_config(f'[[attach]]\nname = "b"\nwhen.always = true\n[[attach.seccomp]]\n{rule}\n')
    result = subprocess.run(
        [str(Path(os.path.realpath(bin_dir / "retinue"))), "check"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert f"{cfg.parent / 'policy.toml'}: {expected}" in result.stderr


def test_bundle_reused_for_another_container(
    shim: str,
    make_config: ConfigFactory,
    make_bundle: BundleFactory,
    runc_root: str,
    tmp_path: Path,
) -> None:
    """By hand, `run a` then `run b` on one bundle: b's edits, nothing twice (hooks: none, as
    nothing is supervised; tests/test_hook_edits.py has a supervised bundle reused)."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "hello").write_text("hi\n")
    make_config(
        f'[[attach]]\nname = "m"\nwhen.always = true\n'
        f'mounts = [{{ source = "{files}", destination = "/retinue/m" }}]\n',
        extra=f'state_dir = "{tmp_path}/state"\n',
    )
    bundle = make_bundle(["cat", "/retinue/m/hello"])
    for cid in ("reuse-a", "reuse-b"):
        result = run([shim, "--root", runc_root, "run", "--bundle", str(bundle), cid])
        assert (result.returncode, result.stdout) == (0, "hi\n")
    spec = json.loads((bundle / "config.json").read_text())
    assert [m["destination"] for m in spec["mounts"]].count("/retinue/m") == 1
    assert "hooks" not in spec


def service_files(tmp_path: Path, script: str) -> Path:
    """A service's host directory with its command, run.sh."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "run.sh").write_text(f"#!/bin/sh\n{script}")
    (files / "run.sh").chmod(0o755)
    return files


def test_a_service_brings_its_seccomp_handlers(
    shim: str,
    make_config: ConfigFactory,
    make_bundle: BundleFactory,
    runc_root: str,
    container_id: str,
    tmp_path: Path,
) -> None:
    files = service_files(tmp_path, "exec sleep 1000\n")
    cfg = make_config("", extra=f'state_dir = "{tmp_path}/state"\nlog_dir = "{tmp_path}/log"\n')
    (cfg.parent / "services" / "guard.toml").write_text(
        f'files = "{files}"\ncommand = ["run.sh"]\n[stop]\ntimeout = "1s"\n'
        '[[seccomp]]\nsyscalls = ["mkdir", "mkdirat"]\nhandler = "deny"\n'
        'settings = { errno = "EACCES" }\n'
    )
    bundle = make_bundle(
        ["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"], env=["RETINUE_SERVICES=guard"]
    )
    result = run([shim, "--root", runc_root, "run", "--bundle", str(bundle), container_id])
    assert result.returncode == 0, result.stdout
    assert "Permission denied" in result.stdout and "mkdir=1" in result.stdout


def test_check_names_a_services_bad_seccomp_rule(
    make_config: ConfigFactory, bin_dir: Path, tmp_path: Path
) -> None:
    files = service_files(tmp_path, "")
    cfg = make_config("")
    service = cfg.parent / "services" / "guard.toml"
    service.write_text(
        f'files = "{files}"\ncommand = ["run.sh"]\n'
        '[[seccomp]]\nsyscalls = ["write"]\nhandler = "audit"\n'
    )
    result = subprocess.run(
        [str(Path(os.path.realpath(bin_dir / "retinue"))), "check"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert f"{service}: seccomp[0].syscalls[0]: runc refuses SCMP_ACT_NOTIFY on write" in (
        result.stderr
    )


def test_a_killed_supervisors_listener_is_removed_on_delete(
    shim: str,
    broker_config: Path,
    make_bundle: BundleFactory,
    runc_root: str,
    container_id: str,
    tmp_path: Path,
) -> None:
    bundle = make_bundle(["sleep", "100"], env=["BROKER=1"])
    rt = [shim, "--root", runc_root]
    assert run([*rt, "create", "--bundle", str(bundle), container_id]).returncode == 0
    assert run([*rt, "start", container_id]).returncode == 0
    container_dir = statedir.container_dir(str(tmp_path / "state"), runc_root, container_id)
    listener = statedir.seccomp_listener(str(tmp_path / "state"), str(bundle))
    assert os.path.exists(listener)
    for pid in supervisors(container_dir):
        os.kill(pid, 9)
    deleted = run([*rt, "delete", "--force", container_id])
    assert deleted.returncode == 0, deleted.stdout
    assert "is gone" in deleted.stdout  # the warning runc's way, on stderr without --log
    assert not os.path.exists(listener)
    assert not os.path.exists(container_dir)
