"""The model of runc's command line (`retinue.argv`): what the shim reads from argv.

Pure unit tests; the real-runc side of the same forms (runc really uses the bundle the model
found) is in test_create.py::test_bundle_forms_match_runc.
"""

from __future__ import annotations

import pytest
from retinue.argv import SUBCOMMANDS, RuncArgs, parse

RUNC_1_1_SUBCOMMANDS = (
    "checkpoint", "create", "delete", "events", "exec", "features", "kill", "list", "pause",
    "ps", "restore", "resume", "run", "spec", "start", "state", "update",
)


def p(*args: str) -> RuncArgs:
    return parse(["retinue-runtime", *args])


# --- global flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens",
    [
        ["--root", "/x/r"],
        ["--root=/x/r"],
        ["-root", "/x/r"],
        ["-root=/x/r"],
    ],
    ids=["--root X", "--root=X", "-root X", "-root=X"],
)
def test_root_every_form(tokens: list[str]) -> None:
    a = p(*tokens, "state", "c1")
    assert a.root == "/x/r"
    assert a.command == "state"
    assert a.container_id == "c1"


def test_root_default_is_runc_default() -> None:
    assert p("state", "c1").root == "/run/runc"


@pytest.mark.parametrize(
    ("tokens", "path", "fmt"),
    [
        (["--log", "/l.json", "--log-format", "json"], "/l.json", "json"),
        (["--log=/l.json", "--log-format=json"], "/l.json", "json"),
        (["-log", "/l", "-log-format", "text"], "/l", "text"),
        (["-log=/l", "-log-format=json"], "/l", "json"),
        ([], "", "text"),
    ],
)
def test_log_and_format(tokens: list[str], path: str, fmt: str) -> None:
    a = p(*tokens, "delete", "c1")
    assert (a.log_path, a.log_format, a.command, a.container_id) == (path, fmt, "delete", "c1")


@pytest.mark.parametrize(
    ("tokens", "name", "value"),
    [
        (["--debug"], "debug", ""),
        (["-debug"], "debug", ""),
        (["--debug=false"], "debug", "false"),
        (["--debug=true"], "debug", "true"),
        (["--systemd-cgroup"], "systemd-cgroup", ""),
        (["--systemd-cgroup=true"], "systemd-cgroup", "true"),
        (["--rootless", "auto"], "rootless", "auto"),
        (["--rootless=false"], "rootless", "false"),
        (["-rootless", "true"], "rootless", "true"),
        (["--criu", "/opt/criu"], "criu", "/opt/criu"),
        (["--criu=/opt/criu"], "criu", "/opt/criu"),
    ],
)
def test_global_flag_forms(tokens: list[str], name: str, value: str) -> None:
    """A boolean never eats the next word (the subcommand); a value flag always does."""
    a = p(*tokens, "start", "c1")
    assert a.globals[name] == value
    assert a.command == "start"
    assert a.container_id == "c1"


def test_containerd_global_line() -> None:
    """go-runc's order: [--root R] [--debug] [--log L] [--log-format json] [--systemd-cgroup]."""
    a = p(
        "--root", "/run/containerd/runc/k8s.io", "--debug", "--log", "/b/log.json",
        "--log-format", "json", "--systemd-cgroup", "--rootless=false",
        "create", "--bundle", "/b", "--pid-file", "/b/init.pid", "--console-socket", "/s.sock",
        "--no-pivot", "--no-new-keyring", "--preserve-fds", "2", "abc",
    )
    assert a.root == "/run/containerd/runc/k8s.io"
    assert (a.log_path, a.log_format) == ("/b/log.json", "json")
    assert a.command == "create"
    assert a.bundle == "/b"
    assert a.container_id == "abc"
    assert a.positionals == ["abc"]
    assert a.option("pid-file") == "/b/init.pid"
    assert a.option("console-socket") == "/s.sock"
    assert a.option("preserve-fds") == "2"
    assert "no-pivot" in a.options and "no-new-keyring" in a.options


def test_docker_create_line() -> None:
    a = p(
        "--root", "/var/run/docker/runtime-runc/moby", "--log", "/run/x/log.json",
        "--log-format", "json", "create", "--bundle", "/run/x", "--pid-file", "/run/x/init.pid",
        "0123abcd",
    )
    assert (a.root, a.command, a.bundle, a.container_id) == (
        "/var/run/docker/runtime-runc/moby", "create", "/run/x", "0123abcd",
    )


def test_global_value_flag_at_end_does_not_crash() -> None:
    a = p("--root")
    assert a.command == ""
    assert a.globals["root"] == ""


def test_double_dash_before_command() -> None:
    a = p("--root", "/r", "--", "state", "c1")
    assert (a.root, a.command, a.container_id) == ("/r", "state", "c1")


# --- version and help -------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-version", "-v", "--v"])
def test_version(flag: str) -> None:
    a = p(flag)
    assert a.command == ""
    assert flag.lstrip("-") in a.globals


@pytest.mark.parametrize("flag", ["--help", "-help", "-h", "--h"])
def test_help_flag(flag: str) -> None:
    a = p(flag)
    assert a.command == ""
    assert flag.lstrip("-") in a.globals


def test_no_arguments() -> None:
    a = p()
    assert (a.command, a.positionals, a.container_id, a.bundle) == ("", [], "", ".")


def test_help_subcommand() -> None:
    a = p("help", "create")
    assert a.command == "help"
    assert a.positionals == ["create"]


# --- every subcommand ---------------------------------------------------------------------------


def test_model_knows_every_runc_subcommand() -> None:
    assert set(RUNC_1_1_SUBCOMMANDS) <= SUBCOMMANDS


# Each subcommand as engines or people call it, with what the model must find.
SUBCOMMAND_CASES: list[tuple[list[str], str, list[str], dict[str, str]]] = [
    (["create", "--bundle", "/b", "--pid-file", "/p", "c1"], "create", ["c1"],
     {"bundle": "/b", "pid-file": "/p"}),
    (["start", "c1"], "start", ["c1"], {}),
    (["run", "-d", "--bundle", "/b", "--console-socket", "/s", "c1"], "run", ["c1"],
     {"bundle": "/b", "console-socket": "/s", "d": ""}),
    (["exec", "--detach", "--pid-file", "/p", "--process", "/proc.json", "c1"], "exec", ["c1"],
     {"detach": "", "pid-file": "/p", "process": "/proc.json"}),
    (["kill", "c1", "KILL"], "kill", ["c1", "KILL"], {}),
    (["kill", "--all", "c1", "9"], "kill", ["c1", "9"], {"all": ""}),
    (["delete", "--force", "c1"], "delete", ["c1"], {"force": ""}),
    (["delete", "-f", "c1"], "delete", ["c1"], {"f": ""}),
    (["state", "c1"], "state", ["c1"], {}),
    (["ps", "--format", "json", "c1"], "ps", ["c1"], {"format": "json"}),
    (["events", "--stats", "c1"], "events", ["c1"], {"stats": ""}),
    (["events", "--interval", "2s", "c1"], "events", ["c1"], {"interval": "2s"}),
    (["pause", "c1"], "pause", ["c1"], {}),
    (["resume", "c1"], "resume", ["c1"], {}),
    (["update", "--resources", "-", "c1"], "update", ["c1"], {"resources": "-"}),
    (["update", "-r", "/res.json", "c1"], "update", ["c1"], {"r": "/res.json"}),
    (["update", "--pids-limit", "10", "--memory", "1M", "c1"], "update", ["c1"],
     {"pids-limit": "10", "memory": "1M"}),
    (["spec", "--bundle", "/b", "--rootless"], "spec", [], {"bundle": "/b", "rootless": ""}),
    (["list", "--format", "json"], "list", [], {"format": "json"}),
    (["list", "-q"], "list", [], {"q": ""}),
    (["features"], "features", [], {}),
    (["checkpoint", "--image-path", "/img", "--leave-running", "c1"], "checkpoint", ["c1"],
     {"image-path": "/img", "leave-running": ""}),
    (["restore", "--image-path", "/img", "--bundle", "/b", "-d", "c1"], "restore", ["c1"],
     {"image-path": "/img", "bundle": "/b", "d": ""}),
]


@pytest.mark.parametrize(
    ("tokens", "command", "positionals", "options"),
    SUBCOMMAND_CASES,
    ids=[" ".join(c[0]) for c in SUBCOMMAND_CASES],
)
def test_subcommands(
    tokens: list[str], command: str, positionals: list[str], options: dict[str, str]
) -> None:
    a = p("--root", "/r", *tokens)
    assert a.command == command
    assert a.command_index == 3
    assert a.positionals == positionals
    assert a.options == options
    assert a.root == "/r"


def test_every_runc_subcommand_is_covered() -> None:
    assert {c[1] for c in SUBCOMMAND_CASES} == set(RUNC_1_1_SUBCOMMANDS)


# --- the bundle ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize(
    "tokens",
    [
        ["--bundle", "/x/b", "c1"],
        ["--bundle=/x/b", "c1"],
        ["-bundle", "/x/b", "c1"],
        ["-b", "/x/b", "c1"],
        ["-b=/x/b", "c1"],
        ["--b=/x/b", "c1"],
        ["c1", "--bundle", "/x/b"],
        ["c1", "-b", "/x/b"],
        ["c1", "-b=/x/b"],
        ["--pid-file", "/p", "c1", "--bundle", "/x/b", "--no-pivot"],
    ],
    ids=lambda t: " ".join(t),
)
def test_bundle_every_form(command: str, tokens: list[str]) -> None:
    a = p(command, *tokens)
    assert a.bundle == "/x/b"
    assert a.container_id == "c1"


@pytest.mark.parametrize("command", ["create", "run"])
def test_bundle_defaults_to_cwd(command: str) -> None:
    a = p(command, "--pid-file", "/p", "c1")
    assert a.bundle == "."
    assert a.container_id == "c1"


def test_bundle_last_one_wins() -> None:
    # Go's flag package keeps the last value; runc refuses `-b X --bundle Y` outright ("Cannot use
    # two forms of the same flag"), so that mix needs no answer here.
    assert p("create", "--bundle", "/one", "--bundle", "/two", "c1").bundle == "/two"
    assert p("create", "-b", "/one", "-b=/two", "c1").bundle == "/two"


def test_restore_bundle() -> None:
    assert p("restore", "--bundle=/b", "c1").bundle == "/b"


# --- exec and ps stop at the container id -------------------------------------------------------


def test_exec_stops_at_id() -> None:
    a = p("exec", "-e", "A=1", "--cwd", "/w", "c1", "sh", "-c", "echo --bundle x", "--detach")
    assert a.container_id == "c1"
    assert a.positionals == ["c1", "sh", "-c", "echo --bundle x", "--detach"]
    assert a.options == {"e": "A=1", "cwd": "/w"}
    assert a.bundle == "."


def test_exec_process_flags_after_id_are_the_process() -> None:
    a = p("exec", "c1", "ls", "-l", "--pid-file", "/nope")
    assert a.positionals == ["c1", "ls", "-l", "--pid-file", "/nope"]
    assert "pid-file" not in a.options


def test_exec_double_dash() -> None:
    a = p("exec", "--tty", "--", "c1", "ls")
    assert a.positionals == ["c1", "ls"]
    assert a.options == {"tty": ""}


def test_ps_stops_at_id() -> None:
    a = p("ps", "c1", "-e", "-o", "pid,comm")
    assert a.container_id == "c1"
    assert a.positionals == ["c1", "-e", "-o", "pid,comm"]
    assert a.options == {}


def test_update_stdin_dash_is_a_value_not_a_positional() -> None:
    a = p("update", "--resources", "-", "c1")
    assert a.positionals == ["c1"]


def test_argv_is_kept_unchanged() -> None:
    argv = ["retinue-runtime", "-root=/r", "create", "c1", "-b=/b"]
    a = parse(argv)
    assert a.argv is argv
    assert argv == ["retinue-runtime", "-root=/r", "create", "c1", "-b=/b"]
