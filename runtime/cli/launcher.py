"""Writes the launchers for the hot entry points, `retinue-runtime` and `retinue-hook`.

Every runtime call of every container comes through `retinue-runtime`, and runc runs
`retinue-hook` two or three times per edited container. CPython needs ~10 ms to start here, runc
~5 ms: a Python process on every call would triple the cost of a pass-through. So both launchers
are small POSIX sh scripts (dash starts in ~1 ms) that settle the common case themselves and
start Python for everything else:

- `retinue-runtime` hands a call straight to the lower runtime when it cannot concern retinue:
  any subcommand but create and run about a container without a supervisor (no entry in
  statedir.REGISTRY; a supervised container's calls go to the runtime it was created with).
  It decides only from the cache that Python wrote (`confcache.write_sh`), and only while no file
  the configuration was read from is newer than that cache; a create or run only while every
  such file has the very stat key (device, inode, size, mtime, ctime) Python saw. In every other
  case it runs `retinue.cli.shim`, which decides the same things at full length.
- `retinue-hook` answers at once when the container has no supervisor (no state directory).

The scripts are real files, `sh/retinue-runtime.sh` and `sh/retinue-hook.sh` beside this module
(package data), with `@NAME@` placeholders that `render_runtime`/`render_hook` fill in: the paths,
the exec of Python, and every flag table, rendered from argv.py's so the two parsers cannot drift.
`make lint` runs shellcheck on both the sources and the rendered scripts.

Python itself runs with `-I -S` and only the package's own site-packages on sys.path: pip's
console scripts would also process every .pth file and import `re` (~8 ms).

    python -m retinue.cli.launcher --bin-dir /usr/local/bin
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import sysconfig

from .. import argv as runc_argv
from ..config import cache as confcache
from ..host import statedir


def _python(python: str, site_packages: str, self_path: str, code: str) -> str:
    """The exec of Python with argv[0] set to the launcher, as a sh command line."""
    def literal(text: str) -> str:
        return f'"{text}"' if not set(text) & set("\"'\\$`") else repr(text)

    program = (
        f"import sys; sys.argv[0] = {literal(self_path)}; "
        f"sys.path.insert(0, {literal(site_packages)}); {code}"
    )
    return f'exec {shlex.quote(python)} -IS -c {shlex.quote(program)} "$@"'


# The sh sources, shipped as package data beside this module; `@NAME@` marks what is filled in.
SH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sh")

# Subcommands whose ids the argv scan need not find: create and run have a stage of their own
# (and never a supervisor yet), restore/spec/list never concern a supervised container.
_SCAN_SKIPS = frozenset({"create", "run", "restore", "spec", "list"})

# Wrap long case patterns (with `|\` line continuations) so every line stays readable.
_WIDTH = 96


def _alternatives(patterns: list[str], indent: str) -> str:
    """sh case alternatives `a|b|...`, continued onto lines that start with `indent`."""
    lines = [""]
    for pattern in patterns:
        if lines[-1] and len(indent) * 8 + len(lines[-1]) + len(pattern) + 2 > _WIDTH:
            lines[-1] += "|\\"
            lines.append("")
        lines[-1] += ("|" if lines[-1] else "") + pattern
    return ("\n" + indent).join(lines)


def _flags(names: frozenset[str], prefix: str = "", suffix: str = "") -> list[str]:
    """Both spellings runc accepts of each flag (`--name`, `-name`), as case patterns."""
    return [f"{prefix}{dashes}{name}{suffix}" for name in sorted(names) for dashes in ("--", "-")]


def _tables() -> dict[str, str]:
    """The launcher's flag tables as sh case patterns, all from argv.py's: one truth for both
    parsers (tests/test_launcher_tables.py reads them back)."""
    create = runc_argv.SUBCOMMAND_VALUE_FLAGS["create"]
    # The launcher reads both with one stage, and finds --root apart from the other globals.
    if runc_argv.SUBCOMMAND_VALUE_FLAGS["run"] != create:
        raise ValueError("argv: create and run take different flags; the launcher reads both alike")
    if "root" not in runc_argv.GLOBAL_VALUE_FLAGS or not runc_argv.BUNDLE_FLAGS.issubset(create):
        raise ValueError("argv: the launcher needs --root and create's bundle flags")
    scanned = [
        f"{command}:{flag}"
        for command, flags in sorted(runc_argv.SUBCOMMAND_VALUE_FLAGS.items())
        if command not in _SCAN_SKIPS
        for flag in sorted(flags)
    ]
    help_flags = _flags(runc_argv.HELP_FLAGS)
    return {
        "HELP_FLAGS": _alternatives(
            help_flags + _flags(runc_argv.HELP_FLAGS, suffix="=*"), "\t\t\t"
        ),
        "GLOBAL_VALUE_FLAGS_BUT_ROOT": _alternatives(
            _flags(runc_argv.GLOBAL_VALUE_FLAGS - {"root"}), "\t\t"
        ),
        "SUBCOMMAND_VALUE_FLAGS": _alternatives(scanned, "\t\t\t\t"),
        "CREATE_GLOBAL_VALUE_FLAGS": _alternatives(
            _flags(runc_argv.GLOBAL_VALUE_FLAGS, "global/"), "\t\t"
        ),
        "CREATE_BUNDLE_FLAGS_WITH_VALUE": _alternatives(
            _flags(runc_argv.BUNDLE_FLAGS, "sub/", "=*"), "\t\t"
        ),
        "CREATE_BUNDLE_FLAGS": _alternatives(_flags(runc_argv.BUNDLE_FLAGS, "sub/"), "\t\t"),
        "CREATE_VALUE_FLAGS_BUT_BUNDLE": _alternatives(
            _flags(create - runc_argv.BUNDLE_FLAGS, "sub/"), "\t\t"
        ),
    }


def _fill(name: str, values: dict[str, str]) -> str:
    """SH_DIR/name with every `@KEY@` replaced; a placeholder left over or never used is a bug
    of this module, caught when the launchers are written (make venv, the tests)."""
    with open(os.path.join(SH_DIR, name)) as f:
        text = f.read()
    for key, value in values.items():
        mark = f"@{key}@"
        if mark not in text:
            raise ValueError(f"{name}: no placeholder {mark}")
        text = text.replace(mark, value)
    left = re.search(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"{name}: placeholder {left.group()} not filled in")
    return text


def render_runtime(python: str, site_packages: str, self_path: str) -> str:
    return _fill(
        "retinue-runtime.sh",
        {
            "EXEC_PYTHON": _python(
                python, site_packages, self_path, "from retinue.cli.shim import main; main()"
            ),
            "RECORDS": statedir.RECORDS,
            "REGISTRY": statedir.REGISTRY,
            "DEFAULT_CONFIG": confcache.DEFAULT_CONFIG,
            "CACHE_DIR": confcache.CACHE_DIR,
            "SELF": shlex.quote(self_path),
            **_tables(),
        },
    )


def render_hook(python: str, site_packages: str, self_path: str) -> str:
    run = _python(
        python, site_packages, self_path,
        "from retinue.hooks.hook import main; sys.exit(main())",
    )
    return _fill("retinue-hook.sh", {"EXEC_PYTHON": run})


def _install(target: str, text: str) -> None:
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


def write(bin_dir: str, python: str, site_packages: str) -> list[str]:
    os.makedirs(bin_dir, exist_ok=True)
    bin_dir = os.path.abspath(bin_dir)
    runtime = os.path.join(bin_dir, "retinue-runtime")
    hook = os.path.join(bin_dir, "retinue-hook")
    _install(runtime, render_runtime(python, site_packages, runtime))
    _install(hook, render_hook(python, site_packages, hook))
    written = [runtime, hook]
    admin = os.path.join(bin_dir, "retinue")
    source = os.path.join(os.path.dirname(python), "retinue")
    if os.path.abspath(admin) != os.path.abspath(source):
        if os.path.lexists(admin):
            os.unlink(admin)
        os.symlink(source, admin)
        written.append(admin)
    return written


def warm_supervisor(python: str, site_packages: str) -> None:
    """Import what a supervisor imports, with its flags, so that the optimized .pyc files it
    needs exist (as root, where they are written) before the first create waits for one."""
    import subprocess

    from ..host import spawn

    code = spawn.supervisor_code(site_packages).replace("; main()", "")
    subprocess.run([python, *spawn.PYTHON_FLAGS, "-c", code], check=False, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bin-dir", required=True)
    ns = parser.parse_args()
    python = os.path.join(sys.prefix, "bin", "python3")
    for path in write(ns.bin_dir, python, sysconfig.get_paths()["purelib"]):
        print(path)
    warm_supervisor(python, sysconfig.get_paths()["purelib"])


if __name__ == "__main__":
    main()
