"""Import boundaries that keep the hot path cheap and the modules untangled.

Each check runs in a fresh interpreter: the test process has long imported everything.
"""

from __future__ import annotations

import ast
import os
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
    assert "retinue.config.cache" not in _modules_after("import retinue.config.settings")


def test_compiled_types_stay_off_the_hot_path() -> None:
    # The TypedDicts are for mypy only: at run time the compiled configuration is plain dicts.
    loaded = _modules_after(
        "import retinue.cli.shim, retinue.config.cache, retinue.policy.attach, "
        "retinue.policy.select, retinue.spec.edits, retinue.spec.execspec, retinue.host.spawn"
    )
    assert "retinue.compiled" not in loaded
    assert "typing" not in _modules_after("import retinue.cli.shim")


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


# The rooms of the package, top layer first; a module may import its own room and the rooms of
# the layers below it, never one above nor a peer of its own layer. The order follows what the
# code needs: entry points over the configuration (which compiles the policy) and the
# supervisor (which orders services by policy/graph); attaching a policy touches the host
# (statedir, userns); the host writes specs (install, siblings use spec/); spec/ is pure and
# seccomp/ leans on the ground alone. "" is the ground: retinue/*.py, the shared vocabulary.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "hooks"),
    ("config", "supervisor"),
    ("policy",),
    ("host",),
    ("spec",),
    ("seccomp",),
    ("",),
)
LAYER = {room: n for n, rooms in enumerate(LAYERS) for room in rooms}

def _package_dir() -> str:
    import retinue

    return os.path.dirname(os.path.abspath(retinue.__file__))


def _modules() -> dict[str, str]:
    """Every module of the installed package: dotted name -> file."""
    root = _package_dir()
    found = {}
    for parent, _dirs, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(parent, name), root)[: -len(".py")]
            parts = ["retinue", *rel.split(os.sep)]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = os.path.join(parent, name)
    return found


def _package_imports(modules: dict[str, str]) -> set[tuple[str, str]]:
    """(importer, imported) for every import of a retinue module, lazy and typing-only ones too."""
    edges = set()
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                targets = [
                    f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                    for a in node.names
                ]
            edges.update((name, t) for t in targets if t in modules and t != name)
    return edges


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYER) else ""


def test_every_module_has_a_room() -> None:
    rooms = {_room(m) for m in _modules()}
    assert rooms <= set(LAYER), f"rooms without a layer: {sorted(rooms - set(LAYER))}"


def test_no_import_runs_up_a_layer() -> None:
    edges = _package_imports(_modules())
    wrong = []
    for importer, imported in sorted(edges):
        a, b = _room(importer), _room(imported)
        if a != b and LAYER[a] >= LAYER[b]:
            way = "up" if LAYER[a] > LAYER[b] else "sideways, to a peer room"
            wrong.append(f"{importer} imports {imported}: {way} ({a or 'ground'} -> {b})")
    assert not wrong, "\n".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph (as a path that ends where it began), or []."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_cycle_between_rooms() -> None:
    graph: dict[str, set[str]] = {}
    for importer, imported in _package_imports(_modules()):
        a, b = _room(importer), _room(imported)
        if a != b:
            graph.setdefault(a or "ground", set()).add(b or "ground")
    assert not _cycle(graph), " -> ".join(_cycle(graph))


def test_room_packages_import_nothing() -> None:
    # Every runtime call imports the rooms on its way (retinue.cli, .config, .host): their
    # __init__ must cost no more than an empty module.
    modules = _modules()
    for room in sorted(r for rooms in LAYERS for r in rooms if r):
        path = modules[f"retinue.{room}"]
        if room in ("supervisor", "seccomp"):
            continue  # not on the runtime's hot path; their maps may name what they hold
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
        assert ast.get_docstring(tree), f"{path}: no docstring saying what the room is"
        assert not body, f"{path}: a room's __init__ holds its docstring and nothing else"


def test_every_module_says_what_it_is() -> None:
    missing = []
    for name, path in sorted(_modules().items()):
        with open(path) as f:
            doc = ast.get_docstring(ast.parse(f.read(), path))
        if not doc or not doc.strip().splitlines()[0].strip():
            missing.append(name)
    assert not missing, f"modules whose first docstring line does not say what they are: {missing}"


def test_no_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for importer, imported in _package_imports(_modules()):
        graph.setdefault(importer, set()).add(imported)
    assert not _cycle(graph), " -> ".join(_cycle(graph))
