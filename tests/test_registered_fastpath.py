"""Calls about a supervised container that need no supervisor never start Python.

state, exec, ps, events, pause and resume of a container in the registry go to the lower runtime
it was created with, which the sh launcher reads from the entry's record (statedir.RECORDS).
start, kill and delete (the supervisor goes first), update (the services' sub-cgroups make room
and follow, issue 16), help, and anything the launcher is unsure of go to Python. As in
test_create_fastpath.py, the launchers are rewritten with a Python that does not exist (127: it
went to Python), and the lower runtimes are fakes that record their argv: the configuration's and
the registered one are different fakes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from retinue.cli import launcher
from retinue.host import statedir

NO_PYTHON = 127
ConfigFactory = Callable[..., Path]
NO_SUPERVISOR = ("state", "exec", "ps", "events", "pause", "resume")


def _fake(d: Path, name: str) -> Path:
    fake = d / name
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.called"\n')
    fake.chmod(0o755)
    return fake


class Setup:
    def __init__(self, tmp_path: Path, make_config: ConfigFactory) -> None:
        self.configured = _fake(tmp_path, "configured-runc")
        self.registered = _fake(tmp_path, "registered-runc")
        self.state_dir = tmp_path / "state"
        make_config("", extra=f'runtime = "{self.configured}"\nstate_dir = "{self.state_dir}"\n')
        bin_dir = tmp_path / "bin"
        site = sysconfig.get_paths()["purelib"]
        launcher.write(str(bin_dir), os.path.join(sys.prefix, "bin", "python3"), site)
        self.shim = str(bin_dir / "retinue-runtime")
        for _ in range(2):  # Python writes the configuration's cache; its clock margin passes
            r = subprocess.run([self.shim, "list"], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            time.sleep(0.1)
        launcher.write(str(bin_dir), "/nonexistent/python3", site)
        self.dirs: list[str] = []
        self.id = f"t-{uuid.uuid4().hex[:12]}"

    def register(self, root: str, lower: str | None = None, cid: str | None = None) -> str:
        d = statedir.container_dir(str(self.state_dir), root, cid or self.id)
        self.dirs.append(d)
        statedir.register(d, "/etc/x", False, lower or str(self.registered), "/tmp")
        return d

    def call(self, *args: str) -> str | int:
        """Which lower runtime got exactly these arguments, or the exit status."""
        for fake in (self.configured, self.registered):
            Path(f"{fake}.called").unlink(missing_ok=True)
        r = subprocess.run(
            [self.shim, *args], capture_output=True, timeout=30, stdin=subprocess.DEVNULL
        )
        if r.returncode != 0:
            return r.returncode
        for fake in (self.configured, self.registered):
            called = Path(f"{fake}.called")
            if called.exists():
                assert called.read_text().split("\n")[:-1] == list(args)
                return fake.name
        raise AssertionError("no lower runtime was called")


@pytest.fixture
def setup(tmp_path: Path, make_config: ConfigFactory) -> Iterator[Setup]:
    s = Setup(tmp_path, make_config)
    try:
        yield s
    finally:
        for d in s.dirs:
            statedir.remove_marker(d)


@pytest.mark.parametrize("command", NO_SUPERVISOR)
def test_no_supervisor_needed_goes_to_the_registered_runtime(setup: Setup, command: str) -> None:
    setup.register("/run/runc")
    assert setup.call(command, setup.id) == "registered-runc"
    assert setup.call("--log", "/x", command, setup.id) == "registered-runc"
    assert setup.call("--root", "/run/runc", command, setup.id) == "registered-runc"
    assert setup.call("-root=/run/runc/", command, setup.id) == "registered-runc"


def test_the_root_key_is_statedir_s(setup: Setup) -> None:
    for root in ("/", "/run/containerd/runc/k8s.io", "/var/run/docker/runtime-runc/moby"):
        setup.register(root)
        assert setup.call("--root", root, "state", setup.id) == "registered-runc"
        assert setup.call("--root", root, "exec", "--pid-file", "p", setup.id, "sh") == (
            "registered-runc"
        )
    # Another root with the same id is not this container: Python decides.
    assert setup.call("--root", "/run/other", "state", setup.id) == NO_PYTHON


@pytest.mark.parametrize("command", ["start", "kill", "delete", "update", "checkpoint", "restore"])
def test_the_supervisor_s_calls_go_to_python(setup: Setup, command: str) -> None:
    setup.register("/run/runc")
    assert setup.call(command, setup.id) == NO_PYTHON


@pytest.mark.parametrize(
    "args",
    [
        ("--root", "/run/runc", "--root", "/run/runc", "state"),
        ("--root=", "state"),
        ("--root", "run/runc", "state"),
        ("--root", "/run//runc", "state"),
        ("--root", "/run/./runc", "state"),
        ("--root", "/run/x/../runc", "state"),
        ("--root", "/run/runc/.", "state"),
        ("--root", "/run/%72unc", "state"),
        ("state", "--help"),
        ("-h", "state"),
    ],
)
def test_unsure_goes_to_python(setup: Setup, args: tuple[str, ...]) -> None:
    setup.register("/run/runc")
    assert setup.call(*args, setup.id) == NO_PYTHON


def test_a_record_it_cannot_trust_goes_to_python(setup: Setup, tmp_path: Path) -> None:
    d = setup.register("/run/runc")
    record = Path(statedir.record_path(statedir.root_key("/run/runc"), setup.id))
    assert record.read_text() == f"{setup.registered}\n"
    assert record.stat().st_mode & 0o777 == 0o600
    assert os.stat(statedir.RECORDS).st_mode & 0o777 == 0o700
    os.chown(record, 65534, 65534)
    assert setup.call("state", setup.id) == NO_PYTHON
    for bad in ("relative/runc", str(tmp_path / "missing"), str(tmp_path)):
        record.write_text(bad + "\n")
        os.chown(record, 0, 0)
        assert setup.call("state", setup.id) == NO_PYTHON, bad
    plain = tmp_path / "not-executable"
    plain.write_text("")
    record.write_text(f"{plain}\n")
    assert setup.call("state", setup.id) == NO_PYTHON
    record.write_text(str(setup.registered))  # no newline: not written by retinue
    assert setup.call("state", setup.id) == NO_PYTHON
    # A marker (a create under way) has no record, and removes a previous container's.
    setup.register("/run/runc")
    statedir.remove_marker(d)
    assert not record.exists()
    statedir.add_marker(d)
    record.write_text(f"{setup.registered}\n")
    other = statedir.container_dir(str(tmp_path / "other-state"), "/run/runc", setup.id)
    statedir.add_marker(other)  # another state directory for the same id and root
    setup.dirs.append(other)
    assert not record.exists()
    assert setup.call("state", setup.id) == NO_PYTHON


def test_removal_takes_the_record_first(setup: Setup) -> None:
    d = setup.register("/run/runc")
    record = statedir.record_path(statedir.root_key("/run/runc"), setup.id)
    statedir.remove_marker(d)
    assert not os.path.exists(record)
    assert not os.path.exists(os.path.join(statedir.REGISTRY, setup.id))
    # Not registered any more: the configuration's runtime, from the cache.
    assert setup.call("state", setup.id) == "configured-runc"


@pytest.mark.parametrize("lower", ["runc", "/usr/bin/run\nc"])
def test_no_record_for_a_path_sh_cannot_read_back(setup: Setup, lower: str) -> None:
    setup.register("/run/runc", lower=lower)
    assert not os.path.exists(statedir.record_path(statedir.root_key("/run/runc"), setup.id))
    assert setup.call("state", setup.id) == NO_PYTHON


def test_an_unregistered_container_is_unchanged(setup: Setup) -> None:
    assert setup.call("state", setup.id) == "configured-runc"
    assert setup.call("kill", setup.id, "TERM") == "configured-runc"


def test_the_records_directory_is_no_container(setup: Setup) -> None:
    """It sits in the registry under a name no valid id has: Python decides such a call."""
    setup.register("/run/runc")
    assert os.path.basename(statedir.RECORDS) == "%lower"
    assert setup.call("state", "%lower") == NO_PYTHON
