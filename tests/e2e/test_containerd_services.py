"""Services through a private containerd 1.6: `ctr run --runc-binary retinue-runtime
--annotation io.retinue.services=...`.

The same busybox services as the Docker tests (support.SERVICES), chosen by annotation. Each
test's container binds a host directory at /shared for timestamped events; `no_leftovers`
checks after every test that no supervisor, state directory, runc container or mount is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import engines
import pytest
from conftest import service_status
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

pytestmark = [pytest.mark.containerd, pytest.mark.usefixtures("no_leftovers")]

Admin = Callable[..., CompletedProcess[str]]
MAIN = (
    "ev main-start; echo 'main: first words'; "
    "wget -q -O- http://127.0.0.1:8080/ && ev main-fetched; "
)


def _shared_mount(shared: Path) -> list[str]:
    return ["--mount", f"type=bind,src={shared},dst=/shared,options=rbind:rw"]


def _services(names: str) -> dict[str, str]:
    return {"io.retinue.services": names}


def _task_status(containerd: engines.Containerd, cid: str) -> str:
    for line in containerd.ctr("tasks", "list").stdout.splitlines()[1:]:
        fields = line.split()
        if fields[0] == cid:
            return fields[2]
    return "(none)"


def _gone(containerd: engines.Containerd, cid: str) -> bool:
    """No task, no container, no runc state."""
    return (
        _task_status(containerd, cid) == "(none)"
        and cid not in containerd.ctr("containers", "list", "-q").stdout.split()
        and not any(containerd.runc_root.glob(f"*/{cid}/state.json"))
    )


def test_gate_reach_and_a_jobs_exit_code(
    containerd: engines.Containerd, shim: str, ctr_id: str, shared: Path
) -> None:
    """Foreground `ctr run --rm`: the entrypoint waits for `late`, reaches web on loopback,
    exits 3 while the services would run for ever; ctr returns 3 and nothing is left."""
    started = time.monotonic()
    result = containerd.run(
        ctr_id,
        *main_command(MAIN + "exit 3"),
        runc_binary=shim,
        rm=True,
        annotations=_services("web,late"),
        extra=_shared_mount(shared),
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        3,
        f"main: first words\n{WEB_PAGE}",
        "",
    )
    assert time.monotonic() - started < 15
    events = read_events(shared)
    assert first(events, "main-start") >= first(events, "late-ready")
    assert first(events, "main-start") - first(events, "late-start") >= LATE_SECONDS - 0.02
    assert first(events, "db-start") <= first(events, "web-start")
    assert "main-fetched" in [w for _, w in events]
    assert _gone(containerd, ctr_id)


def test_kill_and_delete_stop_services_in_order(
    containerd: engines.Containerd,
    shim: str,
    ctr_id: str,
    shared: Path,
    e2e_dir: Path,
    retinue_admin: Admin,
) -> None:
    main = MAIN + 'trap "ev main-term; exit 0" TERM; sleep 1000 & wait'
    containerd.run(
        ctr_id,
        *main_command(main),
        runc_binary=shim,
        detach=True,
        annotations=_services("web,flaky"),
        extra=_shared_mount(shared),
    )
    # `ctr run -d` returns after the start, hence after the gate: web is already serving.
    assert _task_status(containerd, ctr_id) == "RUNNING"
    status = service_status(retinue_admin, ctr_id)
    assert (status["by_name"]["db"]["state"], status["by_name"]["web"]["state"]) == (
        "ready",
        "ready",
    )
    assert status["phase"] == "running"
    # The optional crash-looping service never held the gate; it stops at its start limit.
    deadline = time.monotonic() + 10
    while (flaky := service_status(retinue_admin, ctr_id)["by_name"]["flaky"])["state"] != "failed":
        assert time.monotonic() < deadline, flaky
        time.sleep(0.1)
    assert (flaky["restarts"], flaky["last_exit"], flaky["pid"]) == (
        2,
        "exited with status 1",
        None,
    )
    assert flaky["reason"].startswith("start limit hit: 3 starts within 30s"), flaky
    deadline = time.monotonic() + 10
    while "main-fetched" not in [w for _, w in read_events(shared)]:
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)

    containerd.ctr("tasks", "kill", "-s", "SIGTERM", ctr_id)
    deadline = time.monotonic() + 10
    while _task_status(containerd, ctr_id) != "STOPPED":
        assert time.monotonic() < deadline, _task_status(containerd, ctr_id)
        time.sleep(0.05)
    deleted = containerd.ctr("tasks", "delete", ctr_id)
    assert "exit code" not in deleted.stderr  # the main process ended with status 0
    containerd.ctr("containers", "delete", ctr_id)
    events = read_events(shared)
    # The main process got the signal first (through retinue-init); then the services stopped in
    # reverse dependency order.
    assert first(events, "main-term") <= first(events, "web-term")
    assert first(events, "web-term") < first(events, "web-exit") <= first(events, "db-term")
    logs = e2e_dir / "log" / ctr_id
    assert "web: serving as uid 65534\n" in (logs / "web.log").read_text()
    assert (logs / "flaky.log").read_text().count("flaky: crashing\n") == 3
    assert _gone(containerd, ctr_id)


@pytest.mark.parametrize(("service", "error"), [("broken", BROKEN_ERROR), ("stuck", STUCK_ERROR)])
def test_a_failing_required_service_fails_ctr_run(
    containerd: engines.Containerd,
    shim: str,
    ctr_id: str,
    shared: Path,
    service: str,
    error: str,
) -> None:
    result = containerd.run(
        ctr_id,
        *main_command(MAIN),
        runc_binary=shim,
        rm=True,
        annotations=_services(f"web,{service}"),
        extra=_shared_mount(shared),
        check=False,
    )
    assert result.returncode == 1
    assert f"ctr: OCI runtime start failed: {error}: unknown" in result.stderr, result.stderr
    assert "main-start" not in [w for _, w in read_events(shared)]
    # `ctr run --rm` could delete the task: the failed start left it stopped, not `created`.
    assert _gone(containerd, ctr_id)


def test_an_unknown_service_fails_ctr_run(
    containerd: engines.Containerd, shim: str, ctr_id: str, shared: Path
) -> None:
    result = containerd.run(
        ctr_id,
        *main_command(MAIN),
        runc_binary=shim,
        rm=True,
        annotations=_services("web,nope"),
        extra=_shared_mount(shared),
        check=False,
    )
    assert result.returncode == 1
    source = "annotation io.retinue.services"
    assert (
        "ctr: failed to create shim task: OCI runtime create failed: "
        f"{unknown_service_error(source)}: unknown"
    ) in result.stderr, result.stderr
    assert read_events(shared) == []
    assert _gone(containerd, ctr_id)
