"""Import boundaries that keep the hot path cheap and the modules untangled.

Each check runs in a fresh interpreter: the test process has long imported everything.
"""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def test_config_does_not_import_confcache() -> None:
    # confcache imports config (lazily, on a cache miss); the reverse made a circle.
    assert "retinue.confcache" not in _modules_after("import retinue.config")


def test_compiled_types_stay_off_the_hot_path() -> None:
    # The TypedDicts are for mypy only: at run time the compiled configuration is plain dicts.
    loaded = _modules_after(
        "import retinue.shim, retinue.confcache, retinue.attach, retinue.policy, retinue.edits, "
        "retinue.execspec, retinue.supervisor.spawn"
    )
    assert "retinue.compiled" not in loaded
    assert "typing" not in _modules_after("import retinue.shim")


def test_supervisor_modules_import_on_their_own() -> None:
    # runner.py names Unit only for mypy: importing it first must not need unit.py.
    for module in ("runner", "unit", "notify", "core"):
        assert f"retinue.supervisor.{module}" in _modules_after(
            f"import retinue.supervisor.{module}"
        )


def test_layout_imports_nothing() -> None:
    # Every module, the hook's and the pass-through's included, takes its names from layout:
    # it must stay free to import (~0.1 ms).
    assert _modules_after("import retinue.layout") - _modules_after("import retinue") == {
        "retinue.layout"
    }
