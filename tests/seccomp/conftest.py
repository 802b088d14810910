"""Fixtures for the seccomp broker: real runc containers, the agent standalone or in-process.

Every container gets the merged profile written straight into its bundle (what the shim will
do), and the agent either runs as `python -m retinue.seccomp.agent` (to be killed) or in this
process on a thread (to inspect its counters and route to test-only handlers). Every
subprocess has a timeout: a wrong NOTIFY rule makes `runc create` hang forever.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from retinue.cli import rootfs
from retinue.seccomp import agent, config, profile
from retinue.seccomp.api import Handler

from .agent_thread import AgentThread

RUNC = shutil.which("runc") or "/usr/sbin/runc"
DATA = Path(__file__).resolve().parent.parent / "data"
PROBE = Path(__file__).resolve().parent / "probe.py"
PYTHON = "/usr/bin/python3.11"


@pytest.fixture(scope="session")
def py_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs where the host's /usr (bind-mounted read-only) gives a Python too."""
    path = Path(rootfs.build(str(tmp_path_factory.mktemp("sc-rootfs") / "rootfs")))
    for name, target in (("lib", "usr/lib"), ("lib64", "usr/lib64"), ("usr", None)):
        if target:
            os.symlink(target, path / name)
        else:
            (path / name).mkdir()
    return path


class Container:
    def __init__(self, root: str, cid: str, bundle: Path) -> None:
        self.root, self.id, self.bundle = root, cid, bundle

    def runc(self, *args: str, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUNC, "--root", self.root, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )

    def run(self, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`runc run` in the foreground: the container's output and exit status."""
        try:
            return self.runc("run", "--bundle", str(self.bundle), self.id, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.runc("delete", "-f", self.id)
            raise

    def start_detached(self) -> None:
        # The container inherits runc's stdio: a pipe would stay open as long as it runs.
        errors = self.bundle / "run-d.err"
        with open(errors, "w") as err:
            out = subprocess.run(
                [RUNC, "--root", self.root, "run", "-d", "--bundle", str(self.bundle), self.id],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=30,
            )
        assert out.returncode == 0, errors.read_text()

    def exec(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.runc("exec", self.id, *argv, timeout=timeout)

    def state(self) -> dict[str, Any]:
        out = self.runc("state", self.id)
        return json.loads(out.stdout) if out.returncode == 0 else {}


ContainerFactory = Callable[..., Container]


@pytest.fixture
def make_container(tmp_path: Path, py_rootfs: Path, runc_root: str) -> ContainerFactory:
    """make_container(args, rules, listener, seccomp=None, caps=None, memory=None, ...)."""
    counter = iter(range(1000))

    def make(
        args: list[str],
        rules: list[dict[str, Any]],
        listener: str,
        seccomp: dict[str, Any] | None = None,
        caps: list[str] | None = None,
        memory: int | None = None,
        mounts: list[dict[str, Any]] | None = None,
        no_new_privileges: bool = True,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> Container:
        n = next(counter)
        bundle = tmp_path / f"bundle{n}"
        bundle.mkdir()
        shutil.copy(PROBE, bundle / "probe.py")
        spec = rootfs.default_spec(args)
        spec["root"] = {"path": str(py_rootfs), "readonly": True}
        spec["process"]["noNewPrivileges"] = no_new_privileges
        spec["mounts"] += [
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            },
            {
                "destination": "/mnt",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=755"],
            },
            {
                "destination": "/usr",
                "type": "bind",
                "source": "/usr",
                "options": ["rbind", "ro", "nosuid", "nodev"],
            },
            {
                "destination": "/probe",
                "type": "bind",
                "source": str(bundle),
                "options": ["rbind", "ro", "nosuid", "nodev"],
            },
            *(mounts or []),
        ]
        if caps is not None:
            spec["process"]["capabilities"] = {
                k: list(caps) for k in ("bounding", "effective", "permitted")
            }
        if memory is not None:
            spec["linux"].setdefault("resources", {})["memory"] = {"limit": memory}
        if seccomp is not None:
            spec["linux"]["seccomp"] = seccomp
        if edit is not None:
            edit(spec)
        spec = profile.apply(spec, rules, listener, profile.metadata(rules))
        (bundle / "config.json").write_text(json.dumps(spec, indent="\t"))
        return Container(runc_root, f"sc-{uuid.uuid4().hex[:10]}", bundle)

    return make


def rules_from_toml(tmp_path: Path, text: str) -> tuple[Path, list[dict[str, Any]]]:
    path = tmp_path / f"rules-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(text)
    return path, config.compile_rules(config.load(str(path)))


class StandaloneAgent:
    """`python -m retinue.seccomp.agent` in its own process."""

    def __init__(self, tmp_path: Path, toml: str) -> None:
        self.config, self.rules = rules_from_toml(tmp_path, toml)
        d = tmp_path / f"agent-{uuid.uuid4().hex[:6]}"
        d.mkdir(mode=0o700)
        self.listener = str(d / "seccomp.sock")
        self.log_path = d / "agent.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "retinue.seccomp.agent",
                "--listener",
                self.listener,
                "--config",
                str(self.config),
                "--log",
                str(self.log_path),
                "--verbose",
            ],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not os.path.exists(self.listener):
            assert self.proc.poll() is None, "agent exited at start"
            assert time.monotonic() < deadline, "agent did not bind its socket"
            time.sleep(0.02)

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)


@pytest.fixture
def standalone_agent(tmp_path: Path) -> Iterator[Callable[[str], StandaloneAgent]]:
    started: list[StandaloneAgent] = []

    def start(toml: str) -> StandaloneAgent:
        a = StandaloneAgent(tmp_path, toml)
        started.append(a)
        return a

    yield start
    for a in started:
        a.kill(signal.SIGTERM)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class InProcessAgent:
    """`agent.serve()` on an event loop in a thread of this process, as the supervisor runs it."""

    def __init__(
        self,
        directory: Path,
        rules: list[dict[str, Any]],
        registry: dict[str, type[Handler]] | None = None,
    ) -> None:
        self.rules = rules
        self.listener = str(directory / f"inproc-{uuid.uuid4().hex[:6]}.sock")
        self.records = ListHandler()
        self.log = logging.getLogger(f"test.seccomp.{uuid.uuid4().hex[:6]}")
        self.log.addHandler(self.records)
        self.log.setLevel(logging.DEBUG)
        self.log.propagate = False
        self.routes = agent.Routes.from_rules(rules, self.log, registry)
        self.agent = agent.Agent(self.routes, self.log)
        self.runner = AgentThread(self.listener, self.routes, self.log, self.agent)

    @property
    def lines(self) -> list[str]:
        return self.records.lines

    def stop(self) -> None:
        self.runner.stop()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()


@pytest.fixture
def inprocess_agent(tmp_path: Path) -> Iterator[Callable[..., InProcessAgent]]:
    started: list[InProcessAgent] = []

    def start(
        rules: list[dict[str, Any]],
        registry: dict[str, type[Handler]] | None = None,
        directory: Path | None = None,
    ) -> InProcessAgent:
        a = InProcessAgent(directory or tmp_path, rules, registry)
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


DOCKER_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


def docker_profile() -> dict[str, Any]:
    """Docker's default seccomp profile as dockerd 20.10 writes it into config.json.

    The capture from a real dockerd (tests/data/docker-config.json) when present; else moby's
    v20.10.24 profiles/seccomp/default.json (tests/data/docker-default-seccomp.json) resolved
    the way dockerd does for its default capabilities on amd64.
    """
    captured = DATA / "docker-config.json"
    if captured.exists():
        seccomp = (json.loads(captured.read_text()).get("linux") or {}).get("seccomp")
        if seccomp:
            return dict(seccomp)
    raw = json.loads((DATA / "docker-default-seccomp.json").read_text())
    syscalls = []
    for r in raw["syscalls"]:
        inc, exc = r.get("includes") or {}, r.get("excludes") or {}
        if (inc.get("arches") and "amd64" not in inc["arches"]) or (
            "amd64" in (exc.get("arches") or [])
        ):
            continue
        if inc.get("caps") and not set(inc["caps"]) <= set(DOCKER_CAPS):
            continue
        if set(exc.get("caps") or []) & set(DOCKER_CAPS):
            continue
        entry: dict[str, Any] = {"names": r["names"], "action": r["action"]}
        if r.get("args"):
            entry["args"] = r["args"]
        if "errnoRet" in r:
            entry["errnoRet"] = r["errnoRet"]
        syscalls.append(entry)
    return {
        "defaultAction": raw["defaultAction"],
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    }
