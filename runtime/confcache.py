"""The compiled configuration, cached so that the hot path never parses TOML.

Loading and validating the TOML files costs ~80 ms (tomllib, attrs, cattrs); every runtime call
of every container needs at least the lower runtime's path. The first call after a change does the
full load (`config.load`) and stores the result with `marshal`, keyed on the inode, size and mtime
of every file it read, the PATH it resolved names against and the shim's own location. Later calls
stat those files and read one small file. An invalid configuration is never cached: every create
reports it until it is fixed, and the calls that need no policy use the last good one meanwhile.

Imports nothing beyond `os` and the builtins `marshal` and `binascii`.
"""

from __future__ import annotations

import binascii
import marshal
import os

from . import CACHE_DIR as CACHE_DIR
from . import CONFIG_ENV as CONFIG_ENV
from . import DEFAULT_CONFIG as DEFAULT_CONFIG

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from .compiled import Compiled

FORMAT = 8  # bump when compile_config's output changes shape
CLOCK_MARGIN_NS = 50_000_000


def _stamp(paths: list[str]) -> list[tuple[str, int, int, int]]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((p, -1, -1, -1))
    return out


def _cache_file(config_path: str, key: tuple[Any, ...]) -> str:
    # One file per key, not per config file: callers with another PATH or another launcher (an
    # engine and an admin's shell, two installs) would otherwise overwrite each other's entry on
    # every call and each pay the full load (~100 ms). The key is still checked inside the file.
    digest = binascii.crc32(marshal.dumps(key))
    name = os.path.abspath(config_path).replace("/", "%")
    return os.path.join(CACHE_DIR, f"{name}.{digest:08x}")


def cache_files(config_path: str) -> list[str]:
    """Every cached compilation of `config_path` (one per caller's PATH and launcher)."""
    prefix = os.path.abspath(config_path).replace("/", "%") + "."
    try:
        names = os.listdir(CACHE_DIR)
    except OSError:
        return []
    return [
        os.path.join(CACHE_DIR, n)
        for n in names
        if n.startswith(prefix) and len(n) == len(prefix) + 8
    ]


def _read(config_path: str, key: tuple[Any, ...]) -> tuple[Compiled, list[Any]] | None:
    try:
        with open(_cache_file(config_path, key), "rb") as f:
            data = marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    stamps = _stamp(data.get("files", []))
    if data.get("stamps") != stamps:
        return None
    compiled: Compiled = data["compiled"]
    return compiled, stamps


def _replace(target: str, blob: bytes, mtime_ns: int | None = None) -> None:
    """Write `target` atomically, root-only; an error leaves the cache as it was."""
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        from . import statedir

        statedir.private_dir(os.path.dirname(CACHE_DIR))
        statedir.private_dir(CACHE_DIR)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, target)
    except OSError:
        # Not root, read-only /run: stay correct, only slower.
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _write(
    config_path: str, key: tuple[Any, ...], stamps: list[Any], compiled: Compiled
) -> None:
    files = [s[0] for s in stamps]
    blob = marshal.dumps({"key": key, "files": files, "stamps": stamps, "compiled": compiled})
    _replace(_cache_file(config_path, key), blob)


# Characters a path may have to be listed, unquoted, in the sh cache (split on spaces, no globs).
_SH_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./%+,:@=-")


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _which(name: str, path_env: str) -> str | None:
    for d in path_env.split(":"):
        candidate = os.path.join(d, name)
        if d.startswith("/") and os.access(candidate, os.X_OK):
            return candidate
    return None


def _create_passes(compiled: Compiled, path_env: str) -> str:
    """`create_passes CONFIG_JSON`: true only when nothing can attach to that spec (issue 12).

    The launcher passes such a create or run to the lower runtime without starting Python. It
    greps for the strings of which every selected spec has one (`policy.selection_strings`),
    for `\\u` and `\\/`, the only escapes that could hide one of them, and for a NUL byte
    (from a file: argv cannot hold one), which every UTF-16 or UTF-32 spec has and json.loads
    reads too; any of them found, or grep failing, means Python decides. Needles are annotation
    keys and env entries, which runc and `attach.plan` both compare case-sensitively, so a plain
    grep is exact for them; struct keys such as "Annotations" (runc reads keys in any case) are
    not needles, so however a reader finds those, a spec without a needle selects nothing.
    """
    from . import policy

    needles = policy.selection_strings(compiled)
    if needles == []:
        return "create_passes() { :; }"
    grep = _which("grep", path_env)
    if needles is None or grep is None or not _SH_SAFE.issuperset(grep) or not _nul_pattern():
        return "create_passes() { return 1; }"
    patterns = " ".join(f"-e {_sh_quote(n)}" for n in ["\\u", "\\/", *needles])
    return (
        f"create_passes() {{ LC_ALL=C {grep} -a -F -q {patterns} -f {NUL_PATTERN} "
        '-- "$1"; [ $? -eq 1 ]; }'
    )


NUL_PATTERN = os.path.join(CACHE_DIR, "nul.pattern")


def _nul_pattern() -> bool:
    """The grep pattern file that matches a NUL byte, there and right."""
    try:
        with open(NUL_PATTERN, "rb") as f:
            if f.read() == b"\0\n":
                return True
    except OSError:
        pass
    _replace(NUL_PATTERN, b"\0\n")
    try:
        with open(NUL_PATTERN, "rb") as f:
            return f.read() == b"\0\n"
    except OSError:
        return False


def sh_cache_file(config_path: str) -> str:
    return os.path.join(CACHE_DIR, os.path.abspath(config_path).replace("/", "%") + ".sh")


def write_sh(
    config_path: str,
    explicit: bool,
    path_env: str,
    self_path: str,
    compiled: Compiled,
    stamps: list[Any],
    valid_since_ns: int,
) -> None:
    """What the sh launcher needs for its pass-through decision, as sh assignments.

    Its mtime is `valid_since_ns`, a moment before the configuration files were last checked:
    the launcher trusts it only while none of them is newer. Paths it cannot list safely (spaces,
    glob characters) mean no sh cache at all: the launcher then always asks Python.
    """
    target = sh_cache_file(config_path)
    present = [s[0] for s in stamps if s[1] != -1]
    absent = [s[0] for s in stamps if s[1] == -1]
    present += [os.path.dirname(__file__), compiled["runtime"]]
    if any(not _SH_SAFE.issuperset(p) for p in present + absent):
        try:
            os.unlink(target)
        except OSError:
            pass
        return
    text = (
        f"lower={_sh_quote(compiled['runtime'])}\n"
        f"state_dir={_sh_quote(compiled['state_dir'])}\n"
        f"path={_sh_quote(path_env)}\n"
        f"self={_sh_quote(os.path.abspath(self_path))}\n"
        f"explicit={'1' if explicit else ''}\n"
        f"files='{' '.join(present)}'\n"
        f"absent='{' '.join(absent)}'\n"
        f"{_create_passes(compiled, path_env)}\n"
    ).encode()
    try:
        with open(target, "rb") as f:
            if f.read() == text:
                # Checked again just now: valid from this load on, so the launcher trusts it
                # again after a configuration file was touched without a change.
                os.utime(target, ns=(valid_since_ns, valid_since_ns))
                return
    except OSError:
        pass
    _replace(target, text, valid_since_ns)


def default_hook(self_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(self_path)), "retinue-hook")


def _key(explicit: bool, path_env: str, self_path: str) -> tuple[Any, ...]:
    # The package directory's mtime changes on every (re)install, so a new version never reads
    # a cache written by an old one.
    package_stamp = os.stat(os.path.dirname(__file__)).st_mtime_ns
    return (FORMAT, package_stamp, explicit, path_env, os.path.abspath(self_path))


def last_good(config_path: str, explicit: bool, path_env: str, self_path: str) -> Compiled:
    """The compiled configuration from the last time `config_path` loaded, whatever changed in
    its files since; raises LookupError when there is none. For calls that need no policy while
    the configuration is broken: they keep using the lower runtime it named."""
    key = _key(explicit, path_env, self_path)
    try:
        with open(_cache_file(config_path, key), "rb") as f:
            data = marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        raise LookupError(config_path) from None
    if not isinstance(data, dict) or data.get("key") != key:
        raise LookupError(config_path)
    compiled: Compiled = data["compiled"]
    return compiled


def load(config_path: str, explicit: bool, path_env: str, self_path: str) -> Compiled:
    """The compiled configuration; raises ConfigError or LowerRuntimeError when it is unusable."""
    import time

    # File times come from the kernel's coarse clock, which lags the precise one by up to a tick
    # or two: a file written just after this moment may carry an earlier time. Every comparison
    # with file times therefore starts from a little before now.
    started = time.time_ns() - CLOCK_MARGIN_NS
    key = _key(explicit, path_env, self_path)
    found = _read(config_path, key)
    if found is not None:
        compiled, stamps = found
    else:
        from . import config, lower

        cfg = config.load(config_path if explicit else None)
        runtime = lower.resolve(cfg.settings.runtime, path_env, self_path)
        hook = cfg.settings.hook or default_hook(self_path)
        compiled = config.compile_config(cfg, runtime, hook)
        stamps = _stamp(list(cfg.files))
        if any(s[3] >= started for s in stamps):
            # A file changed while it was being read: use what was read, cache nothing.
            return compiled
        _write(config_path, key, stamps, compiled)
    write_sh(config_path, explicit, path_env, self_path, compiled, stamps, started)
    return compiled
