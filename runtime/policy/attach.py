"""What attaches to one container, and its spec with every edit applied: a pure function.

select (the rules, the services) -> each source's edits -> compose (conflicts named) -> apply.
The shim's create and `retinue plan` both call `plan`, so what plan shows is what create does.
"""

from __future__ import annotations

from ..errors import RetinueError
from ..host import statedir
from . import select as policy

TYPE_CHECKING = False  # typing costs ~10 ms on the create path; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from ..compiled import Compiled, CompiledRule, CompiledSeccompRule, CompiledService
    from ..spec.edits import Edits


class Attachment:
    __slots__ = (
        "container_dir",
        "edited",
        "edits",
        "init",
        "listener",
        "notes",
        "rules",
        "seccomp",
        "services",
        "sources",
        "stop_budget",
    )

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, fields[name])

    rules: list[CompiledRule]
    services: list[CompiledService]
    seccomp: list[CompiledSeccompRule]
    listener: str
    container_dir: str
    edited: dict[str, Any]
    # Each source's edits (a rule, the services, init, the supervisor's hooks, seccomp), and
    # their composition, which `edited` is the spec with.
    sources: list[Edits]
    edits: Edits
    notes: list[str]
    # retinue-init's settings when it becomes PID 1 ({"binary", "supervised", "wait_ms"}).
    init: dict[str, Any] | None
    # Seconds the services get in all to stop once the main process has exited.
    stop_budget: float

    @property
    def supervised(self) -> bool:
        """Whether the container needs a supervisor (services or seccomp handlers)."""
        return bool(self.services or self.seccomp)


def plan(
    compiled: Compiled, spec: dict[str, Any], root: str, container_id: str, bundle: str
) -> Attachment | None:
    """None when nothing applies: the container passes through untouched."""
    if not compiled["rules"] and not compiled["services"]:
        # Nothing can attach, whatever the spec asks for: shim.create passes it to the lower
        # runtime before reading it, and the sh launcher without starting Python
        # (select.selection_strings), so `retinue plan` must not refuse it either.
        return None
    rules = policy.select(compiled["rules"], spec)
    try:
        names = policy.attached_services(compiled, rules, spec)
    except ValueError as e:
        raise RetinueError(str(e)) from None
    if not rules and not names:
        return None
    from ..spec import bundle as bundle_file
    from ..spec import edits
    from ..spec import validate as editable  # only once something attaches: most creates stop above

    editable.check(bundle_file.config_path(bundle), spec)
    container_dir = statedir.container_dir(compiled["state_dir"], root, container_id)
    services = [compiled["services"][n] for n in names]
    budgets = [r["stop_budget"] for r in rules if r["stop_budget"] is not None]
    stop_budget = min(budgets) if budgets else compiled["stop_budget"]
    init = None
    if wants_init(rules, services):
        init = {
            "binary": compiled["init"],
            "supervised": bool(services),
            # init's own bound on the wait: the supervisor answers within the budget, and a
            # supervisor that hangs must not keep the container's end waiting much longer.
            "wait_ms": int(stop_budget * 1000) + INIT_MARGIN_MS,
        }
    # The policy's handlers, then those the attached services bring.
    seccomp = [r for rule in rules for r in rule["seccomp"]]
    seccomp += [r for svc in services for r in svc["seccomp"]]
    listener = statedir.seccomp_listener(compiled["state_dir"], bundle) if seccomp else ""
    sources = edits.sources(
        rules, compiled["hook"], container_dir, services, init,
        supervised=bool(services or seccomp), seccomp=seccomp, listener=listener,
    )
    composed = edits.compose(sources)
    notes: list[str] = []
    edited = edits.apply(spec, composed, notes)
    if bundle_file.has_user_namespace(spec):
        from ..host import userns

        userns.check_mount_points(spec, edited, bundle)
    return Attachment(
        rules=rules,
        services=services,
        seccomp=seccomp,
        listener=listener,
        container_dir=container_dir,
        edited=edited,
        sources=sources,
        edits=composed,
        notes=notes,
        init=init,
        stop_budget=stop_budget,
    )


INIT_MARGIN_MS = 2000


def wants_init(rules: list[CompiledRule], services: list[CompiledService]) -> bool:
    """A rule's `init = false` wins (an image whose entrypoint must be PID 1, like systemd);
    then a rule's `init = true`; else a container gets an init exactly when it has an exec
    service. Exec services live in the app's PID namespace, which dies with its PID 1: init
    keeps it alive until they have stopped. Sidecars have their own PID namespace and outlive
    the main process anyway, so a container with only sidecars keeps its own entrypoint as
    PID 1 (what apps, preStop hooks and the CRI validation suite expect)."""
    asked = [r["init"] for r in rules if r["init"] is not None]
    if False in asked:
        return False
    return bool(asked) or any(s.get("placement", "exec") == "exec" for s in services)


def watches_main(init: dict[str, Any] | None, services: list[CompiledService]) -> bool:
    """Whether the supervisor itself learns of the main process's exit (the pidfd of the
    container's PID 1) and only then stops the services: no init, and no exec service (those
    would die with the main's PID namespace, so without init they are stopped first)."""
    return init is None and not any(s.get("placement", "exec") == "exec" for s in services)
