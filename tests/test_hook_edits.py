"""Which hooks a create adds: createRuntime and poststop, for a supervisor only.

Without a supervisor the hooks would have nothing to tell (two program runs on every create for
nothing); poststart only took note, and runc 1.1 runs it at the end of `create`. Hooks an earlier
version wrote (poststart included) are taken off a reused bundle; a container's own are kept.
"""

from __future__ import annotations

from typing import Any

from retinue.spec import edits

SVC = {"name": "idle", "files": "/f", "ready": "started"}
RULE: dict[str, Any] = {"name": "m", "mounts": [("/src", "/retinue/m")], "env": [("A", "1")]}
OWN = {"path": "/bin/true", "args": ["true", "own"]}


def ours(spec: dict[str, Any]) -> dict[str, list[list[str]]]:
    return {
        stage: [h["args"] for h in entries if h["args"][0] == "retinue-hook"]
        for stage, entries in (spec.get("hooks") or {}).items()
        if any(h["args"][0] == "retinue-hook" for h in entries)
    }


def test_a_supervisor_gets_create_runtime_and_poststop() -> None:
    spec = {"process": {"args": ["sh"]}, "hooks": {"poststop": [OWN]}}
    once = edits.edit(spec, [], "/h", "/s/c1", [SVC])
    assert ours(once) == {
        "createRuntime": [["retinue-hook", "createRuntime", "/s/c1"]],
        "poststop": [["retinue-hook", "poststop", "/s/c1"]],
    }
    assert once["hooks"]["poststop"][0] == OWN
    assert edits.edit(once, [], "/h", "/s/c1", [SVC]) is once
    other = edits.edit(once, [], "/h", "/s/c2", [SVC])
    assert ours(other) == {
        "createRuntime": [["retinue-hook", "createRuntime", "/s/c2"]],
        "poststop": [["retinue-hook", "poststop", "/s/c2"]],
    }
    # seccomp handlers alone also make a supervisor (attach.plan says so).
    assert ours(edits.edit(spec, [RULE], "/h", "/s/c1", [], supervised=True)) == ours(once)


def test_nothing_supervised_gets_no_hook() -> None:
    spec = {"process": {"args": ["sh"], "env": []}, "hooks": {"poststop": [OWN]}}
    edited = edits.edit(spec, [RULE], "/h", "/s/c1")
    assert edited["hooks"] == {"poststop": [OWN]}
    assert [m["destination"] for m in edited["mounts"]] == ["/retinue/m"]
    assert edited["process"]["env"] == ["A=1"]


def test_an_earlier_version_s_hooks_are_taken_off() -> None:
    old = {
        stage: [OWN, {"path": "/h", "args": ["retinue-hook", stage, "/s/old"]}]
        for stage in ("createRuntime", "poststart", "poststop")
    }
    spec = {"process": {"args": ["sh"], "env": []}, "hooks": old}
    supervised = edits.edit(spec, [], "/h", "/s/new", [SVC])
    assert supervised["hooks"]["poststart"] == [OWN]
    assert ours(supervised) == {
        "createRuntime": [["retinue-hook", "createRuntime", "/s/new"]],
        "poststop": [["retinue-hook", "poststop", "/s/new"]],
    }
    plain = edits.edit(spec, [RULE], "/h", "/s/new")
    assert ours(plain) == {}
    assert plain["hooks"] == {stage: [OWN] for stage in old}


def test_null_or_absent_hooks_are_filled_in_place() -> None:
    for variant in ("null", "absent"):
        spec: dict[str, Any] = {"ociVersion": "1.0.2", "hooks": None, "process": {"args": ["sh"]}}
        if variant == "absent":
            del spec["hooks"]
        edited = edits.edit(spec, [], "/h", "/s/c1", [SVC])
        assert sorted(edited["hooks"]) == ["createRuntime", "poststop"], variant
        order = list(spec)
        assert list(edited)[: len(order)] == order, variant


def test_only_retinue_s_own_code_runs_without_docstrings_and_asserts() -> None:
    from retinue.host import spawn

    assert "-OO" in spawn.python_flags({"services": [SVC], "seccomp": []})
    # A seccomp handler may be anyone's plugin, which may rely on either.
    assert "-OO" not in spawn.python_flags({"services": [], "seccomp": [{"handler": "x"}]})
