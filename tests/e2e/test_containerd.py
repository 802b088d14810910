"""`ctr run --runc-binary retinue-runtime` against a private containerd 1.6."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import capture
import engines
import pytest
import support
from click.testing import CliRunner
from retinue.cli.admin import main
from support import DEMO_TEXT

pytestmark = pytest.mark.containerd

SHOW = (
    'echo "greeting=$RETINUE_GREETING"; '
    "cat /retinue/demo/README 2>/dev/null || echo no-demo; "
    "touch /retinue/demo/probe 2>/dev/null && echo writable || echo read-only"
)
ATTACH = {"io.retinue.test/attach": "yes"}


def test_plain_container_passes_through(
    containerd: engines.Containerd, shim: str, ctr_id: str
) -> None:
    result = containerd.run(ctr_id, "sh", "-c", SHOW, runc_binary=shim, rm=True,
                            annotations={"io.retinue.test/attach": "no"})
    assert result.stdout == "greeting=\nno-demo\nread-only\n"
    assert result.stderr == ""


@pytest.mark.parametrize(("annotations", "env", "greeting"), [
    (ATTACH, (), "hello by annotation"),
    ({}, ("RETINUE_DEMO=1",), "hello from retinue"),
])
def test_attached_container_sees_the_mount_and_env(
    containerd: engines.Containerd, shim: str, ctr_id: str,
    annotations: dict[str, str], env: tuple[str, ...], greeting: str,
) -> None:
    result = containerd.run(ctr_id, "sh", "-c", SHOW, runc_binary=shim, rm=True,
                            annotations=annotations, env=env)
    assert result.stdout == f"greeting={greeting}\n{DEMO_TEXT}read-only\n"


def test_exit_status_is_the_containers(
    containerd: engines.Containerd, shim: str, ctr_id: str
) -> None:
    result = containerd.run(ctr_id, "sh", "-c", "echo out; echo err >&2; exit 7",
                            runc_binary=shim, rm=True, annotations=ATTACH, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")


def _status(containerd: engines.Containerd, cid: str) -> str:
    for line in containerd.ctr("tasks", "list").stdout.splitlines()[1:]:
        fields = line.split()
        if fields[0] == cid:
            return fields[2]
    return "(none)"


def _wait_status(containerd: engines.Containerd, cid: str, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _status(containerd, cid) != wanted:
        assert time.monotonic() < deadline, f"{cid}: {_status(containerd, cid)}, not {wanted}"
        time.sleep(0.05)


def test_detached_kill_and_delete(containerd: engines.Containerd, shim: str, ctr_id: str) -> None:
    script = 'trap "exit 0" TERM; while true; do sleep 0.1; done'
    containerd.run(ctr_id, "sh", "-c", script, runc_binary=shim, detach=True, annotations=ATTACH)
    _wait_status(containerd, ctr_id, "RUNNING", 10)
    seen = containerd.ctr("tasks", "exec", "--exec-id", "probe", "--fifo-dir",
                          str(containerd.fifo_dir), ctr_id, "cat", "/retinue/demo/README")
    assert seen.stdout == DEMO_TEXT
    containerd.ctr("tasks", "kill", "-s", "SIGTERM", ctr_id)
    _wait_status(containerd, ctr_id, "STOPPED", 10)
    deleted = containerd.ctr("tasks", "delete", ctr_id)
    assert "exit code" not in deleted.stderr  # ctr warns about a non-zero exit status
    containerd.ctr("containers", "delete", ctr_id)
    assert ctr_id not in containerd.ctr("containers", "list", "-q").stdout.split()


def test_kill_sigkill(containerd: engines.Containerd, shim: str, ctr_id: str) -> None:
    containerd.run(ctr_id, "sleep", "600", runc_binary=shim, detach=True)
    _wait_status(containerd, ctr_id, "RUNNING", 10)
    containerd.ctr("tasks", "kill", "-s", "SIGKILL", ctr_id)
    _wait_status(containerd, ctr_id, "STOPPED", 10)
    deleted = containerd.ctr("tasks", "delete", ctr_id)
    assert "non-zero exit code 137" in deleted.stderr
    containerd.ctr("containers", "delete", ctr_id)


def test_policy_error_reaches_ctrs_message(
    containerd: engines.Containerd, shim: str, ctr_id: str
) -> None:
    result = containerd.run(ctr_id, "true", runc_binary=shim, rm=True,
                            env=("RETINUE_COLLIDE=1",), check=False)
    assert result.returncode != 0
    assert "OCI runtime create failed: retinue: mounts: /dev/shm is already a mount" \
        in result.stderr, result.stderr


def test_broken_config_reaches_ctrs_message(
    containerd: engines.Containerd, shim: str, ctr_id: str, broken_config: Path
) -> None:
    result = containerd.run(ctr_id, "true", runc_binary=shim, rm=True, check=False)
    assert result.returncode != 0
    assert f"retinue: {broken_config}: invalid TOML" in result.stderr, result.stderr


def test_captured_config_matches_the_saved_one(
    containerd: engines.Containerd, capture_dirs: dict[str, Path]
) -> None:
    """tests/data/containerd-config.json is what this containerd hands a runtime."""
    wrapper = capture_dirs["containerd"].parent / "capture-containerd"
    fresh = capture.capture_containerd(containerd, wrapper, capture_dirs["containerd"])
    assert json.loads(fresh) == json.loads((capture.DATA / "containerd-config.json").read_bytes())


def test_install_output_loads_in_containerds_cri(e2e_dir: Path, shim: str) -> None:
    """`retinue install containerd` on a config.toml, then containerd with CRI starts from it.

    The CRI plugin refuses a config whose runtimes lack its default `runc`: the install must
    keep it when it adds the first runtime entry.
    """
    def install(config_path: Path) -> None:
        result = CliRunner().invoke(main, ["install", "containerd", "--file", str(config_path),
                                           "--runtime-path", shim])
        assert result.exit_code == 0, result.output

    with engines.containerd(e2e_dir / "cri", cri=True, configure=install) as ctd:
        plugins = ctd.ctr("plugins", "list").stdout.splitlines()
        status = {tuple(line.split()[:2]): line.split()[-1] for line in plugins[1:]}
        assert status[("io.containerd.grpc.v1", "cri")] == "ok", "\n".join(plugins) + ctd.log_tail()
        assert "BinaryName" in ctd.config_path.read_text()


def test_config_json_untouched_when_nothing_attaches(
    containerd: engines.Containerd, shim: str, ctr_id: str, e2e_dir: Path,
    capture_dirs: dict[str, Path], swap_config: Callable[[str], None],
) -> None:
    """What runc receives through retinue is byte for byte what containerd wrote, unless a rule
    selects the container."""
    out = capture_dirs["containerd"]
    wrapper = str(out.parent / "capture-containerd")

    def captured(runc_binary: str, annotations: dict[str, str]) -> bytes:
        containerd.run(ctr_id, "true", runc_binary=runc_binary, rm=True, annotations=annotations)
        data = (out / f"{ctr_id}.json").read_bytes()
        (out / f"{ctr_id}.json").unlink()
        return data

    direct = captured(wrapper, {})
    direct_annotated = captured(wrapper, ATTACH)
    swap_config(support.config_text(e2e_dir, runtime=wrapper))  # retinue's lower: the wrapper
    assert captured(shim, {}) == direct
    attached = json.loads(captured(shim, ATTACH))
    assert attached != json.loads(direct_annotated)
    assert attached["annotations"]["io.retinue.attached"] == "annotated"
    assert attached["mounts"][-1]["destination"] == "/retinue/demo"
