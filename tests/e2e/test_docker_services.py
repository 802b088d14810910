"""Services through a private dockerd 20.10: `docker run --runtime retinue -e RETINUE_SERVICES=`.

The services are support.SERVICES (busybox scripts, httpd), selected by env since dockerd 20.10
cannot set annotations. Each test's container binds a host directory at /shared, where services
and the main process log timestamped events. `no_leftovers` checks after every test that no
supervisor, state directory, runc container or mount of it is left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import engines
import pytest
from conftest import service_status, services_footprint, wait_until_gone
from support import (
    BROKEN_ERROR,
    LATE_SECONDS,
    STUCK_ERROR,
    WEB_PAGE,
    first,
    main_command,
    read_events,
    unknown_service_error,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]

Admin = Callable[..., CompletedProcess[str]]
RETINUE = ("--runtime", "retinue", "--network", "none")

# The main process: its first act is an event, then it reaches web on the container's loopback.
MAIN = (
    "ev main-start; echo 'main: first words'; "
    "wget -q -O- http://127.0.0.1:8080/ && ev main-fetched; "
)


def _run_args(shared: Path, services: str) -> list[str]:
    return [*RETINUE, "-v", f"{shared}:/shared", "-e", f"RETINUE_SERVICES={services}"]


def _state(docker: engines.Dockerd, name: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(
        docker.docker("inspect", "-f", "{{json .State}}", name).stdout
    )
    return state


def _runc_has(docker: engines.Dockerd, container_id: str) -> bool:
    return any(docker.exec_root.glob(f"runtime-runc/*/{container_id}/state.json"))


def test_gate_reach_logs_status_and_ordered_stop(
    docker: engines.Dockerd,
    docker_name: str,
    shared: Path,
    e2e_dir: Path,
    retinue_admin: Admin,
) -> None:
    main = MAIN + 'trap "ev main-term; exit 0" TERM; sleep 1000 & wait'
    started = time.monotonic()
    cid = docker.docker(
        "run",
        "-d",
        "--name",
        docker_name,
        *_run_args(shared, "web,late"),
        docker.image,
        *main_command(main),
    ).stdout.strip()
    # `docker run -d` returns once the runtime's start did: the gate opened first.
    assert time.monotonic() - started >= LATE_SECONDS
    assert len(cid) == 64
    deadline = time.monotonic() + 10
    while not any(w == "main-fetched" for _, w in read_events(shared)):
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)
    events = read_events(shared)
    # The gate held the entrypoint until the late service was ready, and web had started db.
    assert first(events, "main-start") >= first(events, "late-ready")
    assert first(events, "main-start") - first(events, "late-start") >= LATE_SECONDS - 0.02
    assert first(events, "db-start") <= first(events, "web-start")
    # The supervisor's own note agrees: "ready" is in the late service's log.
    logs = e2e_dir / "log" / cid
    assert "ready\n" in (logs / "late.log").read_text()

    # The container's log is the main process's output only; the services' go to their files.
    assert docker.docker("logs", docker_name).stdout == f"main: first words\n{WEB_PAGE}"
    assert "web: serving as uid 65534\n" in (logs / "web.log").read_text()
    assert "db: up\n" in (logs / "db.log").read_text()

    status = service_status(retinue_admin, cid)
    assert set(status["by_name"]) == {"db", "web", "late"}
    assert status["phase"] == "running"
    for svc in status["services"]:
        assert (svc["state"], svc["restarts"]) == ("ready", 0), svc
        assert svc["pid"] and svc["ready_since"], svc
    table = retinue_admin("status").stdout
    rows = {tuple(line.split()[1:3]) for line in table.splitlines() if line.startswith(cid[:20])}
    assert rows == {("db", "ready"), ("late", "ready"), ("web", "ready")}, table

    stop = time.monotonic()
    docker.docker("stop", "-t", "20", docker_name)
    assert time.monotonic() - stop < 10  # no service and no main needed SIGKILL
    state = _state(docker, docker_name)
    assert (state["Running"], state["ExitCode"]) == (False, 0)
    events = read_events(shared)
    # The main process is told first (retinue-init forwards Docker's SIGTERM); once it has
    # exited, the services stop in reverse dependency order: web (which requires db) stops
    # before db is told to.
    assert first(events, "main-term") <= first(events, "web-term")
    assert first(events, "web-term") < first(events, "web-exit") <= first(events, "db-term")
    assert first(events, "db-term") < first(events, "db-exit")
    assert "late-exit" in [w for _, w in events]
    assert "stopping with SIGTERM" in (logs / "web.log").read_text()
    assert not _runc_has(docker, cid)
    docker.docker("rm", docker_name)
    assert docker.docker("ps", "-aq", "--filter", f"name={docker_name}").stdout == ""


def test_docker_stop_keeps_its_grace_period_whatever_a_service_does(
    docker: engines.Dockerd, docker_name: str, shared: Path
) -> None:
    """`deaf` ignores SIGTERM with a 10 s stop timeout: `docker stop -t 2` still returns after
    about 2 s, and the main process got SIGTERM at once."""
    main = 'trap "ev main-term; exit 0" TERM; ev main-start; sleep 1000 & wait'
    docker.docker("run", "-d", "--name", docker_name, *_run_args(shared, "deaf"),
                  docker.image, *main_command(main))
    deadline = time.monotonic() + 10
    while "main-start" not in [w for _, w in read_events(shared)]:
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)
    with open("/proc/uptime") as f:
        asked = float(f.read().split()[0])
    started = time.monotonic()
    docker.docker("stop", "-t", "2", docker_name, timeout=30)
    took = time.monotonic() - started
    assert took < 3.5, took
    events = read_events(shared)
    assert first(events, "main-term") - asked < 0.5, events
    assert "deaf-term" in [w for _, w in events]
    docker.docker("rm", docker_name)


def test_a_oneshot_then_fate_sharing_under_docker(
    docker: engines.Dockerd, docker_name: str, shared: Path
) -> None:
    """Issue 10 under Docker: the one-shot `setup` is done before the entrypoint; when `fatal`
    (on_failure = "stop-container") fails for good, the main process gets SIGTERM through
    retinue-init and the container exits with 222, which `docker inspect` shows."""
    main = 'trap "ev main-term; exit 0" TERM; ev main-start; sleep 1000 & wait'
    docker.docker("run", "-d", "--name", docker_name, *_run_args(shared, "setup,fatal"),
                  docker.image, *main_command(main))
    deadline = time.monotonic() + 10
    while "main-start" not in [w for _, w in read_events(shared)]:
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)
    words = [w for _, w in read_events(shared)]
    assert words.index("setup-done") < words.index("main-start"), words
    (shared / "die").touch()
    waited = docker.docker("wait", docker_name, timeout=30)
    assert waited.stdout.strip() == "222", waited
    assert _state(docker, docker_name)["ExitCode"] == 222
    assert "main-term" in [w for _, w in read_events(shared)]
    docker.docker("rm", docker_name)


def test_docker_stop_drains_a_service_before_its_sigterm(
    docker: engines.Dockerd, docker_name: str, shared: Path
) -> None:
    main = 'trap "ev main-term; exit 0" TERM; ev main-start; sleep 1000 & wait'
    docker.docker("run", "-d", "--name", docker_name, *_run_args(shared, "drainer"),
                  docker.image, *main_command(main))
    deadline = time.monotonic() + 10
    while "main-start" not in [w for _, w in read_events(shared)]:
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)
    docker.docker("stop", docker_name, timeout=30)
    words = [w for _, w in read_events(shared)]
    assert (words.index("main-term") < words.index("drain-start") < words.index("drain-done")
            < words.index("drainer-term")), words
    assert _state(docker, docker_name)["ExitCode"] == 0
    docker.docker("rm", docker_name)


def test_stop_and_rm_of_a_paused_container(
    docker: engines.Dockerd, docker_name: str, shared: Path
) -> None:
    """Frozen services cannot stop gracefully: stop and rm -f must not wait for them."""
    for stop in (("stop", "-t", "1"), ("rm", "-f")):
        docker.docker(
            "run",
            "-d",
            "--name",
            docker_name,
            *_run_args(shared, "web"),
            docker.image,
            "sleep",
            "1000",
        )
        docker.docker("pause", docker_name)
        started = time.monotonic()
        docker.docker(*stop, docker_name, timeout=30)
        assert time.monotonic() - started < 10, stop
        if stop[0] == "stop":
            state = _state(docker, docker_name)
            # `sleep` is retinue-init's child, not PID 1: SIGTERM's default action ends it
            # once the container is thawed (143), unless Docker's SIGKILL came first (137).
            assert (state["Running"], state["ExitCode"]) in ((False, 143), (False, 137))
            docker.docker("rm", docker_name)


def test_a_job_ends_with_its_main_process(docker: engines.Dockerd, shared: Path) -> None:
    """The main exits 3 while web would run for ever: `docker run` returns 3 at once."""
    started = time.monotonic()
    result = docker.docker(
        "run",
        "--rm",
        *_run_args(shared, "web"),
        docker.image,
        *main_command(MAIN + "exit 3"),
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        3,
        f"main: first words\n{WEB_PAGE}",
        "",
    )
    assert time.monotonic() - started < 15
    assert "main-fetched" in [w for _, w in read_events(shared)]


@pytest.mark.parametrize(("service", "error"), [("broken", BROKEN_ERROR), ("stuck", STUCK_ERROR)])
def test_a_failing_required_service_fails_docker_run(
    docker: engines.Dockerd,
    docker_name: str,
    shared: Path,
    e2e_dir: Path,
    service: str,
    error: str,
) -> None:
    result = docker.docker(
        "run",
        "--name",
        docker_name,
        *_run_args(shared, f"web,{service}"),
        docker.image,
        *main_command(MAIN),
        check=False,
    )
    assert result.returncode == 125
    assert (
        f"Error response from daemon: OCI runtime start failed: {error}: unknown" in result.stderr
    ), result.stderr
    words = [w for _, w in read_events(shared)]
    assert "main-start" not in words  # the entrypoint never ran
    if service == "stuck":
        # web was ready long before stuck's timeout: it was stopped gracefully, not killed.
        assert {"web-exit", "db-exit"} <= set(words), words
    # Docker keeps its record of the container (`Created`); of the task nothing is left: no
    # runc container, supervisor or state directory (no_leftovers checks mounts after `rm`).
    cid = docker.docker("inspect", "-f", "{{.Id}}", docker_name).stdout.strip()
    assert _state(docker, docker_name)["Running"] is False
    assert not _runc_has(docker, cid)
    wait_until_gone(e2e_dir, cid)
    docker.docker("rm", docker_name)


def test_an_unknown_service_fails_docker_run(docker: engines.Dockerd, shared: Path) -> None:
    result = docker.docker(
        "run",
        "--rm",
        *_run_args(shared, "web,nope"),
        docker.image,
        *main_command(MAIN),
        check=False,
    )
    assert result.returncode == 125
    assert (
        "docker: Error response from daemon: failed to create shim task: OCI runtime "
        f"create failed: {unknown_service_error('env RETINUE_SERVICES')}: unknown"
    ) in result.stderr, result.stderr
    assert read_events(shared) == []


def test_a_container_cannot_fill_or_shape_the_host_state_dir(
    docker: engines.Dockerd, docker_name: str, shared: Path, e2e_dir: Path
) -> None:
    """A notify-ready service's container once got STATE/ROOT/ID/notify read-write: it filled
    the host's /run and left a tree too deep for shutil.rmtree, so `docker rm -f` left the task,
    its shim and the state behind. Now it gets only its socket, read-only: what it writes under
    /run/retinue stays in its own layer, and READY=1 still gets through."""
    main = (
        "dd if=/dev/zero of=/run/retinue/filler bs=1k count=512 2>/dev/null; "
        "cd /run/retinue && i=0; while [ $i -lt 1500 ]; do mkdir d && cd d || break; "
        "i=$((i+1)); done; ev main-built-$i; sleep 1000"
    )
    cid = docker.docker(
        "run", "-d", "--name", docker_name, *_run_args(shared, "ntf"), docker.image,
        *main_command(main),
    ).stdout.strip()
    deadline = time.monotonic() + 20
    while not any(w.startswith("main-built-") for _, w in read_events(shared)):
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.1)
    assert first(read_events(shared), "ntf-ready") < first(read_events(shared), "main-built-1500")
    (state,) = [p for p in (e2e_dir / "state").glob(f"*/{cid}") if p.parent.name != "ids"]
    assert sorted(p.name for p in (state / "notify").iterdir()) == ["ntf.sock"]
    assert not [p for p in state.rglob("*") if p.name in ("filler", "d")]
    docker.docker("rm", "-f", docker_name)
    wait_until_gone(e2e_dir, cid)
    assert not _runc_has(docker, cid)


def test_a_huge_service_request_fails_docker_run_promptly(
    docker: engines.Dockerd, shared: Path
) -> None:
    """Over 64 KiB in RETINUE_SERVICES once hung `docker run` for ever: the runtime's error
    filled the stderr pipe that containerd's shim reads only after it exits. (100 KB: one
    argument of `docker run` may not exceed 128 KiB.)"""
    started = time.monotonic()
    result = docker.docker(
        "run", "--rm", *RETINUE, "-e", "RETINUE_SERVICES=" + "x" * 100_000, docker.image,
        "true", check=False, timeout=60,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 125
    assert "retinue: the container asks for service 'xxxx" in result.stderr, result.stderr[:500]
    assert "… (100000 characters)" in result.stderr
    assert len(result.stderr) < 4000
    assert read_events(shared) == []


def test_a_broken_configuration_stops_nothing(
    docker: engines.Dockerd,
    docker_name: str,
    shared: Path,
    swap_config: Callable[[str], None],
    retinue_config: Path,
) -> None:
    """A container started under a good configuration stops gracefully (the main process first,
    then its services, through retinue-init) and is removed under a broken one; a new
    `docker run` gets the check's message."""
    main = MAIN + 'trap "ev main-term; exit 0" TERM; sleep 1000 & wait'
    docker.docker(
        "run", "-d", "--name", docker_name, *_run_args(shared, "web"), docker.image,
        *main_command(main),
    )
    deadline = time.monotonic() + 10
    while not any(w == "main-fetched" for _, w in read_events(shared)):
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)
    swap_config('runtime = "runc\npolicy = [\n')
    stop = time.monotonic()
    docker.docker("stop", "-t", "20", docker_name)
    assert time.monotonic() - stop < 10  # no SIGKILL fallback
    events = read_events(shared)
    assert first(events, "main-term") <= first(events, "web-term")
    assert _state(docker, docker_name)["ExitCode"] == 0
    docker.docker("rm", docker_name)
    result = docker.docker("run", "--rm", *RETINUE, docker.image, "true", check=False)
    assert result.returncode != 0
    assert f"retinue: {retinue_config}: invalid TOML" in result.stderr, result.stderr


def test_the_supervisor_is_charged_beside_the_container(
    docker: engines.Dockerd, docker_name: str, shared: Path, e2e_dir: Path
) -> None:
    """Issue 7.4: a `--cpus 0.2` container's supervisor ran in the shim's cgroup, charged to
    nobody. It runs in the sibling `<container cgroup>.retinue`, bounded, gone with `rm -f`."""
    cid = docker.docker(
        "run", "-d", "--cpus", "0.2", "--name", docker_name, *_run_args(shared, "web"),
        docker.image, *main_command("sleep 1000"),
    ).stdout.strip()
    init = int(docker.docker("inspect", "-f", "{{.State.Pid}}", cid).stdout)
    supervisors = [
        int(f.split()[1].rstrip(":")) for f in services_footprint(e2e_dir)
        if f.startswith("supervisor ") and cid in f
    ]
    assert len(supervisors) == 1, supervisors

    def cpu_cgroup(pid: int) -> str:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "cpu" in controllers.split(","):
                    return path
        raise AssertionError(f"no cpu cgroup for {pid}")

    container = cpu_cgroup(init)
    assert container.endswith(cid)
    assert cpu_cgroup(supervisors[0]) == container + ".retinue"
    mine = Path("/sys/fs/cgroup/cpu") / (container + ".retinue").lstrip("/")
    assert mine.is_dir() and (mine / "cpu.cfs_quota_us").read_text().strip() != "-1"
    docker.docker("rm", "-f", cid)
    wait_until_gone(e2e_dir, cid)
    deadline = time.monotonic() + 10
    while mine.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not mine.exists()


def test_docker_exec_gets_the_engines_env_not_the_policys(
    docker: engines.Dockerd, docker_name: str, shared: Path
) -> None:
    """Issue 16 item 6, the chosen behaviour: a policy's env reaches the main process (and its
    children), not an exec session. dockerd builds `docker exec`'s process from its own record
    of the container and runc takes it whole from `--process`; retinue leaves it so (README,
    Security: why). The session sees the container's own env and its exec -e, and can read the
    main process's env at /proc/PID/environ (init's child)."""
    docker.docker("run", "-d", "--name", docker_name, *_run_args(shared, "late"),
                  "-e", "RETINUE_DEMO=1", "-e", "OWN=mine", docker.image,
                  *main_command('ev main-start "$RETINUE_GREETING"; sleep 1000'))
    deadline = time.monotonic() + 15
    while not any(w.startswith("main-start") for _, w in read_events(shared)):
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)
    assert "main-start hello from retinue" in [w for _, w in read_events(shared)]
    session = docker.docker("exec", "-e", "ASKED=yes", docker_name, "sh", "-c",
                            'echo "greeting=$RETINUE_GREETING own=$OWN asked=$ASKED"')
    assert session.stdout == "greeting= own=mine asked=yes\n"
    # retinue-init (PID 1 here: an exec service) is non-dumpable; the main is its child.
    main_env = ('for s in /proc/[0-9]*/stat; do read -r pid comm state ppid rest < "$s"; '
                '[ "$ppid" = 1 ] && exec cat "/proc/$pid/environ"; done; exit 1')
    environ = docker.docker("exec", docker_name, "sh", "-c", main_env).stdout.split("\0")
    assert "RETINUE_GREETING=hello from retinue" in environ, environ
    docker.docker("rm", "-f", docker_name)
