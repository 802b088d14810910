"""Fixtures for the system-services tests: a private retinue configuration with services.

`rig` gives each test its own config (config.toml, policy.toml, services/*.toml and the
services' files as `#!/bin/sh` scripts on the busybox rootfs), its own state_dir, log_dir and
runc --root, and a host directory bind-mounted read-write at /shared in every container, where
services and main processes append timestamped events (`/proc/uptime`, the same clock inside and
outside the container) so that tests can check orders and times from the host.

All paths live under one short directory in /tmp: the supervisor's control socket is
`STATE/<runc root, escaped>/<id>/control.sock` and AF_UNIX paths are limited to 108 bytes, which
pytest's deep tmp_path would exceed.

At teardown every container left is deleted, and the test fails if a supervisor process, a
container state directory or a mount under the rig outlived it: "nothing left behind" holds for
every test, not only for the ones that say so.

Debugging: RIG_KEEP=1 keeps each rig's directory (configs, logs, events, runc --log);
RIG_SHIM=/path/to/retinue-runtime runs the tests against another copy of the package.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BundleFactory = Callable[..., Path]

ADMIN = os.path.join(sys.prefix, "bin", "retinue")

# Every script starts with these helpers: `now` prints the uptime in seconds (10 ms steps),
# `ev WORDS` appends "UPTIME WORDS" to /shared/events.
PRELUDE = """#!/bin/sh
now() { read -r up _ < /proc/uptime; echo "$up"; }
ev() { echo "$(now) $*" >> /shared/events; }
"""


def main_args(body: str) -> list[str]:
    """A container's process: `sh -c` with the PRELUDE's helpers, then `body`."""
    return ["sh", "-c", PRELUDE.split("\n", 1)[1] + body]


# A main process that runs until it is told to stop (PID 1 ignores TERM without a handler).
FOREVER = 'trap "ev main-term; exit 0" TERM; sleep 1000 & wait'


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line contains `text`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline:
            out.append((int(entry), cmdline))
    return out


def read_pty_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 20) -> None:
    """Read a pty master into `seen` until `needle` is in it."""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                chunk = b""
            assert chunk, f"pty closed; no {needle!r} in {bytes(seen)!r}"
            seen += chunk


def set_pty_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


class Rig:
    """One private retinue setup; see the module docstring."""

    def __init__(self, base: Path, shim: str, make_bundle: BundleFactory, tmp_path: Path) -> None:
        self.base = base
        self.shim = shim
        self._make_bundle = make_bundle
        self.tmp_path = tmp_path
        self.etc = base / "etc"
        self.files = base / "files"
        self.state_dir = base / "s"
        self.log_dir = base / "log"
        self.root = base / "r"
        self.shared = base / "shared"
        self.runc_log = base / "runc.log"
        for d in (self.etc, self.etc / "services", self.files, self.root, self.shared):
            d.mkdir(parents=True, exist_ok=True)
        # Services may run as nobody and still write their events.
        os.chmod(self.shared, 0o777)
        # Created here so that a service running as nobody and a main process running as root
        # (without CAP_DAC_OVERRIDE) can both append to it.
        (self.shared / "events").touch(0o666)
        os.chmod(self.shared / "events", 0o666)
        self.config_path = self.etc / "config.toml"
        self._bundles = 0
        self.write_config()
        (self.etc / "policy.toml").write_text("")

    # -- configuration ------------------------------------------------------------------------

    def write_config(self, extra: str = "") -> Path:
        self.config_path.write_text(
            f'state_dir = "{self.state_dir}"\nlog_dir = "{self.log_dir}"\n{extra}'
        )
        return self.config_path

    def policy(self, text: str) -> None:
        (self.etc / "policy.toml").write_text(text)

    def service(
        self,
        name: str,
        script: str | None = None,
        toml: str = "",
        command: str = '["run.sh"]',
        files: str | None = None,
    ) -> Path:
        """services/NAME.toml with `files` and `command` first, then `toml` as given.

        `script` (the PRELUDE is prepended) becomes files/NAME/run.sh, executable.
        """
        files_dir = self.files / name
        files_dir.mkdir(exist_ok=True)
        if script is not None:
            path = files_dir / "run.sh"
            path.write_text(PRELUDE + script)
            path.chmod(0o755)
        head = f'files = "{files if files is not None else files_dir}"\ncommand = {command}\n'
        definition = self.etc / "services" / f"{name}.toml"
        definition.write_text(head + toml)
        return definition

    # -- containers ---------------------------------------------------------------------------

    def bundle(
        self,
        args: list[str] | None = None,
        env: list[str] | None = None,
        annotations: dict[str, str] | None = None,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> Path:
        """A bundle with /shared bind-mounted read-write."""
        self._bundles += 1
        shared = str(self.shared)

        def add_shared(spec: dict[str, Any]) -> None:
            spec["mounts"].append(
                {"destination": "/shared", "type": "bind", "source": shared,
                 "options": ["rbind", "rw"]}
            )
            if edit:
                edit(spec)

        return self._make_bundle(
            args or ["sh", "-c", "sleep 1000"], env=env, annotations=annotations,
            name=f"bundle{self._bundles}", edit=add_shared,
        )

    def rt_argv(self, *args: str, log_format: str = "json") -> list[str]:
        return [self.shim, "--root", str(self.root), "--log", str(self.runc_log),
                "--log-format", log_format, *args]

    def rt(
        self, *args: str, log_format: str = "json", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """A retinue-runtime call whose stdio is not a container's (start, kill, delete...)."""
        return subprocess.run(
            self.rt_argv(*args, log_format=log_format), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=timeout,
        )

    def create(
        self, cid: str, bundle: Path, log_format: str = "json", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """create: the container's stdio (and the shim's stderr) go to files, never to pipes
        that the container would hold open."""
        out_path = self.base / f"{cid}.out"
        err_path = self.base / f"{cid}.err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            result = subprocess.run(
                self.rt_argv("create", "--bundle", str(bundle), cid, log_format=log_format),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout, text=True,
            )
        result.stdout = out_path.read_text()
        result.stderr = err_path.read_text()
        return result

    def runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNC, "--root", str(self.root), *args], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=60)

    def state(self, cid: str) -> dict[str, Any] | None:
        r = self.runc("state", cid)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def runc_status(self, cid: str) -> str | None:
        """created, running, stopped... or None when runc does not know the container."""
        state = self.state(cid)
        return str(state["status"]) if state else None

    def container_dir(self, cid: str) -> Path:
        key = str(self.root.resolve()).strip("/").replace("%", "%25").replace("/", "%2F")
        return self.state_dir / key / cid

    def supervisor_pids(self, cid: str | None = None) -> list[int]:
        needle = str(self.container_dir(cid)) if cid else str(self.state_dir) + "/"
        return [pid for pid, cmd in processes_mentioning(needle) if "retinue.supervisor" in cmd]

    def retinue(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """The admin CLI with this rig's config."""
        return subprocess.run([ADMIN, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def status(self, cid: str) -> dict[str, Any]:
        r = self.retinue("status", "--json", cid)
        assert r.returncode == 0, r.stderr
        found: list[dict[str, Any]] = json.loads(r.stdout)
        assert len(found) == 1, found
        return found[0]

    def service_status(self, cid: str, name: str) -> dict[str, Any]:
        for s in self.status(cid)["services"]:
            if s["name"] == name:
                return dict(s)
        raise AssertionError(f"no service {name} in {self.status(cid)}")

    def service_log(self, cid: str, name: str) -> str:
        path = self.log_dir / cid / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- observations -------------------------------------------------------------------------

    def events(self) -> list[tuple[float, str]]:
        """(uptime, words) appended to /shared/events, in the order they were written."""
        path = self.shared / "events"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            t, _, words = line.partition(" ")
            if t:
                out.append((float(t), words))
        return out

    def event_time(self, words: str) -> float:
        for t, w in self.events():
            if w == words:
                return t
        raise AssertionError(f"no event {words!r} in {self.events()}")

    def log_entries(self) -> list[dict[str, Any]]:
        """The --log file's JSON lines (each must be JSON: engines stream-decode it)."""
        if not self.runc_log.exists():
            return []
        return [json.loads(line) for line in self.runc_log.read_text().splitlines() if line]

    def errors(self) -> list[str]:
        return [e["msg"] for e in self.log_entries() if e.get("level") == "error"]

    def warnings(self) -> list[str]:
        return [e["msg"] for e in self.log_entries() if e.get("level") == "warning"]

    def leftovers(self, cid: str | None = None) -> list[str]:
        """What a container (or every container) of this rig left behind on the host."""
        found = [f"supervisor pid {p}" for p in self.supervisor_pids(cid)]
        if cid:
            if self.container_dir(cid).exists():
                found.append(f"state dir {self.container_dir(cid)}")
        elif self.state_dir.exists():
            for key in self.state_dir.iterdir():
                if key.name == "cache":
                    continue
                found += [f"state dir {d}" for d in key.iterdir()] if key.is_dir() else []
        found += [f"mount {m}" for m in mounts_under(str(self.base))]
        # The registry that finds a supervised container whatever a call's environment.
        key = str(self.root.resolve()).strip("/").replace("%", "%25").replace("/", "%2F")
        registry = Path("/run/retinue/ids")
        ids = [cid] if cid else (os.listdir(registry) if registry.is_dir() else [])
        found += [f"registry entry {e}" for e in (registry / i / key for i in ids) if e.exists()]
        return found

    def cleanup(self) -> list[str]:
        """Delete every container, then report (and remove) whatever outlived it."""
        listed = self.runc("list", "-q").stdout.split()
        for cid in listed:
            self.rt("delete", "--force", cid)
            self.runc("delete", "--force", cid)
        try:
            wait_for(lambda: not self.leftovers(), timeout=10)
        except AssertionError:
            pass
        left = self.leftovers()
        for pid in self.supervisor_pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        return left


@pytest.fixture
def rig(
    shim: str, make_bundle: BundleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rig]:
    base = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    # RIG_SHIM: a retinue-runtime launcher of another copy of the package (debugging).
    r = Rig(base, os.environ.get("RIG_SHIM", shim), make_bundle, tmp_path)
    monkeypatch.setenv("RETINUE_CONFIG", str(r.config_path))
    try:
        yield r
    finally:
        left = r.cleanup()
        if not mounts_under(str(base)) and not os.environ.get("RIG_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
    assert not left, f"left behind: {left}"
