"""`retinue check` and `retinue plan`: the administrator's view of the same configuration the shim
uses, run as the installed command (`retinue`, beside the session's launchers)."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

# Not imported from conftest: several conftest modules share that name in one session.
RUNC = shutil.which("runc") or "/usr/sbin/runc"
REPO = Path(__file__).resolve().parent.parent
BundleFactory = Callable[..., Path]
ConfigFactory = Callable[..., Path]
TIMEOUT = 60

TOOLS_POLICY = """
[[attach]]
name = "tools"
when.env = { WANT_TOOLS = "yes" }
mounts = [{ source = "tools", destination = "/retinue/tools" }]
env = { TOOLS_GREETING = "hello" }
"""


@pytest.fixture
def admin(shim: str) -> str:
    return str(Path(shim).parent / "retinue")


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Output in files, not pipes: a created container holds its stdio open."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=TIMEOUT, env=env
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            argv, proc.returncode, out.read().decode(), err.read().decode()
        )


@pytest.fixture
def tools_config(make_config: ConfigFactory, tmp_path: Path) -> Path:
    cfg = make_config(TOOLS_POLICY, f'state_dir = "{tmp_path}/state"\nruntime = "{RUNC}"\n')
    (cfg.parent / "tools").mkdir()
    return cfg


def fingerprint(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


# --- check ------------------------------------------------------------------------------------


def test_check_ok(admin: str, tools_config: Path) -> None:
    r = run([admin, "check"])
    assert (r.returncode, r.stderr) == (0, "")
    lines = r.stdout.splitlines()
    assert f"config:   {tools_config}" in lines
    assert f"runtime:  {RUNC}" in lines
    assert f"policy:   {tools_config.parent / 'policy.toml'} (1 rules)" in lines
    assert "  tools: 1 mounts, 1 env" in lines
    assert lines[-1] == "ok"


def test_check_explicit_config_option(admin: str, tools_config: Path, tmp_path: Path) -> None:
    env = {**os.environ, "RETINUE_CONFIG": str(tmp_path / "missing.toml")}
    r = run([admin, "check", "--config", str(tools_config)], env=env)
    assert r.returncode == 0, r.stderr
    r = run([admin, "check"], env=env)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"retinue: {tmp_path / 'missing.toml'}: no such file\n"


def test_check_shipped_configuration(admin: str) -> None:
    r = run([admin, "check", "--config", str(REPO / "configs" / "config.toml")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "ok"


@pytest.mark.parametrize(
    ("policy", "config", "message"),
    [
        (
            '[[attach]]\nname = "a"\nwhen.annotations = ["x"]\n', "",
            "{etc}/policy.toml: attach[0].when.annotations: expected a table of strings, "
            "got a list: ['x']",
        ),
        (
            '[[attach]]\nname = "a"\nwhen = {}\n\n[[attach]]\nname = "a"\nwhen.always = true\n',
            "",
            "{etc}/policy.toml: attach[0].when: selects nothing; give always = true or "
            "annotations, env or command\n"
            "{etc}/policy.toml: attach[1].name: 'a' is already the name of attach[0]",
        ),
        ("", "colour = 1\n", "{etc}/config.toml: colour: unknown key"),
        ("", 'runtime = "/nonexistent/runc"\n',
         "lower runtime /nonexistent/runc: no such executable file"),
        ("", 'runtime = "no-such-runtime"\n', "lower runtime no-such-runtime: not found on PATH"),
        ("", "log_keep = 1000000000\n",
         "{etc}/config.toml: log_keep: expected at most 1000, got 1000000000"),
        ("", "log_max_bytes = 1e400\n",
         "{etc}/config.toml: log_max_bytes: expected an integer, got a number: inf"),
        ("", f"log_max_bytes = {1 << 64}\n",
         f"{{etc}}/config.toml: log_max_bytes: expected an integer that fits in 64 bits, got an "
         f"integer: {1 << 64}"),
        ("", 'state_dir = "/run/re\\u0000tinue"\n',
         "{etc}/config.toml: state_dir: contains a NUL byte, got '/run/re\\x00tinue'"),
        ('[[attach]]\nname = "a"\nwhen.always = true\n'
         'mounts = [{ source = "/usr\\u0000", destination = "/x" }]\n', "",
         "{etc}/policy.toml: attach[0].mounts[0].source: contains a NUL byte, got '/usr\\x00'"),
        ('[[attach]]\nname = "a"\nwhen.always = true\n'
         'mounts = [{ source = "tools\\u0000", destination = "/x" }]\n', "",
         "{etc}/policy.toml: attach[0].mounts[0].source: expected a host path (absolute, or "
         "relative to this file, without '..'), got 'tools\\x00'"),
        ('[[attach]]\nname = "a"\nwhen.always = true\n\n[[attach.seccomp]]\n'
         'syscalls = ["mkdir"]\nhandler = "deny"\nargs = [{ index = 0, op = "eq", value = nan }]\n',
         "", "{etc}/policy.toml: attach[0].seccomp[0].args[0].value: expected an integer, got a "
         "number: nan"),
    ],
    ids=["type", "two errors", "unknown key", "runtime path", "runtime name", "log_keep huge",
         "inf for an integer", "integer over 64 bits", "NUL in a path", "NUL in a mount source",
         "NUL in a relative source", "nan in a seccomp value"],
)
def test_check_reports_errors(
    admin: str, make_config: ConfigFactory, policy: str, config: str, message: str
) -> None:
    cfg = make_config(policy, config)
    r = run([admin, "check"])
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith("retinue: " + message.replace("{etc}", str(cfg.parent)))


def test_check_agrees_with_the_shim(
    admin: str, shim: str, make_config: ConfigFactory, make_bundle: BundleFactory,
    runc_root: str, container_id: str,
) -> None:
    """The same configuration error, word for word, from `retinue check` and from the shim's
    create (the one call that needs the policy; the others pass through under a broken one)."""
    make_config('[[attach]]\nname = "a"\nwhen.always = "yes"\n')
    bundle = make_bundle(["true"])
    checked = run([admin, "check"])
    shimmed = run([shim, "--root", runc_root, "create", "--bundle", str(bundle), container_id])
    assert checked.returncode == 1 and shimmed.returncode == 1
    assert checked.stderr.splitlines()[0] == shimmed.stderr.splitlines()[-1]
    assert run([shim, "--version"]).returncode == 0


# --- plan -------------------------------------------------------------------------------------


def test_plan_is_the_diff_create_makes(
    admin: str, shim: str, tools_config: Path, make_bundle: BundleFactory, runc_root: str,
    container_id: str,
) -> None:
    """`plan` prints a unified diff, changes nothing, and is exactly what create then does."""
    bundle = make_bundle(["true"], env=["WANT_TOOLS=yes"])
    cfg = bundle / "config.json"
    before_fp = fingerprint(cfg)
    entries = sorted(os.listdir(bundle))
    r = run([admin, "plan", "--id", container_id, "--root", runc_root, str(bundle)])
    assert (r.returncode, r.stderr) == (0, "")
    assert fingerprint(cfg) == before_fp
    assert sorted(os.listdir(bundle)) == entries
    assert os.listdir(runc_root) == []
    assert not (tools_config.parent.parent / "state").exists()
    said = r.stdout.splitlines(keepends=True)
    header = [line for line in said if line.startswith("#")]
    diff = said[len(header):]
    # The rules, then each source's edits (who asks for what), then the diff.
    assert header == [
        "# rules: tools\n",
        "# edits:\n",
        f"#   rule tools: mount {tools_config.parent / 'tools'} at /retinue/tools; "
        "env TOOLS_GREETING=hello\n",
    ]
    shown = str(cfg).lstrip("/")
    assert diff[:2] == [f"--- a/{shown}\n", f"+++ b/{shown}\n"]
    assert diff[2].startswith("@@ ")

    before = json.loads(cfg.read_text())
    created = run([shim, "--root", runc_root, "create", "--bundle", str(bundle), container_id])
    assert created.returncode == 0, created.stderr
    after = json.loads(cfg.read_text())

    def lines(spec: object) -> list[str]:
        out = json.dumps(spec, indent=2, ensure_ascii=False).splitlines(keepends=True)
        out[-1] += "\n"
        return out

    expected = list(difflib.unified_diff(lines(before), lines(after), f"a/{shown}", f"b/{shown}"))
    assert diff == expected
    added = "".join(d for d in diff if d.startswith("+"))
    assert '"destination": "/retinue/tools"' in added
    assert '"TOOLS_GREETING=hello"' in added
    assert '"io.retinue.attached": "tools"' in added


def test_plan_not_selected(admin: str, tools_config: Path, make_bundle: BundleFactory) -> None:
    bundle = make_bundle(["true"], env=["WANT_TOOLS=no"])
    before = fingerprint(bundle / "config.json")
    r = run([admin, "plan", str(bundle)])
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == (
        f"{bundle / 'config.json'}: no rule selects this container; it is passed through "
        "untouched\n"
    )
    assert fingerprint(bundle / "config.json") == before


def test_plan_bad_bundle(admin: str, tools_config: Path, make_bundle: BundleFactory) -> None:
    bundle = make_bundle(["true"])
    (bundle / "config.json").write_text('{"process": {"env": [null]}}')
    before = fingerprint(bundle / "config.json")
    r = run([admin, "plan", str(bundle)])
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f"retinue: {bundle / 'config.json'}: process.env[0]: expected a string, got null\n"
    )
    assert fingerprint(bundle / "config.json") == before
    r = run([admin, "plan", str(bundle / "nosuch")])
    assert r.returncode != 0 and r.stdout == ""


def test_plan_bad_config(
    admin: str, make_config: ConfigFactory, make_bundle: BundleFactory
) -> None:
    cfg = make_config('[[attach]]\nname = "a"\n')
    bundle = make_bundle(["true"])
    r = run([admin, "plan", str(bundle)])
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"retinue: {cfg.parent}/policy.toml: attach[0].when: missing (required)\n"


SERVICE = """
description = "a web server"
files = "files/web"
command = ["run.sh"]
[ready]
tcp = 8080
"""


def test_plan_shows_services(
    admin: str, make_config: ConfigFactory, make_bundle: BundleFactory, tmp_path: Path
) -> None:
    """A container that asks for a service is not passed through untouched: plan shows the
    service's mount and the record of what attaches, as create will write them."""
    cfg = make_config("", f'state_dir = "{tmp_path}/state"\n')
    (cfg.parent / "services" / "web.toml").write_text(SERVICE)
    files = cfg.parent / "files" / "web"
    files.mkdir(parents=True)
    (files / "run.sh").write_text("#!/bin/sh\nexec httpd -f -p 8080\n")
    (files / "run.sh").chmod(0o755)
    bundle = make_bundle(["true"], annotations={"io.retinue.services": "web"})
    before = fingerprint(bundle / "config.json")
    r = run([admin, "plan", str(bundle)])
    assert (r.returncode, r.stderr) == (0, "")
    added = "".join(ln for ln in r.stdout.splitlines(keepends=True) if ln.startswith("+"))
    assert '"destination": "/retinue/web"' in added
    assert f'"source": "{files}"' in added
    assert '"io.retinue.attached-services": "web"' in added
    assert fingerprint(bundle / "config.json") == before
    assert not (tmp_path / "state").exists()


def test_plan_unknown_service_is_the_shims_error(
    admin: str, shim: str, make_config: ConfigFactory, make_bundle: BundleFactory,
    runc_root: str, container_id: str,
) -> None:
    make_config('[[attach]]\nname = "a"\nwhen.env = { NEVER = "1" }\n')
    bundle = make_bundle(["true"], annotations={"io.retinue.services": "nope"})
    before = fingerprint(bundle / "config.json")
    planned = run([admin, "plan", str(bundle)])
    created = run([shim, "--root", runc_root, "create", "--bundle", str(bundle), container_id])
    message = (
        "retinue: the container asks for service 'nope' (annotation io.retinue.services), which "
        "is not defined (selectable services: none)"
    )
    assert (planned.returncode, planned.stdout, planned.stderr) == (1, "", message + "\n")
    assert (created.returncode, created.stdout) == (1, "")
    assert created.stderr.splitlines()[-1] == message
    assert fingerprint(bundle / "config.json") == before
    assert os.listdir(runc_root) == []


@pytest.mark.parametrize(
    ("env", "annotations"),
    [(["RETINUE_SERVICES=nope"], None), (None, {"io.retinue.services": "nope"})],
)
def test_plan_asking_for_a_service_with_nothing_defined_is_creates_answer(
    admin: str, shim: str, make_config: ConfigFactory, make_bundle: BundleFactory,
    runc_root: str, container_id: str, tmp_path: Path,
    env: list[str] | None, annotations: dict[str, str] | None,
) -> None:
    """No rules and no services: nothing can attach, so create hands the spec to runc untouched
    (the sh fast path too, without reading it) and `plan` says so rather than an error."""
    make_config("", f'runtime = "{RUNC}"\n')
    bundle = make_bundle(["true"], env=env, annotations=annotations)
    before = fingerprint(bundle / "config.json")
    planned = run([admin, "plan", str(bundle)])
    assert (planned.returncode, planned.stderr) == (0, ""), planned.stderr
    assert planned.stdout == (
        f"{bundle / 'config.json'}: no rule selects this container; it is passed through "
        "untouched\n"
    )
    created = run([shim, "--root", runc_root, "create", "--bundle", str(bundle), container_id])
    assert created.returncode == 0, created.stderr
    assert fingerprint(bundle / "config.json") == before
    assert run([RUNC, "--root", runc_root, "list", "-q"]).stdout.split() == [container_id]


def test_check_and_plan_without_a_policy_file(
    admin: str, make_config: ConfigFactory, make_bundle: BundleFactory, tmp_path: Path
) -> None:
    """An explicit config.toml whose directory has no policy.toml: no rules, not an error."""
    cfg = make_config("", f'runtime = "{RUNC}"\n')
    (cfg.parent / "policy.toml").unlink()
    r = run([admin, "check"])
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert f"policy:   {cfg.parent / 'policy.toml'} (0 rules)" in r.stdout.splitlines()
    assert r.stdout.splitlines()[-1] == "ok"
    bundle = make_bundle(["true"])
    planned = run([admin, "plan", str(bundle)])
    assert (planned.returncode, planned.stderr) == (0, ""), planned.stderr
    # A policy file the configuration names is another matter: missing, it is refused by path.
    cfg.write_text(f'runtime = "{RUNC}"\npolicy = "mine.toml"\n')
    r = run([admin, "check"])
    assert (r.returncode, r.stdout) == (1, "")
    assert str(cfg.parent / "mine.toml") in r.stderr and "no such file" in r.stderr, r.stderr


def test_plan_says_what_the_seccomp_merge_cannot_do(
    admin: str, make_config: ConfigFactory, make_bundle: BundleFactory, tmp_path: Path
) -> None:
    """The container's profile refuses mkdir outright: plan notifies mknod as asked and says
    that mkdir stays refused."""
    make_config(
        '[[attach]]\nname = "broker"\nwhen.always = true\n'
        '[[attach.seccomp]]\nsyscalls = ["mkdir", "mknod"]\nhandler = "deny"\n',
        f'state_dir = "{tmp_path}/state"\n',
    )
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
    }
    bundle = make_bundle(["true"], edit=lambda s: s["linux"].update(seccomp=profile))
    r = run([admin, "plan", str(bundle)])
    assert (r.returncode, r.stderr) == (0, "")
    comments = [ln for ln in r.stdout.splitlines() if ln.startswith("# seccomp: ")]
    assert comments[1:] == [
        "# seccomp: mkdir: the container's profile refuses it (SCMP_ACT_ERRNO); it stays "
        "refused and is not notified"
    ]
    assert '"SCMP_ACT_NOTIFY"' in r.stdout
