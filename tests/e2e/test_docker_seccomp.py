"""Seccomp handlers in a Docker container: Docker's default profile, merged, not replaced."""

from __future__ import annotations

import engines
import pytest

pytestmark = pytest.mark.docker

RETINUE = ("--runtime", "retinue", "--network", "none")
MKDIR = "mkdir /tmp/x 2>&1; echo status=$?"


def test_handlers_answer_under_dockers_profile(docker: engines.Dockerd) -> None:
    result = docker.docker(
        "run",
        "--rm",
        *RETINUE,
        "-e",
        "RETINUE_BROKER=1",
        "--memory",
        "64m",
        docker.image,
        "sh",
        "-c",
        f"{MKDIR}; free -m | sed -n 2p",
    )
    lines = result.stdout.splitlines()
    assert "Permission denied" in lines[0] and lines[1] == "status=1"
    # sysinfo answers with the container's memory limit, not the host's. busybox free takes
    # "cached" from the host's /proc/meminfo, so its "used" column can overflow into "total":
    # read total from its own fixed-width column.
    assert lines[2][:19].split() == ["Mem:", "64"]


def test_dockers_profile_still_refuses_what_it_refused(docker: engines.Dockerd) -> None:
    """The merge keeps the default profile: a syscall it refuses stays refused."""
    script = "unshare -U true 2>&1; echo status=$?"
    plain = docker.docker("run", "--rm", *RETINUE, docker.image, "sh", "-c", script, check=False)
    brokered = docker.docker(
        "run",
        "--rm",
        *RETINUE,
        "-e",
        "RETINUE_BROKER=1",
        docker.image,
        "sh",
        "-c",
        script,
        check=False,
    )
    assert "status=0" not in plain.stdout
    assert brokered.stdout == plain.stdout


def test_unbrokered_container_is_untouched(docker: engines.Dockerd) -> None:
    result = docker.docker("run", "--rm", *RETINUE, docker.image, "sh", "-c", MKDIR)
    assert result.stdout == "status=0\n"
