"""Seccomp handler configuration: which syscalls go to which handler, with what settings.

A rule, in TOML (a `[[rule]]` of the standalone agent's file; the policy embeds the same table):

    [[rule]]
    name = "fuse"                    # optional, for logs
    syscalls = ["mknod", "mknodat"]
    handler = "mknod"                # an entry point of the group `retinue.seccomp`
    errno = "EPERM"                  # the answer on an internal error (default ENOSYS)
    args = [{ index = 1, op = "masked_eq", mask = 0o170000, value = 0o020000 }]
    [rule.settings]                  # the handler's own table, checked by its settings type
    allow = [{ path = "/dev/fuse", type = "c", major = 10, minor = 229 }]

`args` narrow what the kernel notifies (the same comparisons as the OCI spec: eq, ne, lt, le,
gt, ge, masked_eq; `SCMP_CMP_*` names work too). Errors read like the rest of retinue's:
`FILE: rule[0].settings.allow[1].major: expected an integer, got a string: '10'`.
"""

from __future__ import annotations

import errno as errno_mod
import functools
import importlib.metadata
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import ConfigError
from ..tomlmodel import converter, read_toml, structure, validation_messages
from .api import Handler
from .syscalls import X86_64

if TYPE_CHECKING:
    from ..compiled import CompiledSeccompRule

ENTRY_POINT_GROUP = "retinue.seccomp"

# Syscalls runc-init makes after installing the filter and before it execs the container's
# process. Measured with runc 1.1.5 (an agent notified of every syscall, 6 runs each):
# noNewPrivileges true: read close openat getdents64 fstatfs epoll_ctl getpid rt_sigreturn
# execve; false adds fcntl chdir getcwd prctl capget capset setgroups setuid setgid newfstatat
# fstat faccessat2 futex getppid. The rest is what runc-init's Go runtime may do at any moment
# (signals, scheduler, memory, timers, threads) and the older forms of the same calls. A NOTIFY
# rule on any of them makes `runc create` wait for the agent: if the agent does not answer, the
# container never starts.
RUNC_INIT_SYSCALLS = frozenset(
    {
        "read",
        "write",
        "close",
        "openat",
        "getdents64",
        "fstatfs",
        "epoll_ctl",
        "getpid",
        "rt_sigreturn",
        "execve",
        "fcntl",
        "chdir",
        "fchdir",
        "getcwd",
        "prctl",
        "capget",
        "capset",
        "setgroups",
        "setuid",
        "setgid",
        "setresuid",
        "setresgid",
        "newfstatat",
        "fstat",
        "faccessat2",
        "faccessat",
        "access",
        "open",
        "stat",
        "lstat",
        "futex",
        "getppid",
        "gettid",
        "getuid",
        "getgid",
        "geteuid",
        "getegid",
        "umask",
        "keyctl",
        "rt_sigaction",
        "rt_sigprocmask",
        "sigaltstack",
        "tgkill",
        "mmap",
        "munmap",
        "madvise",
        "mprotect",
        "brk",
        "nanosleep",
        "clock_gettime",
        "sched_yield",
        "epoll_pwait",
        "epoll_create1",
        "clone",
        "clone3",
        "exit",
        "exit_group",
        "getrlimit",
        "prlimit64",
        "pipe2",
        "dup3",
        "select",
        "pselect6",
    }
)

OPS = {
    "eq": "SCMP_CMP_EQ",
    "ne": "SCMP_CMP_NE",
    "lt": "SCMP_CMP_LT",
    "le": "SCMP_CMP_LE",
    "gt": "SCMP_CMP_GT",
    "ge": "SCMP_CMP_GE",
    "masked_eq": "SCMP_CMP_MASKED_EQ",
}
U64 = (1 << 64) - 1


@attrs.frozen
class ArgCondition:
    """The syscall is notified only if argument `index` compares true (AND across conditions)."""

    index: int
    op: str
    value: int
    # Only with masked_eq: notified when (arg & mask) == value.
    mask: int = 0


def _empty_settings() -> dict[str, Any]:
    return {}


@attrs.frozen
class SeccompRule:
    syscalls: list[str]
    handler: str
    name: str = ""
    args: list[ArgCondition] = attrs.field(factory=list)
    settings: dict[str, Any] = attrs.field(factory=_empty_settings)
    errno: str = "ENOSYS"


@attrs.frozen
class SeccompConfig:
    """The standalone agent's file: a list of `[[rule]]`."""

    rule: list[SeccompRule] = attrs.field(factory=list)


# ---------------------------------------------------------------------------------------------


@functools.cache
def handler_registry() -> dict[str, type[Handler]]:
    """Every handler registered in the entry-point group, by name."""
    found: dict[str, type[Handler]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as e:
            raise ConfigError(
                f"seccomp handler {ep.name!r} ({ep.value}) cannot be loaded: {e}"
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, Handler)):
            raise ConfigError(
                f"seccomp handler {ep.name!r} ({ep.value}) is not a retinue.seccomp.api.Handler"
            )
        found[ep.name] = cls
    return found


def errno_number(name: str) -> int | None:
    code = getattr(errno_mod, name, None) if name.isupper() and name.startswith("E") else None
    return code if isinstance(code, int) and code in errno_mod.errorcode else None


def structure_settings(cls: type[Handler], raw: dict[str, Any], at: str) -> Any:
    """The handler's settings as its own type; ConfigError naming `at.settings.key`."""
    errors = _settings_errors(cls, raw, f"{at}.settings", [])
    if errors:
        raise ConfigError("\n".join(errors))
    return _structured(cls, raw)


def _structured(cls: type[Handler], raw: dict[str, Any]) -> Any:
    return None if cls.settings_type is None else converter().structure(raw, cls.settings_type)


def _settings_errors(
    cls: type[Handler], raw: dict[str, Any], at: str, syscalls: list[str]
) -> list[str]:
    if cls.settings_type is None:
        if raw:
            return [f"{at}: handler {cls.name!r} takes no settings, got {sorted(raw)}"]
        return []
    try:
        settings = _structured(cls, raw)
    except Exception as e:
        return [
            f"{at}.{m}" if not m.startswith("(top level)") else f"{at}{m[11:]}"
            for m in validation_messages(e)
        ]
    return [f"{at}.{m}" for m in cls.check(settings, syscalls)]


def check_rules(rules: list[SeccompRule], at: str = "rule") -> list[str]:
    """Everything that cannot work, as `at[i].key: message` lines."""
    errors: list[str] = []
    registry = handler_registry()
    takes_all: dict[str, int] = {}
    for i, rule in enumerate(rules):
        here = f"{at}[{i}]"
        if not rule.syscalls:
            errors.append(f"{here}.syscalls: empty; name at least one syscall")
        for j, name in enumerate(rule.syscalls):
            where = f"{here}.syscalls[{j}]"
            if name not in X86_64:
                errors.append(f"{where}: unknown syscall {name!r} (x86_64, libseccomp 2.5)")
            elif name == "write":
                errors.append(f"{where}: runc refuses SCMP_ACT_NOTIFY on write")
            elif name in RUNC_INIT_SYSCALLS:
                errors.append(
                    f"{where}: runc-init makes {name} before the container's process starts; "
                    "notifying it makes `runc create` depend on the agent (and hang without it)"
                )
            if name in rule.syscalls[:j]:
                errors.append(f"{where}: {name!r} is listed twice")
            if name in takes_all and name not in rule.syscalls[:j]:
                errors.append(
                    f"{where}: never reached: {at}[{takes_all[name]}] already takes every {name}"
                )
        if not rule.args:
            for name in rule.syscalls:
                takes_all.setdefault(name, i)
        errors += _check_args(rule.args, f"{here}.args")
        if errno_number(rule.errno) is None:
            errors.append(
                f"{here}.errno: expected an errno name such as 'EPERM', got {rule.errno!r}"
            )
        cls = registry.get(rule.handler)
        if cls is None:
            known = ", ".join(sorted(registry)) or "none installed"
            errors.append(f"{here}.handler: unknown handler {rule.handler!r} (known: {known})")
            continue
        if cls.syscalls is not None:
            for j, name in enumerate(rule.syscalls):
                if name not in cls.syscalls:
                    errors.append(
                        f"{here}.syscalls[{j}]: handler {rule.handler!r} cannot serve {name} "
                        f"(it serves {', '.join(sorted(cls.syscalls))})"
                    )
        errors += _settings_errors(cls, rule.settings, f"{here}.settings", rule.syscalls)
    return errors


def _check_args(args: list[ArgCondition], at: str) -> list[str]:
    errors: list[str] = []
    if len(args) > 6:
        errors.append(f"{at}: at most 6 conditions, got {len(args)}")
    seen: set[int] = set()
    for k, cond in enumerate(args):
        here = f"{at}[{k}]"
        if not 0 <= cond.index <= 5:
            errors.append(f"{here}.index: expected 0 to 5, got {cond.index}")
        elif cond.index in seen:
            # libseccomp 2.5 takes one comparison per argument and rule.
            errors.append(f"{here}.index: argument {cond.index} is already compared in this rule")
        seen.add(cond.index)
        if _op(cond.op) is None:
            errors.append(f"{here}.op: expected one of {', '.join(OPS)}, got {cond.op!r}")
        if not 0 <= cond.value <= U64:
            errors.append(f"{here}.value: expected 0 to 2**64-1, got {cond.value}")
        if _op(cond.op) == "SCMP_CMP_MASKED_EQ":
            if not 0 < cond.mask <= U64:
                errors.append(f"{here}.mask: masked_eq needs a mask from 1 to 2**64-1")
            elif cond.value & ~cond.mask:
                errors.append(
                    f"{here}.value: {cond.value:#o} has bits outside the mask {cond.mask:#o}; "
                    "the condition could never hold"
                )
        elif cond.mask:
            errors.append(f"{here}.mask: only masked_eq takes a mask")
    return errors


def _op(op: str) -> str | None:
    if op in OPS:
        return OPS[op]
    return op if op in OPS.values() else None


def oci_args(args: list[ArgCondition]) -> list[dict[str, Any]]:
    """The OCI form: for masked_eq runc takes the mask as `value`, the datum as `valueTwo`."""
    out = []
    for cond in args:
        op = _op(cond.op) or cond.op
        if op == "SCMP_CMP_MASKED_EQ":
            out.append({"index": cond.index, "value": cond.mask, "valueTwo": cond.value, "op": op})
        else:
            out.append({"index": cond.index, "value": cond.value, "op": op})
    return out


def compile_rules(rules: list[SeccompRule] | SeccompConfig) -> list[CompiledSeccompRule]:
    """Plain data (builtins only) for the shim's profile merge and the agent's routes."""
    if isinstance(rules, SeccompConfig):
        rules = rules.rule
    return [
        {
            "name": rule.name or f"rule[{i}]",
            "syscalls": list(rule.syscalls),
            "handler": rule.handler,
            "args": oci_args(rule.args),
            "settings": rule.settings,
            "errno": errno_number(rule.errno) or errno_mod.ENOSYS,
        }
        for i, rule in enumerate(rules)
    ]


def load(path: str) -> SeccompConfig:
    """The standalone agent's TOML file, validated; ConfigError lists every problem."""
    cfg: SeccompConfig = structure(read_toml(path), SeccompConfig, path)
    errors = check_rules(cfg.rule)
    if errors:
        raise ConfigError("\n".join(f"{path}: {e}" for e in errors))
    return cfg
