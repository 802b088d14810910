"""create/run decided by the sh launcher: a spec nothing can attach to never starts Python.

The launcher hands such a create to the lower runtime when none of the strings the policy's
selection needs occurs in config.json (`policy.selection_strings`, `confcache._create_passes`).
The lower runtime here is a fake that records its argv; a launcher rewritten with a Python that
does not exist tells the two paths apart (127: it went to Python), as in test_launcher.py.

The property test runs the cache's own `create_passes` in dash over generated policies and specs
and checks, for every spec it passes, that `attach.plan` attaches nothing (and raises nothing).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from retinue.cli import launcher
from retinue.config import cache as confcache
from retinue.config import settings as config
from retinue.errors import RetinueError, SpecError
from retinue.policy import attach
from retinue.spec import bundle

NO_PYTHON = 127
ConfigFactory = Callable[..., Path]
PATH = os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"
CLEAN = {"ociVersion": "1.0.2", "process": {"args": ["sh"], "env": ["PATH=/bin"]}}

SERVICE = 'files = "files/web"\ncommand = ["run.sh"]\n'
BY_ENV = '[[attach]]\nname = "e"\nwhen.env = { MODE = "debug" }\n'


class Shim:
    def __init__(self, path: str, record: Path) -> None:
        self.path, self.record = path, record

    def __call__(self, *args: str, cwd: Path | None = None) -> int:
        self.record.unlink(missing_ok=True)
        r = subprocess.run(
            [self.path, *args], cwd=cwd, capture_output=True, timeout=30, stdin=subprocess.DEVNULL
        )
        if r.returncode == 0:
            assert self.record.read_text().split("\n")[:-1] == list(args)
        return r.returncode


def _fake_lower(d: Path) -> tuple[str, Path]:
    fake = d / "fake-runc"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.called"\n')
    fake.chmod(0o755)
    return str(fake), d / "fake-runc.called"


def _shim(tmp_path: Path, make_config: ConfigFactory, policy: str, services: bool = False) -> Shim:
    fake, record = _fake_lower(tmp_path)
    cfg = make_config(policy, extra=f'runtime = "{fake}"\nstate_dir = "{tmp_path}/state"\n')
    if services:
        (cfg.parent / "services" / "web.toml").write_text(SERVICE)
        (cfg.parent / "files" / "web").mkdir(parents=True)
        (cfg.parent / "files" / "web" / "run.sh").write_text("#!/bin/sh\n")
        (cfg.parent / "files" / "web" / "run.sh").chmod(0o755)
    bin_dir = tmp_path / "bin"
    site = sysconfig.get_paths()["purelib"]
    launcher.write(str(bin_dir), os.path.join(sys.prefix, "bin", "python3"), site)
    shim = str(bin_dir / "retinue-runtime")
    # Let Python write the caches, and wait out the clock margin so they are trusted.
    for _ in range(2):
        r = subprocess.run([shim, "list"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        time.sleep(0.1)
    launcher.write(str(bin_dir), "/nonexistent/python3", site)
    return Shim(shim, record)


def _bundle(d: Path, spec: dict[str, object] | str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return d


def _with_env(*env: str) -> dict[str, object]:
    return {**CLEAN, "process": {"args": ["sh"], "env": ["PATH=/bin", *env]}}


def test_nothing_selectable_passes_without_python(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    shim = _shim(tmp_path, make_config, BY_ENV)
    b = _bundle(tmp_path / "b", CLEAN)
    assert shim("create", "--bundle", str(b), "x") == 0
    assert shim("--root", "/run/x", "run", "-d", "x", "-b", str(b)) == 0


@pytest.mark.parametrize(
    "spec",
    [
        _with_env("MODE=debug"),
        _with_env("MODE=other"),  # the rule does not match, but only Python can tell
        _with_env("RETINUE_SERVICES=web"),
        {**CLEAN, "annotations": {"io.retinue.services": "web"}},
        {**CLEAN, "annotations": {"io.retinue.services.app": "web"}},
        {**CLEAN, "annotations": {"x": "\u00e9"}},  # json.dumps writes \u00e9
        {**CLEAN, "annotations": {"x": "a/b"}},  # written a\/b below
    ],
)
def test_a_possible_selection_goes_to_python(
    tmp_path: Path, make_config: ConfigFactory, spec: dict[str, object]
) -> None:
    shim = _shim(tmp_path, make_config, BY_ENV)
    text = json.dumps(spec).replace("a/b", "a\\/b")
    assert shim("create", "-b", str(_bundle(tmp_path / "b", text)), "x") == NO_PYTHON


def test_escaped_names_go_to_python(tmp_path: Path, make_config: ConfigFactory) -> None:
    shim = _shim(tmp_path, make_config, BY_ENV)
    hidden = json.dumps(_with_env("MODE=debug")).replace("MODE", "M\\u004fDE")
    assert shim("create", "-b", str(_bundle(tmp_path / "b", hidden)), "x") == NO_PYTHON


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32-be"])
def test_a_spec_in_utf16_or_32_goes_to_python(
    tmp_path: Path, make_config: ConfigFactory, encoding: str
) -> None:
    """json.loads reads them (runc does not): only Python can tell what they select."""
    shim = _shim(tmp_path, make_config, BY_ENV)
    b = tmp_path / "b"
    b.mkdir()
    (b / "config.json").write_bytes(json.dumps(_with_env("MODE=debug")).encode(encoding))
    assert shim("create", "-b", str(b), "x") == NO_PYTHON


@pytest.mark.parametrize(
    "policy",
    [
        '[[attach]]\nname = "a"\nwhen.always = true\n',
        '[[attach]]\nname = "c"\nwhen.command = ["sh"]\n',
        '[[attach]]\nname = "q"\nwhen.annotations = { "q\\"x" = "1" }\n',  # JSON escapes "
    ],
)
def test_undecidable_policies_go_to_python(
    tmp_path: Path, make_config: ConfigFactory, policy: str
) -> None:
    shim = _shim(tmp_path, make_config, policy)
    assert shim("create", "-b", str(_bundle(tmp_path / "b", CLEAN)), "x") == NO_PYTHON


def test_empty_policy_passes_whatever_the_spec_says(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    shim = _shim(tmp_path, make_config, "")
    b = _bundle(tmp_path / "b", {**CLEAN, "annotations": {"io.retinue.services": "web"}})
    assert shim("create", "-b", str(b), "x") == 0


def test_services_alone_need_the_selection_strings(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    shim = _shim(tmp_path, make_config, "", services=True)
    assert shim("create", "-b", str(_bundle(tmp_path / "b", CLEAN)), "x") == 0
    asks = _bundle(tmp_path / "c", _with_env("RETINUE_SERVICES=web"))
    assert shim("create", "-b", str(asks), "x") == NO_PYTHON


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["create", "--bundle", "{clean}", "x"], 0),
        (["create", "--bundle={clean}", "x"], 0),
        (["create", "-bundle", "{clean}", "x"], 0),
        (["create", "-bundle={clean}", "x"], 0),
        (["create", "--b", "{clean}", "x"], 0),
        (["create", "-b={clean}", "x"], 0),
        (["create", "x", "-b", "{clean}"], 0),
        (["--root", "-b", "create", "--pid-file", "-b", "x"], 0),  # values, not flags: cwd
        (["--log-format=json", "run", "--no-pivot", "-d", "x"], 0),
        # The bundle that selects, however it is given, goes to Python.
        (["create", "--bundle", "{selected}", "x"], NO_PYTHON),
        (["create", "x", "--bundle={selected}"], NO_PYTHON),
        (["create", "--console-socket", "/s", "-b", "{selected}", "x"], NO_PYTHON),
        (["run", "-b", "{selected}", "x"], NO_PYTHON),
        # Anything unusual goes to Python.
        (["create", "-b", "{clean}", "--bundle", "{clean}", "x"], NO_PYTHON),
        (["create", "-b", "{clean}", "-b", "{clean}", "x"], NO_PYTHON),
        (["create", "--bundle=", "x"], NO_PYTHON),
        (["create", "x", "--bundle"], NO_PYTHON),
        (["create", "-b", "{missing}", "x"], NO_PYTHON),
        (["create", "-b", "{symlink}", "x"], NO_PYTHON),
        (["create", "--", "x", "-b", "{clean}"], 0),  # after --: positionals, bundle is cwd
    ],
)
def test_the_bundle_is_found_as_runc_finds_it(
    tmp_path: Path, make_config: ConfigFactory, args: list[str], expected: int
) -> None:
    shim = _shim(tmp_path, make_config, BY_ENV)
    cwd = _bundle(tmp_path / "cwd", CLEAN)
    dirs = {
        "clean": _bundle(tmp_path / "clean", CLEAN),
        "selected": _bundle(tmp_path / "selected", _with_env("MODE=debug")),
        "missing": tmp_path / "missing",
        "symlink": tmp_path / "symlink",
    }
    dirs["symlink"].mkdir()
    (dirs["symlink"] / "config.json").symlink_to(dirs["clean"] / "config.json")
    assert shim(*(a.format(**dirs) for a in args), cwd=cwd) == expected


def test_a_selecting_cwd_goes_to_python(tmp_path: Path, make_config: ConfigFactory) -> None:
    shim = _shim(tmp_path, make_config, BY_ENV)
    cwd = _bundle(tmp_path / "cwd", _with_env("MODE=debug"))
    assert shim("create", "x", cwd=cwd) == NO_PYTHON
    assert shim("create", "--pid-file", "-b", "x", cwd=cwd) == NO_PYTHON


# ---- the property: what the sh passes, attach.plan attaches nothing to ----------------------

ANNOTATIONS = ["a", "app", "io.example/tier", "io.retinue.services", "io.retinue.services.c1"]
ENVS = ["A", "MODE", "PATH", "RETINUE_SERVICES", "Mode"]
PATTERNS = ["*", "1", "debug", "d*", "?", ""]
VALUES = ["1", "debug", "d", "web", "", "x/y", "\u00e9", "web,nope"]


def _policy(rng: random.Random) -> str:
    out = []
    for i in range(rng.randrange(0, 4)):
        when: list[str] = []
        kind = rng.random()
        if kind < 0.05:
            when.append("when.always = true")
        else:
            if rng.random() < 0.6:
                pairs = rng.sample(ANNOTATIONS, rng.randrange(1, 3))
                table = ", ".join(f'"{k}" = "{rng.choice(PATTERNS)}"' for k in pairs)
                when.append(f"when.annotations = {{ {table} }}")
            if not when or rng.random() < 0.4:
                pairs = rng.sample(ENVS, rng.randrange(1, 3))
                table = ", ".join(f'{k} = "{rng.choice(PATTERNS)}"' for k in pairs)
                when.append(f"when.env = {{ {table} }}")
            if rng.random() < 0.1:
                when = []
            if not when or rng.random() < 0.15:
                when.append('when.command = ["sh", "*/sleep"]')
        out.append(f'[[attach]]\nname = "r{i}"\n' + "\n".join(when) + "\n")
    return "".join(out)


def _spec_text(rng: random.Random) -> str:
    annotations = {k: rng.choice(VALUES) for k in rng.sample(ANNOTATIONS, rng.randrange(0, 3))}
    env = [
        f"{k}={rng.choice(VALUES)}" if rng.random() < 0.9 else k
        for k in rng.sample(ENVS, rng.randrange(0, 4))
    ]
    case = rng.random() < 0.2
    args = [rng.choice(["sh", "/bin/sleep", "nginx"])]
    process = {"args": args, "Env" if case else "env": env}
    spec: dict[str, object] = {"ociVersion": "1.0.2", "Process" if case else "process": process}
    if annotations or rng.random() < 0.5:
        spec["Annotations" if case and rng.random() < 0.5 else "annotations"] = annotations
    text = json.dumps(spec, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
    if rng.random() < 0.25:
        # A key given twice (issue 15, item 12): Python keeps the last, runc merges them.
        extra = rng.choice([
            {"process": {"args": ["sh"]}},
            {"Process": {"env": ["A=1"]}},
            {"annotations": {"a": "1"}},
            {"process": {"env": [f"MODE={rng.choice(VALUES)}"]}},
        ])
        member = json.dumps(extra, ensure_ascii=False)[1:-1]
        text = text.rstrip()[:-1].rstrip() + ", " + member + "}"
    if rng.random() < 0.2:
        text = text.replace("/", "\\/")
    if rng.random() < 0.2:
        letter = rng.choice("ADEMPST")
        text = text.replace(letter, f"\\u{ord(letter):04x}", 1)
    return text


class _Pairs(list[tuple[str, Any]]):
    """An object's members in order, keys given twice included."""


def _as_runc_reads(raw: bytes) -> dict[str, Any]:
    """The fields selection reads, found as Go's encoding/json finds them: in any case, and a
    field given twice read twice (objects merged, arrays and strings replaced)."""
    top = json.loads(raw, object_pairs_hook=_Pairs)

    def field(obj: Any, name: str) -> Any:
        out = None
        for k, v in obj if isinstance(obj, _Pairs) else []:
            if k.lower() == name:
                both = isinstance(out, _Pairs) and isinstance(v, _Pairs)
                out = _Pairs(out + v) if both else v
        return out

    process = field(top, "process")
    annotations = field(top, "annotations")
    return {
        "annotations": dict(annotations) if isinstance(annotations, _Pairs) else {},
        "process": {"env": field(process, "env") or [], "args": field(process, "args") or []},
    }


def _encode(rng: random.Random, text: str) -> bytes:
    return text.encode(rng.choice(["utf-8"] * 8 + ["utf-8-sig", "utf-16", "utf-32-le"]))


def _passes(function: str, files: list[Path]) -> list[bool]:
    """The cache's create_passes, run by dash on each file."""
    script = function + '\nfor f do if create_passes "$f"; then echo 1; else echo 0; fi; done\n'
    r = subprocess.run(
        ["dash", "-c", script, "sh", *map(str, files)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return [line == "1" for line in r.stdout.split()]


def test_what_the_sh_passes_python_attaches_nothing_to(tmp_path: Path) -> None:
    rng = random.Random(20261130)
    files = tmp_path / "files" / "web"
    files.mkdir(parents=True)
    (files / "run.sh").write_text("#!/bin/sh\n")
    (files / "run.sh").chmod(0o755)
    passed = attached = 0
    for n in range(150):
        d = tmp_path / f"p{n}"
        (d / "services").mkdir(parents=True)
        (d / "policy.toml").write_text(_policy(rng))
        (d / "config.toml").write_text(f'services = "services"\nstate_dir = "{tmp_path}/s"\n')
        if rng.random() < 0.5:
            (d / "services" / "web.toml").write_text(f'files = "{files}"\ncommand = ["run.sh"]\n')
        compiled = config.compile_config(config.load(str(d / "config.toml")), "/bin/true", "/h")
        function = confcache._create_passes(compiled, PATH)
        texts = [_spec_text(rng) for _ in range(12)]
        paths = []
        raws = [_encode(rng, text) for text in texts]
        for i, raw in enumerate(raws):
            (d / f"{i}.json").write_bytes(raw)
            paths.append(d / f"{i}.json")
        for text, raw, passes in zip(texts, raws, _passes(function, paths), strict=True):
            if not compiled["rules"] and not compiled["services"]:
                assert passes  # shim.create does not even read the spec
                passed += 1
                continue
            try:
                spec = bundle.parse("config.json", raw)  # as the shim reads it
            except SpecError:
                # Python refuses what runc may accept ("Process": runc reads keys in any
                # case; a key given twice): the sh lets runc judge it, so nothing may attach to
                # runc's reading.
                spec = _as_runc_reads(raw)
            try:
                found = attach.plan(compiled, spec, "/run/runc", "x", str(d))
            except RetinueError as e:
                assert not passes, f"passed a spec Python refuses ({e}):\n{function}\n{text}"
                continue
            if passes:
                passed += 1
                assert found is None, f"passed a spec Python attaches to:\n{function}\n{text}"
            elif found is not None:
                attached += 1
    # The generator reaches both sides, or the property says little.
    assert passed > 200 and attached > 50, (passed, attached)
