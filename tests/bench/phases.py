"""Where one cold `retinue-runtime` call spends its time, measured inside a fresh interpreter.

Run as `PYTHON -IS phases.py SITE_PACKAGES MODE SHIM_PATH RUNC_ARGS...` with RETINUE_CONFIG set:
the same interpreter flags and sys.path as the launcher. It goes through the shim's own steps with
perf_counter around each, stops just before the execve of the lower runtime, and prints a dict
literal of phase -> milliseconds on stdout (no json: importing it would be one of the phases).

MODE `passthrough`: import, parse, config. MODE `create`: the same, then shim.create() (its lazy
imports included). MODE `create-split`: the lazy imports first, on their own, then create(). The
caller resets the bundle's config.json before each run.
"""

import time

T0 = time.perf_counter_ns()

import sys  # noqa: E402

sys.path.insert(0, sys.argv[1])
mode = sys.argv[2]
argv = sys.argv[3:]  # the launcher's path first: it is part of the config cache key
marks: list[tuple[str, int]] = []

from retinue import argv as runc_argv  # noqa: E402
from retinue.cli import shim  # noqa: E402

marks.append(("import retinue.cli.shim", time.perf_counter_ns()))
sys.argv = argv
args = runc_argv.parse(argv)
marks.append(("parse argv", time.perf_counter_ns()))
compiled = shim.load_config()
marks.append(("load config (cache hit)", time.perf_counter_ns()))
if mode == "create-split":
    # What create() imports lazily, first, so that create() itself is only work.
    from retinue.policy import select as policy  # noqa: F401
    from retinue.spec import bundle, edits  # noqa: F401

    marks.append(("import bundle/policy/edits", time.perf_counter_ns()))
if mode.startswith("create"):
    shim.create(args, compiled)
    marks.append(("create(): read, select, edit, write", time.perf_counter_ns()))
import _signal  # type: ignore[import-not-found]  # noqa: E402

_signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
_signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
marks.append(("reset signals (before execve)", time.perf_counter_ns()))

out: dict[str, float] = {}
previous = T0
for name, t in marks:
    out[name] = (t - previous) / 1e6
    previous = t
out["total in Python code"] = (previous - T0) / 1e6
print(repr(out))
