"""A model of runc's command line, as engines and people call it.

runc parses its flags with urfave/cli v1 on Go's `flag` package: one or two dashes, a value after
`=` or in the next word, global flags before the subcommand, and (for most subcommands) flags
after the positional arguments too. This module only reads argv; the shim always hands the
original argv to the lower runtime unchanged.

Imports nothing: it runs on every call.
"""

from __future__ import annotations

# Global flags that take a value (runc 1.1 `main.go`). The others are booleans (debug,
# systemd-cgroup, help/h, version/v), which urfave also accepts as `--debug=false`.
GLOBAL_VALUE_FLAGS = frozenset({"root", "log", "log-format", "criu", "rootless"})
# runc's help, as a global flag or a flag of any subcommand.
HELP_FLAGS = frozenset({"h", "help"})
# The flags that name create's and run's bundle (RuncArgs.bundle).
BUNDLE_FLAGS = frozenset({"bundle", "b"})

# Per-subcommand flags that take a value. Knowing them lets us find the container id and the
# bundle in any flag order; an unknown flag is treated as a boolean, which only matters for
# finding the id, never for what is passed on.
_CREATE_VALUES = frozenset(
    {"bundle", "b", "console-socket", "pid-file", "preserve-fds", "pidfd-socket"}
)
SUBCOMMAND_VALUE_FLAGS: dict[str, frozenset[str]] = {
    "create": _CREATE_VALUES,
    "run": _CREATE_VALUES,
    "restore": frozenset(
        {
            "bundle",
            "b",
            "console-socket",
            "pid-file",
            "image-path",
            "work-path",
            "manage-cgroups-mode",
            "empty-ns",
            "lsm-profile",
            "lsm-mount-context",
        }
    ),
    "checkpoint": frozenset(
        {
            "image-path",
            "work-path",
            "parent-path",
            "page-server",
            "manage-cgroups-mode",
            "empty-ns",
            "status-fd",
        }
    ),
    "exec": frozenset(
        {
            "console-socket",
            "pidfd-socket",
            "cwd",
            "env",
            "e",
            "user",
            "u",
            "additional-gids",
            "g",
            "process",
            "p",
            "pid-file",
            "process-label",
            "apparmor",
            "cap",
            "c",
            "preserve-fds",
            "cgroup",
        }
    ),
    "update": frozenset(
        {
            "resources",
            "r",
            "blkio-weight",
            "cpu-period",
            "cpu-quota",
            "cpu-rt-period",
            "cpu-rt-runtime",
            "cpu-share",
            "cpuset-cpus",
            "cpuset-mems",
            "kernel-memory",
            "kernel-memory-tcp",
            "memory",
            "memory-reservation",
            "memory-swap",
            "pids-limit",
            "l3-cache-schema",
            "mem-bw-schema",
            "cpu-idle",
        }
    ),
    "events": frozenset({"interval"}),
    "ps": frozenset({"format", "f"}),
    "list": frozenset({"format", "f"}),
    "spec": frozenset({"bundle", "b"}),
}
# For these, everything after the container id belongs to the process (runc sets
# SkipArgReorder), so flag scanning stops at the first positional argument.
_STOP_AT_ID = frozenset({"exec", "ps"})

SUBCOMMANDS = frozenset(
    {
        "checkpoint",
        "create",
        "delete",
        "events",
        "exec",
        "features",
        "kill",
        "list",
        "pause",
        "ps",
        "restore",
        "resume",
        "run",
        "spec",
        "start",
        "state",
        "update",
        "help",
        "h",
    }
)


class RuncArgs:
    """What the shim needs to know about one runc invocation."""

    __slots__ = (
        "argv",
        "command",
        "command_index",
        "globals",
        "options",
        "positionals",
    )

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        # Global flag name (no dashes) -> value ("" for booleans given bare).
        self.globals: dict[str, str] = {}
        self.command = ""
        self.command_index = -1
        # Subcommand flag name (no dashes) -> last value given.
        self.options: dict[str, str] = {}
        self.positionals: list[str] = []

    @property
    def root(self) -> str:
        return self.globals.get("root") or "/run/runc"

    @property
    def log_path(self) -> str:
        return self.globals.get("log", "")

    @property
    def log_format(self) -> str:
        return self.globals.get("log-format", "text")

    @property
    def container_id(self) -> str:
        return self.positionals[0] if self.positionals else ""

    @property
    def bundle(self) -> str:
        """The bundle directory as runc resolves it: `--bundle`/`-b`, else the working directory."""
        return self.options.get("bundle") or self.options.get("b") or "."

    def option(self, *names: str) -> str | None:
        for name in names:
            if name in self.options:
                return self.options[name]
        return None


def _split_flag(token: str) -> tuple[str, str | None]:
    """`--name=v` -> ("name", "v"); `-name` -> ("name", None)."""
    body = token[2:] if token.startswith("--") else token[1:]
    name, eq, value = body.partition("=")
    return name, (value if eq else None)


def parse(argv: list[str]) -> RuncArgs:
    """Parse runc's argv (argv[0] is the program). Never raises: runc reports its own errors."""
    args = RuncArgs(argv)
    n = len(argv)
    i = 1
    while i < n:
        token = argv[i]
        if token == "--" or not token.startswith("-") or token == "-":
            break
        name, value = _split_flag(token)
        if name in GLOBAL_VALUE_FLAGS and value is None:
            i += 1
            value = argv[i] if i < n else ""
        args.globals[name] = value if value is not None else ""
        i += 1
    if i < n and argv[i] == "--":
        i += 1
    if i >= n:
        return args
    args.command = argv[i]
    args.command_index = i
    value_flags = SUBCOMMAND_VALUE_FLAGS.get(args.command, frozenset())
    stop_at_id = args.command in _STOP_AT_ID
    i += 1
    while i < n:
        token = argv[i]
        if token == "--":
            args.positionals.extend(argv[i + 1 :])
            break
        if token.startswith("-") and token != "-":
            name, value = _split_flag(token)
            if name in value_flags and value is None:
                i += 1
                value = argv[i] if i < n else ""
            args.options[name] = value if value is not None else ""
        else:
            args.positionals.append(token)
            if stop_at_id:
                args.positionals.extend(argv[i + 1 :])
                break
        i += 1
    return args
