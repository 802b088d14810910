"""Every way a container ends leads to the same end: services stopped in reverse dependency
order (stop signal, stop timeout, SIGKILL), the supervisor gone, the state directory removed.

A container with services has retinue-init as PID 1: the engine's signal reaches the main
process at once, and the services stop after the main process has exited (on its own or by that
signal), then init exits with the main's status. When init itself is killed (SIGKILL, or runc
behind the shim's back), the kernel kills every process of the container's PID namespace with
it: there is no graceful stop to order then, but the clean-up must still happen.
"""

from __future__ import annotations

import time

import pytest
from conftest import FOREVER, Rig, main_args, wait_for

# Traps the stop signal, logs it, takes 300 ms to shut down, exits 0.
POLITE = (
    'trap \'ev "stopping $RETINUE_SERVICE"; sleep 0.3; ev "stopped $RETINUE_SERVICE"; '
    "kill $! 2>/dev/null; exit 0' TERM\n"
    'ev "$RETINUE_SERVICE start"\n'
    "sleep 1000 & wait\n"
)


def chain(rig: Rig) -> None:
    """db <- app (requires) <- web (after); `side` depends on nothing."""
    rig.service("db", POLITE)
    rig.service("app", POLITE, 'requires = ["db"]\n')
    rig.service("web", POLITE, 'after = ["app"]\n')
    rig.service("side", POLITE)


def started(rig: Rig, cid: str, main: str = FOREVER) -> None:
    bundle = rig.bundle(main_args(f"ev main; {main}"), env=["RETINUE_SERVICES=web,app,side"])
    r = rig.create(cid, bundle)
    assert r.returncode == 0, r.stderr
    r = rig.rt("start", cid)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    wait_for(lambda: any(w == "main" for _, w in rig.events()))


def assert_stopped_in_reverse_order(rig: Rig) -> None:
    ev = rig.events()
    words = [w for _, w in ev]
    for name in ("web", "app", "db", "side"):
        assert f"stopping {name}" in words and f"stopped {name}" in words, words
    # Each service is stopped only once everything that depends on it has exited.
    assert words.index("stopped web") < words.index("stopping app")
    assert words.index("stopped app") < words.index("stopping db")
    assert rig.event_time("stopping app") - rig.event_time("stopping web") >= 0.29
    assert rig.event_time("stopping db") - rig.event_time("stopping app") >= 0.29
    # The independent one is stopped at once, in parallel with the chain.
    assert abs(rig.event_time("stopping side") - rig.event_time("stopping web")) < 0.25


def assert_all_gone(rig: Rig, cid: str) -> None:
    wait_for(lambda: not rig.leftovers(cid), 5)
    assert rig.state(cid) is None


def stopped_all(rig: Rig) -> None:
    wait_for(lambda: {"stopped db", "stopped side"} <= {w for _, w in rig.events()})


def test_kill_term_then_delete(rig: Rig, container_id: str) -> None:
    chain(rig)
    started(rig, container_id)
    t0 = time.monotonic()
    r = rig.rt("kill", container_id, "TERM")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    # kill does not wait for the services: the engine's grace period is the main process's.
    assert took < 0.5, took
    stopped_all(rig)
    assert_stopped_in_reverse_order(rig)
    # The main process got the signal first; the services stopped after it.
    words = [w for _, w in rig.events()]
    assert words.index("main-term") < words.index("stopping web")
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    r = rig.rt("delete", container_id)
    assert r.returncode == 0, r.stderr
    assert_all_gone(rig, container_id)
    assert rig.warnings() == [] and rig.errors() == []
    assert "stopping with SIGTERM" in rig.service_log(container_id, "db")


@pytest.mark.parametrize("sig", ["SIGINT", "QUIT"])
def test_other_stop_signals_stop_services_too(rig: Rig, container_id: str, sig: str) -> None:
    """The signal reaches the main process (busybox sh, like nginx, ends on QUIT only if it says
    so); once it has ended, the services stop."""
    rig.service("db", POLITE)
    bundle = rig.bundle(main_args('ev main; trap "exit 0" INT QUIT; sleep 1000 & wait'),
                        env=["RETINUE_SERVICES=db"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    assert rig.rt("kill", container_id, sig).returncode == 0
    wait_for(lambda: any(w == "stopped db" for _, w in rig.events()))


def test_delete_force(rig: Rig, container_id: str) -> None:
    chain(rig)
    started(rig, container_id)
    r = rig.rt("delete", "--force", container_id)
    assert r.returncode == 0, r.stderr
    assert_stopped_in_reverse_order(rig)
    assert_all_gone(rig, container_id)
    assert rig.warnings() == [] and rig.errors() == []


def test_kill_sigkill_kills_services_at_once(rig: Rig, container_id: str) -> None:
    chain(rig)
    started(rig, container_id)
    t0 = time.monotonic()
    r = rig.rt("kill", container_id, "KILL")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 1.0
    assert not any(w.startswith("stopping") for _, w in rig.events())
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    assert rig.rt("delete", container_id).returncode == 0
    assert_all_gone(rig, container_id)


def test_plain_delete_refuses_a_running_container_and_keeps_services(
    rig: Rig, container_id: str
) -> None:
    chain(rig)
    started(rig, container_id)
    r = rig.rt("delete", container_id)
    assert r.returncode == 1
    assert "is not stopped" in r.stderr or "running" in r.stderr
    assert not any(w.startswith("stopping") for _, w in rig.events())
    assert all(s["state"] == "ready" for s in rig.status(container_id)["services"])


def test_main_exiting_ends_the_container_whatever_the_services_do(
    rig: Rig, container_id: str
) -> None:
    chain(rig)
    started(rig, container_id, main="sleep 0.3; ev main-exit; exit 3")
    # The services run forever; the container still ends with its main process, after they
    # were stopped in reverse order.
    wait_for(lambda: rig.runc_status(container_id) == "stopped", 5)
    assert_stopped_in_reverse_order(rig)
    words = [w for _, w in rig.events()]
    assert words.index("main-exit") < words.index("stopping web")
    # The supervisor saw it and cleaned up before anyone called delete.
    wait_for(lambda: not rig.supervisor_pids(container_id), 5)
    assert not rig.container_dir(container_id).exists()
    r = rig.rt("delete", container_id)
    assert r.returncode == 0, r.stderr
    assert_all_gone(rig, container_id)
    assert rig.warnings() == [] and rig.errors() == []
    assert "stopping with SIGTERM" in rig.service_log(container_id, "db")


@pytest.mark.parametrize("force", [True, False])
def test_runc_delete_behind_the_shims_back(rig: Rig, container_id: str, force: bool) -> None:
    """Plain runc, not retinue-runtime: the poststop hook (or the supervisor watching the
    container's init) still cleans up."""
    chain(rig)
    started(rig, container_id)
    if not force:
        assert rig.runc("kill", container_id, "KILL").returncode == 0
        wait_for(lambda: rig.runc_status(container_id) == "stopped")
    r = rig.runc("delete", *(["--force"] if force else []), container_id)
    assert r.returncode == 0, r.stderr
    assert_all_gone(rig, container_id)


def test_poststop_hook_cleans_up_after_a_dead_supervisor(rig: Rig, container_id: str) -> None:
    chain(rig)
    started(rig, container_id)
    (pid,) = rig.supervisor_pids(container_id)
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not rig.supervisor_pids(container_id))
    assert rig.container_dir(container_id).exists()
    assert rig.runc("delete", "--force", container_id).returncode == 0
    assert_all_gone(rig, container_id)


def test_stop_timeout_then_sigkill(rig: Rig, container_id: str) -> None:
    rig.service("stubborn",
                'trap \'ev "ignoring TERM"\' TERM\nev "stubborn start"\n'
                "while :; do sleep 0.05; done\n",
                '[stop]\ntimeout = "500ms"\n')
    rig.service("polite", POLITE, 'after = ["stubborn"]\n')
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"),
                        env=["RETINUE_SERVICES=stubborn,polite"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    t0 = time.monotonic()
    r = rig.rt("kill", container_id, "TERM")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert took < 0.5, took
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    # The main process first, then the services: polite (which comes after stubborn) before
    # stubborn, which took its 500 ms stop timeout and SIGKILL.
    assert 0.5 <= time.monotonic() - t0 < 2.5
    words = [w for _, w in rig.events()]
    assert words.index("main-term") < words.index("stopping polite")
    assert words.index("stopped polite") < words.index("ignoring TERM")
    log = rig.service_log(container_id, "stubborn")
    assert "stopping with SIGTERM" in log
    assert "still running after 500ms: SIGKILL" in log
    assert log.rstrip().endswith("killed by SIGKILL")
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    assert rig.rt("delete", container_id).returncode == 0
    assert_all_gone(rig, container_id)


def test_custom_stop_signal(rig: Rig, container_id: str) -> None:
    rig.service("hupper",
                'trap \'ev "got HUP"; exit 0\' HUP\nev "hupper start"\nsleep 1000 & wait\n',
                '[stop]\nsignal = "SIGHUP"\ntimeout = "2s"\n')
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=hupper"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    assert rig.rt("kill", container_id, "TERM").returncode == 0
    wait_for(lambda: any(w == "got HUP" for _, w in rig.events()))
    assert "stopping with SIGHUP" in rig.service_log(container_id, "hupper")
