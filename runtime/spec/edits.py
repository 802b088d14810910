"""Container edits as values: each source's edits, composed with their owners, applied by one
pure function and undone by one (CDI's ContainerEdits, with NRI's owners).

A source is one policy rule, the attached services, retinue-init, the supervisor's hooks or the
seccomp listener. Each yields an `Edits` (`for_rule`, `for_services`, `for_init`,
`for_supervisor`, `for_seccomp`); `compose` joins them in order and refuses two owners of one
field by naming both ("rule a and rule b both set env X"); `apply` puts the result into a spec;
`undo` takes an earlier create's edits off again.

`apply` returns a new spec and never mutates its argument: only the containers on the path to a
change are copied, everything else is shared. It is idempotent (a retried create must not
duplicate mounts, env or hooks), appends in order (re-sorting mounts broke containers: CDI#240),
and refuses to mount over a container's own mount rather than replace it.
"""

from __future__ import annotations

from ..errors import SpecError, clip
from ..layout import (
    ATTACHED_ANNOTATION,
    HOOK_ARGV0,
    INIT_PATH,
    INIT_RECORD_ANNOTATION,
    INIT_SOCKET,
    INIT_SOCKET_NAME,
    MOUNTS_RECORD_ANNOTATION,
    SERVICES_RECORD_ANNOTATION,
    notify_socket,
    notify_socket_file,
    service_dir,
)

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from ..compiled import CompiledRule, CompiledSeccompRule, CompiledService

    Spec = dict[str, Any]

# Every stage an earlier version may have written our hook into (undo takes it off).
HOOK_STAGES = ("createRuntime", "poststart", "poststop")
# The stages a supervisor needs told: createRuntime (the init's pid before start; the supervisor
# asks runc otherwise) and poststop (the services stop when the container is deleted). poststart
# is not added any more: the supervisor only took note of it, and under runc 1.1 it ran at the
# end of every create, a Python start-up (~15 ms) on the create path.
ADDED_STAGES = ("createRuntime", "poststop")
BIND_OPTIONS = ("rbind", "ro", "nosuid", "nodev")
NOTIFY_OPTIONS = ("bind", "ro", "nosuid", "nodev", "noexec")
# Before each socket was mounted on its own, the whole notify directory was, read-write: a
# bundle edited then must still be recognised.
OLD_NOTIFY_OPTIONS = ("rbind", "nosuid", "nodev", "noexec")
OUR_MOUNT_OPTIONS = (list(BIND_OPTIONS), list(NOTIFY_OPTIONS), list(OLD_NOTIFY_OPTIONS))


class Edits:
    """What one source (or, once composed, all of them) asks of a container's spec.

    Each item carries its owner ("rule demo", "service web", "init", ...), so that a conflict
    names both sides and `retinue plan` can say who asked for what. Tuples throughout: a value,
    never changed once made.
    """

    __slots__ = (
        "annotations",
        "args_prefix",
        "attached",
        "env",
        "hooks",
        "listener",
        "mounts",
        "overrides",
        "seccomp",
        "services",
        "source",
    )

    source: str
    mounts: tuple[tuple[str, dict[str, Any]], ...]  # (owner, OCI mount)
    env: tuple[tuple[str, str, str], ...]  # (owner, name, value)
    hooks: tuple[tuple[str, str, dict[str, Any]], ...]  # (owner, stage, OCI hook)
    annotations: tuple[tuple[str, str, str], ...]  # (owner, key, value)
    # (owner, arguments put before the container's own), or None.
    args_prefix: tuple[str, tuple[str, ...]] | None
    seccomp: tuple[CompiledSeccompRule, ...]  # notify rules, for seccomp.profile.apply
    listener: str  # the seccomp agent's socket
    attached: tuple[str, ...]  # the rules' names, recorded in an annotation
    services: tuple[str, ...]  # the services' names, recorded in an annotation
    # Set by compose: (owner, env name, the earlier rule whose value it replaced).
    overrides: tuple[tuple[str, str, str], ...]

    def __init__(
        self,
        source: str,
        *,
        mounts: tuple[tuple[str, dict[str, Any]], ...] = (),
        env: tuple[tuple[str, str, str], ...] = (),
        hooks: tuple[tuple[str, str, dict[str, Any]], ...] = (),
        annotations: tuple[tuple[str, str, str], ...] = (),
        args_prefix: tuple[str, tuple[str, ...]] | None = None,
        seccomp: tuple[CompiledSeccompRule, ...] = (),
        listener: str = "",
        attached: tuple[str, ...] = (),
        services: tuple[str, ...] = (),
        overrides: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        self.source = source
        self.mounts = mounts
        self.env = env
        self.hooks = hooks
        self.annotations = annotations
        self.args_prefix = args_prefix
        self.seccomp = seccomp
        self.listener = listener
        self.attached = attached
        self.services = services
        self.overrides = overrides

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Edits) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"<Edits {self.source}: {'; '.join(describe(self)) or 'nothing'}>"


# -- the sources ---------------------------------------------------------------------------------


def bind_mount(source: str, destination: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": list(BIND_OPTIONS),
    }


def for_rule(rule: CompiledRule) -> Edits:
    """A policy rule's mounts (read-only binds) and env."""
    owner = f"rule {rule['name']}"
    return Edits(
        owner,
        mounts=tuple((owner, bind_mount(src, dst)) for src, dst in rule["mounts"]),
        env=tuple((owner, name, value) for name, value in rule["env"]),
        attached=(rule["name"],),
    )


def for_services(services: list[CompiledService], container_dir: str) -> Edits:
    """Each service's files, read-only under /retinue/NAME, and its notify socket if it has one.

    Each socket is mounted on its own, read-only (sending to a unix socket needs no write access
    to the mount): the container gets nothing of the host's state directory that it could fill
    or shape, and never the control socket beside them. Every file mount comes before every
    socket, as creates have always written them.
    """
    # A sibling-placed service has no files in the app: its image is its own root.
    placed = [s for s in services if s.get("placement", "exec") == "exec"]
    mounts = [(f"service {s['name']}", bind_mount(s["files"], service_dir(s["name"])))
              for s in placed]
    for s in placed:
        if s["ready"] == "notify":
            mounts.append((
                f"service {s['name']}",
                {
                    "destination": notify_socket(s["name"]),
                    "type": "bind",
                    "source": f"{container_dir}/{notify_socket_file(s['name'])}",
                    "options": list(NOTIFY_OPTIONS),
                },
            ))
    return Edits("services", mounts=tuple(mounts), services=tuple(s["name"] for s in services))


def init_prefix(supervised: bool, wait_ms: int) -> list[str]:
    prefix = [INIT_PATH]
    if supervised:
        prefix += ["-s", INIT_SOCKET, "-t", str(wait_ms)]
    return [*prefix, "--"]


def for_init(binary: str, container_dir: str | None = None, wait_ms: int = 0) -> Edits:
    """retinue-init as PID 1: its binary, read-only, and the supervisor's socket for it when
    there is a supervisor (`container_dir`), and the arguments put before the container's own.

    The socket is mounted alone (not its directory): the container sees that one file and
    nothing else of the state directory; the supervisor trusts only the peer that is init.
    """
    mounts = [("init", bind_mount(binary, INIT_PATH))]
    if container_dir is not None:
        mounts.append(("init", bind_mount(f"{container_dir}/{INIT_SOCKET_NAME}", INIT_SOCKET)))
    prefix = init_prefix(container_dir is not None, wait_ms)
    return Edits("init", mounts=tuple(mounts), args_prefix=("init", tuple(prefix)))


def retinue_hooks(hook_path: str, container_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """The hook entries that tell the supervisor about the container's life.

    The container's state directory is an argument, never read from annotations: a container's
    owner can set annotations, and the hook runs as root on the host.
    """
    return [
        (stage, {"path": hook_path, "args": [HOOK_ARGV0, stage, container_dir]})
        for stage in ADDED_STAGES
    ]


def for_supervisor(hook_path: str, container_dir: str) -> Edits:
    """The hooks that tell a supervisor; only for a container that has one (else they would
    answer at once: two runs of a program on every create for nothing)."""
    return Edits(
        "supervisor",
        hooks=tuple(
            ("supervisor", stage, h) for stage, h in retinue_hooks(hook_path, container_dir)
        ),
    )


def for_seccomp(rules: list[CompiledSeccompRule], listener: str) -> Edits:
    """The notify rules of the policy and of the services, sent to the seccomp agent's socket."""
    return Edits("seccomp", seccomp=tuple(rules), listener=listener)


# -- composing -----------------------------------------------------------------------------------


def compose(sources: list[Edits]) -> Edits:
    """Every source's edits in order, each field with one owner.

    Two owners of one mount destination, env name, annotation or the arguments' prefix are
    refused with both named, as NRI refuses two plugins adjusting one field; the same item asked
    twice (two rules mounting the same directory at the same place) is one item. One exception,
    kept from before edits were values: two rules may set one env name, and the later in the
    policy's order wins (its author wrote that order; tests/test_create.py pins it); `retinue
    plan` says so.
    """
    mounts: dict[str, tuple[str, dict[str, Any]]] = {}
    env: dict[str, tuple[str, str, str]] = {}
    overridden: list[tuple[str, str, str]] = []
    hooks: list[tuple[str, str, dict[str, Any]]] = []
    annotations: dict[str, tuple[str, str, str]] = {}
    prefix: tuple[str, tuple[str, ...]] | None = None
    seccomp: list[CompiledSeccompRule] = []
    listener = ""
    listener_owner = ""
    attached: list[str] = []
    services: list[str] = []
    for edits in sources:
        for owner, mount in edits.mounts:
            destination = mount["destination"]
            if destination in mounts:
                first, current = mounts[destination]
                if current != mount:
                    raise SpecError(_both(first, owner, f"mount {clip(destination)}"))
                continue
            mounts[destination] = (owner, mount)
        for owner, name, value in edits.env:
            if name in env:
                first, _, current_value = env[name]
                if current_value == value:
                    continue
                if first == owner or not (_is_rule(first) and _is_rule(owner)):
                    raise SpecError(_both(first, owner, f"set env {clip(name)}"))
                # The policy's order is a precedence its author wrote: the later rule's value,
                # in the place the first one gave the name (as creates have always done).
                overridden.append((owner, name, first))
            env[name] = (owner, name, value)
        for owner, stage, hook in edits.hooks:
            if not any(s == stage and h == hook for _, s, h in hooks):
                hooks.append((owner, stage, hook))
        for owner, key, value in edits.annotations:
            if key in annotations and annotations[key][2] != value:
                raise SpecError(_both(annotations[key][0], owner, f"set annotation {clip(key)}"))
            annotations.setdefault(key, (owner, key, value))
        if edits.args_prefix is not None:
            if prefix is not None and prefix != edits.args_prefix:
                raise SpecError(_both(prefix[0], edits.args_prefix[0], "put arguments before "
                                      "the container's own"))
            prefix = edits.args_prefix
        seccomp += edits.seccomp
        if edits.listener:
            if listener and listener != edits.listener:
                raise SpecError(_both(listener_owner, edits.source, "set the seccomp listener"))
            listener, listener_owner = edits.listener, edits.source
        attached += edits.attached
        services += edits.services
    return Edits(
        ", ".join(e.source for e in sources),
        mounts=tuple(mounts.values()),
        env=tuple(env.values()),
        hooks=tuple(hooks),
        annotations=tuple(annotations.values()),
        args_prefix=prefix,
        seccomp=tuple(seccomp),
        listener=listener,
        attached=tuple(attached),
        services=tuple(services),
        overrides=tuple(overridden),
    )


def _is_rule(owner: str) -> bool:
    return owner.startswith("rule ")


def _both(first: str, second: str, what: str) -> str:
    if first == second:
        return f"{first} asks twice to {what}, with different values"
    return f"{first} and {second} both {what}; retinue will not choose between them"


# -- applying and undoing ------------------------------------------------------------------------


def apply(
    spec: Spec, edits: Edits, notes: list[str] | None = None, *, record: bool = True
) -> Spec:
    """The spec with `edits` (composed) in it, after taking off what an earlier create added.

    Pure and idempotent: the same edits applied to their own result give that result, the
    same object. `notes`, when given, is extended with what the seccomp merge could not do as
    asked (for `plan`). `record=False` writes no annotations: for a spec retinue builds whole
    (a sibling's), which no later create edits again.
    """
    original = spec
    spec = undo(spec)
    if edits.args_prefix is not None:
        prefix = list(edits.args_prefix[1])
        # Recorded at once: where the annotations key lands in a spec that had none shows in
        # the bytes of config.json, and creates have always put it here.
        spec = wrap_init(spec, prefix) if record else _prepend_args(spec, prefix)
    added = [m for _, m in edits.mounts]
    spec = add_mounts(spec, added)
    spec = set_env(spec, [(name, value) for _, name, value in edits.env])
    spec = add_hooks(spec, [(stage, hook) for _, stage, hook in edits.hooks])
    recorded = {key: value for _, key, value in edits.annotations}
    recorded[ATTACHED_ANNOTATION] = ",".join(edits.attached)
    if edits.services:
        recorded[SERVICES_RECORD_ANNOTATION] = ",".join(edits.services)
    if added:
        recorded[MOUNTS_RECORD_ANNOTATION] = ",".join(m["destination"] for m in added)
    if record:
        spec = annotate(spec, recorded)
    # Stripping and re-adding the same edits (a retried create) must leave the spec as it was.
    if spec == original:
        spec = original
    if edits.seccomp:
        from ..seccomp import profile

        rules = list(edits.seccomp)
        spec = profile.apply(spec, rules, edits.listener, profile.metadata(rules), notes)
    return spec


def add_mounts(spec: Spec, mounts: list[dict[str, Any]]) -> Spec:
    existing = list(spec.get("mounts") or [])
    by_destination = {m.get("destination"): m for m in existing}
    changed = False
    for mount in mounts:
        current = by_destination.get(mount["destination"])
        if current == mount:
            continue
        if current is not None:
            raise SpecError(
                f"mounts: {mount['destination']} is already a mount of the container "
                f"(source {clip(str(current.get('source')))!r}); retinue will not mount over it"
            )
        existing.append(mount)
        by_destination[mount["destination"]] = mount
        changed = True
    return {**spec, "mounts": existing} if changed else spec


def set_env(spec: Spec, env: list[tuple[str, str]]) -> Spec:
    """Set variables, replacing a container's own definition in place; the administrator wins."""
    process = spec.get("process") or {}
    entries = list(process.get("env") or [])
    index = {e.partition("=")[0]: i for i, e in enumerate(entries)}
    changed = False
    for name, value in env:
        entry = f"{name}={value}"
        if name in index:
            if entries[index[name]] != entry:
                entries[index[name]] = entry
                changed = True
        else:
            index[name] = len(entries)
            entries.append(entry)
            changed = True
    if not changed:
        return spec
    return {**spec, "process": {**process, "env": entries}}


def add_hooks(spec: Spec, hooks: list[tuple[str, dict[str, Any]]]) -> Spec:
    all_hooks = dict(spec.get("hooks") or {})
    changed = False
    for stage, hook in hooks:
        entries = list(all_hooks.get(stage) or [])
        if hook in entries:
            continue
        entries.append(hook)
        all_hooks[stage] = entries
        changed = True
    return {**spec, "hooks": all_hooks} if changed else spec


def annotate(spec: Spec, values: dict[str, str]) -> Spec:
    annotations = spec.get("annotations") or {}
    if all(annotations.get(k) == v for k, v in values.items()):
        return spec
    return {**spec, "annotations": {**annotations, **values}}


def _prepend_args(spec: Spec, prefix: list[str]) -> Spec:
    """process.args = init's arguments, `--`, the container's own."""
    process = spec.get("process") or {}
    args = list(process.get("args") or [])
    if not args:
        raise SpecError("process.args: empty; there is no program for retinue-init to start")
    return {**spec, "process": {**process, "args": [*prefix, *args]}}


def wrap_init(spec: Spec, prefix: list[str]) -> Spec:
    """process.args = init's arguments, `--`, the container's own; recorded in an annotation."""
    return annotate(_prepend_args(spec, prefix), {INIT_RECORD_ANNOTATION: " ".join(prefix)})


def unwrap_init(spec: Spec) -> Spec:
    """The container's own args again, when an earlier create wrapped them in retinue-init."""
    annotations = spec.get("annotations") or {}
    recorded = annotations.get(INIT_RECORD_ANNOTATION)
    if recorded is None:
        return spec
    process = spec.get("process") or {}
    args = list(process.get("args") or [])
    prefix = recorded.split(" ")
    kept = {k: v for k, v in annotations.items() if k != INIT_RECORD_ANNOTATION}
    spec = {**spec, "annotations": kept}
    # Only our exact prefix is taken off: a container's own args are never shortened.
    if args[: len(prefix)] == prefix and prefix and prefix[0] == INIT_PATH:
        spec = {**spec, "process": {**process, "args": args[len(prefix) :]}}
    return spec


def undo(spec: Spec) -> Spec:
    """Remove the hooks, mounts and init an earlier create added (for this or another container).

    By hand, one bundle often serves several containers in turn (`runc run a`, then `run b`);
    the edits made for `a` name a's state directory. Our hooks are recognised by their argv[0];
    our mounts by the destinations recorded in an annotation, and only with our exact options,
    so a container's own mount is never taken away; our init by its recorded arguments. Env
    and the record annotations stay: apply sets them again, in place.
    """
    spec = unwrap_init(spec)
    recorded = (spec.get("annotations") or {}).get(MOUNTS_RECORD_ANNOTATION)
    mounts = spec.get("mounts") or []
    if recorded:
        ours = set(recorded.split(","))
        kept = [
            m
            for m in mounts
            if not (m.get("destination") in ours and m.get("options") in OUR_MOUNT_OPTIONS)
        ]
        if len(kept) != len(mounts):
            spec = {**spec, "mounts": kept}
    hooks = spec.get("hooks") or {}
    changed = {}
    for stage in HOOK_STAGES:
        entries = hooks.get(stage) or []
        kept_hooks = [h for h in entries if (h.get("args") or [None])[0] != HOOK_ARGV0]
        if len(kept_hooks) != len(entries):
            changed[stage] = kept_hooks
    if changed:
        spec = {**spec, "hooks": {**hooks, **changed}}
    return spec


# -- for create, plan and the tests --------------------------------------------------------------


def sources(
    rules: list[CompiledRule],
    hook_path: str,
    container_dir: str,
    services: list[CompiledService] | None = None,
    init: dict[str, Any] | None = None,
    supervised: bool | None = None,
    seccomp: list[CompiledSeccompRule] | None = None,
    listener: str = "",
) -> list[Edits]:
    """Each source's edits for one container, in the order they are composed.

    `init` ({"binary", "supervised", "wait_ms"}) makes retinue-init the container's PID 1.
    The hooks only tell a supervisor (`supervised`, by default: there are services).
    """
    out = [for_rule(rule) for rule in rules]
    if services:
        out.append(for_services(services, container_dir))
    if init is not None:
        out.append(for_init(init["binary"], container_dir if init["supervised"] else None,
                            init["wait_ms"]))
    if supervised if supervised is not None else bool(services):
        out.append(for_supervisor(hook_path, container_dir))
    if seccomp:
        out.append(for_seccomp(seccomp, listener))
    return out


def edit(
    spec: Spec,
    rules: list[CompiledRule],
    hook_path: str,
    container_dir: str,
    services: list[CompiledService] | None = None,
    init: dict[str, Any] | None = None,
    supervised: bool | None = None,
) -> Spec:
    """apply(spec, compose(sources(...))): every edit the rules and services call for."""
    return apply(spec, compose(sources(rules, hook_path, container_dir, services, init,
                                       supervised)))


# -- for `retinue plan` --------------------------------------------------------------------------


def describe(edits: Edits) -> list[str]:
    """One line per owner: "rule demo: mount /opt/x at /x; env RETINUE_DEMO=1"."""
    said: dict[str, list[str]] = {}

    def say(owner: str, what: str) -> None:
        said.setdefault(owner, []).append(what)

    for owner, m in edits.mounts:
        if m["options"] == list(NOTIFY_OPTIONS):
            say(owner, f"notify socket {m['source']} at {m['destination']}")
        else:
            say(owner, f"mount {m['source']} at {m['destination']}")
    for owner, name, value in edits.env:
        say(owner, f"env {name}={value}")
    if edits.args_prefix is not None:
        say(edits.args_prefix[0], f"args prefix {' '.join(edits.args_prefix[1])}")
    for owner, stage, hook in edits.hooks:
        say(owner, f"hook {stage} {' '.join([hook['path'], *hook['args'][1:]])}")
    for owner, key, value in edits.annotations:
        say(owner, f"annotation {key}={value}")
    if edits.seccomp:
        for rule in edits.seccomp:
            say(edits.source, f"notify {','.join(rule['syscalls'])} -> {rule['handler']}")
        say(edits.source, f"listener {edits.listener}")
    for owner, name, earlier in edits.overrides:
        say(owner, f"env {name} over {earlier}'s (the later rule in the policy wins)")
    return [f"{owner}: {'; '.join(items)}" for owner, items in said.items()]
