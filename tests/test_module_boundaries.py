"""Import boundaries that keep the hot path cheap and the modules untangled.

Each check runs in a fresh interpreter: the test process has long imported everything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


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
    for module in ("runner", "unit", "notify", "container", "supervisor", "server", "initlink"):
        assert f"retinue.supervisor.{module}" in _modules_after(
            f"import retinue.supervisor.{module}"
        )


def test_layout_imports_nothing() -> None:
    # Every module, the hook's and the pass-through's included, takes its names from layout:
    # it must stay free to import (~0.1 ms).
    assert _modules_after("import retinue.layout") - _modules_after("import retinue") == {
        "retinue.layout"
    }


def _imports(path: Path, package: str) -> set[str]:
    """The modules of `package` that the module at `path` imports, at any level (deferred and
    TYPE_CHECKING imports included: a cycle through them is a cycle all the same)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
            package + "."
        ):
            found.add(node.module[len(package) + 1 :].split(".")[0])
    return found


def test_no_import_cycle_in_the_supervisor() -> None:
    # One room per role (issue 17): the orchestration imports the container, the units and the
    # runners; none of them imports it back, and runners know no unit.
    import retinue.supervisor

    directory = Path(retinue.supervisor.__file__).parent
    modules = {p.stem for p in directory.glob("*.py")}
    graph = {
        p.stem: _imports(p, "retinue.supervisor") & modules for p in directory.glob("*.py")
    }
    assert graph["runner"].isdisjoint({"unit", "supervisor", "server"}), graph["runner"]
    assert graph["container"].isdisjoint({"unit", "supervisor", "server", "runner"})
    assert "supervisor" not in graph["initlink"] and "unit" not in graph["initlink"]

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*path, start]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    for module in sorted(graph):
        assert cycle_from(module) is None, " -> ".join(cycle_from(module) or [])
