"""Issue 10's service semantics on real runc: one-shot tasks, drain hooks, health after start,
http readiness, exit-code rules, fate sharing and manual control; with their unhappy paths (a
drain that hangs, a probe that hangs, a one-shot that never exits, a restart while starting)."""

from __future__ import annotations

import os
import subprocess
import time

from conftest import FOREVER, PRELUDE, Rig, main_args, processes_mentioning, wait_for

# What a container whose required service failed for good exits with (README, fate sharing).
FATE_EXIT = 222


def script(rig: Rig, service: str, name: str, body: str) -> None:
    """files/SERVICE/NAME: an executable script with the PRELUDE's helpers."""
    path = rig.files / service / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(PRELUDE + body)
    path.chmod(0o755)


def create_and_start(rig: Rig, cid: str, services: str, main: str = "ev main") -> (
    subprocess.CompletedProcess[str]
):
    bundle = rig.bundle(main_args(f"{main}; {FOREVER}"), env=[f"RETINUE_SERVICES={services}"])
    r = rig.create(cid, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    return rig.rt("start", cid)


def started(rig: Rig, cid: str, services: str, main: str = "ev main") -> None:
    r = create_and_start(rig, cid, services, main)
    assert r.returncode == 0, (r.stderr, rig.log_entries())


def words(rig: Rig) -> list[str]:
    return [w for _, w in rig.events()]


def state(rig: Rig, cid: str, name: str) -> str:
    return str(rig.service_status(cid, name)["state"])


# -- one-shot tasks -------------------------------------------------------------------------------


def test_a_oneshot_finishes_before_its_dependents_and_the_entrypoint(
    rig: Rig, container_id: str
) -> None:
    rig.service("setup", 'ev setup-start; sleep 0.3; echo "setup: wrote the secrets"; '
                "ev setup-done; exit 0\n", 'type = "oneshot"\n')
    rig.service("web", 'ev web-start; exec sleep 1000\n', 'requires = ["setup"]\n')
    started(rig, container_id, "web")
    wait_for(lambda: "main" in words(rig))
    seen = words(rig)
    assert seen.index("setup-done") < seen.index("web-start") < seen.index("main"), seen
    setup = rig.service_status(container_id, "setup")
    assert setup["state"] == "done" and setup["pid"] is None, setup
    assert setup["last_exit"] == "exited with status 0"
    assert seen.count("setup-start") == 1  # done is done: never run again
    table = rig.retinue("status", container_id).stdout
    assert any(" setup " in line and " done " in line for line in table.splitlines()), table


def test_a_failing_oneshot_fails_start_with_its_reason(rig: Rig, container_id: str) -> None:
    rig.service("migrate", 'echo "migrate: cannot reach the database"; exit 3\n',
                'type = "oneshot"\n')
    r = create_and_start(rig, container_id, "migrate")
    assert r.returncode != 0
    assert 'service "migrate"' in r.stderr and "exited with status 3" in r.stderr, r.stderr
    assert "last output: migrate: cannot reach the database" in r.stderr, r.stderr
    assert "main" not in words(rig)


def test_a_oneshot_that_never_exits_fails_start_and_is_killed(
    rig: Rig, container_id: str
) -> None:
    rig.service("hang", 'echo "hang: waiting for ever"; exec sleep 1001\n',
                'type = "oneshot"\n[ready]\ntimeout = "1s"\n')
    began = time.monotonic()
    r = create_and_start(rig, container_id, "hang")
    assert r.returncode != 0
    assert time.monotonic() - began < 10
    assert 'service "hang" not done after 1s: still running' in r.stderr, r.stderr
    assert "hang: waiting for ever" in r.stderr
    wait_for(lambda: not processes_mentioning("sleep 1001"), 5)


def test_success_exit_makes_a_oneshot_done(rig: Rig, container_id: str) -> None:
    rig.service("check", "exit 3\n", 'type = "oneshot"\n[restart]\nsuccess_exit = [3]\n')
    started(rig, container_id, "check")
    assert state(rig, container_id, "check") == "done"


# -- exit-code rules ------------------------------------------------------------------------------


def test_prevent_exit_is_never_restarted(rig: Rig, container_id: str) -> None:
    rig.service("svc", "ev svc-start; while [ ! -e /shared/die ]; do sleep 0.05; done; exit 78\n",
                'required = false\n[restart]\npolicy = "always"\ndelay = "50ms"\n'
                "prevent_exit = [78]\n")
    started(rig, container_id, "svc")
    (rig.shared / "die").touch()
    svc = wait_for(lambda: (s := rig.service_status(container_id, "svc"))["state"] == "failed"
                   and s, 10)
    assert svc["last_exit"] == "exited with status 78", svc
    assert svc["reason"] == "exited with status 78: in prevent_exit, not restarted", svc
    time.sleep(0.5)
    assert words(rig).count("svc-start") == 1


def test_success_exit_is_not_restarted_on_failure(rig: Rig, container_id: str) -> None:
    rig.service("svc", 'ev svc-start; [ -e /shared/go ] && exit 5; exec sleep 1000\n',
                'required = false\n[restart]\ndelay = "50ms"\nsuccess_exit = [5]\n')
    (rig.shared / "go").touch()
    started(rig, container_id, "svc")
    wait_for(lambda: state(rig, container_id, "svc") == "exited", 10)
    time.sleep(0.3)
    assert words(rig).count("svc-start") == 1


# -- readiness over HTTP --------------------------------------------------------------------------


HTTPD = "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p {port} -h {root}\n"


def test_http_readiness(rig: Rig, container_id: str) -> None:
    rig.service("web", 'sleep 0.5; ev web-listens; ' + HTTPD.format(port=8080, root="/tmp/www"),
                '[ready]\nhttp = "http://127.0.0.1:8080/"\ninterval = "50ms"\n'
                '[health]\ntcp = 8080\ninterval = "1m"\n')
    started(rig, container_id, "web")
    seen = words(rig)
    assert "web-listens" in seen
    web = wait_for(lambda: (s := rig.service_status(container_id, "web"))["health"] and s)
    assert web["state"] == "ready" and web["health"] == "healthy", web
    assert web["probe"] == "connected to 127.0.0.1:8080", web


def test_http_readiness_needs_a_2xx(rig: Rig, container_id: str) -> None:
    rig.service("web", HTTPD.format(port=8080, root="/tmp/www"),
                '[ready]\nhttp = "http://127.0.0.1:8080/missing"\ntimeout = "1s"\n')
    r = create_and_start(rig, container_id, "web")
    assert r.returncode != 0
    assert 'service "web" not ready after 1s' in r.stderr, r.stderr


# -- health ---------------------------------------------------------------------------------------


def test_http_health_failing_restarts_the_service(rig: Rig, container_id: str) -> None:
    www = rig.shared / "www"
    www.mkdir()
    (www / "healthz").write_text("ok\n")
    os.chmod(www, 0o777)
    rig.service("web", "ev web-start; exec httpd -f -p 8080 -h /shared/www\n",
                '[ready]\nhttp = "http://127.0.0.1:8080/healthz"\n'
                '[health]\nhttp = "http://127.0.0.1:8080/healthz"\ninterval = "600ms"\n'
                'timeout = "1s"\nfailures = 2\n[restart]\ndelay = "100ms"\n')
    started(rig, container_id, "web")
    web = wait_for(lambda: (s := rig.service_status(container_id, "web"))["health"] == "healthy"
                   and s)
    assert web["probe"] == "HTTP 200"
    assert "healthy" in rig.retinue("status", container_id).stdout
    (www / "healthz").unlink()
    unhealthy = wait_for(lambda: (s := rig.service_status(container_id, "web"))["health"]
                         == "unhealthy 1/2" and s, 5, 0.02)
    assert unhealthy["probe"] == "HTTP 404", unhealthy
    wait_for(lambda: words(rig).count("web-start") == 2, 5)
    (www / "healthz").write_text("ok\n")
    web = wait_for(lambda: (s := rig.service_status(container_id, "web"))["health"] == "healthy"
                   and s["state"] == "ready" and s, 5)
    assert web["restarts"] == 1
    log = rig.service_log(container_id, "web")
    assert "health check failed (1/2): HTTP 404" in log, log
    assert "health check failed 2 times in a row (HTTP 404): restarting" in log, log
    assert rig.runc_status(container_id) == "running"


def test_a_probe_that_hangs_is_killed_and_never_piles_up(rig: Rig, container_id: str) -> None:
    script(rig, "svc", "check.sh", "[ -e /shared/hang ] && exec sleep 1002\nexit 0\n")
    rig.service("svc", "ev svc-start; exec sleep 1000\n",
                'required = false\n[health]\nexec = ["check.sh"]\ninterval = "100ms"\n'
                'timeout = "300ms"\nfailures = 3\n[restart]\ndelay = "100ms"\n')
    started(rig, container_id, "svc")
    wait_for(lambda: rig.service_status(container_id, "svc")["health"] == "healthy")
    (rig.shared / "hang").touch()
    most = 0
    deadline = time.monotonic() + 8
    while words(rig).count("svc-start") < 2 and time.monotonic() < deadline:
        most = max(most, len(processes_mentioning("sleep 1002")))
        time.sleep(0.02)
    assert words(rig).count("svc-start") == 2, words(rig)
    assert most <= 1, most  # one probe in flight at a time
    (rig.shared / "hang").unlink()
    wait_for(lambda: not processes_mentioning("sleep 1002"), 5)
    log = rig.service_log(container_id, "svc")
    assert "still running after 300ms: killed" in log, log


# -- drain before stop ----------------------------------------------------------------------------


TRAPS_TERM = "trap 'ev svc-term; exit 0' TERM; ev svc-start; sleep 1000 & wait\n"


def test_drain_runs_before_the_stop_signal(rig: Rig, container_id: str) -> None:
    script(rig, "svc", "drain.sh", 'ev drain-start; echo "draining"; sleep 0.3; ev drain-done\n')
    rig.service("svc", TRAPS_TERM, '[stop]\nexec = ["drain.sh"]\ntimeout = "5s"\n')
    bundle = rig.bundle(main_args("sleep 0.5; ev main-exit; exit 0"),
                        env=["RETINUE_SERVICES=svc"])
    out = rig.base / "run.out"
    with open(out, "w") as f:
        proc = subprocess.run(rig.rt_argv("run", "--bundle", str(bundle), container_id),
                              stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                              timeout=60)
    assert proc.returncode == 0, out.read_text()
    seen = words(rig)
    assert (seen.index("main-exit") < seen.index("drain-start") < seen.index("drain-done")
            < seen.index("svc-term")), seen
    assert "draining" in rig.service_log(container_id, "svc")


def test_a_drain_that_hangs_is_cut_at_the_stop_timeout(rig: Rig, container_id: str) -> None:
    script(rig, "svc", "drain.sh", "ev drain-start; exec sleep 1003\n")
    rig.service("svc", TRAPS_TERM, 'required = false\n[stop]\nexec = ["drain.sh"]\n'
                'timeout = "1s"\n')
    started(rig, container_id, "svc")
    wait_for(lambda: state(rig, container_id, "svc") == "ready")
    began = time.monotonic()
    r = rig.retinue("stop", container_id, "svc")
    took = time.monotonic() - began
    assert r.returncode == 0, r.stderr
    assert 0.9 < took < 5, took
    assert "svc-term" in words(rig)
    assert not processes_mentioning("sleep 1003")
    svc = rig.service_status(container_id, "svc")
    assert svc["state"] == "stopped" and svc["stopped_by"] == "retinue stop", svc
    assert "drain" in rig.service_log(container_id, "svc")


# -- manual control and fate sharing --------------------------------------------------------------


FATAL = ("ev svc-start; while [ ! -e /shared/die ]; do sleep 0.05; done; "
         "echo 'svc: lost the upstream'; exit 1\n")
FATAL_TOML = ('on_failure = "stop-container"\n[restart]\npolicy = "no"\n'
              '[stop]\ntimeout = "1s"\n')


def test_stop_container_ends_the_main_process_with_a_distinct_code(
    rig: Rig, container_id: str
) -> None:
    rig.service("svc", FATAL, FATAL_TOML)
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=svc"])
    out = rig.base / "run.out"
    with open(out, "w") as f:
        proc = subprocess.Popen(rig.rt_argv("run", "--bundle", str(bundle), container_id),
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "main" in words(rig), 20)
            (rig.shared / "die").touch()
            code = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == FATE_EXIT, out.read_text()
    seen = words(rig)
    assert "main-term" in seen, seen  # the main process got SIGTERM through init
    log = rig.service_log(container_id, "svc")
    assert "failed for good" in log and "stopping the container" in log, log
    supervisor_log = (rig.log_dir / container_id / "supervisor.log").read_text()
    assert ('service "svc" failed for good (exited with status 1) and has on_failure = '
            '"stop-container": stopping the container') in supervisor_log, supervisor_log


def test_manual_stop_is_not_a_failure_and_start_brings_it_back(
    rig: Rig, container_id: str
) -> None:
    rig.service("svc", "ev svc-start; exec sleep 1000\n", FATAL_TOML)
    started(rig, container_id, "svc")
    r = rig.retinue("stop", container_id, "svc")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("svc: stopped"), r.stdout
    time.sleep(0.5)
    assert rig.runc_status(container_id) == "running"  # no fate sharing
    svc = rig.service_status(container_id, "svc")
    assert svc["state"] == "stopped" and svc["stopped_by"] == "retinue stop", svc
    assert "stopped by retinue stop" in rig.retinue("status", container_id).stdout
    r = rig.retinue("start", container_id, "svc")
    assert r.returncode == 0, r.stderr
    assert state(rig, container_id, "svc") in ("running", "ready")
    assert words(rig).count("svc-start") == 2
    r = rig.retinue("restart", container_id, "svc")
    assert r.returncode == 0, r.stderr
    assert words(rig).count("svc-start") == 3
    assert rig.service_status(container_id, "svc")["stopped_by"] is None


def test_control_errors_are_named(rig: Rig, container_id: str) -> None:
    rig.service("svc", "exec sleep 1000\n")
    started(rig, container_id, "svc")
    r = rig.retinue("restart", container_id, "nope")
    assert r.returncode == 1 and "no service 'nope'" in r.stderr, r.stderr
    r = rig.retinue("stop", "no-such-container", "svc")
    assert r.returncode == 1 and "no-such-container" in r.stderr, r.stderr


def test_a_restart_while_the_service_is_starting(rig: Rig, container_id: str) -> None:
    rig.service("slow", "ev slow-start; sleep 1.5; touch /tmp/slow.ready; exec sleep 1000\n",
                'required = false\n[ready]\nfile = "/tmp/slow.ready"\ntimeout = "20s"\n')
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=slow"],
                        edit=lambda spec: spec["mounts"].append(
                            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                             "options": ["mode=1777"]}))
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    wait_for(lambda: state(rig, container_id, "slow") == "running")
    r = rig.retinue("restart", container_id, "slow")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("slow: ready"), r.stdout
    assert words(rig).count("slow-start") == 2
    assert rig.service_status(container_id, "slow")["restarts"] >= 1


def test_control_before_the_container_started_is_refused(rig: Rig, container_id: str) -> None:
    """While `start` waits for a required service, a restart of it is refused with the reason
    (the gate owns the start); `start` itself is not disturbed."""
    rig.service("slow", "ev slow-start; sleep 1; exec sleep 1000\n",
                '[ready]\nfile = "/shared/never"\ntimeout = "20s"\n')
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=slow"])
    assert rig.create(container_id, bundle).returncode == 0
    starting = subprocess.Popen(rig.rt_argv("start", container_id), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "slow-start" in words(rig))
        r = rig.retinue("restart", container_id, "slow")
        assert r.returncode == 1
        assert f"container {container_id} has not started (phase: starting)" in r.stderr, r.stderr
        (rig.shared / "never").touch()
        assert starting.wait(20) == 0, starting.communicate()
    finally:
        if starting.poll() is None:
            starting.kill()
        starting.communicate()
    assert words(rig).count("slow-start") == 1
