"""Pass-through parity: every call the policy leaves alone behaves exactly as runc's own.

Each test runs the same sequence twice against the real runc: once calling runc directly, once
through `retinue-runtime`, each in its own private `--root` and with its own container id (runc
derives the cgroup path from the id alone, so the two containers must not share one). Exit codes,
stdout, stderr and the containers' resulting state are compared after normalising what must
differ: ids, roots, pids and timestamps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Not imported from conftest: several conftest modules share that name in one session.
RUNC = shutil.which("runc") or "/usr/sbin/runc"
BundleFactory = Callable[..., Path]
ConfigFactory = Callable[..., Path]
TIMEOUT = 60
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def call(
    argv: list[str], input: str | None = None, cwd: str | Path | None = None, **kwargs: Any
) -> Result:
    """Run to exit with stdout and stderr in files, not pipes: a created container keeps its
    stdio open (it is the container's), so reading a pipe to EOF would wait for the container."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(
            argv, input=input.encode() if input is not None else None,
            stdin=None if input is not None else subprocess.DEVNULL, stdout=out, stderr=err,
            cwd=cwd, timeout=TIMEOUT, **kwargs,
        )
        out.seek(0)
        err.seek(0)
        return Result(proc.returncode, out.read().decode(), err.read().decode())


@dataclass
class Side:
    """One way of calling runc: `exe` is runc itself or the shim."""

    name: str
    exe: str
    root: str
    tmp: Path
    cid: str
    pids: set[int] = field(default_factory=set)

    def argv(self, args: tuple[str, ...], global_flags: tuple[str, ...]) -> list[str]:
        subst = [a.format(id=self.cid, tmp=self.tmp, root=self.root) for a in args]
        return [self.exe, "--root", self.root, *global_flags, *subst]

    def call(
        self,
        *args: str,
        input: str | None = None,
        cwd: str | Path | None = None,
        global_flags: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> Result:
        return call(self.argv(args, global_flags), input=input, cwd=cwd, **kwargs)

    def state(self) -> dict[str, Any]:
        r = self.call("state", "{id}")
        assert r.returncode == 0, r.stderr
        state: dict[str, Any] = json.loads(r.stdout)
        if state.get("pid"):
            self.pids.add(state["pid"])
        return state

    def normalize(self, text: str) -> str:
        text = text.replace(self.root, "<ROOT>").replace(str(self.tmp), "<TMP>")
        text = text.replace(self.cid, "<ID>")
        text = RFC3339.sub("<TIME>", text)
        for pid in sorted(self.pids, key=lambda p: -len(str(p))):
            text = re.sub(rf"\b{pid}\b", "<PID>", text)
        return text

    def wait_status(self, status: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state["status"] == status or time.monotonic() > deadline:
                return state
            time.sleep(0.02)


@dataclass
class Pair:
    runc: Side
    shim: Side
    bundle: Path

    def both(
        self,
        *args: str,
        input: str | None = None,
        cwd: str | Path | None = None,
        global_flags: tuple[str, ...] = (),
        columns: bool = False,
        compare: Callable[[Result, Result], None] | None = None,
    ) -> Result:
        """Run `args` on both sides, assert the same exit code, stdout and stderr; the shim's."""
        r = self.runc.call(*args, input=input, cwd=cwd, global_flags=global_flags)
        s = self.shim.call(*args, input=input, cwd=cwd, global_flags=global_flags)
        assert s.returncode == r.returncode, (args, r, s)
        if compare is not None:
            compare(r, s)
            return s
        for stream in ("stdout", "stderr"):
            want = self.runc.normalize(getattr(r, stream))
            got = self.shim.normalize(getattr(s, stream))
            if columns:
                # Tables are aligned to their widest cell, and pids differ in length.
                assert [ln.split() for ln in got.splitlines()] == [
                    ln.split() for ln in want.splitlines()
                ], (args, stream)
            else:
                assert got == want, (args, stream)
        return s

    def states(self) -> tuple[dict[str, Any], dict[str, Any]]:
        r, s = self.runc.state(), self.shim.state()
        assert normalize_state(s, self.shim) == normalize_state(r, self.runc)
        return r, s


def normalize_state(state: dict[str, Any], side: Side) -> dict[str, Any]:
    out = dict(state)
    if out.get("pid"):
        out["pid"] = "<PID>"
    out = json.loads(side.normalize(json.dumps(out)))
    assert isinstance(out, dict)
    return out


def _cleanup(root: str) -> None:
    listed = subprocess.run(
        [RUNC, "--root", root, "list", "-q"], capture_output=True, text=True
    ).stdout.split()
    for cid in listed:
        # `delete -f` alone waits for the init to go; killing everything first is quicker.
        subprocess.run([RUNC, "--root", root, "kill", "--all", cid, "KILL"], capture_output=True)
        subprocess.run([RUNC, "--root", root, "delete", "-f", cid], capture_output=True)


IDLE_POLICY = """
[[attach]]
name = "never"
when.env = { NEVER_SET = "1" }
mounts = [{ source = "/usr/share", destination = "/retinue/share" }]
services = ["web"]
"""
IDLE_SERVICE = """
files = "files/web"
command = ["run.sh"]
[ready]
tcp = 8080
"""


@pytest.fixture
def passthrough_config(request: pytest.FixtureRequest, make_config: ConfigFactory) -> Path:
    """A configuration that selects nothing: every call must be runc's own.

    "idle" has a rule and a service, neither of which applies to these containers: the shim then
    reads the bundle on create and looks for a supervisor on start, kill and delete.
    """
    if getattr(request, "param", "empty") == "empty":
        return make_config("")
    cfg = make_config(IDLE_POLICY)
    (cfg.parent / "services" / "web.toml").write_text(IDLE_SERVICE)
    files = cfg.parent / "files" / "web"
    files.mkdir(parents=True)
    (files / "run.sh").write_text("#!/bin/sh\nexec httpd -f -p 8080\n")
    (files / "run.sh").chmod(0o755)
    return cfg


with_idle_policy = pytest.mark.parametrize(
    "passthrough_config", ["empty", "idle"], indirect=True
)


@pytest.fixture
def pair(
    tmp_path: Path,
    shim: str,
    make_bundle: BundleFactory,
    container_id: str,
    passthrough_config: Path,
) -> Iterator[Pair]:
    sides = []
    for name, exe in (("runc", RUNC), ("shim", shim)):
        root = tmp_path / f"root-{name}"
        root.mkdir()
        work = tmp_path / f"work-{name}"
        work.mkdir()
        # Same length on both sides keeps every column the same width.
        sides.append(Side(name, exe, str(root), work, f"{container_id}-{name[0]}"))
    bundle = make_bundle(["sleep", "1000"])
    p = Pair(sides[0], sides[1], bundle)
    yield p
    for side in sides:
        _cleanup(side.root)


def create_running(pair: Pair) -> None:
    pair.both("create", "--bundle", str(pair.bundle), "--pid-file", "{tmp}/init.pid", "{id}")
    for side in (pair.runc, pair.shim):
        side.pids.add(int((side.tmp / "init.pid").read_text()))
    r, s = pair.states()
    assert r["status"] == "created"
    pair.both("start", "{id}")
    r, s = pair.states()
    assert r["status"] == s["status"] == "running"


# --- lifecycle --------------------------------------------------------------------------------


@with_idle_policy
def test_create_start_state_kill_delete(pair: Pair) -> None:
    create_running(pair)
    _, s = pair.states()
    assert s["bundle"] == str(pair.bundle)
    pair.both("kill", "{id}", "KILL")
    for side in (pair.runc, pair.shim):
        assert side.wait_status("stopped")["status"] == "stopped"
    pair.states()
    pair.both("delete", "{id}")
    # Deleted: the same error from both, and nothing left in either root.
    pair.both("state", "{id}")
    assert os.listdir(pair.runc.root) == os.listdir(pair.shim.root) == []


def test_create_output_is_runcs(pair: Pair) -> None:
    """On create, stdout and stderr are the container's: nothing of the shim's may appear."""
    s = pair.both("create", "--bundle", str(pair.bundle), "{id}")
    assert s.stdout == s.stderr == ""


def test_ps(pair: Pair) -> None:
    create_running(pair)

    def same_processes(r: Result, s: Result) -> None:
        def table(res: Result, side: Side) -> list[list[str]]:
            rows = [ln.split(None, 7) for ln in side.normalize(res.stdout).splitlines()]
            # Drop C (cpu %), STIME and TIME: they depend on when each ran.
            return [[row[0], row[1], row[2], row[5], row[7]] for row in rows]

        assert table(s, pair.shim) == table(r, pair.runc)
        assert s.stderr == r.stderr == ""

    pair.both("ps", "{id}", compare=same_processes)

    def same_json(r: Result, s: Result) -> None:
        assert pair.shim.normalize(s.stdout) == pair.runc.normalize(r.stdout)
        assert json.loads(pair.runc.normalize(r.stdout).replace("<PID>", "0")) == [0]

    pair.both("ps", "--format", "json", "{id}", compare=same_json)
    pair.both("ps", "--format", "table", "{id}", "-o", "pid,comm", columns=True)


def test_exec_foreground_and_detached(pair: Pair) -> None:
    create_running(pair)
    s = pair.both("exec", "{id}", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (s.returncode, s.stdout, s.stderr) == (3, "out\n", "err\n")
    s = pair.both("exec", "-e", "A=b", "--cwd", "/tmp", "{id}", "sh", "-c", 'echo "$A" "$PWD"')
    assert s.stdout == "b /tmp\n"
    s = pair.both("exec", "{id}", "cat", input="from stdin\n")
    assert s.stdout == "from stdin\n"
    s = pair.both("exec", "--detach", "--pid-file", "{tmp}/exec.pid", "{id}", "sleep", "100")
    assert s.stdout == s.stderr == ""
    for side in (pair.runc, pair.shim):
        pid = int((side.tmp / "exec.pid").read_text())
        assert Path(f"/proc/{pid}").exists()
        side.pids.add(pid)

    def two_sleeps(r: Result, s: Result) -> None:
        assert pair.shim.normalize(s.stdout) == pair.runc.normalize(r.stdout)
        assert len(json.loads(pair.runc.normalize(r.stdout).replace("<PID>", "0"))) == 2

    pair.both("ps", "--format", "json", "{id}", compare=two_sleeps)
    process = {"args": ["sh", "-c", "echo from-process-json"], "cwd": "/", "env": ["PATH=/bin"]}
    for side in (pair.runc, pair.shim):
        (side.tmp / "process.json").write_text(json.dumps(process))
    s = pair.both("exec", "--process", "{tmp}/process.json", "{id}")
    assert s.stdout == "from-process-json\n"
    # Errors: an unknown command inside the container, an unknown container.
    pair.both("exec", "{id}", "/no/such/command")
    pair.both("exec", "nosuch-container", "true")


def test_pause_resume(pair: Pair) -> None:
    create_running(pair)
    pair.both("pause", "{id}")
    _, s = pair.states()
    assert s["status"] == "paused"
    pair.both("exec", "{id}", "true")  # refused while paused, with runc's message
    pair.both("pause", "{id}")  # pausing twice: runc's answer, whatever it is
    pair.both("resume", "{id}")
    _, s = pair.states()
    assert s["status"] == "running"
    pair.both("resume", "{id}")  # not paused: runc's error


def _stats(side: Side) -> dict[str, Any]:
    r = side.call("events", "--stats", "{id}")
    assert r.returncode == 0, r.stderr
    stats: dict[str, Any] = json.loads(r.stdout)
    return stats


def _shape(value: Any) -> Any:
    """The keys and types of a stats object; counters differ between any two containers."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["list"]
    return type(value).__name__


def test_update_and_events_stats(pair: Pair) -> None:
    create_running(pair)

    def same_shape(r: Result, s: Result) -> None:
        rs, ss = json.loads(r.stdout), json.loads(s.stdout)
        assert (ss["type"], ss["id"]) == ("stats", pair.shim.cid)
        assert (rs["type"], rs["id"]) == ("stats", pair.runc.cid)
        assert _shape(ss) == _shape(rs)
        assert s.stderr == r.stderr == ""

    pair.both("events", "--stats", "{id}", compare=same_shape)
    resources = json.dumps({"pids": {"limit": 123}, "memory": {"limit": 200 * 1024 * 1024}})
    s = pair.both("update", "--resources", "-", "{id}", input=resources)
    assert s.stdout == s.stderr == ""
    for side in (pair.runc, pair.shim):
        data = _stats(side)["data"]
        assert data["pids"]["limit"] == 123
        assert data["memory"]["usage"]["limit"] == 200 * 1024 * 1024
    pair.both("update", "--pids-limit", "77", "--memory", "100M", "{id}")
    for side in (pair.runc, pair.shim):
        data = _stats(side)["data"]
        assert data["pids"]["limit"] == 77
        assert data["memory"]["usage"]["limit"] == 100 * 1024 * 1024
    for side in (pair.runc, pair.shim):
        (side.tmp / "res.json").write_text(json.dumps({"pids": {"limit": 55}}))
    pair.both("update", "-r", "{tmp}/res.json", "{id}")
    assert _stats(pair.shim)["data"]["pids"]["limit"] == 55
    # Bad input is runc's to report.
    pair.both("update", "--resources", "-", "{id}", input="not json")
    pair.both("update", "--pids-limit", "many", "{id}")
    pair.both("update", "--pids-limit", "5", "nosuch-container")


def test_events_stream(pair: Pair) -> None:
    """`events` (no --stats) streams stats at the interval until stopped; same stream."""
    create_running(pair)
    procs = {}
    for side in (pair.runc, pair.shim):
        procs[side.name] = subprocess.Popen(
            side.argv(("events", "--interval", "100ms", "{id}"), ()),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    time.sleep(0.6)
    outputs = {}
    for name, proc in procs.items():
        # The shim's pid is runc's: the signal reaches runc itself.
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
        events = [json.loads(ln) for ln in out.splitlines()]
        outputs[name] = (proc.returncode, {e["type"] for e in events}, len(events) >= 2, err)
    assert outputs["shim"] == outputs["runc"]
    assert outputs["shim"][1:3] == ({"stats"}, True)


@with_idle_policy
def test_kill_signals_and_errors(pair: Pair) -> None:
    create_running(pair)
    pair.both("kill", "{id}", "NOSUCHSIG")
    pair.both("kill", "nosuch-container", "TERM")
    pair.both("kill", "--all", "{id}", "9")
    for side in (pair.runc, pair.shim):
        assert side.wait_status("stopped")["status"] == "stopped"
    pair.both("kill", "{id}", "TERM")  # stopped: runc's error
    pair.both("delete", "--force", "{id}")
    pair.both("delete", "{id}")  # gone: runc's error


@with_idle_policy
def test_delete_running_needs_force(pair: Pair) -> None:
    create_running(pair)
    pair.both("delete", "{id}")
    pair.states()
    pair.both("delete", "-f", "{id}")
    pair.both("state", "{id}")


def test_list(pair: Pair) -> None:
    pair.both("list")
    pair.both("list", "--format", "json")
    create_running(pair)
    pair.both("list", columns=True)
    pair.both("list", "-q")
    s = pair.both("list", "--format", "json")
    assert [c["id"] for c in json.loads(s.stdout)] == [pair.shim.cid]
    pair.both("list", "--format", "yaml")


@with_idle_policy
def test_run_foreground(pair: Pair, make_bundle: BundleFactory) -> None:
    bundle = make_bundle(
        ["sh", "-c", "echo out; echo err >&2; read line; echo got $line; exit 7"], name="run"
    )
    s = pair.both("run", "--bundle", str(bundle), "{id}", input="hello\n")
    assert (s.returncode, s.stdout, s.stderr) == (7, "out\ngot hello\n", "err\n")
    # `run` deletes the container when it exits: the id is free again.
    pair.both("state", "{id}")
    s = pair.both("run", "--bundle", str(bundle), "{id}", input="x\n", cwd=bundle)
    assert s.returncode == 7


def test_run_in_cwd_bundle(pair: Pair, make_bundle: BundleFactory) -> None:
    bundle = make_bundle(["sh", "-c", "echo in-cwd"], name="cwd")
    s = pair.both("run", "{id}", cwd=bundle)
    assert s.stdout == "in-cwd\n"


def test_spec(pair: Pair) -> None:
    for side in (pair.runc, pair.shim):
        (side.tmp / "spec").mkdir()
        (side.tmp / "rootless").mkdir()
        (side.tmp / "cwd").mkdir()
    pair.both("spec", "--bundle", "{tmp}/spec")
    pair.both("spec", "--rootless", "-b", "{tmp}/rootless")
    for sub in ("spec", "rootless"):
        assert (pair.shim.tmp / sub / "config.json").read_bytes() == (
            pair.runc.tmp / sub / "config.json"
        ).read_bytes()
    pair.both("spec", "--bundle", "{tmp}/spec")  # exists: runc's error
    pair.both("spec", "--bundle", "{tmp}/nosuch")
    r = pair.runc.call("spec", cwd=pair.runc.tmp / "cwd")
    s = pair.shim.call("spec", cwd=pair.shim.tmp / "cwd")
    assert (r.returncode, r.stdout, r.stderr) == (s.returncode, s.stdout, s.stderr) == (0, "", "")
    assert (pair.shim.tmp / "cwd" / "config.json").read_bytes() == (
        pair.runc.tmp / "cwd" / "config.json"
    ).read_bytes()


def test_features_version_help(pair: Pair) -> None:
    s = pair.both("features")
    assert json.loads(s.stdout)["ociVersionMin"]
    for flag in ("--version", "-v", "-version"):
        s = pair.both(flag)
        assert s.stdout.startswith("runc version")
    for args in (("--help",), ("-h",), ("help",), ("help", "create"), ("create", "--help"),
                 ("exec", "-h"), ()):
        pair.both(*args)


def test_errors(pair: Pair) -> None:
    s = pair.both("nosuch-subcommand")
    assert s.returncode != 0
    pair.both("--nosuch-global", "list")
    pair.both("--debug", "state", "nosuch-container")
    pair.both("--systemd-cgroup", "--rootless=false", "list")
    pair.both("state", "nosuch-container")
    pair.both("state")
    pair.both("start", "nosuch-container")
    pair.both("pause", "nosuch-container")
    pair.both("events", "--stats", "nosuch-container")
    pair.both("ps", "nosuch-container")
    pair.both("create", "--bundle", str(pair.bundle), "bad/id")
    pair.both("create", "--bundle", "{tmp}/nosuch-bundle", "{id}")
    pair.both("create", "--bundle", str(pair.bundle), "{id}", "extra-arg")
    pair.both("create", "--bundle", str(pair.bundle))
    pair.both("create", "-b", str(pair.bundle), "--bundle", str(pair.bundle), "{id}")
    pair.both(
        "--log", "{tmp}/log.json", "--log-format", "json", "state", "nosuch-container"
    )
    runc_log, shim_log = (
        json.loads(side.normalize((side.tmp / "log.json").read_text()))
        for side in (pair.runc, pair.shim)
    )
    assert shim_log == runc_log
    assert shim_log["level"] == "error"


def test_create_twice_same_error(pair: Pair) -> None:
    create_running(pair)
    pair.both("create", "--bundle", str(pair.bundle), "{id}")
    pair.states()


def test_checkpoint_restore(pair: Pair, tmp_path: Path) -> None:
    """criu cannot dump these containers here (or is absent): the error must be runc's own."""
    create_running(pair)
    for side in (pair.runc, pair.shim):
        (side.tmp / "images").mkdir()
        (side.tmp / "empty").mkdir()
    pair.both(
        "--criu", "/nonexistent/criu", "checkpoint", "--image-path", "{tmp}/images", "{id}"
    )
    pair.both("checkpoint", "--image-path", "{tmp}/images", "--leave-running", "{id}")
    pair.states()
    pair.both("checkpoint", "--image-path", "{tmp}/images", "nosuch-container")
    pair.both(
        "restore", "--image-path", "{tmp}/empty", "--bundle", str(pair.bundle), "{id}-restored"
    )
    pair.both(
        "--criu", "/nonexistent/criu", "restore", "--image-path", "{tmp}/empty",
        "--bundle", str(pair.bundle), "{id}-restored",
    )
    pair.both("list", "-q")


# --- the hand-off itself ----------------------------------------------------------------------


def _spawn_with_fd3(argv: list[str], cwd: Path | None = None) -> tuple[int, str, str, str]:
    """Run `argv` with a pipe's write end as its fd 3; returns (rc, stdout, stderr, fd 3 data)."""
    rfd, wfd = os.pipe()

    def as_fd3() -> None:
        os.dup2(wfd, 3)

    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # close_fds runs after preexec_fn: fd 3 itself must be kept.
            pass_fds=(wfd, 3), preexec_fn=as_fd3,
        )
    finally:
        os.close(wfd)
    with os.fdopen(rfd) as r:
        via_fd3 = r.read()
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err, via_fd3


def test_preserve_fds(pair: Pair, make_bundle: BundleFactory) -> None:
    """Inherited fds reach the container: the hand-off closes nothing."""
    bundle = make_bundle(["sh", "-c", "echo run-fd3 >&3; echo done"], name="fds")
    results = {}
    for side in (pair.runc, pair.shim):
        results[side.name] = _spawn_with_fd3(
            side.argv(("run", "--preserve-fds", "1", "--bundle", str(bundle), "{id}"), ())
        )
    assert results["shim"] == results["runc"] == (0, "done\n", "", "run-fd3\n")

    create_running(pair)
    for side in (pair.runc, pair.shim):
        results[side.name] = _spawn_with_fd3(
            side.argv(("exec", "--preserve-fds", "1", "{id}", "sh", "-c", "echo exec-fd3 >&3"), ())
        )
    assert results["shim"] == results["runc"] == (0, "", "", "exec-fd3\n")


def test_console_socket(pair: Pair, make_bundle: BundleFactory) -> None:
    """A terminal container: the pty master arrives on the console socket, through the shim."""

    def with_tty(spec: dict[str, Any]) -> None:
        spec["process"]["terminal"] = True

    bundle = make_bundle(["sh", "-c", "test -t 0 && echo tty-ok"], name="tty", edit=with_tty)
    outputs = {}
    for side in (pair.runc, pair.shim):
        path = str(side.tmp / "console.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(TIMEOUT)
        r = side.call("create", "--bundle", str(bundle), "--console-socket", path, "{id}")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        conn, _ = listener.accept()
        _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        conn.close()
        listener.close()
        assert side.call("start", "{id}").returncode == 0
        data = b""
        with os.fdopen(fds[0], "rb", buffering=0) as master:
            while b"tty-ok" not in data:
                try:
                    chunk = master.read(4096)
                except OSError:  # EIO: the container closed its end
                    break
                if not chunk:
                    break
                data += chunk
        outputs[side.name] = data
    assert outputs["shim"] == outputs["runc"]
    assert b"tty-ok" in outputs["shim"]


def test_handoff_keeps_pid_and_resets_signals(
    tmp_path: Path, shim: str, make_config: ConfigFactory
) -> None:
    """The lower runtime runs in the shim's own process, with SIGPIPE and SIGXFSZ at default.

    The lower runtime here is a shell script that records its pid and ignored-signal mask, then
    execs runc. Python ignores both signals and the disposition survives execve: the control run
    (the script started directly from a process that ignores them) shows the bits set.
    """
    record = tmp_path / "record"
    record.mkdir()
    script = tmp_path / "lower.sh"
    script.write_text(
        "#!/bin/sh\n"
        'echo $$ > "$RETINUE_TEST_RECORD/pid"\n'
        'grep SigIgn /proc/$$/status > "$RETINUE_TEST_RECORD/sigign"\n'
        f'exec {RUNC} "$@"\n'
    )
    script.chmod(0o755)
    make_config("", f'runtime = "{script}"\n')
    env = {**os.environ, "RETINUE_TEST_RECORD": str(record)}
    ignored = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))

    control = subprocess.run(
        [str(script), "--version"], env=env, capture_output=True, restore_signals=False
    )
    assert control.returncode == 0
    assert int((record / "sigign").read_text().split()[1], 16) & ignored == ignored

    proc = subprocess.Popen(
        [shim, "--version"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        restore_signals=False,
    )
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert out.decode().startswith("runc version")
    assert int((record / "pid").read_text()) == proc.pid
    assert int((record / "sigign").read_text().split()[1], 16) & ignored == 0


def test_handoff_passes_argv_env_and_cwd(
    tmp_path: Path, shim: str, make_config: ConfigFactory
) -> None:
    """argv[1:] reach the lower runtime unchanged, with the caller's environment and cwd."""
    record = tmp_path / "record"
    record.mkdir()
    script = tmp_path / "lower.sh"
    script.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do printf "%s\\0" "$a"; done > "$RETINUE_TEST_RECORD/argv"\n'
        'pwd > "$RETINUE_TEST_RECORD/cwd"\n'
        'echo "$CALLER_VAR" > "$RETINUE_TEST_RECORD/env"\n'
        "exit 42\n"
    )
    script.chmod(0o755)
    make_config("", f'runtime = "{script}"\n')
    argv = ["-root=/x y", "--debug", "kill", "--all", "some id", "9", "", "--", "é"]
    proc = subprocess.run(
        [shim, *argv], env={**os.environ, "RETINUE_TEST_RECORD": str(record), "CALLER_VAR": "v"},
        cwd=tmp_path, capture_output=True,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (42, b"", b"")
    assert (record / "argv").read_bytes() == b"".join(a.encode() + b"\0" for a in argv)
    assert (record / "cwd").read_text() == f"{tmp_path}\n"
    assert (record / "env").read_text() == "v\n"
