"""Bad input, table-driven: every way the bundle or the configuration can be wrong.

For each case the shim must fail the way runc fails: a non-zero exit, nothing on stdout (on
create, stdout is the container's), the message on stderr, exactly one runc-format line appended
to the `--log` file (JSON or logrus text), and no side effect: config.json byte-identical, no temp
or partial file in the bundle, no container in the runc root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Not imported from conftest: several conftest modules share that name in one session.
RUNC = shutil.which("runc") or "/usr/sbin/runc"
BundleFactory = Callable[..., Path]
ConfigFactory = Callable[..., Path]
TIMEOUT = 60
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)\Z")
# logrus' text formatter: time="..." level=error msg="..." (a value is quoted when it must be).
TEXT_LINE = re.compile(
    r'time="(?P<time>[^"]+)" level=(?P<level>\w+) msg=(?P<msg>"(?:[^"\\]|\\.)*")\Z'
)

FALLBACK_DIRS = "/usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin"
ALWAYS = """
[[attach]]
name = "everyone"
when.always = true
env = { ATTACHED = "1" }
"""


@dataclass
class Ctx:
    """What one case sets up; `message` lines are what stderr must say after `retinue: `."""

    tmp: Path
    etc: Path
    bundle: Path
    policy: str = ALWAYS
    config: str = ""
    env: dict[str, str] = field(default_factory=dict)
    command: str = "create"
    config_bytes: bytes | None = None  # written over config.toml as they are


CASES: dict[str, Callable[[Ctx], list[str]]] = {}


def case(fn: Callable[[Ctx], list[str]]) -> Callable[[Ctx], list[str]]:
    CASES[fn.__name__] = fn
    return fn


def set_spec(ctx: Ctx, edit: Callable[[dict[str, Any]], None]) -> str:
    path = ctx.bundle / "config.json"
    spec = json.loads(path.read_text())
    edit(spec)
    path.write_text(json.dumps(spec, indent="\t"))
    return str(path)


# --- config.json ----------------------------------------------------------------------------


@case
def spec_not_json(ctx: Ctx) -> list[str]:
    path = ctx.bundle / "config.json"
    path.write_text('{"ociVersion": "1.0.2", "process": ')
    return [f"{path}: not valid JSON: Expecting value: line 1 column 36 (char 35)"]


@case
def spec_not_utf8(ctx: Ctx) -> list[str]:
    path = ctx.bundle / "config.json"
    path.write_bytes(b'{"hostname": "\xff\xfe"}')
    return [f"{path}: not valid JSON: not UTF-8 (invalid start byte)"]


@case
def spec_not_an_object(ctx: Ctx) -> list[str]:
    path = ctx.bundle / "config.json"
    path.write_text('["process"]')
    return [f'{path}: (top level): expected an object, got a list: ["process"]']


@case
def env_entry_null(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s["process"]["env"].append(None))
    return [f"{path}: process.env[2]: expected a string, got null"]


@case
def env_entry_not_a_string(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s["process"]["env"].insert(0, {"A": "1"}))
    return [f'{path}: process.env[0]: expected a string, got an object: {{"A": "1"}}']


@case
def env_not_a_list(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s["process"].update(env="A=1"))
    return [f'{path}: process.env: expected a list of strings, got a string: "A=1"']


@case
def process_missing(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s.pop("process"))
    return [f"{path}: process: missing (required by runc to create a container)"]


@case
def process_not_an_object(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s.update(process=["sh"]))
    return [f'{path}: process: expected an object, got a list: ["sh"]']


@case
def args_not_strings(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s["process"].update(args=["sleep", 10]))
    return [f"{path}: process.args[1]: expected a string, got a number: 10"]


@case
def poststop_not_a_list(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s.update(hooks={"poststop": {"path": "/bin/true"}}))
    return [
        f'{path}: hooks.poststop: expected a list of hooks, got an object: {{"path": "/bin/true"}}'
    ]


@case
def hook_without_path(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s.update(hooks={"createRuntime": [{"args": ["x"]}]}))
    return [f"{path}: hooks.createRuntime[0].path: expected a string, got null"]


@case
def annotations_not_strings(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s.update(annotations={"ok": "yes", "n": 1, "b": True}))
    return [
        f"{path}: annotations.n: expected a string, got a number: 1; "
        f"{path}: annotations.b: expected a string, got a boolean: true"
    ]


@case
def annotations_not_an_object(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s.update(annotations=["a=b"]))
    return [f'{path}: annotations: expected an object of strings, got a list: ["a=b"]']


@case
def mounts_not_a_list(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s.update(mounts={"destination": "/x"}))
    return [f'{path}: mounts: expected a list of objects, got an object: {{"destination": "/x"}}']


@case
def mount_not_an_object(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s["mounts"].append("/x"))
    n = len(json.loads((ctx.bundle / "config.json").read_text())["mounts"]) - 1
    return [f'{path}: mounts[{n}]: expected an object, got a string: "/x"']


@case
def config_json_is_a_directory(ctx: Ctx) -> list[str]:
    path = ctx.bundle / "config.json"
    path.unlink()
    path.mkdir()
    return [f"{path}: cannot read: Is a directory"]


@case
def config_json_missing(ctx: Ctx) -> list[str]:
    path = ctx.bundle / "config.json"
    path.unlink()
    return [f"{path}: no such file"]


@case
def bundle_missing(ctx: Ctx) -> list[str]:
    missing = ctx.tmp / "no-such-bundle"
    ctx.bundle = missing
    return [f"bundle {missing}: no such directory"]


@case
def bundle_is_a_file(ctx: Ctx) -> list[str]:
    f = ctx.tmp / "a-file"
    f.write_text("")
    ctx.bundle = f
    return [f"bundle {f}: not a directory"]


@case
def container_mount_in_the_way(ctx: Ctx) -> list[str]:
    """The rule's mount destination is already a mount of the container: never mounted over."""
    (ctx.etc / "tools").mkdir()
    ctx.policy = """
[[attach]]
name = "tools"
when.always = true
mounts = [{ source = "tools", destination = "/tmp" }]
"""
    return ["mounts: /tmp is already a mount of the container (source 'tmpfs'); "
            "retinue will not mount over it"]


@case
def container_asks_for_unknown_service(ctx: Ctx) -> list[str]:
    set_spec(ctx, lambda s: s.update(annotations={"io.retinue.services": "sshd"}))
    return ["the container asks for service 'sshd' (annotation io.retinue.services), which is "
            "not defined (selectable services: none)"]


@case
def container_asks_for_unknown_service_by_env(ctx: Ctx) -> list[str]:
    set_spec(ctx, lambda s: s["process"]["env"].append("RETINUE_SERVICES=a, b"))
    return ["the container asks for service 'a' (env RETINUE_SERVICES), which is "
            "not defined (selectable services: none)"]


@case
def run_with_bad_spec(ctx: Ctx) -> list[str]:
    ctx.command = "run"
    path = set_spec(ctx, lambda s: s["process"].update(env=[None]))
    return [f"{path}: process.env[0]: expected a string, got null"]


@case
def linux_not_an_object_with_seccomp(ctx: Ctx) -> list[str]:
    """A seccomp rule applies, so the shim merges into linux.seccomp: a `linux` that is not an
    object is named, not an internal error."""
    ctx.policy = """
[[attach]]
name = "broker"
when.always = true

[[attach.seccomp]]
syscalls = ["mkdir"]
handler = "deny"
"""
    set_spec(ctx, lambda s: s.update(linux=["seccomp"]))
    return ["linux: expected an object"]


# --- the lower runtime ----------------------------------------------------------------------


@case
def lower_runtime_missing_path(ctx: Ctx) -> list[str]:
    ctx.config = 'runtime = "/nonexistent/bin/runc"\n'
    return ["lower runtime /nonexistent/bin/runc: no such executable file"]


@case
def lower_runtime_missing_name(ctx: Ctx) -> list[str]:
    ctx.config = 'runtime = "no-such-runtime"\n'
    return [
        f"lower runtime no-such-runtime: not found on PATH {os.environ['PATH']!r} nor in "
        f"{FALLBACK_DIRS}"
    ]


@case
def no_runtime_on_path(ctx: Ctx) -> list[str]:
    """Nothing on PATH and nothing in the usual install directories either (runc and crun
    themselves are found there without PATH: see test_engine_env)."""
    empty = ctx.tmp / "empty-bin"
    empty.mkdir()
    ctx.env["PATH"] = str(empty)
    ctx.config = 'runtime = "no-such-runtime"\n'
    return [
        f"lower runtime no-such-runtime: not found on PATH {str(empty)!r} nor in {FALLBACK_DIRS}"
    ]


@case
def lower_runtime_relative(ctx: Ctx) -> list[str]:
    ctx.config = 'runtime = "bin/runc"\n'
    return [f"{ctx.etc}/config.toml: runtime: expected an absolute path, got 'bin/runc'"]


# --- config.toml ----------------------------------------------------------------------------


@case
def retinue_config_missing(ctx: Ctx) -> list[str]:
    missing = ctx.tmp / "nowhere" / "config.toml"
    ctx.env["RETINUE_CONFIG"] = str(missing)
    return [f"{missing}: no such file"]


@case
def config_is_a_directory(ctx: Ctx) -> list[str]:
    d = ctx.tmp / "config-dir.toml"
    d.mkdir()
    ctx.env["RETINUE_CONFIG"] = str(d)
    return [f"{d}: is a directory, expected a TOML file"]


@case
def config_invalid_toml(ctx: Ctx) -> list[str]:
    ctx.config = 'runtime = "runc\n'
    return [f"{ctx.etc}/config.toml: invalid TOML: Illegal character '\\n' (at line 1, column 16)"]


@case
def config_invalid_utf8(ctx: Ctx) -> list[str]:
    ctx.config_bytes = b'# caf\xe9\nruntime = "runc"\n'
    return [f"{ctx.etc}/config.toml: invalid TOML: not UTF-8 (invalid continuation byte)"]


@case
def config_unknown_key(ctx: Ctx) -> list[str]:
    ctx.config = 'runtme = "runc"\n'
    return [f"{ctx.etc}/config.toml: runtme: unknown key"]


@case
def config_wrong_type(ctx: Ctx) -> list[str]:
    ctx.config = "state_dir = 5\n"
    return [f"{ctx.etc}/config.toml: state_dir: expected a string, got an integer: 5"]


@case
def config_relative_state_dir(ctx: Ctx) -> list[str]:
    ctx.config = 'state_dir = "run/retinue"\n'
    return [f"{ctx.etc}/config.toml: state_dir: expected an absolute directory, got 'run/retinue'"]


@case
def config_policy_missing(ctx: Ctx) -> list[str]:
    ctx.config = 'policy = "other-policy.toml"\n'
    return [f"{ctx.etc}/other-policy.toml: no such file"]


# --- policy.toml ----------------------------------------------------------------------------


def policy_case(policy: str, *errors: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        ctx.policy = policy
        return [f"{ctx.etc}/policy.toml: {e}" for e in errors]

    return setup


POLICY_CASES = {
    "annotations_a_list": policy_case(
        '[[attach]]\nname = "a"\nwhen.annotations = ["x"]\n',
        "attach[0].when.annotations: expected a table of strings, got a list: ['x']",
    ),
    "annotation_value_not_a_string": policy_case(
        '[[attach]]\nname = "a"\nwhen.annotations = { k = 1 }\n',
        "attach[0].when.annotations.k: expected a string, got an integer: 1",
    ),
    "unknown_rule_key": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\ncolour = "red"\n',
        "attach[0].colour: unknown key",
    ),
    "unknown_when_key": policy_case(
        '[[attach]]\nname = "a"\nwhen.labels = { a = "b" }\n',
        "attach[0].when.labels: unknown key",
    ),
    "unknown_top_level_key": policy_case(
        '[[atach]]\nname = "a"\nwhen.always = true\n',
        "atach: unknown key",
    ),
    "missing_name": policy_case(
        "[[attach]]\nwhen.always = true\n",
        "attach[0].name: missing (required)",
    ),
    "missing_when": policy_case(
        '[[attach]]\nname = "a"\n',
        "attach[0].when: missing (required)",
    ),
    "name_not_a_string": policy_case(
        "[[attach]]\nname = 3\nwhen.always = true\n",
        "attach[0].name: expected a string, got an integer: 3",
    ),
    "always_not_a_bool": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = "yes"\n',
        "attach[0].when.always: expected true or false, got a string: 'yes'",
    ),
    "attach_not_a_list": policy_case(
        '[attach]\nname = "a"\n',
        "attach: expected a list of tables, got a table: {'name': 'a'}",
    ),
    "command_not_a_list": policy_case(
        '[[attach]]\nname = "a"\nwhen.command = "nginx"\n',
        "attach[0].when.command: expected a list of strings, got a string: 'nginx'",
    ),
    "env_value_not_a_string": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\nenv = { PORT = 8080 }\n',
        "attach[0].env.PORT: expected a string, got an integer: 8080",
    ),
    "relative_destination": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\n'
        'mounts = [{ source = "/usr", destination = "retinue/x" }]\n',
        "attach[0].mounts[0].destination: expected an absolute container path, got 'retinue/x'",
    ),
    "dotdot_destination": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\n'
        'mounts = [{ source = "/usr", destination = "/retinue/../etc" }]\n',
        "attach[0].mounts[0].destination: expected a normalized absolute container path "
        "(no '..', '.' or '//'), got '/retinue/../etc'",
    ),
    "dotdot_source": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\n'
        'mounts = [{ source = "../secrets", destination = "/retinue/x" }]\n',
        "attach[0].mounts[0].source: expected a host path (absolute, or relative to this file, "
        "without '..'), got '../secrets'",
    ),
    "mount_over_root": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\n'
        'mounts = [{ source = "/usr", destination = "/" }]\n',
        "attach[0].mounts[0].destination: cannot mount over the root",
    ),
    "mount_missing_destination": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\nmounts = [{ source = "/usr" }]\n',
        "attach[0].mounts[0].destination: missing (required)",
    ),
    "empty_when": policy_case(
        '[[attach]]\nname = "a"\nwhen = {}\n',
        "attach[0].when: selects nothing; give always = true or annotations, env or command",
    ),
    "duplicate_names": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\n\n'
        '[[attach]]\nname = "a"\nwhen.env = { X = "1" }\n',
        "attach[1].name: 'a' is already the name of attach[0]",
    ),
    "bad_rule_name": policy_case(
        '[[attach]]\nname = "Bad Name"\nwhen.always = true\n',
        "attach[0].name: expected lowercase letters, digits, '.', '_' or '-' (at most 63), "
        "got 'Bad Name'",
    ),
    "bad_env_name": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\nenv = { "1X" = "v" }\n',
        "attach[0].env: invalid variable name '1X'",
    ),
    "several_errors_at_once": policy_case(
        '[[attach]]\nname = "a"\nwhen = {}\n\n[[attach]]\nname = "a"\nwhen.always = true\n',
        "attach[0].when: selects nothing; give always = true or annotations, env or command",
        "attach[1].name: 'a' is already the name of attach[0]",
    ),
    "unknown_service": policy_case(
        '[[attach]]\nname = "a"\nwhen.always = true\nservices = ["nope"]\n',
        "attach[0].services[0]: no service 'nope' in {services} (defined: none)",
    ),
    "policy_invalid_toml": policy_case(
        '[[attach]\nname = "a"\n',
        "invalid TOML: Expected ']]' at the end of an array declaration (at line 1, column 9)",
    ),
}
CASES.update(POLICY_CASES)


# --- the checks every case must pass --------------------------------------------------------


def seed_line(fmt: str) -> str:
    """A line some earlier call wrote, which must stay."""
    if fmt == "json":
        return '{"level":"warning","msg":"earlier","time":"2020-01-01T00:00:00Z"}\n'
    return 'time="2020-01-01T00:00:00Z" level=warning msg=earlier\n'


def parse_line(line: str, fmt: str) -> dict[str, Any]:
    if fmt == "json":
        obj: dict[str, Any] = json.loads(line)
        assert isinstance(obj, dict)
        assert set(obj) == {"level", "msg", "time"}
        return obj
    m = TEXT_LINE.match(line)
    assert m, line
    return {"level": m["level"], "msg": json.loads(m["msg"]), "time": m["time"]}


def snapshot(directory: Path) -> dict[str, tuple[bytes | None, int]]:
    out: dict[str, tuple[bytes | None, int]] = {}
    if not directory.is_dir():
        return out
    for entry in sorted(directory.iterdir()):
        st = entry.stat()
        out[entry.name] = (entry.read_bytes() if entry.is_file() else None, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(
    name: str, fmt: str, shim: str, make_config: ConfigFactory, make_bundle: BundleFactory,
    runc_root: str, container_id: str, tmp_path: Path,
) -> None:
    ctx = Ctx(tmp=tmp_path, etc=tmp_path / "etc", bundle=make_bundle(["true"]))
    ctx.etc.mkdir()
    expected = CASES[name](ctx)
    cfg = make_config(ctx.policy, ctx.config)
    if ctx.config_bytes is not None:
        cfg.write_bytes(ctx.config_bytes)
    expected = [e.replace("{services}", str(cfg.parent / "services")) for e in expected]
    fails_cleanly(shim, ctx, fmt, expected, runc_root, container_id)


def fails_cleanly(
    shim: str, ctx: Ctx, fmt: str, expected: list[str], runc_root: str, container_id: str
) -> None:
    """Run the create and check everything a failure must (and must not) do."""
    bundle_before = snapshot(ctx.bundle)
    log = ctx.tmp / "log" / "log.json"
    log.parent.mkdir()
    log.write_text(seed_line(fmt))
    argv = [
        shim, "--root", runc_root, "--log", str(log), "--log-format", fmt,
        ctx.command, "--bundle", str(ctx.bundle), "--pid-file", str(ctx.tmp / "init.pid"),
        container_id,
    ]
    env = {**os.environ, **ctx.env}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=TIMEOUT
        )
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read().decode()

    assert proc.returncode != 0
    assert stdout == b""
    message = "retinue: " + "\n".join(expected)
    assert stderr == message + "\n"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 2 and lines[0] == seed_line(fmt)
    assert lines[1].endswith("\n") and "\n" not in lines[1][:-1]
    entry = parse_line(lines[1][:-1], fmt)
    assert entry["level"] == "error"
    assert entry["msg"] == message
    assert RFC3339.match(entry["time"])
    assert snapshot(ctx.bundle) == bundle_before  # same bytes, same mtimes, no temp files
    assert os.listdir(runc_root) == []
    assert not (ctx.tmp / "init.pid").exists()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_write_failure_leaves_nothing_behind(
    fmt: str, shim: str, make_config: ConfigFactory, make_bundle: BundleFactory,
    runc_root: str, container_id: str, tmp_path: Path,
) -> None:
    """The disk fills up half-way through writing the edited file: the original stays, and the
    partial temp file goes. The bundle lives on a two-page tmpfs; the edit needs a third."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(small)], check=True)
    try:
        source = make_bundle(["true"])
        spec = json.loads((source / "config.json").read_text())
        bundle = small / "bundle"
        bundle.mkdir()
        raw = json.dumps(spec, separators=(",", ":"))
        assert len(raw) < 4096
        (bundle / "config.json").write_text(raw)
        ctx = Ctx(tmp=tmp_path, etc=tmp_path / "etc", bundle=bundle)
        make_config(
            f'[[attach]]\nname = "big"\nwhen.always = true\nenv = {{ BIG = "{"x" * 6000}" }}\n'
        )
        expected = [f"{bundle}/config.json: cannot write: No space left on device"]
        fails_cleanly(shim, ctx, fmt, expected, runc_root, container_id)
        assert os.listdir(bundle) == ["config.json"]
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_without_log_flag_both_lines_go_to_stderr(
    shim: str, make_config: ConfigFactory, make_bundle: BundleFactory, runc_root: str,
    container_id: str,
) -> None:
    """runc without --log writes its logrus line and then the bare message to stderr."""
    make_config('[[attach]]\nname = "a"\nwhen.always = true\n')
    bundle = make_bundle(["true"])
    (bundle / "config.json").write_text("{")
    proc = subprocess.run(
        [shim, "--root", runc_root, "create", "--bundle", str(bundle), container_id],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    logline, bare = proc.stderr.splitlines()
    entry = parse_line(logline, "text")
    assert entry["level"] == "error"
    assert entry["msg"] == bare
    assert bare.startswith(f"retinue: {bundle}/config.json: not valid JSON")


def test_runc_own_errors_are_untouched_with_a_policy(
    shim: str, make_config: ConfigFactory, make_bundle: BundleFactory, runc_root: str,
    container_id: str, tmp_path: Path,
) -> None:
    """A spec the shim can read but runc refuses: runc's own error, exactly as runc reports it."""
    make_config('[[attach]]\nname = "a"\nwhen.env = { NEVER = "1" }\n')
    bundle = make_bundle(["/no/such/binary"])
    results = []
    for exe in (RUNC, shim):
        log = tmp_path / f"log-{Path(exe).name}.json"
        proc = subprocess.run(
            [exe, "--root", runc_root, "--log", str(log), "--log-format", "json", "run",
             "--bundle", str(bundle), container_id],
            capture_output=True, text=True, timeout=TIMEOUT,
        )
        msgs = [json.loads(ln)["msg"] for ln in log.read_text().splitlines()]
        results.append((proc.returncode, proc.stdout, proc.stderr, msgs))
    assert results[1] == results[0]
    assert results[0][0] != 0


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_line_shape_is_runcs(fmt: str, runc_root: str, tmp_path: Path) -> None:
    """The shape the table checks the shim's lines against is the one runc itself writes."""
    log = tmp_path / "runc.log"
    proc = subprocess.run(
        [RUNC, "--root", runc_root, "--log", str(log), "--log-format", fmt, "state", "nosuch"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert proc.returncode != 0
    (line,) = log.read_text().splitlines()
    entry = parse_line(line, fmt)
    assert entry["level"] == "error"
    assert entry["msg"] == "container does not exist"
    assert RFC3339.match(entry["time"])
