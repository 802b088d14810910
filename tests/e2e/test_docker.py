"""`docker run --runtime retinue` against a private dockerd 20.10 (no network: --network none)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import capture
import engines
import pytest
from click.testing import CliRunner
from retinue.cli.admin import main
from support import DEMO_TEXT

pytestmark = pytest.mark.docker

NONET = ("--network", "none")
RETINUE = ("--runtime", "retinue", *NONET)

SHOW = (
    'echo "greeting=$RETINUE_GREETING"; '
    "cat /retinue/demo/README 2>/dev/null || echo no-demo; "
    "touch /retinue/demo/probe 2>/dev/null && echo writable || echo read-only"
)


def test_plain_container_passes_through(docker: engines.Dockerd) -> None:
    result = docker.docker("run", "--rm", *RETINUE, docker.image, "sh", "-c", SHOW)
    assert result.stdout == "greeting=\nno-demo\nread-only\n"
    assert result.stderr == ""


def test_attached_container_sees_the_mount_and_env(docker: engines.Dockerd) -> None:
    result = docker.docker("run", "--rm", *RETINUE, "-e", "RETINUE_DEMO=1", docker.image,
                           "sh", "-c", SHOW + "; grep -c ' /retinue/demo .*ro,' /proc/mounts")
    assert result.stdout == f"greeting=hello from retinue\n{DEMO_TEXT}read-only\n1\n"


def test_exit_status_is_the_containers(docker: engines.Dockerd) -> None:
    for env in ("RETINUE_DEMO=0", "RETINUE_DEMO=1"):
        result = docker.docker("run", "--rm", *RETINUE, "-e", env, docker.image,
                               "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
        assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")


def test_terminal_through_the_console_socket(docker: engines.Dockerd) -> None:
    """-t: runc gets --console-socket and hands the pty's master to the shim through it."""
    result = docker.docker("run", "--rm", "-t", *RETINUE, "-e", "RETINUE_DEMO=1", docker.image,
                           "sh", "-c", "tty; cat /retinue/demo/README")
    assert result.stdout.replace("\r\n", "\n") == f"/dev/pts/0\n{DEMO_TEXT}"


def _state(docker: engines.Dockerd, name: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(
        docker.docker("inspect", "-f", "{{json .State}}", name).stdout
    )
    return state


def test_logs_stop_on_sigterm_and_rm(docker: engines.Dockerd, docker_name: str) -> None:
    script = ('trap "echo got-term; exit 0" TERM; echo started; '
              "while true; do sleep 0.1; done")
    docker.docker("run", "-d", "--name", docker_name, *RETINUE, "-e", "RETINUE_DEMO=1",
                  docker.image, "sh", "-c", script)
    deadline = time.monotonic() + 10
    while "started" not in docker.docker("logs", docker_name).stdout:
        assert time.monotonic() < deadline, "the container never printed"
        time.sleep(0.05)
    assert _state(docker, docker_name)["Running"] is True
    # `docker exec` builds its process from Docker's own record of the container: it sees the
    # mount (same mount namespace) but not the env retinue added to the spec.
    exec_result = docker.docker("exec", docker_name, "sh", "-c",
                                'cat /retinue/demo/README; echo "greeting=$RETINUE_GREETING"')
    assert exec_result.stdout == f"{DEMO_TEXT}greeting=\n"
    start = time.monotonic()
    docker.docker("stop", "-t", "20", docker_name)
    assert time.monotonic() - start < 10  # SIGTERM did it, not the SIGKILL after 20 s
    assert _state(docker, docker_name)["ExitCode"] == 0
    assert docker.docker("logs", docker_name).stdout == "started\ngot-term\n"
    docker.docker("rm", docker_name)
    assert docker.docker("ps", "-aq", "--filter", f"name={docker_name}").stdout == ""


def test_stop_kills_after_the_timeout(docker: engines.Dockerd, docker_name: str) -> None:
    # PID 1 without a handler ignores SIGTERM: docker stop must fall back to SIGKILL.
    docker.docker("run", "-d", "--name", docker_name, *RETINUE, docker.image, "sleep", "600")
    start = time.monotonic()
    docker.docker("stop", "-t", "1", docker_name)
    assert time.monotonic() - start >= 1
    state = _state(docker, docker_name)
    assert state["Running"] is False
    assert state["ExitCode"] == 128 + signal.SIGKILL


def test_run_rm_removes_the_container(docker: engines.Dockerd, docker_name: str) -> None:
    docker.docker("run", "--rm", "--name", docker_name, *RETINUE, "-e", "RETINUE_DEMO=1",
                  docker.image, "true")
    assert docker.docker("ps", "-aq", "--filter", f"name={docker_name}").stdout == ""


def test_policy_error_reaches_dockers_message(docker: engines.Dockerd, docker_name: str) -> None:
    """The shim's --log JSON line is what Docker reports: the user reads retinue's reason."""
    result = docker.docker("run", "--name", docker_name, *RETINUE, "-e", "RETINUE_COLLIDE=1",
                           docker.image, "true", check=False)
    assert result.returncode != 0
    assert "OCI runtime create failed: retinue: mounts: /dev/shm is already a mount" \
        in result.stderr, result.stderr
    assert _state(docker, docker_name)["Running"] is False


def test_broken_config_reaches_dockers_message(
    docker: engines.Dockerd, docker_name: str, broken_config: Path
) -> None:
    result = docker.docker("run", "--rm", "--name", docker_name, *RETINUE, docker.image, "true",
                           check=False)
    assert result.returncode != 0
    assert f"retinue: {broken_config}: invalid TOML" in result.stderr, result.stderr


def test_runc_is_untouched(docker: engines.Dockerd) -> None:
    result = docker.docker("run", "--rm", *NONET, "-e", "RETINUE_DEMO=1", docker.image,
                           "sh", "-c", SHOW)
    assert result.stdout == "greeting=\nno-demo\nread-only\n"


def test_install_registers_a_runtime_dockerd_loads(docker: engines.Dockerd, shim: str) -> None:
    """`retinue install docker` on the daemon's own daemon.json, then SIGHUP: dockerd uses it."""

    before = json.loads(docker.config_path.read_text())
    result = CliRunner().invoke(main, ["install", "docker", "--file", str(docker.config_path),
                                       "--runtime-path", shim, "--name", "installed"])
    assert result.exit_code == 0, result.output
    after = json.loads(docker.config_path.read_text())
    assert after["runtimes"] == {**before["runtimes"], "installed": {"path": shim}}
    os.kill(docker.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "installed" not in docker.docker("info", "-f", "{{json .Runtimes}}").stdout:
        assert time.monotonic() < deadline, docker.log_tail()
        time.sleep(0.1)
    ran = docker.docker("run", "--rm", "--runtime", "installed", *NONET, "-e", "RETINUE_DEMO=1",
                        docker.image, "cat", "/retinue/demo/README")
    assert ran.stdout == DEMO_TEXT


def test_captured_config_matches_the_saved_one(
    docker: engines.Dockerd, capture_dirs: dict[str, Path]
) -> None:
    """tests/data/docker-config.json is what this Docker hands a runtime (ids and paths aside)."""
    fresh = json.loads(capture.capture_docker(docker, "capture", capture_dirs["docker"]))
    saved = json.loads((capture.DATA / "docker-config.json").read_bytes())
    assert list(fresh) == list(saved)
    assert fresh["linux"]["seccomp"] == saved["linux"]["seccomp"]
    destinations = [[m["destination"] for m in spec["mounts"]] for spec in (fresh, saved)]
    assert destinations[0] == destinations[1]
    assert fresh["process"]["capabilities"] == saved["process"]["capabilities"]
