"""The lower runtime (runc or crun): finding it, and handing the call over to it.

The hand-off is an `execve`: same pid, argv, environment, open fds, stdin and console socket,
so the engine cannot tell the shim was there. Imports nothing beyond `os`: it runs on every call.
"""

from __future__ import annotations

import os

from ..errors import LowerRuntimeError

DEFAULT_CANDIDATES = ("runc", "crun")
# Where runc and crun are installed when PATH does not say: Podman calls kill, pause, resume and
# delete with an empty environment, and a container must still reach its lower runtime.
FALLBACK_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# The PATH of a caller that has none. It is also what dash's $PATH says then, so the sh launcher's
# cache (keyed on $PATH) serves such callers, and engines calling with this PATH, alike.
DEFAULT_PATH = ":".join(FALLBACK_DIRS)
# Both of our own launchers import this module; a "lower runtime" whose head contains it is
# retinue again (a copy, a symlink, a wrapper), and exec'ing it would recurse forever.
_SELF_MARKER = b"retinue.cli.shim"


def _is_executable_file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _is_retinue(path: str, self_path: str) -> bool:
    real = os.path.realpath(path)
    if self_path and real == os.path.realpath(self_path):
        return True
    try:
        with open(real, "rb") as f:
            head = f.read(1024)
    except OSError:
        return False
    return head.startswith(b"#!") and _SELF_MARKER in head


def _search(name: str, dirs: list[str]) -> list[str]:
    return [
        os.path.join(d, name)
        for d in dirs
        if d and os.path.isabs(d) and _is_executable_file(os.path.join(d, name))
    ]


def resolve(configured: str, path_env: str, self_path: str) -> str:
    """The absolute path of the lower runtime.

    `configured` is the config file's `runtime`: an absolute path, a name looked up on PATH, or
    empty for the first of runc, crun on PATH. A name found nowhere on PATH (or no PATH at all)
    is looked up in the usual install directories. Never returns retinue itself.
    """
    if configured and "/" in configured:
        if not os.path.isabs(configured):
            raise LowerRuntimeError(
                f"lower runtime {configured!r}: must be an absolute path or a name on PATH"
            )
        if not _is_executable_file(configured):
            raise LowerRuntimeError(f"lower runtime {configured}: no such executable file")
        if _is_retinue(configured, self_path):
            raise LowerRuntimeError(
                f"lower runtime {configured} is retinue-runtime itself; "
                "set `runtime` to runc or crun"
            )
        return configured
    names = (configured,) if configured else DEFAULT_CANDIDATES
    skipped: list[str] = []
    for dirs in (path_env.split(os.pathsep), list(FALLBACK_DIRS)):
        for name in names:
            for candidate in _search(name, dirs):
                if candidate in skipped:
                    continue
                if _is_retinue(candidate, self_path):
                    skipped.append(candidate)
                    continue
                return candidate
    wanted = " or ".join(names)
    extra = f" (skipped {', '.join(skipped)}: retinue-runtime itself)" if skipped else ""
    raise LowerRuntimeError(
        f"lower runtime {wanted}: not found on PATH {path_env[:200]!r} "
        f"nor in {', '.join(FALLBACK_DIRS)}{extra}"
    )


def handoff(lower: str, argv: list[str]) -> None:
    """Replace this process with the lower runtime, given the caller's own arguments."""
    import _signal  # type: ignore[import-not-found]  # `signal` imports enum: ~4 ms

    # Python ignores SIGPIPE and SIGXFSZ, and ignored dispositions survive execve; runc resets
    # them itself but crun and hook programs do not.
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
    try:
        os.execv(lower, [lower, *argv[1:]])
    except OSError as e:
        raise LowerRuntimeError(f"lower runtime {lower}: {e.strerror}") from None
