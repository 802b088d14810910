"""The compiled configuration, cached so that the hot path never parses TOML.

Loading and validating the TOML files costs ~80 ms (tomllib, attrs, cattrs); every runtime call
of every container needs at least the lower runtime's path. The first call after a change does the
full load (`config.load`) and stores the result with `marshal`, keyed on the device, inode, size,
mtime and ctime of every file and directory it read (following symlinks, as the loader does), the
PATH it resolved names against and the shim's own location. Later calls stat those files and read
one small file. The ctime is what makes the key strong: `cp -p`, `rsync -a`, `touch -d` and an
in-place write with the old times put back can all restore an older mtime (and keep inode and
size), but every change of content, name or times sets the ctime to now, and nothing but the
clock can set it back. An invalid configuration is never cached: every create
reports it until it is fixed, and the calls that need no policy use the last good one meanwhile.

Imports nothing beyond `os` and the builtins `marshal` and `binascii`.
"""

from __future__ import annotations

import binascii
import marshal
import os

from ..layout import CACHE_DIR as CACHE_DIR
from ..layout import CONFIG_ENV as CONFIG_ENV
from ..layout import DEFAULT_CONFIG as DEFAULT_CONFIG

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from ..compiled import Compiled

FORMAT = 9  # bump when compile_config's output changes shape
CLOCK_MARGIN_NS = 50_000_000


Stamp = tuple[str, int, int, int, int, int]  # path, device, inode, size, mtime, ctime (ns)
ABSENT = -1


def _stamp(paths: list[str]) -> list[Stamp]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            out.append((p, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT))
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
        from ..host import statedir

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
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    blob = marshal.dumps(
        {"key": key, "package": package, "files": files, "stamps": stamps, "compiled": compiled}
    )
    target = _cache_file(config_path, key)
    _replace(target, blob)
    # Here, on the slow path after a full load, never on a call that read the cache: every
    # reinstall, PATH and launcher leaves an entry of its own.
    collect(config_path, keep=target)


TMP_AGE = 60.0  # a writer's temp file older than this was left by one that died


def _usable(path: str) -> bool:
    """Whether anything could still read the entry at `path` (`_read` or `last_good`).

    Not when it is unreadable or of another FORMAT, when the package that wrote it was
    replaced (its key holds the package directory's mtime) or its launcher is gone, or when
    the directory of the configuration it was asked for by name is gone. An entry whose files
    changed is kept: `last_good` still serves it while the configuration is broken.
    """
    try:
        with open(path, "rb") as f:
            data = marshal.loads(f.read())
        key, package, files = data["key"], data["package"], data["files"]
        if type(key) is not tuple or len(key) != 5 or key[0] != FORMAT:
            return False
        if os.stat(package).st_mtime_ns != key[1] or not os.path.exists(key[4]):
            return False
        explicit = key[2]
        return not (explicit and files and not os.path.isdir(os.path.dirname(files[0])))
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError):
        return False


def collect(config_path: str | None = None, keep: str = "") -> list[str]:
    """Remove the cache entries nothing can use any more: those `_usable`
    refuses, a launcher's sh cache without one (it is written from one), and temp files of
    writers that died. Only `config_path`'s when given (a write), all for `retinue gc`.
    Returns what was removed."""
    import time

    try:
        names = os.listdir(CACHE_DIR)
    except OSError:
        return []
    prefix = os.path.abspath(config_path).replace("/", "%") + "." if config_path else ""
    removed: list[str] = []
    kept: set[str] = set()
    sh_caches = []
    for name in names:
        if not name.startswith(prefix) or name == os.path.basename(NUL_PATTERN):
            continue
        path = os.path.join(CACHE_DIR, name)
        if name.endswith(".tmp"):
            try:
                stale = os.stat(path).st_mtime < time.time() - TMP_AGE
            except OSError:
                continue
        elif name.endswith(".sh"):
            sh_caches.append(name)
            continue
        else:
            stem, dot, digest = name.rpartition(".")
            if not dot or len(digest) != 8:
                continue  # not ours
            stale = path != keep and not _usable(path)
            if not stale:
                kept.add(stem)
        if stale:
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    for name in sh_caches:
        if name[: -len(".sh")] not in kept:
            path = os.path.join(CACHE_DIR, name)
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


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
    """`create_passes CONFIG_JSON`: true only when nothing can attach to that spec.

    The launcher passes such a create or run to the lower runtime without starting Python. It
    greps for the strings of which every selected spec has one (`policy.selection_strings`),
    for `\\u` and `\\/`, the only escapes that could hide one of them, and for a NUL byte
    (from a file: argv cannot hold one), which every UTF-16 or UTF-32 spec has and json.loads
    reads too; any of them found, or grep failing, means Python decides. Needles are annotation
    keys and env entries, which runc and `attach.plan` both compare case-sensitively, so a plain
    grep is exact for them; struct keys such as "Annotations" (runc reads keys in any case) are
    not needles, so however a reader finds those, a spec without a needle selects nothing.
    """
    from ..policy import select as policy

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


# What `stat -L -c` prints for one file, in the order of `_stamp`'s fields (GNU coreutils).
STAT_FORMAT = "%d:%i:%s:%.9Y:%.9Z"


def _stat_line(stamp: Stamp) -> str:
    _, dev, ino, size, mtime, ctime = stamp
    return (
        f"{dev}:{ino}:{size}:{mtime // 10**9}.{mtime % 10**9:09d}:"
        f"{ctime // 10**9}.{ctime % 10**9:09d}"
    )


def _fresh(stamps: list[Stamp], path_env: str) -> str:
    """`fresh`: true only while every file the cache was built from is as it was then.

    The launcher runs it before it decides a create from the cache: one exec of stat for all
    files, compared with what Python saw. A file that was absent prints nothing, so one that
    appears adds a line. Without a usable GNU stat, creates always go to Python.
    """
    stat = _which("stat", path_env)
    if stat is None or not _SH_SAFE.issuperset(stat):
        return "fresh() { return 1; }"
    paths = " ".join(s[0] for s in stamps)
    expected = "\n".join(_stat_line(s) for s in stamps if s[1] != ABSENT)
    return (
        f'fresh() {{ [ "$({stat} -L -c \'{STAT_FORMAT}\' -- {paths} 2>/dev/null)" = '
        f"{_sh_quote(expected)} ]; }}"
    )


def write_sh(
    config_path: str,
    explicit: bool,
    path_env: str,
    self_path: str,
    compiled: Compiled,
    stamps: list[Stamp],
    valid_since_ns: int,
) -> None:
    """What the sh launcher needs for its pass-through decision, as sh assignments.

    Its mtime is `valid_since_ns`, a moment before the configuration files were last checked:
    for the calls that need only the lower runtime, the launcher trusts it while none of them is
    newer. create and run, which the policy decides, also need `fresh` (the full key). Paths it
    cannot list safely (spaces, glob characters) mean no sh cache at all: the launcher then
    always asks Python.
    """
    target = sh_cache_file(config_path)
    extra = _stamp([os.path.dirname(os.path.dirname(__file__)), compiled["runtime"]])
    present = [s[0] for s in stamps if s[1] != ABSENT] + [s[0] for s in extra]
    absent = [s[0] for s in stamps if s[1] == ABSENT]
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
        f"{_fresh([*stamps, *extra], path_env)}\n"
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
    package_stamp = os.stat(os.path.dirname(os.path.dirname(__file__))).st_mtime_ns
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
        from ..host import lower
        from . import settings as config

        cfg = config.load(config_path if explicit else None)
        runtime = lower.resolve(cfg.settings.runtime, path_env, self_path)
        hook = cfg.settings.hook or default_hook(self_path)
        compiled = config.compile_config(cfg, runtime, hook)
        stamps = _stamp(list(cfg.files))
        if any(max(s[4], s[5]) >= started for s in stamps):
            # A file changed while it was being read: use what was read, cache nothing. Once
            # every ctime is older than `started`, any later change gives a newer one.
            return compiled
        _write(config_path, key, stamps, compiled)
    write_sh(config_path, explicit, path_env, self_path, compiled, stamps, started)
    return compiled
