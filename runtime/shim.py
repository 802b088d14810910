"""`retinue-runtime`: called exactly like runc.

The entry point is small on purpose: parse argv, decide, and either hand the call to the lower
runtime with execve or take the create path. A pass-through call imports only `os`, `sys`,
`marshal` and `_signal`; everything else is loaded on the paths that need it.
"""

from __future__ import annotations

import os
import sys
TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, NoReturn

from . import argv as runc_argv
from . import confcache, lower, runclog
from .errors import RetinueError

PREFIX = "retinue: "


def _self_path() -> str:
    return sys.argv[0] if "/" in sys.argv[0] else _which(sys.argv[0])


def _which(name: str) -> str:
    for d in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(d, name)
        if d and os.path.isfile(candidate):
            return candidate
    return name


def load_config() -> dict[str, Any]:
    explicit = os.environ.get(confcache.CONFIG_ENV, "")
    return confcache.load(
        explicit or confcache.DEFAULT_CONFIG, bool(explicit), os.environ.get("PATH", ""), _self_path()
    )


def create(args: runc_argv.RuncArgs, compiled: dict[str, Any]) -> None:
    """Edit the bundle if the policy selects the container; leave it byte-for-byte alone if not."""
    if not compiled["rules"]:
        return
    from . import bundle, edits, policy, statedir

    path, spec = bundle.load(args.bundle)
    rules = policy.select(compiled["rules"], spec)
    if not rules:
        return
    container_id = args.container_id
    if not statedir.valid_id(container_id):
        # runc refuses it with its own message; there is nothing for us to attach to.
        return
    container_dir = statedir.container_dir(compiled["state_dir"], args.root, container_id)
    edited = edits.apply(spec, rules, compiled["hook"], container_dir)
    if edited is spec:
        return
    try:
        bundle.write_atomic(path, bundle.dumps(edited))
    except OSError as e:
        raise RetinueError(f"{path}: cannot write: {e.strerror}") from None


def main() -> NoReturn:
    argv = sys.argv
    args = runc_argv.parse(argv)
    try:
        compiled = load_config()
        if args.command in ("create", "run"):
            create(args, compiled)
        lower.handoff(compiled["runtime"], argv)
    except RetinueError as e:
        runclog.fail(args, PREFIX + str(e))
    raise AssertionError("unreachable")


if __name__ == "__main__":
    main()
