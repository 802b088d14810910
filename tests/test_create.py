"""The create path: what the shim does to config.json, and what the container then sees.

Against the real runc on the busybox rootfs. With no rule selecting the container the file is not
touched at all; with one, exactly the rule's edits are made and every other byte of meaning is
kept, atomically, once (a retried create changes nothing more).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from retinue.config import settings as config
from retinue.policy import select as policy

# Not imported from conftest: several conftest modules share that name in one session.
RUNC = shutil.which("runc") or "/usr/sbin/runc"
CRUN = shutil.which("crun") or "/usr/bin/crun"
DATA = Path(__file__).resolve().parent / "data"
BundleFactory = Callable[..., Path]
ConfigFactory = Callable[..., Path]
TIMEOUT = 60
ATTACHED = "io.retinue.attached"
# Which mounts retinue added, so a bundle reused for another container can have them replaced.
MOUNTS = "io.retinue.mounts"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def call(
    argv: list[str], cwd: str | Path | None = None, env: dict[str, str] | None = None
) -> Result:
    """Run to exit with output in files: a created container holds its stdio open."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env,
            timeout=TIMEOUT,
        )
        out.seek(0)
        err.seek(0)
        return Result(proc.returncode, out.read().decode(), err.read().decode())


def runc_state(root: str, cid: str) -> dict[str, Any] | None:
    r = call([RUNC, "--root", root, "state", cid])
    return json.loads(r.stdout) if r.returncode == 0 else None


def fingerprint(path: Path) -> tuple[bytes, int, int, int, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino, st.st_mode, st.st_uid, st.st_gid


TOOLS_POLICY = """
[[attach]]
name = "tools"
when.env = { WANT_TOOLS = "yes" }
mounts = [{ source = "tools", destination = "/retinue/tools" }]
env = { TOOLS_GREETING = "héllo ✓", SHARED = "from-admin" }
"""


@pytest.fixture
def tools_config(make_config: ConfigFactory, tmp_path: Path) -> Path:
    """A policy with one rule (env WANT_TOOLS=yes): a read-only mount and two variables."""
    cfg = make_config(TOOLS_POLICY, f'state_dir = "{tmp_path}/state"\nlog_dir = "{tmp_path}/log"\n')
    tools = cfg.parent / "tools"
    tools.mkdir()
    (tools / "hello.txt").write_text("hello from the host\n")
    return cfg


def bind(source: str, destination: str) -> dict[str, Any]:
    return {
        "destination": destination, "type": "bind", "source": source,
        "options": ["rbind", "ro", "nosuid", "nodev"],
    }


def without(spec: dict[str, Any], *paths: str) -> dict[str, Any]:
    """A deep copy of `spec` without the dotted key paths given."""
    out = copy.deepcopy(spec)
    for dotted in paths:
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            node = node.get(key) or {}
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def key_orders(value: Any, path: str = "") -> dict[str, list[str]]:
    """Every object's key order, by JSON path."""
    out: dict[str, list[str]] = {}
    if isinstance(value, dict):
        out[path] = list(value)
        for k, v in value.items():
            out.update(key_orders(v, f"{path}.{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(key_orders(v, f"{path}[{i}]"))
    return out


# --- no rule selects: the file is not touched ---------------------------------------------------


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize("policy_text", ["", TOOLS_POLICY], ids=["no rules", "rule not matching"])
def test_untouched_when_no_rule_selects(
    command: str, policy_text: str, shim: str, make_config: ConfigFactory,
    make_bundle: BundleFactory, runc_root: str, container_id: str,
) -> None:
    make_config(policy_text)
    bundle = make_bundle(["sh", "-c", "echo ran"], env=["WANT_TOOLS=no"])
    cfg = bundle / "config.json"
    before = fingerprint(cfg)
    entries = sorted(os.listdir(bundle))
    r = call([shim, "--root", runc_root, command, "--bundle", str(bundle), container_id])
    assert r.returncode == 0, r.stderr
    assert fingerprint(cfg) == before
    assert sorted(os.listdir(bundle)) == entries
    if command == "run":
        assert (r.stdout, r.stderr) == ("ran\n", "")
    else:
        state = runc_state(runc_root, container_id)
        assert state is not None and state["status"] == "created"


# --- a rule selects: its edits and nothing else -------------------------------------------------


def _decorate(spec: dict[str, Any]) -> None:
    """What a real spec may carry that the shim must keep as it is."""
    spec["x-vendor-extension"] = {"nested": [1, None, {"deep": "ü"}], "empty": {}}
    spec["hostname"] = "hôte-✓"
    spec["domainname"] = None
    spec["process"]["x-future-field"] = {"b": 1, "a": 2}
    spec["process"]["env"] += ["SHARED=from-container", "EMOJI=🐳 whale", "EMPTY="]
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    spec["linux"]["resources"]["memory"] = {"swappiness": 18446744073709551615}
    spec["linux"]["sysctl"] = None
    spec["annotations"] = {"org.example/ünïcode": "välue", "empty": ""}
    spec["hooks"] = {"poststop": [{"path": "/bin/true", "args": ["true", "existing"]}]}


def test_rule_edits_exactly_and_keeps_the_rest(
    shim: str, tools_config: Path, make_bundle: BundleFactory, runc_root: str,
    container_id: str, tmp_path: Path,
) -> None:
    bundle = make_bundle(["true"], env=["WANT_TOOLS=yes"], edit=_decorate)
    cfg = bundle / "config.json"
    before = json.loads(cfg.read_text())
    r = call([shim, "--root", runc_root, "create", "--bundle", str(bundle), container_id])
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    state = runc_state(runc_root, container_id)
    assert state is not None and state["status"] == "created"
    after = json.loads(cfg.read_text())

    tools = str(tools_config.parent / "tools")
    assert after["mounts"] == [*before["mounts"], bind(tools, "/retinue/tools")]
    env_before = before["process"]["env"]
    # The administrator's value replaces the container's in place; new ones are appended.
    assert after["process"]["env"] == [
        *(("SHARED=from-admin" if e.startswith("SHARED=") else e) for e in env_before),
        "TOOLS_GREETING=héllo ✓",
    ]
    # Nothing supervised (a mount and env): no hook of ours, the container's own kept.
    assert after["hooks"] == {"poststop": [{"path": "/bin/true", "args": ["true", "existing"]}]}
    assert after["annotations"] == {
        **before["annotations"], ATTACHED: "tools", MOUNTS: "/retinue/tools"
    }
    edited = ("mounts", "process.env", "hooks", "annotations")
    assert without(after, *edited) == without(before, *edited)
    # Key order is kept everywhere; new keys only ever come last.
    orders_before, orders_after = key_orders(before), key_orders(after)
    for path, keys in orders_before.items():
        if path in orders_after:
            assert orders_after[path][: len(keys)] == keys, path
    # Unicode is written as itself, not as \\u escapes; the 64-bit value is exact.
    raw = cfg.read_bytes()
    assert "hôte-✓".encode() in raw and "🐳 whale".encode() in raw
    assert b"18446744073709551615" in raw


def test_lone_surrogate_escape_is_kept(
    shim: str, tools_config: Path, make_bundle: BundleFactory, runc_root: str,
    container_id: str,
) -> None:
    """`"\\ud800"` is valid JSON with no UTF-8 form; the edit keeps it as it came."""
    bundle = make_bundle(["true"], env=["WANT_TOOLS=yes"], annotations={"note": "SURROGATE"})
    cfg = bundle / "config.json"
    cfg.write_text(cfg.read_text().replace("SURROGATE", "x\\ud800y ü"))
    r = call([shim, "--root", runc_root, "create", "--bundle", str(bundle), container_id])
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    annotations = json.loads(cfg.read_text())["annotations"]
    assert annotations == {"note": "x\ud800y ü", ATTACHED: "tools", MOUNTS: "/retinue/tools"}


def test_retry_changes_nothing_more(
    shim: str, tools_config: Path, make_bundle: BundleFactory, runc_root: str,
    container_id: str,
) -> None:
    """A retried create (the engine's retry after a failure) finds its edits there already."""
    bundle = make_bundle(["true"], env=["WANT_TOOLS=yes"])
    cfg = bundle / "config.json"
    argv = [shim, "--root", runc_root, "create", "--bundle", str(bundle), container_id]
    assert call(argv).returncode == 0
    first = fingerprint(cfg)
    # The same create again fails in runc (the id exists), after the shim has looked.
    r = call(argv)
    assert r.returncode != 0 and "exists" in r.stderr
    assert fingerprint(cfg) == first
    assert call([RUNC, "--root", runc_root, "delete", container_id]).returncode == 0
    assert call(argv).returncode == 0
    assert fingerprint(cfg) == first
    spec = json.loads(cfg.read_text())
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations.count("/retinue/tools") == 1
    names = [e.partition("=")[0] for e in spec["process"]["env"]]
    assert len(names) == len(set(names))
    assert "hooks" not in spec  # nothing supervised: no hook of ours, however often retried


def test_replaced_atomically_with_mode_and_owner(
    shim: str, tools_config: Path, make_bundle: BundleFactory, runc_root: str,
    container_id: str,
) -> None:
    bundle = make_bundle(["true"], env=["WANT_TOOLS=yes"])
    cfg = bundle / "config.json"
    os.chmod(cfg, 0o640)
    os.chown(cfg, 1234, 5678)
    inode = cfg.stat().st_ino
    entries = sorted(os.listdir(bundle))
    r = call([shim, "--root", runc_root, "create", "--bundle", str(bundle), container_id])
    assert r.returncode == 0, r.stderr
    st = cfg.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert st.st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert sorted(os.listdir(bundle)) == entries  # no temp file left behind
    assert ATTACHED in json.loads(cfg.read_text())["annotations"]


def test_container_sees_mount_read_only_and_env(
    shim: str, tools_config: Path, make_bundle: BundleFactory, runc_root: str,
    container_id: str,
) -> None:
    script = (
        'cat /retinue/tools/hello.txt; echo "greeting=$TOOLS_GREETING shared=$SHARED"; '
        "if touch /retinue/tools/new 2>/dev/null; then echo writable; else echo read-only; fi; "
        "grep ' /retinue/tools ' /proc/self/mounts | grep -q '[ ,]ro[ ,]' && echo mounted-ro"
    )
    bundle = make_bundle(
        ["sh", "-c", script], env=["WANT_TOOLS=yes", "SHARED=from-container"]
    )
    r = call([shim, "--root", runc_root, "run", "--bundle", str(bundle), container_id])
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == (
        "hello from the host\ngreeting=héllo ✓ shared=from-admin\nread-only\nmounted-ro\n"
    )
    assert not (tools_config.parent / "tools" / "new").exists()


@pytest.mark.parametrize(
    "form",
    ["--bundle X", "--bundle=X", "-b X", "-b=X", "ID --bundle X", "ID -b=X", "cwd", "relative"],
)
def test_bundle_forms_match_runc(
    form: str, shim: str, tools_config: Path, make_bundle: BundleFactory, runc_root: str,
    container_id: str, tmp_path: Path,
) -> None:
    """The shim edits the very config.json runc then reads, whichever way the bundle is given."""
    bundle = make_bundle(["true"], env=["WANT_TOOLS=yes"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    b = str(bundle)
    tail = {
        "--bundle X": ["--bundle", b, container_id],
        "--bundle=X": [f"--bundle={b}", container_id],
        "-b X": ["-b", b, container_id],
        "-b=X": [f"-b={b}", container_id],
        "ID --bundle X": [container_id, "--bundle", b],
        "ID -b=X": [container_id, f"-b={b}"],
        "cwd": [container_id],
        "relative": ["--bundle", os.path.relpath(bundle, elsewhere), container_id],
    }[form]
    cwd = bundle if form == "cwd" else elsewhere
    r = call([shim, "--root", runc_root, "create", *tail], cwd=cwd)
    assert r.returncode == 0, r.stderr
    state = runc_state(runc_root, container_id)
    assert state is not None and state["bundle"] == b
    assert json.loads((bundle / "config.json").read_text())["annotations"][ATTACHED] == "tools"
    assert not (elsewhere / "config.json").exists()


# --- round trips of real-world specs ------------------------------------------------------------


def _runc_spec(tmp: Path) -> dict[str, Any]:
    subprocess.run([RUNC, "spec", "--bundle", str(tmp)], check=True)
    spec: dict[str, Any] = json.loads((tmp / "config.json").read_text())
    return spec


ROUND_TRIP_FIXTURES = [
    "runc spec",
    "docker-like-config.json",
    "containerd-like-config.json",
    # Captured from the real engines on this host, when present.
    *(name for name in ("docker-config.json", "containerd-config.json") if (DATA / name).exists()),
]


@pytest.mark.parametrize("fixture", ROUND_TRIP_FIXTURES)
def test_round_trip_keeps_every_field(
    fixture: str, shim: str, make_config: ConfigFactory, tmp_path: Path, container_id: str
) -> None:
    """Every field of a real-world spec survives the edit, except the keys the shim edits.

    runc is pointed at a --root under a regular file so that it fails before it touches the host
    (these specs name engine paths, cgroups and namespaces of other hosts): the shim's edit is
    made before the hand-off either way.
    """
    cfg = make_config(
        """
[[attach]]
name = "everyone"
when.always = true
mounts = [{ source = "/usr/share", destination = "/retinue/share" }]
env = { RETINUE_ATTACHED = "1" }
""",
        f'state_dir = "{tmp_path}/state"\n',
    )
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    if fixture == "runc spec":
        raw = json.dumps(_runc_spec(tmp_path / "bundle"), indent="\t").encode()
    else:
        raw = (DATA / fixture).read_bytes()
    (bundle / "config.json").write_bytes(raw)
    before = json.loads(raw)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    root = str(blocker / "root")
    r = call([shim, "--root", root, "create", "--bundle", str(bundle), container_id])
    assert r.returncode != 0 and "not a directory" in r.stderr  # runc's own failure
    assert "retinue" not in r.stderr
    after = json.loads((bundle / "config.json").read_bytes())

    assert after["mounts"] == [*(before.get("mounts") or []), bind("/usr/share", "/retinue/share")]
    assert after["process"]["env"] == [*(before["process"].get("env") or []), "RETINUE_ATTACHED=1"]
    # Nothing supervised (a mount and env): the spec's hooks as they were, none of ours.
    assert after.get("hooks") == before.get("hooks")
    assert after["annotations"] == {
        **(before.get("annotations") or {}), ATTACHED: "everyone", MOUNTS: "/retinue/share"
    }
    edited = ("mounts", "process.env", "hooks", "annotations")
    assert without(after, *edited) == without(before, *edited)
    assert list(after)[: len(before)] == list(before)
    assert cfg.exists()


# "hooks": only a supervised container gets hooks; tests/test_hook_edits.py fills a null one.
@pytest.mark.parametrize("key", ["mounts", "annotations", "process.env"])
def test_null_fields_are_filled_in_place(
    key: str, shim: str, make_config: ConfigFactory, tmp_path: Path, container_id: str
) -> None:
    """`null` (or no key at all) where the shim adds something: filled in, at the same place."""
    make_config(
        '[[attach]]\nname = "all"\nwhen.always = true\nenv = { A = "1" }\n'
        'mounts = [{ source = "/usr/share", destination = "/retinue/share" }]\n',
        f'state_dir = "{tmp_path}/state"\n',
    )
    for variant in ("null", "absent"):
        bundle = tmp_path / f"bundle-{variant}"
        bundle.mkdir()
        spec = _runc_spec(bundle)
        spec["annotations"] = {}
        parent, _, name = key.rpartition(".")
        node = spec[parent] if parent else spec
        if variant == "null":
            node[name] = None
        else:
            node.pop(name, None)
        order = list(node)
        (bundle / "config.json").write_text(json.dumps(spec))
        blocker = tmp_path / "not-a-directory"
        blocker.touch()
        r = call([shim, "--root", str(blocker / "root"), "create", "--bundle", str(bundle),
                  container_id])
        assert "retinue" not in r.stderr
        after = json.loads((bundle / "config.json").read_text())
        after_node = after[parent] if parent else after
        assert after_node[name], (variant, key)
        keys = list(after_node)
        # Existing keys keep their places (a null one too); new ones come after them.
        assert keys[: len(order)] == order
        if variant == "absent":
            assert name in keys[len(order) :]


def test_round_trip_fixtures_are_realistic() -> None:
    """The Docker-like fixture carries Docker 20.10's default seccomp profile, as dockerd writes
    it: architectures resolved for amd64 and the rules of the default capabilities only."""
    docker = json.loads((DATA / "docker-like-config.json").read_text())
    seccomp = docker["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    assert seccomp["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = {n for rule in seccomp["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
               for n in rule["names"]}
    assert {"read", "write", "openat", "arch_prctl", "chroot"} <= allowed
    assert "mount" not in allowed and "reboot" not in allowed  # CAP_SYS_ADMIN/BOOT only
    containerd = json.loads((DATA / "containerd-like-config.json").read_text())
    assert containerd["annotations"]["io.kubernetes.cri.container-type"] == "container"


# --- which rules select a container -------------------------------------------------------------


MATCH_POLICY = """
[[attach]]
name = "by-annotation"
when.annotations = { "example.com/tier" = "front*" }

[[attach]]
name = "by-env"
when.env = { APP_MODE = "debug" }

[[attach]]
name = "by-command"
when.command = ["*/nginx", "sh"]

[[attach]]
name = "all-of"
when.annotations = { "a" = "1" }
when.env = { B = "?" }
when.command = ["sleep"]

[[attach]]
name = "any-env-value"
when.env = { PRESENT = "*" }

[[attach]]
name = "always"
when.always = true
"""


def _spec(
    args: list[str] | None = None, env: list[str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"process": {"args": args or ["true"], "env": env or []}}
    if annotations is not None:
        spec["annotations"] = annotations
    return spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (_spec(), []),
        (_spec(annotations={"example.com/tier": "frontend"}), ["by-annotation"]),
        (_spec(annotations={"example.com/tier": "Frontend"}), []),  # globs are case-sensitive
        (_spec(annotations={"example.com/tier": "back"}), []),
        (_spec(annotations={"other": "frontend"}), []),
        (_spec(env=["APP_MODE=debug"]), ["by-env"]),
        (_spec(env=["APP_MODE=debugger"]), []),  # the whole value must match
        (_spec(env=["APP_MODE=debug", "APP_MODE=prod"]), []),  # the last definition counts
        (_spec(env=["APP_MODE=prod", "APP_MODE=debug"]), ["by-env"]),
        (_spec(args=["/usr/sbin/nginx", "-g"]), ["by-command"]),
        (_spec(args=["nginx"]), []),
        (_spec(args=["sh", "-c", "nginx"]), ["by-command"]),
        (_spec(args=["/bin/sh"]), []),  # only args[0], whole
        # AND across conditions: each alone is not enough.
        (_spec(args=["sleep"], env=["B=2"], annotations={"a": "1"}), ["all-of"]),
        (_spec(args=["sleep"], env=["B=2"]), []),
        (_spec(args=["sleep"], annotations={"a": "1"}), []),
        (_spec(env=["B=2"], annotations={"a": "1"}), []),
        (_spec(args=["sleep"], env=["B=22"], annotations={"a": "1"}), []),
        (_spec(env=["PRESENT="]), ["any-env-value"]),
        (_spec(env=["PRESENT"]), ["any-env-value"]),
        # Several rules: in the policy's order.
        (
            _spec(args=["sh"], env=["APP_MODE=debug"],
                  annotations={"example.com/tier": "front"}),
            ["by-annotation", "by-env", "by-command"],
        ),
    ],
)
def test_policy_matching(
    spec: dict[str, Any], expected: list[str], make_config: ConfigFactory
) -> None:
    cfg = config.load(str(make_config(MATCH_POLICY)))
    compiled = config.compile_config(cfg, RUNC, "/hook")
    names = [r["name"] for r in policy.select(compiled["rules"], spec)]
    assert names == [*expected, "always"]


def test_several_rules_apply_in_policy_order(
    shim: str, make_config: ConfigFactory, make_bundle: BundleFactory, runc_root: str,
    container_id: str, tmp_path: Path,
) -> None:
    cfg = make_config(
        """
[[attach]]
name = "zeta"
when.always = true
mounts = [{ source = "z", destination = "/retinue/z" }]
env = { ORDER = "zeta", ZETA = "1" }

[[attach]]
name = "alpha"
when.env = { PICK = "alpha" }
mounts = [{ source = "a", destination = "/retinue/a" }]
env = { ORDER = "alpha" }
""",
        f'state_dir = "{tmp_path}/state"\n',
    )
    for d in ("z", "a"):
        (cfg.parent / d).mkdir()
    bundle = make_bundle(["sh", "-c", "echo $ORDER $ZETA"], env=["PICK=alpha"])
    r = call([shim, "--root", runc_root, "run", "--bundle", str(bundle), container_id])
    assert (r.returncode, r.stdout, r.stderr) == (0, "alpha 1\n", "")
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["annotations"][ATTACHED] == "zeta,alpha"
    assert [m["destination"] for m in spec["mounts"]][-2:] == ["/retinue/z", "/retinue/a"]


# --- the lower runtime --------------------------------------------------------------------------


def _version(shim: str, env: dict[str, str] | None = None) -> Result:
    return call([shim, "--version"], env=env)


def test_lower_runtime_absolute_path(shim: str, make_config: ConfigFactory) -> None:
    make_config("", f'runtime = "{RUNC}"\n')
    r = _version(shim)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == call([RUNC, "--version"]).stdout


def test_lower_runtime_by_name_on_path(
    shim: str, make_config: ConfigFactory, tmp_path: Path
) -> None:
    only = tmp_path / "only-crun"
    only.mkdir()
    (only / "crun").symlink_to(CRUN)
    (only / "runc").symlink_to(RUNC)
    make_config("", 'runtime = "crun"\n')
    r = _version(shim, env={**os.environ, "PATH": str(only)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("crun version")


def test_lower_runtime_default_runc_then_crun(
    shim: str, make_config: ConfigFactory, tmp_path: Path
) -> None:
    make_config("")
    both = tmp_path / "both"
    both.mkdir()
    (both / "crun").symlink_to(CRUN)
    (both / "runc").symlink_to(RUNC)
    crun_only = tmp_path / "crun-only"
    crun_only.mkdir()
    (crun_only / "crun").symlink_to(CRUN)
    r = _version(shim, env={**os.environ, "PATH": f"{crun_only}:{both}"})
    assert r.stdout.startswith("runc version"), r  # runc anywhere on PATH beats crun
    r = _version(shim, env={**os.environ, "PATH": str(crun_only)})
    assert r.stdout.startswith("crun version"), r


@pytest.mark.parametrize("how", ["symlink", "copy"])
def test_lower_runtime_never_the_shim_itself(
    how: str, shim: str, make_config: ConfigFactory, tmp_path: Path
) -> None:
    """`runc` earlier on PATH that is really retinue-runtime (the usual way to install a shim)
    is skipped, whether it is a symlink or a copy of the launcher, and however it is called."""
    make_config("")
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    if how == "symlink":
        (fake / "runc").symlink_to(shim)
    else:
        shutil.copy2(shim, fake / "runc")
    real = Path(RUNC).parent
    env = {**os.environ, "PATH": f"{fake}:{real}:/usr/bin:/bin"}
    want = call([RUNC, "--version"]).stdout
    for argv0 in (shim, str(fake / "runc")):
        r = _version(argv0, env=env)
        assert (r.returncode, r.stdout, r.stderr) == (0, want, "")
    # The fake `runc` called by name from PATH, as an engine configured with "runc" would.
    r = call(["runc", "--version"], env=env)
    assert (r.returncode, r.stdout, r.stderr) == (0, want, "")


@pytest.mark.parametrize("how", ["itself", "symlink"])
def test_lower_runtime_configured_as_the_shim_is_an_error(
    how: str, shim: str, make_config: ConfigFactory, tmp_path: Path
) -> None:
    target = shim
    if how == "symlink":
        link = tmp_path / "runc"
        link.symlink_to(shim)
        target = str(link)
    make_config("", f'runtime = "{target}"\n')
    r = _version(shim)
    assert r.returncode != 0
    assert r.stdout == ""
    # No --log: like runc, a logrus line then the bare message, both on stderr.
    logline, message = r.stderr.splitlines()
    assert logline.startswith("time=") and ' level=error msg="retinue: ' in logline
    assert message == (
        f"retinue: lower runtime {target} is retinue-runtime itself; set `runtime` to runc or crun"
    )


@pytest.mark.parametrize("bad_id", ["bad/id", "..", "ünï"])
def test_invalid_id_is_runcs_to_refuse(
    bad_id: str, shim: str, tools_config: Path, make_bundle: BundleFactory, runc_root: str
) -> None:
    """An id runc refuses: nothing is edited, and the refusal is runc's own."""
    bundle = make_bundle(["true"], env=["WANT_TOOLS=yes"])
    before = fingerprint(bundle / "config.json")
    results = []
    for exe in (RUNC, shim):
        r = call([exe, "--root", runc_root, "create", "--bundle", str(bundle), bad_id])
        results.append((r.returncode, r.stdout, re.sub(r'time="[^"]*"', "time=T", r.stderr)))
    assert results[1] == results[0]
    assert results[0][0] != 0
    assert fingerprint(bundle / "config.json") == before
    assert os.listdir(runc_root) == []
