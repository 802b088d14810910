"""The compiled configuration, cached so that the hot path never parses TOML.

Loading and validating the TOML files costs ~80 ms (tomllib, attrs, cattrs); every runtime call
of every container needs at least the lower runtime's path. The first call after a change does the
full load (`config.load`) and stores the result with `marshal`, keyed on the inode, size and mtime
of every file it read, the PATH it resolved names against and the shim's own location. Later calls
stat those files and read one small file. An invalid configuration is never cached: every call
reports it until it is fixed.

Imports nothing beyond `os` and the builtins `marshal` and `binascii`.
"""

from __future__ import annotations

import binascii
import marshal
import os

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CONFIG = "/etc/retinue/config.toml"
CONFIG_ENV = "RETINUE_CONFIG"
CACHE_DIR = "/run/retinue/cache"
FORMAT = 5  # bump when compile_config's output changes shape


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


def _read(config_path: str, key: tuple[Any, ...]) -> dict[str, Any] | None:
    try:
        with open(_cache_file(config_path, key), "rb") as f:
            data = marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    if data.get("stamps") != _stamp(data.get("files", [])):
        return None
    compiled: dict[str, Any] = data["compiled"]
    return compiled


def _write(
    config_path: str, key: tuple[Any, ...], files: list[str], compiled: dict[str, Any]
) -> None:
    blob = marshal.dumps(
        {"key": key, "files": files, "stamps": _stamp(files), "compiled": compiled}
    )
    target = _cache_file(config_path, key)
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError:
        # Not root, read-only /run: stay correct, only slower.
        try:
            os.unlink(tmp)
        except OSError:
            pass


def default_hook(self_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(self_path)), "retinue-hook")


def load(config_path: str, explicit: bool, path_env: str, self_path: str) -> dict[str, Any]:
    """The compiled configuration; raises ConfigError or LowerRuntimeError when it is unusable."""
    # The package directory's mtime changes on every (re)install, so a new version never reads
    # a cache written by an old one.
    package_stamp = os.stat(os.path.dirname(__file__)).st_mtime_ns
    key = (FORMAT, package_stamp, explicit, path_env, os.path.abspath(self_path))
    compiled = _read(config_path, key)
    if compiled is not None:
        return compiled
    from . import config, lower

    cfg = config.load(config_path if explicit else None)
    runtime = lower.resolve(cfg.settings.runtime, path_env, self_path)
    hook = cfg.settings.hook or default_hook(self_path)
    compiled = config.compile_config(cfg, runtime, hook)
    _write(config_path, key, list(cfg.files), compiled)
    return compiled
