"""The sh launcher's flag tables are argv.py's: read back from the rendered script, each case
pattern list names exactly the flags argv.parse knows, in both of runc's spellings.

The behaviour the tables give is tested against real calls in test_launcher.py,
test_create_fastpath.py and test_registered_fastpath.py; this test pins that the two parsers
cannot drift when a flag is added to argv.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from retinue import argv
from retinue.cli import launcher

SCRIPT = launcher.render_runtime("/x/bin/python3", "/x/site", "/x/bin/retinue-runtime")
# A case pattern continued over lines reads as one.
JOINED = re.sub(r"\\\n\s*", "", SCRIPT)


def arm(body: str) -> list[str]:
    """The alternatives of the one case arm whose commands start with `body`."""
    found = re.findall(r"^\s*(?:case \S+ in )?([^()\s]+)\)\s*" + re.escape(body), JOINED, re.M)
    assert len(found) == 1, (body, found)
    return found[0].split("|")


def names(patterns: list[str], prefix: str = "", suffix: str = "") -> set[str]:
    """The flag names of `patterns`, each of which must be given with one and with two dashes."""
    bare = set()
    for pattern in patterns:
        assert pattern.startswith(prefix) and pattern.endswith(suffix), pattern
        bare.add(pattern[len(prefix) : len(pattern) - len(suffix)])
    flags = {flag.lstrip("-") for flag in bare}
    assert bare == {f"{dashes}{flag}" for flag in flags for dashes in ("-", "--")}, bare
    return flags


def test_global_value_flags():
    assert names(arm("skip=root roots=$roots.")) == {"root"}
    assert names(arm("skip=1 ;;\n\t\t-*) ;;")) | {"root"} == argv.GLOBAL_VALUE_FLAGS


def test_scanned_subcommand_flags():
    (line,) = re.findall(r"case \$cmd:\$\{n#-\} in (\S+)\) skip=1 ;; esac", JOINED)
    scanned = set(line.split("|"))
    assert scanned == {
        f"{command}:{flag}"
        for command, flags in argv.SUBCOMMAND_VALUE_FLAGS.items()
        if command not in ("create", "run", "restore", "spec", "list")
        for flag in flags
    }


def test_create_flags():
    create = argv.SUBCOMMAND_VALUE_FLAGS["create"]
    assert argv.SUBCOMMAND_VALUE_FLAGS["run"] == create
    assert names(arm("value=skip ;;\n\t\tglobal/-?*"), "global/") == argv.GLOBAL_VALUE_FLAGS
    assert names(arm("seen=$seen. bundle="), "sub/", "=*") == argv.BUNDLE_FLAGS
    assert names(arm("seen=$seen. value=bundle"), "sub/") == argv.BUNDLE_FLAGS
    assert names(arm("value=skip ;;\n\t\tesac"), "sub/") == create - argv.BUNDLE_FLAGS


def test_help_flags():
    patterns = arm('slow "$@" ;; esac\n\tdone')
    assert names([p for p in patterns if not p.endswith("=*")]) == argv.HELP_FLAGS
    assert names([p for p in patterns if p.endswith("=*")], suffix="=*") == argv.HELP_FLAGS


def test_every_placeholder_filled():
    for text in (SCRIPT, launcher.render_hook("/x/bin/python3", "/x/site", "/x/bin/retinue-hook")):
        assert not re.search(r"@[A-Z_]+@", text)


def test_sources_are_package_data():
    """`pip install .` ships the sh sources beside launcher.py (pyproject's package-data)."""
    for name in ("retinue-runtime.sh", "retinue-hook.sh"):
        assert os.path.isfile(os.path.join(launcher.SH_DIR, name))
    assert "site-packages" in launcher.SH_DIR


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
def test_shellcheck_clean(tmp_path):
    """As `make lint`: the rendered launchers have nothing for shellcheck to say."""
    paths = []
    for name, render in (
        ("retinue-runtime", launcher.render_runtime),
        ("retinue-hook", launcher.render_hook),
    ):
        path = tmp_path / name
        path.write_text(render("/x/bin/python3", "/x/site", f"/x/bin/{name}"))
        paths.append(str(path))
    result = subprocess.run(["shellcheck", *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
