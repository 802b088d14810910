"""The pure merge of NOTIFY rules into linux.seccomp (Docker's default profile included)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from retinue.errors import SpecError
from retinue.seccomp import profile

from .conftest import DATA, docker_profile

LISTENER = "/run/retinue/x/seccomp.sock"


def rule(names: list[str], args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": "r",
        "syscalls": names,
        "handler": "audit",
        "args": args or [],
        "settings": {},
        "errno": 38,
    }


MKNOD_CHR = [{"index": 1, "value": 0o170000, "valueTwo": 0o020000, "op": "SCMP_CMP_MASKED_EQ"}]


def names_with(seccomp: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in seccomp["syscalls"] if name in e["names"]]


def test_no_seccomp_section_gets_one_that_allows_everything_else() -> None:
    merged = profile.merge(None, [rule(["mount"])], LISTENER, "meta").seccomp
    assert merged == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}],
        "listenerPath": LISTENER,
        "listenerMetadata": "meta",
    }


def test_no_rules_leave_the_spec_alone() -> None:
    spec = {"linux": {"seccomp": docker_profile()}}
    assert profile.apply(spec, [], LISTENER) is spec


def test_docker_profile_merge_keeps_everything_else() -> None:
    docker = docker_profile()
    original = copy.deepcopy(docker)
    merged = profile.merge(
        docker, [rule(["mount"]), rule(["mkdir", "sysinfo"])], LISTENER, "m"
    ).seccomp
    assert docker == original  # not mutated
    # mount: refused by default (no CAP_SYS_ADMIN rule) -> now notified.
    assert names_with(merged, "mount") == [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]
    # mkdir, sysinfo: moved out of the big ALLOW rule, every other name kept in order.
    big_before, big_after = original["syscalls"][0], merged["syscalls"][0]
    assert big_after["names"] == [n for n in big_before["names"] if n not in ("mkdir", "sysinfo")]
    assert names_with(merged, "mkdir") == [
        {"names": ["mkdir", "sysinfo"], "action": "SCMP_ACT_NOTIFY"}
    ]
    # Every other rule, key and value as it was, in the same order.
    assert merged["syscalls"][1 : len(original["syscalls"])] == original["syscalls"][1:]
    assert {
        k: v for k, v in merged.items() if k not in ("syscalls", "listenerPath", "listenerMetadata")
    } == {k: v for k, v in original.items() if k != "syscalls"}
    assert merged["listenerPath"] == LISTENER and merged["listenerMetadata"] == "m"


def test_conditional_notify_keeps_the_other_calls_allowed() -> None:
    merged = profile.merge(docker_profile(), [rule(["mknod"], MKNOD_CHR)], LISTENER).seccomp
    assert "mknod" not in merged["syscalls"][0]["names"]
    rules = names_with(merged, "mknod")
    notify = [e for e in rules if e["action"] == "SCMP_ACT_NOTIFY"]
    allow = [e for e in rules if e["action"] == "SCMP_ACT_ALLOW"]
    assert notify == [{"names": ["mknod"], "action": "SCMP_ACT_NOTIFY", "args": MKNOD_CHR}]
    # (mode & S_IFMT) != S_IFCHR, bit by bit: 4 bits in S_IFMT.
    assert [e["args"] for e in allow] == [
        [{"index": 1, "value": bit, "valueTwo": (~0o020000) & bit, "op": "SCMP_CMP_MASKED_EQ"}]
        for bit in (0o010000, 0o020000, 0o040000, 0o100000)
    ]

    def verdict(mode: int) -> str:
        for e in merged["syscalls"]:
            if "mknod" in e["names"] and all(
                (mode & a["value"]) == a["valueTwo"] for a in e.get("args", [])
            ):
                return str(e["action"])
        return str(merged["defaultAction"])

    assert verdict(0o020644) == "SCMP_ACT_NOTIFY"  # character device
    assert verdict(0o010644) == "SCMP_ACT_ALLOW"  # fifo
    assert verdict(0o060644) == "SCMP_ACT_ALLOW"  # block device: the kernel decides
    assert verdict(0o100644) == "SCMP_ACT_ALLOW"  # regular file


def test_negations_of_every_comparison() -> None:
    for op, neg in (
        ("SCMP_CMP_EQ", "SCMP_CMP_NE"),
        ("SCMP_CMP_LT", "SCMP_CMP_GE"),
        ("SCMP_CMP_LE", "SCMP_CMP_GT"),
    ):
        for a, b in ((op, neg), (neg, op)):
            args = [{"index": 0, "value": 5, "op": a}]
            merged = profile.merge(docker_profile(), [rule(["mkdir"], args)], LISTENER).seccomp
            allow = [e for e in names_with(merged, "mkdir") if e["action"] == "SCMP_ACT_ALLOW"]
            assert allow == [
                {
                    "names": ["mkdir"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 5, "op": b}],
                }
            ]


def test_explicit_refusal_wins_and_is_reported() -> None:
    merged = profile.merge(docker_profile(), [rule(["clone3", "mount"])], LISTENER)
    assert names_with(merged.seccomp, "clone3") == [
        e for e in docker_profile()["syscalls"] if "clone3" in e["names"]
    ]
    assert names_with(merged.seccomp, "mount")[0]["names"] == ["mount"]
    assert merged.notes == [
        "clone3: the container's profile refuses it (SCMP_ACT_ERRNO); it stays refused and "
        "is not notified"
    ]


def test_conditional_allow_in_the_profile_is_reported() -> None:
    merged = profile.merge(
        docker_profile(),
        [rule(["personality"], [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}])],
        LISTENER,
    )
    assert any(
        "personality: the container's profile allows it under argument conditions" in n
        for n in merged.notes
    )


def test_unconditional_notify_also_leaves_conditional_allow_rules() -> None:
    merged = profile.merge(docker_profile(), [rule(["personality"])], LISTENER).seccomp
    assert names_with(merged, "personality") == [
        {"names": ["personality"], "action": "SCMP_ACT_NOTIFY"}
    ]


def test_merge_is_idempotent() -> None:
    rules = [rule(["mount"]), rule(["mknod"], MKNOD_CHR), rule(["mkdir"])]
    for start in (None, docker_profile(), {"defaultAction": "SCMP_ACT_ALLOW"}):
        once = profile.merge(start, rules, LISTENER, "m").seccomp
        twice = profile.merge(once, rules, LISTENER, "m").seccomp
        assert twice == once
        spec = {"ociVersion": "1.0.2", "linux": {"seccomp": once}}
        assert profile.apply(spec, rules, LISTENER, "m") is spec


def test_unknown_keys_and_order_survive() -> None:
    seccomp = {
        "zzz": 1,
        "defaultAction": "SCMP_ACT_ERRNO",
        "flags": [],
        "syscalls": [
            {"names": ["mkdir", "read"], "action": "SCMP_ACT_ALLOW", "comment": "keep me"}
        ],
    }
    merged = profile.merge(seccomp, [rule(["mkdir"])], LISTENER).seccomp
    assert list(merged) == [
        "zzz",
        "defaultAction",
        "flags",
        "syscalls",
        "listenerPath",
        "listenerMetadata",
    ]
    assert merged["syscalls"][0] == {
        "names": ["read"],
        "action": "SCMP_ACT_ALLOW",
        "comment": "keep me",
    }


def test_someone_elses_listener_is_an_error() -> None:
    seccomp = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/other.sock",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }
    with pytest.raises(SpecError, match=r"already sends notifications to '/run/other\.sock'"):
        profile.merge(seccomp, [rule(["mount"])], LISTENER)


def test_notify_without_a_listener_is_an_error() -> None:
    # runc refuses it; merged, the container's own NOTIFY calls would reach retinue's agent.
    for listener in ("", None):
        seccomp = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
        }
        if listener is not None:
            seccomp["listenerPath"] = listener
        with pytest.raises(SpecError, match=r"linux\.seccomp\.listenerPath: .*SCMP_ACT_NOTIFY"):
            profile.merge(seccomp, [rule(["mount"])], LISTENER)


def test_two_conditional_rules_on_an_allowed_syscall_are_an_error() -> None:
    with pytest.raises(SpecError, match=r"more than one rule with argument conditions"):
        profile.merge(
            docker_profile(),
            [
                rule(["mknod"], MKNOD_CHR),
                rule(
                    ["mknod"],
                    [
                        {
                            "index": 1,
                            "value": 0o170000,
                            "valueTwo": 0o060000,
                            "op": "SCMP_CMP_MASKED_EQ",
                        }
                    ],
                ),
            ],
            LISTENER,
        )


def test_the_captured_docker_spec_merges() -> None:
    path = DATA / "docker-config.json"
    if not path.exists():
        pytest.skip("no captured Docker config.json")
    spec = json.loads(path.read_text())
    merged = profile.apply(spec, [rule(["mount"])], LISTENER)
    assert merged is not spec
    assert {k: v for k, v in merged.items() if k != "linux"} == {
        k: v for k, v in spec.items() if k != "linux"
    }
    assert {k: v for k, v in merged["linux"].items() if k != "seccomp"} == {
        k: v for k, v in spec["linux"].items() if k != "seccomp"
    }


def test_a_listener_path_too_long_for_a_unix_socket_is_an_error() -> None:
    long_path = "/run/retinue/" + "x" * 100 + "/seccomp.sock"
    with pytest.raises(SpecError, match=r"longer than a unix socket path may be \(107 bytes\)"):
        profile.merge(None, [rule(["mount"])], long_path)


def test_metadata_fingerprints_the_rules() -> None:
    a, b = [rule(["mount"])], [rule(["mkdir"])]
    assert profile.metadata(a) == profile.metadata([dict(a[0])])
    assert profile.metadata(a) != profile.metadata(b)
    assert profile.metadata(a).startswith("retinue-seccomp/1 ")
