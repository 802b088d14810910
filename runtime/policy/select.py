"""Which of the administrator's rules select a container: a pure function of the spec."""

from __future__ import annotations

from .. import layout
from ..errors import clip

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from ..compiled import Compiled, CompiledRule, CriNames


_WILDCARDS = frozenset("*?[")


def fnmatchcase(name: str, pattern: str) -> bool:
    """fnmatch.fnmatchcase; a pattern without wildcards matches only itself, and fnmatch (which
    imports re and enum: ~7 ms on every create) is imported only for one that has them."""
    if _WILDCARDS.isdisjoint(pattern):
        return name == pattern
    from fnmatch import fnmatchcase as glob

    return glob(name, pattern)


def spec_env(spec: dict[str, Any]) -> dict[str, str]:
    """The container's environment as a mapping; the last definition of a name wins, as in exec."""
    out: dict[str, str] = {}
    for entry in (spec.get("process") or {}).get("env") or []:
        name, _, value = entry.partition("=")
        out[name] = value
    return out


# What the CRI marks a pod's sandbox (pause) container with: containerd, then CRI-O.
SANDBOX_MARKS = (
    ("io.kubernetes.cri.container-type", "sandbox"),
    ("io.kubernetes.cri-o.ContainerType", "sandbox"),
)
# The CRI's name of an app container within its pod: containerd, then CRI-O.
CONTAINER_NAME_KEYS = ("io.kubernetes.cri.container-name", "io.kubernetes.container.name")


def sandbox_mark(spec: dict[str, Any]) -> str:
    """`NAME=sandbox` when the spec is a pod's sandbox container, else ""."""
    annotations = spec.get("annotations") or {}
    for name, value in SANDBOX_MARKS:
        if annotations.get(name) == value:
            return f"{name}={value}"
    return ""


def matches(rule: CompiledRule, spec: dict[str, Any]) -> bool:
    """Every condition the rule gives must hold; `always` holds for every container.

    `sandbox` is a condition every rule has: a pod's sandbox only for a rule with
    `when.sandbox = true`, and then only sandboxes (the pod annotations the CRI passes through
    reach its sandbox too, and a pause container with services keeps the pod from starting).
    """
    if rule["sandbox"] != bool(sandbox_mark(spec)):
        return False
    if rule["always"]:
        return True
    annotations = spec.get("annotations") or {}
    for name, pattern in rule["annotations"]:
        if name not in annotations or not fnmatchcase(annotations[name], pattern):
            return False
    if rule["env_match"]:
        env = spec_env(spec)
        for name, pattern in rule["env_match"]:
            if name not in env or not fnmatchcase(env[name], pattern):
                return False
    if rule["command"]:
        args = (spec.get("process") or {}).get("args") or []
        command = args[0] if args else ""
        if not any(fnmatchcase(command, pattern) for pattern in rule["command"]):
            return False
    return True


def select(rules: list[CompiledRule], spec: dict[str, Any]) -> list[CompiledRule]:
    return [rule for rule in rules if matches(rule, spec)]


SERVICES_ANNOTATION = layout.SERVICES_ANNOTATION
SERVICES_ENV = "RETINUE_SERVICES"


def container_name(spec: dict[str, Any]) -> str:
    """The container's name within its pod, when the CRI created it; else ""."""
    annotations = spec.get("annotations") or {}
    for key in CONTAINER_NAME_KEYS:
        value = annotations.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


# The CRI's pod namespace and name: containerd, then CRI-O.
POD_KEYS = (
    ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name"),
    ("io.kubernetes.pod.namespace", "io.kubernetes.pod.name"),
)


def cri_names(spec: dict[str, Any]) -> CriNames:
    """{"pod": "NAMESPACE/NAME", "name": CONTAINER} for a container the CRI created, else {}.

    For `retinue status` and `logs`: a Kubernetes user knows these, not the container's id.
    """
    annotations = spec.get("annotations") or {}
    name = container_name(spec)
    for ns_key, pod_key in POD_KEYS:
        namespace, pod = annotations.get(ns_key), annotations.get(pod_key)
        if _k8s_name(namespace) and _k8s_name(pod) and (not name or _k8s_name(name)):
            return {"pod": f"{namespace}/{pod}", "name": name}
    return {}


def _k8s_name(value: object) -> bool:
    """A name as Kubernetes allows them (DNS subdomain characters): anyone with `ctr` can set
    these annotations, and they end up in an administrator's terminal and in name lookups."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 253
        and value.isascii()
        and all(c.isalnum() or c in "-._" for c in value)
    )


def requested_services(spec: dict[str, Any]) -> tuple[list[str], str]:
    """The services the container asks for itself, and where it asked (for error messages).

    The first one present wins, whole: the annotation `io.retinue.services.NAME` for the CRI
    container named NAME (an empty value opts it out of the pod-wide choice), then
    `io.retinue.services` (on a pod, every app container), then env RETINUE_SERVICES (dockerd
    20.10 can only set env). A pod's sandbox asks for nothing.
    """
    annotations = spec.get("annotations") or {}
    if sandbox_mark(spec):
        return [], ""
    name = container_name(spec)
    per_container = f"{SERVICES_ANNOTATION}.{name}" if name else ""
    if per_container and per_container in annotations:
        raw, source = annotations[per_container], f"annotation {per_container}"
    elif SERVICES_ANNOTATION in annotations:
        raw, source = annotations[SERVICES_ANNOTATION], f"annotation {SERVICES_ANNOTATION}"
    else:
        env = spec_env(spec)
        if SERVICES_ENV not in env:
            return [], ""
        raw, source = env[SERVICES_ENV], f"env {SERVICES_ENV}"
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return list(dict.fromkeys(names)), source


def attached_services(
    compiled: Compiled, rules: list[CompiledRule], spec: dict[str, Any]
) -> list[str]:
    """Every service the container gets, dependencies included, in dependency order.

    Raises ValueError (with a message for the container's owner) when it asks for a service the
    administrator did not define or did not make selectable.
    """
    defined = compiled["services"]
    mandatory = [name for rule in rules for name in rule["services"]]
    requested, source = requested_services(spec)
    if not mandatory and not requested:
        return []  # the common case, on every create: no graph to build
    from . import graph

    for name in requested:
        if name not in defined or not defined[name]["selectable"]:
            names = ", ".join(sorted(n for n, s in defined.items() if s["selectable"])) or "none"
            raise ValueError(
                f"the container asks for service {clip(name)!r} ({source}), which is not defined "
                f"(selectable services: {names})"
            )
    g = {n: (s["requires"], s["wants"], s["after"]) for n, s in defined.items()}
    chosen = graph.closure(g, [*mandatory, *requested])
    layers = graph.start_layers(g, chosen)
    return [name for layer in layers for name in layer]


# What a needle may contain so that, in a config.json without `\u` and `\/` escapes, a key or
# env entry that has it also has it byte for byte: JSON must escape `"`, `\` and control
# characters, and may escape any other character only as `\uXXXX` (or `/` as `\/`).
_NEEDLE_CHARS = frozenset(map(chr, range(0x20, 0x7F))) - {'"', "\\"}


def selection_strings(compiled: Compiled) -> list[str] | None:
    """Strings at least one of which occurs in the text of every spec something attaches to.

    The sh launcher passes a create through without Python when none occurs in config.json
    (`[]`: nothing can attach at all). None when no such list exists: a rule that can select a
    container by its command alone, or any container.

    A rule selects only containers that have each of its annotations and env names, so any one
    of those is a witness; the services a container asks for itself need the selection
    annotation (or a longer one it prefixes) or env name.
    """
    rules, services = compiled["rules"], compiled["services"]
    if not rules and not services:
        return []  # attach.plan is never reached (shim.create)
    out = [SERVICES_ANNOTATION, SERVICES_ENV]
    for rule in rules:
        if rule["always"]:
            return None
        witnesses = [name for name, _ in rule["annotations"]] + [n for n, _ in rule["env_match"]]
        if not witnesses:
            return None
        out.append(witnesses[0])
    if not all(s and _NEEDLE_CHARS.issuperset(s) for s in out):
        return None
    return list(dict.fromkeys(out))
