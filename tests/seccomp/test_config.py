"""Validation of the handler configuration: what cannot work is refused, with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from retinue.errors import ConfigError
from retinue.seccomp import config


def load(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "seccomp.toml"
    path.write_text(text)
    try:
        config.load(str(path))
    except ConfigError as e:
        prefix = f"{path}: "
        lines = str(e).splitlines()
        assert all(line.startswith(prefix) for line in lines), lines
        return [line[len(prefix) :] for line in lines]
    return []


def test_a_valid_file_compiles_to_plain_data(tmp_path: Path) -> None:
    text = """
[[rule]]
name = "fuse"
syscalls = ["mknod", "mknodat"]
handler = "mknod"
errno = "EPERM"
args = [{ index = 1, op = "masked_eq", mask = 0o170000, value = 0o020000 }]
settings = { allow = [{ path = "/dev/fuse", type = "c", major = 10, minor = 229 }] }
[[rule]]
syscalls = ["sysinfo"]
handler = "sysinfo"
"""
    assert load(tmp_path, text) == []
    (tmp_path / "ok.toml").write_text(text)
    rules = config.compile_rules(config.load(str(tmp_path / "ok.toml")))
    assert rules == [
        {
            "name": "fuse",
            "syscalls": ["mknod", "mknodat"],
            "handler": "mknod",
            "args": [
                {"index": 1, "value": 0o170000, "valueTwo": 0o020000, "op": "SCMP_CMP_MASKED_EQ"}
            ],
            "settings": {"allow": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]},
            "errno": 1,
        },
        {
            "name": "rule[1]",
            "syscalls": ["sysinfo"],
            "handler": "sysinfo",
            "args": [],
            "settings": {},
            "errno": 38,
        },
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[rule]]\nsyscalls = ["write"]\nhandler = "audit"\n',
            ["rule[0].syscalls[0]: runc refuses SCMP_ACT_NOTIFY on write"],
        ),
        (
            '[[rule]]\nsyscalls = ["openat"]\nhandler = "audit"\n',
            [
                "rule[0].syscalls[0]: runc-init makes openat before the container's process "
                "starts; "
                "notifying it makes `runc create` depend on the agent (and hang without it)"
            ],
        ),
        (
            '[[rule]]\nsyscalls = ["mkdirr"]\nhandler = "audit"\n',
            ["rule[0].syscalls[0]: unknown syscall 'mkdirr' (x86_64, libseccomp 2.5)"],
        ),
        (
            '[[rule]]\nsyscalls = []\nhandler = "audit"\n',
            ["rule[0].syscalls: empty; name at least one syscall"],
        ),
        ('[[rule]]\nsyscalls = ["mkdir"]\n', ["rule[0].handler: missing (required)"]),
        (
            '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "nope"\n',
            ["rule[0].handler: unknown handler 'nope' (known: audit, deny, mknod, mount, sysinfo)"],
        ),
        (
            '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "mount"\n',
            ["rule[0].syscalls[0]: handler 'mount' cannot serve mkdir (it serves mount)"],
        ),
        (
            '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "audit"\n'
            '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "deny"\n',
            ["rule[1].syscalls[0]: never reached: rule[0] already takes every mkdir"],
        ),
        (
            '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "audit"\nerrno = "EWHAT"\n',
            ["rule[0].errno: expected an errno name such as 'EPERM', got 'EWHAT'"],
        ),
        (
            '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "deny"\nsettings = { errno = "nope" }\n',
            ["rule[0].settings.errno: expected an errno name such as 'EPERM', got 'nope'"],
        ),
        (
            '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "deny"\nsettings = { colour = "red" }\n',
            ["rule[0].settings.colour: unknown key"],
        ),
        (
            '[[rule]]\nsyscalls = ["sysinfo"]\nhandler = "sysinfo"\nsettings = { a = 1 }\n',
            ["rule[0].settings: handler 'sysinfo' takes no settings, got ['a']"],
        ),
        (
            '[[rule]]\nsyscalls = ["mknod"]\nhandler = "mknod"\n'
            'settings = { allow = [{ path = "dev/fuse", type = "x", major = "10", minor = 1 }] }\n',
            ["rule[0].settings.allow[0].major: expected an integer, got a string: '10'"],
        ),
        (
            '[[rule]]\nsyscalls = ["mknod"]\nhandler = "mknod"\n'
            'settings = { allow = [{ path = "dev/fuse", type = "x", major = 5000, minor = 1 }] }\n',
            [
                "rule[0].settings.allow[0].path: expected an absolute container path, "
                "got 'dev/fuse'",
                "rule[0].settings.allow[0].type: expected 'c' (character) or 'b' (block), got 'x'",
                "rule[0].settings.allow[0].major: expected 0 to 4095, got 5000",
            ],
        ),
        (
            '[[rule]]\nsyscalls = ["mount"]\nhandler = "mount"\n'
            'settings = { filesystems = ["proc"], targets = ["/"] }\n',
            [
                "rule[0].settings.filesystems[0]: 'proc' is not one retinue can mount for a "
                "container "
                "(allowed: ramfs, tmpfs)",
                "rule[0].settings.targets[0]: mounting anywhere (/) is not allowed",
            ],
        ),
        (
            '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "audit"\n'
            'args = [{ index = 7, op = "like", value = -1 },'
            ' { index = 7, op = "eq", value = 1 }]\n',
            [
                "rule[0].args[0].index: expected 0 to 5, got 7",
                "rule[0].args[0].op: expected one of eq, ne, lt, le, gt, ge, masked_eq, got 'like'",
                "rule[0].args[0].value: expected 0 to 2**64-1, got -1",
                "rule[0].args[1].index: expected 0 to 5, got 7",
            ],
        ),
        (
            '[[rule]]\nsyscalls = ["mkdir"]\nhandler = "audit"\n'
            'args = [{ index = 1, op = "masked_eq", value = 3 }, { index = 2, op = "eq", value = 1,'
            ' mask = 1 }, { index = 3, op = "SCMP_CMP_MASKED_EQ", mask = 1, value = 2 }]\n',
            [
                "rule[0].args[0].mask: masked_eq needs a mask from 1 to 2**64-1",
                "rule[0].args[1].mask: only masked_eq takes a mask",
                "rule[0].args[2].value: 0o2 has bits outside the mask 0o1; "
                "the condition could never hold",
            ],
        ),
        (
            '[[rule]]\nsyscalls = "mkdir"\nhandler = "audit"\n',
            ["rule[0].syscalls: expected a list of strings, got a string: 'mkdir'"],
        ),
        ('[[rules]]\nsyscalls = ["mkdir"]\n', ["rules: unknown key"]),
    ],
)
def test_what_cannot_work_is_refused(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert load(tmp_path, text) == expected


def test_every_builtin_is_registered_through_the_entry_point_group() -> None:
    registry = config.handler_registry()
    assert set(registry) >= {"audit", "deny", "mknod", "mount", "sysinfo"}
    assert {name: cls.name for name, cls in registry.items()} == {n: n for n in registry}


def test_runc_init_list_holds_what_was_measured() -> None:
    measured = {
        "capget",
        "capset",
        "chdir",
        "close",
        "epoll_ctl",
        "execve",
        "faccessat2",
        "fcntl",
        "fstat",
        "fstatfs",
        "futex",
        "getcwd",
        "getdents64",
        "getpid",
        "getppid",
        "newfstatat",
        "openat",
        "prctl",
        "read",
        "rt_sigreturn",
        "setgid",
        "setgroups",
        "setuid",
    }
    assert measured <= config.RUNC_INIT_SYSCALLS
