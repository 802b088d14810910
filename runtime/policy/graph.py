"""Service dependency graphs: pure functions over {name: (requires, wants, after)}.

`requires` and `wants` pull a service in and order it after its dependency (as compose's
depends_on does); `after` only orders, and only when the other service is attached anyway.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the shim's create path uses this module; typing costs ~10 ms
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    # (requires, wants, after)
    Deps = tuple[list[str], list[str], list[str]]

NO_DEPS: Deps = ([], [], [])


def closure(graph: Mapping[str, Deps], roots: Iterable[str]) -> list[str]:
    """The roots plus everything they require or want, in first-seen order."""
    out: list[str] = []
    seen: set[str] = set()
    stack = list(roots)[::-1]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        out.append(name)
        requires, wants, _ = graph.get(name, NO_DEPS)
        stack.extend(reversed([*requires, *wants]))
    return out


def predecessors(graph: Mapping[str, Deps], name: str, attached: Iterable[str]) -> list[str]:
    """What must be ready (or have failed) before `name` starts, among the attached services."""
    present = set(attached)
    ordered = dict.fromkeys([d for group in graph[name] for d in group])
    return [d for d in ordered if d in present and d != name]


def find_cycle(graph: Mapping[str, Deps]) -> list[str] | None:
    """One dependency cycle as [a, b, ..., a], or None."""
    color: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        path.append(node)
        for dep in dict.fromkeys([d for group in graph.get(node, NO_DEPS) for d in group]):
            if dep not in graph:
                continue
            if color.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if color.get(dep) is None and (found := visit(dep)):
                return found
        path.pop()
        color[node] = 2
        return None

    for node in graph:
        if color.get(node) is None and (found := visit(node)):
            return found
    return None


def start_layers(graph: Mapping[str, Deps], attached: list[str]) -> list[list[str]]:
    """Attached services grouped so that each layer depends only on earlier ones."""
    remaining = list(attached)
    done: set[str] = set()
    layers: list[list[str]] = []
    while remaining:
        layer = [n for n in remaining if all(p in done for p in predecessors(graph, n, attached))]
        if not layer:
            raise ValueError(f"dependency cycle among {', '.join(remaining)}")
        layers.append(layer)
        done.update(layer)
        remaining = [n for n in remaining if n not in done]
    return layers
