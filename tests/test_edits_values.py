"""Edits as values: each source's edits, composed with their owners, applied and undone.

Pure functions on dicts: no runc here (tests/test_create.py and tests/test_hook_edits.py check
the same edits through real creates).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from retinue import layout, planfile
from retinue.errors import SpecError
from retinue.spec import edits
from retinue.spec.edits import Edits

RULE_A: Any = {"name": "a", "mounts": [("/opt/x", "/x")], "env": [("X", "1")]}
RULE_B: Any = {"name": "b", "mounts": [("/opt/y", "/x")], "env": [("X", "2")]}
WEB: Any = {"name": "web", "files": "/srv/web", "ready": "notify", "placement": "exec"}
SIDE: Any = {"name": "side", "files": "", "ready": "tcp", "placement": "container"}
SPEC: Any = {
    "ociVersion": "1.0.2",
    "process": {"args": ["sh", "-c", "true"], "env": ["PATH=/bin", "X=own"]},
    "root": {"path": "rootfs"},
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
               {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}],
    "hooks": {"poststop": [{"path": "/own-hook"}]},
    "annotations": {"owner": "kept"},
}


def rule(name: str, mounts: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
         env: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()) -> Any:
    return {"name": name, "mounts": list(mounts), "env": list(env)}


def conflict(sources: list[Edits]) -> str:
    with pytest.raises(SpecError) as e:
        edits.compose(sources)
    return str(e.value)


# --- compose: one owner per field -----------------------------------------------------------


def test_two_rules_mounting_one_destination_are_both_named() -> None:
    # Before edits were values this failed at apply, blaming the container's owner:
    # "mounts: /x is already a mount of the container (source '/opt/x')".
    message = conflict([edits.for_rule(RULE_A), edits.for_rule(RULE_B)])
    assert message == "rule a and rule b both mount /x; retinue will not choose between them"


def test_a_rule_mounting_where_a_service_lives_names_both() -> None:
    clash = rule("b", mounts=[("/opt/other", "/retinue/web")])
    message = conflict([edits.for_rule(clash), edits.for_services([WEB], "/s/c1")])
    assert message == (
        "rule b and service web both mount /retinue/web; retinue will not choose between them"
    )
    # And the same the other way round: the first owner is named first.
    message = conflict([edits.for_services([WEB], "/s/c1"), edits.for_rule(clash)])
    assert message.startswith("service web and rule b both mount /retinue/web")


def test_a_rule_mounting_over_init_or_a_notify_socket_names_both() -> None:
    over_init = rule("c", mounts=[("/opt/init", layout.INIT_PATH)])
    message = conflict([edits.for_rule(over_init), edits.for_init("/lib/retinue-init")])
    assert message.startswith(f"rule c and init both mount {layout.INIT_PATH};")
    over_socket = rule("d", mounts=[("/opt/s", "/run/retinue/web.sock")])
    message = conflict([edits.for_rule(over_socket), edits.for_services([WEB], "/s/c1")])
    assert message.startswith("rule d and service web both mount /run/retinue/web.sock;")


def test_env_set_by_a_rule_and_another_source_names_both() -> None:
    other = Edits("service web", env=(("service web", "X", "3"),))
    message = conflict([edits.for_rule(RULE_A), other])
    assert message == "rule a and service web both set env X; retinue will not choose between them"


def test_two_rules_setting_one_env_name_keep_the_policy_order() -> None:
    """The one precedence the administrator wrote: the later rule wins (test_create pins it
    through a real create); the composition says whose value it replaced."""
    composed = edits.compose([edits.for_rule(rule("a", env=[("X", "1"), ("Y", "y")])),
                              edits.for_rule(rule("b", env=[("X", "2")]))])
    assert composed.env == (("rule b", "X", "2"), ("rule a", "Y", "y"))
    assert composed.overrides == (("rule b", "X", "rule a"),)
    edited = edits.apply(SPEC, composed)
    assert edited["process"]["env"] == ["PATH=/bin", "X=2", "Y=y"]


def test_one_rule_setting_one_env_name_twice_says_so() -> None:
    twice = Edits("rule a", env=(("rule a", "X", "1"), ("rule a", "X", "2")))
    assert conflict([twice]).startswith("rule a asks twice to set env X, with different values")


def test_two_prefixes_for_the_args_name_both() -> None:
    other = Edits("wrapper", args_prefix=("wrapper", ("/w", "--")))
    message = conflict([edits.for_init("/lib/retinue-init"), other])
    assert message.startswith("init and wrapper both put arguments before the container's own")


def test_two_annotations_of_one_key_name_both() -> None:
    one = Edits("rule a", annotations=(("rule a", "k", "1"),))
    two = Edits("rule b", annotations=(("rule b", "k", "2"),))
    assert conflict([one, two]).startswith("rule a and rule b both set annotation k;")


def test_one_rule_asking_twice_says_so() -> None:
    twice = rule("a", mounts=[("/opt/x", "/x"), ("/opt/y", "/x")])
    assert conflict([edits.for_rule(twice)]).startswith(
        "rule a asks twice to mount /x, with different values"
    )


def test_the_same_item_asked_by_two_sources_is_one_item() -> None:
    composed = edits.compose([edits.for_rule(rule("a", [("/opt/x", "/x")], [("X", "1")])),
                              edits.for_rule(rule("b", [("/opt/x", "/x")], [("X", "1")]))])
    assert [m["destination"] for _, m in composed.mounts] == ["/x"]
    assert composed.env == (("rule a", "X", "1"),)
    assert composed.attached == ("a", "b")


def test_compose_keeps_the_sources_order_and_each_items_owner() -> None:
    sources = edits.sources(
        [RULE_A], "/h", "/s/c1", [WEB, SIDE],
        {"binary": "/lib/retinue-init", "supervised": True, "wait_ms": 7000},
    )
    assert [s.source for s in sources] == ["rule a", "services", "init", "supervisor"]
    composed = edits.compose(sources)
    assert [(owner, m["destination"]) for owner, m in composed.mounts] == [
        ("rule a", "/x"),
        ("service web", "/retinue/web"),  # the sidecar has no files in the app
        ("service web", "/run/retinue/web.sock"),
        ("init", layout.INIT_PATH),
        ("init", layout.INIT_SOCKET),
    ]
    assert composed.services == ("web", "side")
    assert composed.args_prefix == (
        "init", (layout.INIT_PATH, "-s", layout.INIT_SOCKET, "-t", "7000", "--")
    )
    assert [(owner, stage) for owner, stage, _ in composed.hooks] == [
        ("supervisor", "createRuntime"), ("supervisor", "poststop")
    ]


# --- apply and undo ---------------------------------------------------------------------------

CASES = {
    "rule": [edits.for_rule(rule("a", [("/opt/x", "/x")], [("NEW", "1")]))],
    "services": [edits.for_services([WEB, SIDE], "/s/c1"), edits.for_supervisor("/h", "/s/c1")],
    "init": [edits.for_init("/lib/retinue-init", "/s/c1", 4000)],
    "all": edits.sources(
        [rule("a", [("/opt/x", "/x")], [("X", "admin")])], "/h", "/s/c1", [WEB],
        {"binary": "/lib/retinue-init", "supervised": True, "wait_ms": 4000},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_apply_is_pure_idempotent_and_appends(name: str) -> None:
    composed = edits.compose(CASES[name])
    pristine = copy.deepcopy(SPEC)
    edited = edits.apply(SPEC, composed)
    assert pristine == SPEC  # never mutated
    assert edits.apply(edited, composed) is edited  # a retried create changes nothing
    # Append-only, never re-sorted: the container's own mounts stay first, in their order.
    assert edited["mounts"][:2] == SPEC["mounts"]
    assert [m["destination"] for m in edited["mounts"][2:]] == [
        m["destination"] for _, m in composed.mounts
    ]
    assert edited["hooks"]["poststop"][0] == {"path": "/own-hook"}
    assert edited["annotations"]["owner"] == "kept"


@pytest.mark.parametrize("name", list(CASES))
def test_undo_takes_back_what_apply_added(name: str) -> None:
    composed = edits.compose(CASES[name])
    edited = edits.apply(SPEC, composed)
    undone = edits.undo(edited)
    assert undone["mounts"] == SPEC["mounts"]
    assert undone["process"]["args"] == SPEC["process"]["args"]
    assert {k: v for k, v in undone["hooks"].items() if v} == SPEC["hooks"]
    assert layout.INIT_RECORD_ANNOTATION not in undone["annotations"]
    # Apply again gives the same spec (equal; the init record's key may move to the end: a
    # retried create never writes that, apply hands back the spec it was given).
    assert edits.apply(undone, composed) == edited


def test_undo_then_apply_for_another_container_moves_every_path() -> None:
    for_c1 = edits.apply(SPEC, edits.compose(CASES["all"]))
    for_c2 = edits.apply(for_c1, edits.compose(edits.sources(
        [rule("a", [("/opt/x", "/x")], [("X", "admin")])], "/h", "/s/c2", [WEB],
        {"binary": "/lib/retinue-init", "supervised": True, "wait_ms": 4000},
    )))
    assert "/s/c1" not in json.dumps(for_c2)
    assert for_c2["process"]["args"].count("--") == 1


def test_undo_of_a_spec_retinue_never_edited_is_that_spec() -> None:
    assert edits.undo(SPEC) is SPEC


def test_apply_refuses_to_mount_over_the_containers_own_mount() -> None:
    over = edits.compose([edits.for_rule(rule("a", [("/opt/t", "/tmp")]))])
    with pytest.raises(SpecError, match="mounts: /tmp is already a mount of the container"):
        edits.apply(SPEC, over)


def test_apply_without_a_record_for_a_spec_built_whole() -> None:
    base = {"process": {"args": ["svc"]}, "mounts": []}
    wrapped = edits.apply(base, edits.for_init("/lib/retinue-init"), record=False)
    assert wrapped == {
        "process": {"args": [layout.INIT_PATH, "--", "svc"]},
        "mounts": [edits.bind_mount("/lib/retinue-init", layout.INIT_PATH)],
    }


# --- what `retinue plan` prints ----------------------------------------------------------------


def test_each_sources_edits_in_words() -> None:
    demo = edits.for_rule(rule("demo", [("/opt/x", "/x")], [("RETINUE_DEMO", "1")]))
    assert edits.describe(demo) == ["rule demo: mount /opt/x at /x; env RETINUE_DEMO=1"]
    assert edits.describe(edits.for_services([WEB], "/s/c1")) == [
        "service web: mount /srv/web at /retinue/web; "
        "notify socket /s/c1/notify/web.sock at /run/retinue/web.sock"
    ]
    assert edits.describe(edits.for_init("/lib/retinue-init", "/s/c1", 4000)) == [
        "init: mount /lib/retinue-init at /.retinue/init; "
        "mount /s/c1/init.sock at /.retinue/init.sock; "
        "args prefix /.retinue/init -s /.retinue/init.sock -t 4000 --"
    ]
    assert edits.describe(edits.for_supervisor("/h", "/s/c1")) == [
        "supervisor: hook createRuntime /h createRuntime /s/c1; hook poststop /h poststop /s/c1"
    ]


# --- the names and plan.json ---------------------------------------------------------------------


def test_names_kept_in_step_come_from_layout() -> None:
    from retinue import control
    from retinue.hooks import hook
    from retinue.supervisor import initlink

    assert hook.SOCKET_NAME == control.SOCKET_NAME == layout.CONTROL_SOCKET
    assert initlink.SOCKET_NAME == layout.INIT_SOCKET_NAME
    assert f"/.retinue/{layout.INIT_SOCKET_NAME}" == layout.INIT_SOCKET


def test_plan_file_round_trip(tmp_path: Any) -> None:
    plan: Any = {"id": "c1", "lower": "/usr/bin/runc", "services": []}
    planfile.write(str(tmp_path), plan)
    assert (tmp_path / layout.PLAN).stat().st_mode & 0o777 == 0o600
    assert planfile.load(str(tmp_path)) == plan
    assert planfile.recorded(str(tmp_path)) == plan
    with pytest.raises(FileExistsError):  # only into a directory being built
        planfile.write(str(tmp_path), plan)
    (tmp_path / layout.PLAN).write_text("[1]")
    assert planfile.recorded(str(tmp_path)) == {}
    (tmp_path / layout.PLAN).write_text("{")
    assert planfile.recorded(str(tmp_path)) == {}
    assert planfile.recorded(str(tmp_path / "gone")) == {}
