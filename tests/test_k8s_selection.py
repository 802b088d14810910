"""Kubernetes-aware selection, on config.json files as containerd's CRI writes them
(tests/data/cri-*-config.json: a pod's sandbox and one app container, with the pod annotations
io.retinue.services=web and io.retinue.services.sidecar= passed through by `pod_annotations`).

A pod's sandbox (pause) container gets nothing unless a rule asks for sandboxes; a pod
annotation chooses services for every app container, or for one by its CRI name."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from retinue.cli.admin import main
from retinue.config import settings as config
from retinue.policy import select as policy

DATA = Path(__file__).resolve().parent / "data"
ConfigFactory = Callable[..., Path]
SANDBOX = json.loads((DATA / "cri-sandbox-config.json").read_text())
APP = json.loads((DATA / "cri-app-config.json").read_text())
SERVICES = ("web", "sshd", "pause-agent")


def with_annotations(spec: dict[str, Any], **changes: str | None) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    for key, value in changes.items():
        name = key.replace("__", ".").replace("_", "-")
        if value is None:
            out["annotations"].pop(name, None)
        else:
            out["annotations"][name] = value
    return out


def ann(**kw: str | None) -> dict[str, str | None]:
    """Annotation names spelled as keywords: `.` is `__`, `-` is `_`."""
    return kw


@pytest.fixture
def etc(make_config: ConfigFactory, tmp_path: Path) -> Callable[[str], Path]:
    def make(policy_text: str = "") -> Path:
        cfg = make_config(policy_text, f'state_dir = "{tmp_path}/state"\n')
        for name in SERVICES:
            (cfg.parent / "files" / name).mkdir(parents=True, exist_ok=True)
            script = cfg.parent / "files" / name / "run.sh"
            script.write_text("#!/bin/sh\nexec sleep 1000\n")
            script.chmod(0o755)
            (cfg.parent / "services" / f"{name}.toml").write_text(
                f'files = "files/{name}"\ncommand = ["run.sh"]\n'
            )
        return cfg

    return make


def plan(cfg: Path, spec: dict[str, Any], tmp_path: Path) -> tuple[int, str, Path]:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(spec, indent="\t"))
    r = CliRunner().invoke(main, ["plan", "--config", str(cfg), str(bundle)])
    return r.exit_code, r.output, bundle / "config.json"


def attached(cfg: Path, spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(rules that select the spec, services it gets), as create computes them."""
    compiled = config.compile_config(config.load(str(cfg)), "runc", "/hook")
    rules = policy.select(compiled["rules"], spec)
    return [r["name"] for r in rules], policy.attached_services(compiled, rules, spec)


# --- the sandbox ---------------------------------------------------------------------------


def test_the_fixtures_are_what_containerd_cri_marks() -> None:
    a, s = APP["annotations"], SANDBOX["annotations"]
    assert s["io.kubernetes.cri.container-type"] == "sandbox"
    assert a["io.kubernetes.cri.container-type"] == "container"
    assert a["io.kubernetes.cri.container-name"] == "app"
    assert "io.kubernetes.cri.container-name" not in s
    for key in ("sandbox-id", "sandbox-name", "sandbox-namespace", "sandbox-uid"):
        assert a[f"io.kubernetes.cri.{key}"] == s[f"io.kubernetes.cri.{key}"]
    assert a["io.kubernetes.cri.image-name"]
    assert policy.sandbox_mark(SANDBOX) == "io.kubernetes.cri.container-type=sandbox"
    assert policy.sandbox_mark(APP) == ""


def test_sandbox_gets_nothing_from_always_nor_from_the_pod_annotation(
    etc: Callable[[str], Path], tmp_path: Path
) -> None:
    """The issue's one-line reproduction: `plan` said `# services: web` for the pause container."""
    cfg = etc('[[attach]]\nname = "all"\nwhen.always = true\nservices = ["sshd"]\n')
    assert attached(cfg, SANDBOX) == ([], [])
    code, out, path = plan(cfg, SANDBOX, tmp_path)
    assert code == 0, out
    assert out == (
        f"{path}: a pod's sandbox container (io.kubernetes.cri.container-type=sandbox): passed "
        "through untouched; only a rule with when.sandbox = true selects a sandbox (none here), "
        "and the pod's io.retinue.services annotations are for its app containers\n"
    )
    # The app container of the same pod gets both.
    assert attached(cfg, APP) == (["all"], ["sshd", "web"])


def test_sandbox_env_and_annotation_rules_skip_it(etc: Callable[[str], Path]) -> None:
    cfg = etc(
        '[[attach]]\nname = "by-annotation"\n'
        'when.annotations = { "io.kubernetes.cri.sandbox-namespace" = "shop" }\n'
        'services = ["sshd"]\n'
        '[[attach]]\nname = "by-command"\nwhen.command = ["/pause"]\nservices = ["sshd"]\n'
    )
    sandbox = copy.deepcopy(SANDBOX)
    sandbox["process"]["env"].append("RETINUE_SERVICES=web")
    assert attached(cfg, sandbox) == ([], [])
    assert attached(cfg, APP) == (["by-annotation"], ["sshd", "web"])


def test_crio_sandbox_is_recognised(etc: Callable[[str], Path]) -> None:
    cfg = etc('[[attach]]\nname = "all"\nwhen.always = true\nservices = ["sshd"]\n')
    crio = copy.deepcopy(SANDBOX)
    crio["annotations"] = {
        "io.kubernetes.cri-o.ContainerType": "sandbox",
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.name": "web-1",
        "io.retinue.services": "web",
    }
    assert policy.sandbox_mark(crio) == "io.kubernetes.cri-o.ContainerType=sandbox"
    assert attached(cfg, crio) == ([], [])


def test_a_sandbox_rule_selects_sandboxes_only(
    etc: Callable[[str], Path], tmp_path: Path
) -> None:
    cfg = etc(
        '[[attach]]\nname = "pause-tools"\nwhen.sandbox = true\nservices = ["pause-agent"]\n'
        '[[attach]]\nname = "shop-sandboxes"\nwhen.sandbox = true\n'
        'when.annotations = { "io.kubernetes.cri.sandbox-namespace" = "shop" }\n'
        '[[attach]]\nname = "other-sandboxes"\nwhen.sandbox = true\n'
        'when.annotations = { "io.kubernetes.cri.sandbox-namespace" = "kube-*" }\n'
    )
    # The pod's own request (io.retinue.services=web) still does not reach its sandbox.
    assert attached(cfg, SANDBOX) == (["pause-tools", "shop-sandboxes"], ["pause-agent"])
    assert attached(cfg, APP) == ([], ["web"])
    code, out, _ = plan(cfg, SANDBOX, tmp_path)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:3] == [
        "# rules: pause-tools, shop-sandboxes",
        "# sandbox: io.kubernetes.cri.container-type=sandbox, selected by when.sandbox = true; "
        "it asks for nothing",
        "# services: pause-agent",
    ]


def test_sandbox_true_is_a_condition_for_check(etc: Callable[[str], Path]) -> None:
    cfg = etc('[[attach]]\nname = "s"\nwhen.sandbox = true\n')
    assert config.load(str(cfg)).policy.attach[0].when.sandbox is True


def test_sandbox_must_be_a_boolean(etc: Callable[[str], Path]) -> None:
    cfg = etc('[[attach]]\nname = "s"\nwhen.sandbox = "yes"\n')
    with pytest.raises(config.ConfigError, match=r"attach\[0\]\.when\.sandbox"):
        config.load(str(cfg))


# --- per pod and per container ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "env", "expected", "source"),
    [
        (ann(), None, ["web"], "annotation io.retinue.services"),
        (ann(io__retinue__services__app="sshd"), None, ["sshd"],
         "annotation io.retinue.services.app"),
        # Empty: this container opts out of the pod-wide choice.
        (ann(io__retinue__services__app=""), None, [], "annotation io.retinue.services.app"),
        # Another container's annotation does not apply.
        (ann(io__retinue__services__db="sshd"), None, ["web"], "annotation io.retinue.services"),
        # The pod annotation wins over the container's env; without it, env chooses.
        (ann(), "sshd", ["web"], "annotation io.retinue.services"),
        (ann(io__retinue__services=None), "sshd", ["sshd"], "env RETINUE_SERVICES"),
        (ann(io__retinue__services=None, io__retinue__services__app="web"), "sshd", ["web"],
         "annotation io.retinue.services.app"),
    ],
    ids=["pod-wide", "per-container", "opt-out", "other-container", "pod-over-env", "env",
         "per-container-over-env"],
)
def test_which_request_wins(
    etc: Callable[[str], Path],
    changes: dict[str, str | None],
    env: str | None,
    expected: list[str],
    source: str,
) -> None:
    cfg = etc()
    spec = with_annotations(APP, **changes)
    if env is not None:
        spec["process"]["env"].append(f"RETINUE_SERVICES={env}")
    assert policy.requested_services(spec) == (expected, source)
    assert attached(cfg, spec)[1] == expected


def test_crio_container_name(etc: Callable[[str], Path]) -> None:
    spec = {"annotations": {"io.kubernetes.container.name": "app",
                            "io.kubernetes.cri-o.ContainerType": "container",
                            "io.retinue.services": "web", "io.retinue.services.app": "sshd"}}
    assert policy.requested_services(spec) == (["sshd"], "annotation io.retinue.services.app")


def test_an_undefined_per_container_service_names_its_annotation(
    etc: Callable[[str], Path], tmp_path: Path
) -> None:
    cfg = etc()
    spec = with_annotations(APP, io__retinue__services__app="nope")
    code, out, _ = plan(cfg, spec, tmp_path)
    assert code == 1
    assert ("the container asks for service 'nope' (annotation io.retinue.services.app), which "
            "is not defined (selectable services: pause-agent, sshd, web)") in out


def test_plan_says_where_the_request_came_from(
    etc: Callable[[str], Path], tmp_path: Path
) -> None:
    cfg = etc()
    code, out, _ = plan(cfg, with_annotations(APP, io__retinue__services__app="sshd"), tmp_path)
    assert code == 0, out
    assert out.splitlines()[:3] == [
        "# rules: (none)", "# services: sshd",
        "# asked for: sshd (annotation io.retinue.services.app)",
    ]


def test_cri_names() -> None:
    assert policy.cri_names(APP) == {"pod": "shop/web-6d4b8f7c9-x2k7q", "name": "app"}
    assert policy.cri_names(SANDBOX) == {"pod": "shop/web-6d4b8f7c9-x2k7q", "name": ""}
    assert policy.cri_names({"annotations": {"io.kubernetes.pod.namespace": "a",
                                             "io.kubernetes.pod.name": "b",
                                             "io.kubernetes.container.name": "c"}}) == {
        "pod": "a/b", "name": "c"}
    assert policy.cri_names({"process": {}}) == {}


def test_check_says_which_rules_select_sandboxes(etc: Callable[[str], Path]) -> None:
    cfg = etc('[[attach]]\nname = "pause-tools"\nwhen.sandbox = true\nservices = ["pause-agent"]\n'
              '[[attach]]\nname = "all"\nwhen.always = true\n')
    r = CliRunner().invoke(main, ["check", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "  pause-tools: 0 mounts, 0 env, services pause-agent, pod sandboxes only" in lines
    assert "  all: 0 mounts, 0 env" in lines


@pytest.mark.parametrize("bad", ["a/b", "x\x1b[2J", "a b", "é", "n" * 254])
def test_cri_names_that_kubernetes_would_refuse_are_not_shown(bad: str) -> None:
    for key in ("io.kubernetes.cri.sandbox-name", "io.kubernetes.cri.sandbox-namespace",
                "io.kubernetes.cri.container-name"):
        spec = with_annotations(APP)
        spec["annotations"][key] = bad
        assert policy.cri_names(spec) == {}, key
