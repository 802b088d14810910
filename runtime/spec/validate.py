"""The fields of config.json that retinue edits or copies, checked once something attaches.

`bundle.validate` checks what every create reads to select; this module, imported only when a
container gets something, checks the rest (mounts and hooks are edited, linux.seccomp merged into,
the process' capabilities and rlimits copied to its services), each error naming its JSON path.
Most creates select nothing and never load it: runc reads those specs unchanged.
"""

from __future__ import annotations

from ..errors import SpecError
from .bundle import MAX_DEPTH, _case_variants, _expect, _object, _optional_strings, check_rewritable

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

# Every hook stage of the OCI runtime spec (edits.HOOK_STAGES: the ones retinue adds).
OCI_HOOK_STAGES = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)
CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
MOUNT_FIELDS = ("destination", "source", "options", "type")
HOOK_FIELDS = ("path", "args")
LINUX_FIELDS = ("seccomp",)
SECCOMP_FIELDS = ("defaultAction", "syscalls", "listenerPath", "listenerMetadata")
SYSCALL_FIELDS = ("names", "action", "args")


def _objects(
    errors: list[str], path: str, value: object, fields: tuple[str, ...]
) -> list[tuple[str, dict[str, Any]]]:
    """The (path, object) items of a list of objects; null counts as an empty list."""
    if value is None or not _expect(errors, path, value, list, "a list of objects"):
        return []
    assert isinstance(value, list)
    out = []
    for i, item in enumerate(value):
        at = f"{path}[{i}]"
        if _expect(errors, at, item, dict, "an object"):
            _case_variants(errors, at, item, fields)
            out.append((at, item))
    return out


def _depth(obj: object) -> int:
    """How deeply lists and objects nest in obj (1 for a flat object), without recursion."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        for item in value.values() if isinstance(value, dict) else value:  # type: ignore[attr-defined]
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))
    return deepest


def validate(spec: dict[str, Any]) -> list[str]:
    """Problems with the fields read or edited once something attaches (after bundle.validate).

    A spec deeper than MAX_DEPTH is refused here: the edits compare and re-encode it whole.
    """
    depth = _depth(spec)
    if depth > MAX_DEPTH:
        return [f"nested {depth} levels deep, more than retinue reads ({MAX_DEPTH})"]
    errors: list[str] = []
    process = spec["process"]
    terminal = process.get("terminal")
    if terminal is not None:
        _expect(errors, "process.terminal", terminal, bool, "true or false")
    for key in ("apparmorProfile", "selinuxLabel"):
        if process.get(key) is not None:
            _expect(errors, f"process.{key}", process[key], str, "a string")
    caps = process.get("capabilities")
    if _object(errors, "process.capabilities", caps, CAP_SETS):
        assert isinstance(caps, dict)
        for name in CAP_SETS:
            _optional_strings(errors, f"process.capabilities.{name}", caps.get(name))
    _objects(errors, "process.rlimits", process.get("rlimits"), ())
    for at, mount in _objects(errors, "mounts", spec.get("mounts"), MOUNT_FIELDS):
        _expect(errors, f"{at}.destination", mount.get("destination"), str, "a string")
        for key in ("source", "type"):
            if mount.get(key) is not None:
                _expect(errors, f"{at}.{key}", mount[key], str, "a string")
        _optional_strings(errors, f"{at}.options", mount.get("options"))
    hooks = spec.get("hooks")
    if _object(errors, "hooks", hooks, OCI_HOOK_STAGES):
        assert isinstance(hooks, dict)
        for stage in OCI_HOOK_STAGES:
            entries = hooks.get(stage)
            if entries is None:
                continue
            if _expect(errors, f"hooks.{stage}", entries, list, "a list of hooks"):
                for i, hook in enumerate(entries):
                    at = f"hooks.{stage}[{i}]"
                    if _expect(errors, at, hook, dict, "an object"):
                        _case_variants(errors, at, hook, HOOK_FIELDS)
                        _expect(errors, f"{at}.path", hook.get("path"), str, "a string")
                        _optional_strings(errors, f"{at}.args", hook.get("args"))
    linux = spec.get("linux")
    if _object(errors, "linux", linux, LINUX_FIELDS):
        assert isinstance(linux, dict)
        seccomp = linux.get("seccomp")
        if _object(errors, "linux.seccomp", seccomp, SECCOMP_FIELDS):
            assert isinstance(seccomp, dict)
            for key in ("defaultAction", "listenerPath", "listenerMetadata"):
                if seccomp.get(key) is not None:
                    _expect(errors, f"linux.seccomp.{key}", seccomp[key], str, "a string")
            syscalls = seccomp.get("syscalls")
            for at, entry in _objects(
                errors, "linux.seccomp.syscalls", syscalls, SYSCALL_FIELDS
            ):
                _optional_strings(errors, f"{at}.names", entry.get("names"))
                if entry.get("action") is not None:
                    _expect(errors, f"{at}.action", entry["action"], str, "a string")
                if entry.get("args") is not None:
                    _objects(errors, f"{at}.args", entry["args"], ())
    return errors


def check(path: str, spec: dict[str, Any]) -> None:
    """SpecError naming the file and every problem `validate` finds, or every key given twice
    (retinue writes the spec back: runc would no longer see the ones it drops)."""
    check_rewritable(path, spec)
    errors = validate(spec)
    if errors:
        raise SpecError("; ".join(f"{path}: {e}" for e in errors))


