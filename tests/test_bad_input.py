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
    path = set_spec(ctx, lambda s: s.update(linux=["seccomp"]))
    return [f'{path}: linux: expected an object, got a list: ["seccomp"]']


@case
def capabilities_a_list(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s["process"].update(capabilities=["CAP_CHOWN"]))
    return [f'{path}: process.capabilities: expected an object, got a list: ["CAP_CHOWN"]']


@case
def hook_args_a_number(ctx: Ctx) -> list[str]:
    path = set_spec(
        ctx, lambda s: s.update(hooks={"createRuntime": [{"path": "/bin/true", "args": 5}]})
    )
    return [f"{path}: hooks.createRuntime[0].args: expected a list of strings, got a number: 5"]


@case
def hook_args_an_object(ctx: Ctx) -> list[str]:
    path = set_spec(
        ctx, lambda s: s.update(hooks={"poststop": [{"path": "/bin/true", "args": {"a": 1}}]})
    )
    return [
        f'{path}: hooks.poststop[0].args: expected a list of strings, got an object: {{"a": 1}}'
    ]


def nest(ctx: Ctx, depth: int) -> Path:
    """A field nested `depth` lists deep (json.dumps itself cannot write one that deep)."""
    path = ctx.bundle / "config.json"
    text = path.read_text()
    path.write_text('{"deep": ' + "[" * depth + "]" * depth + ", " + text.lstrip()[1:])
    return path


@case
def nested_3000_deep(ctx: Ctx) -> list[str]:
    path = nest(ctx, 3000)
    return [f"{path}: nested 3001 levels deep, more than retinue reads (500)"]


@case
def nested_10000_deep(ctx: Ctx) -> list[str]:
    """Go's own limit: the interpreter must not crash on it either."""
    path = nest(ctx, 10000)
    return [f"{path}: nested 10001 levels deep, more than retinue reads (500)"]


@case
def nested_just_too_deep(ctx: Ctx) -> list[str]:
    """Deep enough to pass the parser, too deep for what comes after it."""
    path = nest(ctx, 900)
    return [f"{path}: nested 901 levels deep, more than retinue reads (500)"]


@case
def config_json_is_dev_zero(ctx: Ctx) -> list[str]:
    path = ctx.bundle / "config.json"
    path.unlink()
    path.symlink_to("/dev/zero")
    return [f"{path}: not a regular file"]


@case
def config_json_is_a_fifo(ctx: Ctx) -> list[str]:
    """runc would wait for a writer for ever; the shim does not even open it for reading."""
    path = ctx.bundle / "config.json"
    path.unlink()
    os.mkfifo(path)
    return [f"{path}: not a regular file"]


@case
def config_json_too_big(ctx: Ctx) -> list[str]:
    path = ctx.bundle / "config.json"
    size = (64 << 20) + 1
    with open(path, "r+b") as f:
        f.truncate(size)  # sparse: costs no disk
    return [f"{path}: {size} bytes, more than retinue reads ({64 << 20})"]


@case
def truncated_object(ctx: Ctx) -> list[str]:
    path = ctx.bundle / "config.json"
    path.write_text("{bad")
    return [
        f"{path}: not valid JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"
    ]


@case
def truncated_list(ctx: Ctx) -> list[str]:
    path = ctx.bundle / "config.json"
    path.write_text('{"a": [1, 2')
    return [f"{path}: not valid JSON: Expecting ',' delimiter: line 1 column 12 (char 11)"]


@case
def integer_too_long(ctx: Ctx) -> list[str]:
    path = set_spec(ctx, lambda s: s.update(big=0))
    path_ = Path(path)
    path_.write_text(path_.read_text().replace('"big": 0', '"big": ' + "9" * 5000))
    return [
        f"{path}: not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: "
        "value has 5000 digits; use sys.set_int_max_str_digits() to increase the limit"
    ]


def duplicate_case(where: str, field: str, keys: str, edit: Callable[[dict[str, Any]], None]
                   ) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        path = set_spec(ctx, edit)
        return [
            f"{path}: {where}{field}: given as {keys}; runc reads keys without regard to case "
            "and would merge them: keep one"
        ]

    return setup


CASE_DUPLICATES = {
    "duplicate_process": duplicate_case(
        "", "process", "'process', 'Process'", lambda s: s.update(Process={"args": ["sh"]})
    ),
    "duplicate_annotations": duplicate_case(
        "", "annotations", "'annotations', 'Annotations'",
        lambda s: s.update(annotations={"a": "1"}, Annotations={"b": "2"}),
    ),
    "duplicate_mounts": duplicate_case("", "mounts", "'mounts', 'MOUNTS'",
                                       lambda s: s.update(MOUNTS=[])),
    "duplicate_hooks": duplicate_case(
        "", "hooks", "'Hooks', 'hooks'", lambda s: s.update(Hooks={}, hooks={})
    ),
    "duplicate_linux": duplicate_case("", "linux", "'linux', 'Linux'",
                                      lambda s: s.update(Linux={})),
    "duplicate_env": duplicate_case(
        "process.", "env", "'env', 'Env'", lambda s: s["process"].update(Env=["A=1"])
    ),
    "duplicate_args": duplicate_case(
        "process.", "args", "'args', 'ARGS'", lambda s: s["process"].update(ARGS=["sh"])
    ),
    "duplicate_hook_path": duplicate_case(
        "hooks.poststop[0].", "path", "'path', 'Path'",
        lambda s: s.update(hooks={"poststop": [{"path": "/bin/true", "Path": "/bin/sh"}]}),
    ),
    "duplicate_mount_destination": duplicate_case(
        "mounts[0].", "destination", "'destination', 'Destination'",
        lambda s: s["mounts"][0].update(Destination="/elsewhere"),
    ),
}
CASES.update(CASE_DUPLICATES)


BY_ENV = """
[[attach]]
name = "debug"
when.env = { MODE = "debug" }
env = { ATTACHED = "1" }
"""
TWICE = (
    "given more than once; runc reads every one (merging objects), retinue only the last: "
    "keep one"
)


def add_member(ctx: Ctx, member: str, inside: str = "") -> str:
    """Append `member` (a `"key": value` text) to the top-level object, or to the object that
    `"inside": {` opens: a key given twice, which json.dumps cannot write."""
    path = ctx.bundle / "config.json"
    text = path.read_text()
    if inside:
        opening = f'"{inside}": {{'
        assert text.count(opening) == 1
        text = text.replace(opening, f"{opening}{member}, ")
    else:
        text = text.rstrip()[:-1].rstrip() + f", {member}}}"
    path.write_text(text)
    return str(path)


@case
def process_given_twice(ctx: Ctx) -> list[str]:
    """runc merges the two: the container gets MODE=debug, which Python's last copy hides."""
    ctx.policy = BY_ENV
    set_spec(ctx, lambda s: s["process"]["env"].append("MODE=debug"))
    path = add_member(ctx, '"process": {"args": ["true"], "cwd": "/"}')
    return [f"{path}: process: {TWICE}"]


@case
def annotations_given_twice(ctx: Ctx) -> list[str]:
    ctx.policy = BY_ENV.replace('env = { MODE = "debug" }', 'annotations = { mode = "debug" }')
    set_spec(ctx, lambda s: s.update(annotations={"mode": "debug"}))
    path = add_member(ctx, '"annotations": {"other": "1"}')
    return [f"{path}: annotations: {TWICE}"]


@case
def env_given_twice(ctx: Ctx) -> list[str]:
    ctx.policy = BY_ENV
    path = add_member(ctx, '"env": ["MODE=debug"]', inside="process")
    return [f"{path}: process.env: {TWICE}"]


@case
def process_user_given_twice_in_a_spec_retinue_rewrites(ctx: Ctx) -> list[str]:
    """Selection does not read process.user: refused because the spec is written back."""
    path = add_member(ctx, '"user": {"uid": 1000, "gid": 1000}', inside="process")
    return [f"{path}: process.user: {TWICE}"]


@case
def linux_given_twice_in_a_spec_retinue_rewrites(ctx: Ctx) -> list[str]:
    """Nothing selection reads, but retinue writes the spec back: runc would lose a part."""
    path = add_member(ctx, '"linux": {"sysctl": {"net.ipv4.ip_forward": "1"}}')
    return [f"{path}: linux: {TWICE}"]


@case
def nested_key_given_twice_in_a_spec_retinue_rewrites(ctx: Ctx) -> list[str]:
    path = add_member(ctx, '"resources": {"pids": {"limit": 10}}', inside="linux")
    return [f"{path}: linux.resources: {TWICE}"]


@case
def non_ascii_case_variant(ctx: Ctx) -> list[str]:
    """Go folds the long s (U+017F) to S: runc reads `proce\u017fs` as `process`."""
    path = set_spec(ctx, lambda s: s.update({"proce\u017fs": s.pop("process")}))
    return [f"{path}: 'proce\u017fs': runc reads this key as 'process'; spell it so"]


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


@pytest.mark.parametrize(
    ("member", "inside"),
    [
        ('"resources": {"pids": {"limit": 10}}', "linux"),
        ('"user": {"uid": 0, "gid": 0}', "process"),
    ],
)
def test_a_key_given_twice_outside_selection_goes_to_runc_as_it_is(
    member: str, inside: str, shim: str, make_config: ConfigFactory,
    make_bundle: BundleFactory, runc_root: str, container_id: str, tmp_path: Path,
) -> None:
    """Nothing attaches (MODE is there, but not debug: Python decides), and selection reads no
    field given twice: runc gets the file untouched and judges it."""
    ctx = Ctx(tmp=tmp_path, etc=tmp_path / "etc", bundle=make_bundle(["true"], env=["MODE=x"]))
    make_config(BY_ENV)
    path = Path(add_member(ctx, member, inside=inside))
    before = path.read_bytes()
    with tempfile.TemporaryFile() as err:  # not a pipe: the container holds its stdio open
        r = subprocess.run(
            [shim, "--root", runc_root, "create", "--bundle", str(ctx.bundle), container_id],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=TIMEOUT,
        )
        err.seek(0)
        assert r.returncode == 0, err.read()
    assert path.read_bytes() == before
    state = subprocess.run([RUNC, "--root", runc_root, "state", container_id],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert json.loads(state.stdout)["status"] == "created"


# --- every field retinue reads, with every wrong JSON type ------------------------------------

# A spec in which every field retinue reads or edits is present (a rule, a service and a seccomp
# handler all attach, so every reader runs), and what each field must be. `[0]` is an item.
FULL_SPEC_EDITS: dict[str, Any] = {
    "process": {
        "terminal": False,
        "capabilities": {n: ["CAP_CHOWN"] for n in
                         ("bounding", "effective", "permitted", "inheritable", "ambient")},
        "apparmorProfile": "unconfined",
        "selinuxLabel": "",
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    },
    "annotations": {"k": "v"},
    "hooks": {stage: [{"path": "/bin/true", "args": ["true"]}] for stage in
              ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
               "poststop")},
    "linux": {"seccomp": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "",
        "listenerMetadata": "",
        "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}],
    }},
}
OBJECT, STRING, BOOL = "an object", "a string", "true or false"
STRINGS, OBJECTS = "a list of strings", "a list of objects"
FIELDS: dict[str, str] = {
    "process": OBJECT,
    "process.env": STRINGS, "process.env[0]": STRING,
    "process.args": STRINGS, "process.args[0]": STRING,
    "process.terminal": BOOL,
    "process.capabilities": OBJECT,
    **{f"process.capabilities.{n}": STRINGS
       for n in ("bounding", "effective", "permitted", "inheritable", "ambient")},
    "process.capabilities.bounding[0]": STRING,
    "process.apparmorProfile": STRING, "process.selinuxLabel": STRING,
    "process.rlimits": OBJECTS, "process.rlimits[0]": OBJECT,
    "annotations": "an object of strings", "annotations.k": STRING,
    "mounts": OBJECTS, "mounts[0]": OBJECT,
    "mounts[0].destination": STRING, "mounts[0].source": STRING, "mounts[0].type": STRING,
    "mounts[0].options": STRINGS, "mounts[0].options[0]": STRING,
    "hooks": OBJECT,
    **{f"hooks.{stage}": "a list of hooks" for stage in
       ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
        "poststop")},
    "hooks.createRuntime[0]": OBJECT, "hooks.poststop[0]": OBJECT,
    "hooks.createRuntime[0].path": STRING, "hooks.poststop[0].path": STRING,
    "hooks.createRuntime[0].args": STRINGS, "hooks.createRuntime[0].args[0]": STRING,
    "linux": OBJECT, "linux.seccomp": OBJECT,
    "linux.seccomp.defaultAction": STRING, "linux.seccomp.listenerPath": STRING,
    "linux.seccomp.listenerMetadata": STRING,
    "linux.seccomp.syscalls": OBJECTS, "linux.seccomp.syscalls[0]": OBJECT,
    "linux.seccomp.syscalls[0].names": STRINGS, "linux.seccomp.syscalls[0].names[0]": STRING,
    "linux.seccomp.syscalls[0].action": STRING,
    "linux.seccomp.syscalls[0].args": OBJECTS, "linux.seccomp.syscalls[0].args[0]": OBJECT,
}
WRONG: dict[str, list[Any]] = {
    OBJECT: ["x", 5, True, ["x"]],
    "an object of strings": ["x", 5.5, False, [{"a": "b"}]],
    STRING: [5, True, ["x"], {"a": 1}],
    BOOL: ["yes", 1, ["x"], {"a": 1}],
    STRINGS: ["x", 5, True, {"a": 1}],
    OBJECTS: ["x", 5, True, {"a": 1}],
    "a list of hooks": ["x", 5, True, {"a": 1}],
}
KIND = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
        dict: "an object"}
FIELD_POLICY = """
[[attach]]
name = "everyone"
when.always = true
env = { ATTACHED = "1" }
services = ["web"]

[[attach.seccomp]]
syscalls = ["mkdir"]
handler = "deny"
"""


def full_spec(spec: dict[str, Any]) -> None:
    for key, value in FULL_SPEC_EDITS.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(json.loads(json.dumps(value)))
        else:
            spec[key] = json.loads(json.dumps(value))
    spec["mounts"][0].setdefault("options", ["nosuid"])


def put(spec: dict[str, Any], name: str, value: Any) -> None:
    """spec with the value at `name` (a.b[0].c) replaced."""
    steps: list[str | int] = []
    for part in name.split("."):
        key, _, index = part.partition("[")
        steps.append(key)
        if index:
            steps.append(int(index.rstrip("]")))
    target: Any = spec
    for step in steps[:-1]:
        target = target[step]
    target[steps[-1]] = value


def wrong_cases() -> list[tuple[str, Any]]:
    return [(f, v) for f, what in FIELDS.items() for v in WRONG[what]]


def expected_error(path: str, name: str, value: Any) -> str:
    got = f"{KIND[type(value)]}: {json.dumps(value)}"
    return f"{path}: {name}: expected {FIELDS[name]}, got {got}"


@pytest.fixture
def field_config(make_config: ConfigFactory, tmp_path: Path) -> Path:
    """A policy under which a rule, a service and a seccomp handler attach to every container."""
    cfg = make_config(FIELD_POLICY, f'state_dir = "{tmp_path}/state"\nruntime = "{RUNC}"\n')
    files = cfg.parent / "files"
    files.mkdir()
    (files / "run.sh").write_text("#!/bin/sh\nexec sleep 1000\n")
    (files / "run.sh").chmod(0o755)
    (cfg.parent / "services" / "web.toml").write_text(
        'files = "files"\ncommand = ["run.sh"]\n'
    )
    return cfg


def test_every_field_is_read_by_the_create_path(
    field_config: Path, make_bundle: BundleFactory
) -> None:
    """The control for the table below: with valid values, each field reaches the code that
    reads it (selection, edits, the seccomp merge, the services' process), without error."""
    from retinue.config import settings as config
    from retinue.policy import attach
    from retinue.spec import bundle, execspec

    compiled = config.compile_config(config.load(str(field_config)), RUNC, "/bin/true")
    b = make_bundle(["true"], edit=full_spec)
    _, spec = bundle.load(str(b))
    for name in FIELDS:
        put(json.loads(json.dumps(spec)), name, None)  # every path exists in the full spec
    found = attach.plan(compiled, spec, "/run/runc", "c1", str(b))
    assert found is not None and found.services and found.seccomp
    proc = execspec.process(found.services[0], spec, "c1")
    assert proc["capabilities"]["bounding"] == ["CAP_CHOWN"]


@pytest.mark.parametrize(("name", "value"), wrong_cases(), ids=repr)
def test_wrong_type_in_each_field_in_process(
    name: str, value: Any, field_config: Path, make_bundle: BundleFactory
) -> None:
    """Every wrong JSON type in every field: the message, never another exception."""
    from retinue.config import settings as config
    from retinue.errors import SpecError
    from retinue.policy import attach
    from retinue.spec import bundle

    compiled = config.compile_config(config.load(str(field_config)), RUNC, "/bin/true")
    b = make_bundle(["true"], edit=lambda s: (full_spec(s), put(s, name, value)))
    with pytest.raises(SpecError) as raised:
        _, spec = bundle.load(str(b))
        attach.plan(compiled, spec, "/run/runc", "c1", str(b))
    assert str(raised.value) == expected_error(str(b / "config.json"), name, value)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_wrong_type_in_each_field_through_the_shim(
    name: str, shim: str, field_config: Path, make_bundle: BundleFactory, runc_root: str,
    container_id: str, tmp_path: Path,
) -> None:
    """One wrong type per field through the real shim: rc 1, the message, nothing changed or
    left behind (no container, no state directory, no supervisor)."""
    value = WRONG[FIELDS[name]][0]
    b = make_bundle(["true"], edit=lambda s: (full_spec(s), put(s, name, value)))
    ctx = Ctx(tmp=tmp_path, etc=field_config.parent, bundle=b)
    fails_cleanly(shim, ctx, "json", [expected_error(str(b / "config.json"), name, value)],
                  runc_root, container_id)
    state = tmp_path / "state"
    assert not state.exists() or list(state.rglob("*")) == []


def test_a_lone_case_variant_is_read_as_runc_reads_it(
    shim: str, make_config: ConfigFactory, make_bundle: BundleFactory, runc_root: str,
    container_id: str,
) -> None:
    """`Process` alone is runc's `process`: the rule's env lands in the process runc runs."""
    make_config(ALWAYS)
    b = make_bundle(["true"], edit=lambda s: s.update(Process=s.pop("process")))
    with tempfile.TemporaryFile() as out:  # not a pipe: the created container holds it open
        proc = subprocess.run(
            [shim, "--root", runc_root, "create", "--bundle", str(b), container_id],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=TIMEOUT,
        )
        out.seek(0)
        assert proc.returncode == 0, out.read()
    spec = json.loads((b / "config.json").read_text())
    assert "Process" not in spec and "ATTACHED=1" in spec["process"]["env"]


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
