"""The pure merge of NOTIFY rules into a container's `linux.seccomp`.

The container's profile (Docker's default one, or the user's) is merged into, never replaced:

- a notified syscall leaves every unconditional ALLOW/LOG rule that names it (libseccomp lets
  such a rule shadow a NOTIFY rule with argument conditions, whatever the order: checked with
  runc 1.1.5 and libseccomp 2.5.4). When the NOTIFY rule has conditions, the calls they do not
  select must stay allowed: the merge adds ALLOW rules for the complement, one per negated
  condition (a masked_eq is negated bit by bit);
- a syscall the profile refuses explicitly (an unconditional ERRNO/KILL/TRAP rule) stays refused:
  the container's profile is the stricter word, and the merge says so in its notes;
- where the default action would refuse it, the NOTIFY rule is what lets it reach the agent;
- everything else (order of rules and names, unknown keys, architectures, flags) is kept as it
  was; `listenerPath` and `listenerMetadata` are set.

A spec with no seccomp section gets one that allows everything else. Merging twice gives the
same result as merging once. Nothing here imports more than the standard library's typing: the
shim calls it on the create path with the compiled (plain-data) rules.
"""

from __future__ import annotations

from ..errors import SpecError

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from ..compiled import CompiledSeccompRule

# sun_path holds 108 bytes with the NUL; runc (Go) and the agent both need the path to fit.
MAX_LISTENER_PATH = 107
METADATA_PREFIX = "retinue-seccomp/1 "

NOTIFY = "SCMP_ACT_NOTIFY"
ALLOWING = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG"})
REFUSING = frozenset(
    {
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
    }
)
ARCHITECTURES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def digest(rules: list[CompiledSeccompRule]) -> str:
    """A short fingerprint of the compiled rules."""
    import hashlib
    import json

    text = json.dumps(rules, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def metadata(rules: list[CompiledSeccompRule]) -> str:
    """`listenerMetadata`: which rules the filter was made for, checked by the agent.

    The agent takes its rules from the administrator's configuration, never from here (whoever
    writes config.json chooses this string); a mismatch is logged.
    """
    return METADATA_PREFIX + digest(rules)


def notify_entries(rules: list[CompiledSeccompRule]) -> list[dict[str, Any]]:
    """The OCI syscall entries of compiled rules (`config.compile_rules`), in order."""
    out: list[dict[str, Any]] = []
    for rule in rules:
        entry: dict[str, Any] = {"names": list(rule["syscalls"]), "action": NOTIFY}
        if rule.get("args"):
            entry["args"] = [dict(a) for a in rule["args"]]
        out.append(entry)
    return out


class Merged:
    """The merged `linux.seccomp`, and what the merge could not do as asked (for `plan`)."""

    def __init__(self, seccomp: dict[str, Any], notes: list[str]) -> None:
        self.seccomp = seccomp
        self.notes = notes


def merge(
    seccomp: dict[str, Any] | None,
    rules: list[CompiledSeccompRule],
    listener_path: str,
    metadata: str = "",
) -> Merged:
    """`seccomp` with the rules' NOTIFY entries merged in. Never mutates its argument.

    Four phases, each a pure function: guard the container's profile, drop the calls it
    refuses, complement the conditional rules, rebuild the list.
    """
    wanted = notify_entries(rules)
    if wanted and len(listener_path.encode()) > MAX_LISTENER_PATH:
        raise SpecError(
            f"linux.seccomp.listenerPath: {listener_path!r} is longer than a unix socket path "
            f"may be ({MAX_LISTENER_PATH} bytes)"
        )
    if not wanted:
        return Merged(seccomp or {}, [])
    if seccomp is None:
        return Merged(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": list(ARCHITECTURES),
                "syscalls": wanted,
                "listenerPath": listener_path,
                "listenerMetadata": metadata,
            },
            [],
        )
    syscalls = _guard(seccomp, listener_path)
    entries, unconditional, conditional, dropped = _drop_refused(
        wanted, _unconditional(syscalls, REFUSING)
    )
    complements, complemented, partial = _complements(
        entries, syscalls, _unconditional(syscalls, ALLOWING), unconditional, conditional
    )
    merged = {
        **seccomp,
        "syscalls": _rebuild(syscalls, entries, complements, unconditional, complemented),
        "listenerPath": listener_path,
        "listenerMetadata": metadata,
    }
    return Merged(merged, [*dropped, *partial])


def _guard(seccomp: Any, listener_path: str) -> list[dict[str, Any]]:
    """Phase 1: the container's profile, refused unless retinue's listener can join it. Returns
    its syscall entries."""
    if not isinstance(seccomp, dict):
        raise SpecError("linux.seccomp: expected an object")
    current = seccomp.get("listenerPath") or ""
    syscalls = seccomp.get("syscalls") or []
    if not isinstance(syscalls, list) or not all(isinstance(e, dict) for e in syscalls):
        raise SpecError("linux.seccomp.syscalls: expected a list of objects")
    notifies = any(e.get("action") == NOTIFY for e in syscalls)
    if current and current != listener_path and notifies:
        raise SpecError(
            f"linux.seccomp.listenerPath: the container's profile already sends notifications "
            f"to {current!r}; retinue cannot add its own"
        )
    # runc refuses this profile; taking it as ours would send the container's own NOTIFY
    # syscalls to retinue's agent, which has no handler for them.
    if not current and notifies:
        raise SpecError(
            "linux.seccomp.listenerPath: the container's profile uses SCMP_ACT_NOTIFY but "
            "names no listener (runc refuses it); retinue cannot add its own"
        )
    if seccomp.get("defaultAction") == NOTIFY:
        raise SpecError("linux.seccomp.defaultAction: SCMP_ACT_NOTIFY is refused by runc")
    return syscalls


def _drop_refused(
    wanted: list[dict[str, Any]], refused: dict[str, str]
) -> tuple[list[dict[str, Any]], set[str], dict[str, int], list[str]]:
    """Phase 2: the rules' NOTIFY entries without the calls the profile refuses outright (they
    stay refused). Returns the entries, the names notified unconditionally, how many
    conditional entries notify each name, and a note per dropped name."""
    notes: list[str] = []
    unconditional: set[str] = set()
    conditional: dict[str, int] = {}
    entries: list[dict[str, Any]] = []
    for entry in wanted:
        names = []
        for name in entry["names"]:
            if name in refused:
                notes.append(
                    f"{name}: the container's profile refuses it ({refused[name]}); "
                    "it stays refused and is not notified"
                )
            else:
                names.append(name)
        if not names:
            continue
        if "args" not in entry:
            unconditional.update(names)
        else:
            for name in names:
                conditional[name] = conditional.get(name, 0) + 1
        entries.append({**entry, "names": names})
    return entries, unconditional, conditional, notes


def _complements(
    entries: list[dict[str, Any]],
    syscalls: list[dict[str, Any]],
    allowed: dict[str, str],
    unconditional: set[str],
    conditional: dict[str, int],
) -> tuple[list[dict[str, Any]], set[str], list[str]]:
    """Phase 3: the calls a conditional NOTIFY rule does not select keep the verdict they had,
    through entries with the negated conditions. Returns those entries, the names they cover,
    and a note per name the profile allows only under conditions of its own."""
    notes: list[str] = []
    complements: list[dict[str, Any]] = []
    complemented: set[str] = set()
    for entry in entries:
        if "args" not in entry:
            continue
        by_action: dict[str, list[str]] = {}
        for name in entry["names"]:
            if name in allowed and name not in unconditional:
                if conditional[name] > 1:
                    raise SpecError(
                        f"linux.seccomp: {name} is allowed by the container's profile and "
                        "notified by more than one rule with argument conditions; retinue "
                        "cannot keep the other calls allowed (use one rule for it)"
                    )
                by_action.setdefault(allowed[name], []).append(name)
                complemented.add(name)
        for action, names in by_action.items():
            for cond in entry["args"]:
                for negated in _negate(cond):
                    complements.append({"names": names, "action": action, "args": [negated]})
        for name in entry["names"]:
            if name not in allowed and _allowed_conditionally(syscalls, name):
                notes.append(
                    f"{name}: the container's profile allows it under argument conditions; a "
                    "call those select is allowed, not notified"
                )
    return complements, complemented, notes


def _rebuild(
    syscalls: list[dict[str, Any]],
    entries: list[dict[str, Any]],
    complements: list[dict[str, Any]],
    unconditional: set[str],
    complemented: set[str],
) -> list[dict[str, Any]]:
    """Phase 4: the profile's entries in their order, the names now notified taken out of its
    allowing entries (an entry with conditions of its own loses only the unconditionally
    notified ones), then the complements and the NOTIFY entries not already there."""
    out: list[dict[str, Any]] = []
    for entry in syscalls:
        names = entry.get("names")
        if entry.get("action") in ALLOWING and isinstance(names, list):
            leaving = unconditional if entry.get("args") else unconditional | complemented
            kept = [n for n in names if n not in leaving]
            if len(kept) != len(names):
                if not kept:
                    continue
                entry = {**entry, "names": kept}
        out.append(entry)
    for entry in [*complements, *entries]:
        if entry not in out:
            out.append(entry)
    return out


def _unconditional(syscalls: list[dict[str, Any]], actions: frozenset[str]) -> dict[str, str]:
    """Syscalls named by a rule without argument conditions whose action is one of `actions`,
    with the first such rule's action."""
    found: dict[str, str] = {}
    for entry in syscalls:
        action = entry.get("action")
        if action in actions and not entry.get("args"):
            for name in entry.get("names") or []:
                found.setdefault(name, str(action))
    return found


def _allowed_conditionally(syscalls: list[dict[str, Any]], name: str) -> bool:
    return any(
        e.get("action") in ALLOWING and e.get("args") and name in (e.get("names") or [])
        for e in syscalls
    )


_NEGATION = {
    "SCMP_CMP_EQ": "SCMP_CMP_NE",
    "SCMP_CMP_NE": "SCMP_CMP_EQ",
    "SCMP_CMP_LT": "SCMP_CMP_GE",
    "SCMP_CMP_GE": "SCMP_CMP_LT",
    "SCMP_CMP_LE": "SCMP_CMP_GT",
    "SCMP_CMP_GT": "SCMP_CMP_LE",
}


def _negate(cond: dict[str, Any]) -> list[dict[str, Any]]:
    """Conditions whose OR is the negation of `cond` (OCI form)."""
    op = cond["op"]
    if op in _NEGATION:
        return [{"index": cond["index"], "value": cond["value"], "op": _NEGATION[op]}]
    if op == "SCMP_CMP_MASKED_EQ":
        # (a & m) != v  <=>  some bit of m differs from v's bit.
        mask, datum = cond["value"], cond.get("valueTwo", 0)
        return [
            {"index": cond["index"], "value": bit, "valueTwo": ~datum & bit, "op": op}
            for bit in (1 << i for i in range(64))
            if mask & bit
        ]
    raise SpecError(f"linux.seccomp: unknown comparison {op!r}")


def apply(
    spec: dict[str, Any],
    rules: list[CompiledSeccompRule],
    listener_path: str,
    metadata: str = "",
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The spec with its `linux.seccomp` merged; the same object when nothing changes.

    `notes`, when given, is extended with what the merge could not do as asked (for `plan`).
    """
    if not rules:
        return spec
    linux = spec.get("linux") or {}
    if not isinstance(linux, dict):
        raise SpecError("linux: expected an object")
    merged = merge(linux.get("seccomp"), rules, listener_path, metadata)
    if notes is not None:
        notes += merged.notes
    if merged.seccomp == linux.get("seccomp"):
        return spec
    return {**spec, "linux": {**linux, "seccomp": merged.seccomp}}
