"""Start order, parallelism, readiness and the gate that holds the container's entrypoint.

Services and the main process append `UPTIME WORDS` lines to /shared/events (see conftest):
the order of the lines is the order things happened, the uptimes say how long apart.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from conftest import FOREVER, Rig, main_args, uptime, wait_for

# Becomes ready (a file) `$DELAY` seconds after it starts.
LATE = 'ev "$RETINUE_SERVICE start"; sleep "$DELAY"; ev "$RETINUE_SERVICE ready"; ' \
       "touch /tmp/$RETINUE_SERVICE.ready; exec sleep 1000\n"


def late(rig: Rig, name: str, delay: float, deps: str = "", extra: str = "") -> None:
    rig.service(name, LATE, f'{deps}env = {{ DELAY = "{delay}" }}\n{extra}'
                f'[ready]\nfile = "/tmp/{name}.ready"\ntimeout = "3s"\ninterval = "20ms"\n')


def create_and_start(rig: Rig, cid: str, services: str, main: str = FOREVER) -> float:
    """Returns how long `start` took."""
    bundle = rig.bundle(main_args(f"ev main; {main}"), env=[f"RETINUE_SERVICES={services}"])
    r = rig.create(cid, bundle)
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    r = rig.rt("start", cid)
    took = time.monotonic() - t0
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    return took


def position(events: list[tuple[float, str]], words: str) -> int:
    for i, (_, w) in enumerate(events):
        if w == words:
            return i
    raise AssertionError(f"no {words!r} in {events}")


def test_dependency_order(rig: Rig, container_id: str) -> None:
    """db <- app (requires) <- web (after), and `side` independent of all of them."""
    late(rig, "db", 0.3)
    late(rig, "app", 0.2, 'requires = ["db"]\n')
    late(rig, "web", 0.1, 'after = ["app"]\n')
    late(rig, "side", 0.1)
    create_and_start(rig, container_id, "web,app,db,side")
    wait_for(lambda: any(w == "main" for _, w in rig.events()))
    ev = rig.events()
    # Each starts only once the one it follows is ready, and the main process comes last.
    assert position(ev, "db ready") < position(ev, "app start")
    assert position(ev, "app ready") < position(ev, "web start")
    assert position(ev, "web ready") < position(ev, "main")
    # The independent service did not wait for the chain.
    assert position(ev, "side start") < position(ev, "db ready")
    assert rig.event_time("side ready") < rig.event_time("db ready")
    # The supervisor's own log of each service agrees.
    assert "ready" in rig.service_log(container_id, "db")


def test_independent_services_start_in_parallel(rig: Rig, container_id: str) -> None:
    for name in ("one", "two", "three"):
        late(rig, name, 1)
    took = create_and_start(rig, container_id, "one,two,three")
    assert 1.0 <= took < 2.0, f"start took {took:.2f}s for three 1s services"
    starts = [rig.event_time(f"{n} start") for n in ("one", "two", "three")]
    assert max(starts) - min(starts) < 0.5, starts


def test_the_gate_holds_the_entrypoint(rig: Rig, container_id: str) -> None:
    """The main process's first output comes after the service's ready time; start returns
    only then."""
    late(rig, "late", 1)
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=late"])
    assert rig.create(container_id, bundle).returncode == 0
    before = uptime()
    r = rig.rt("start", container_id)
    returned = uptime()
    assert r.returncode == 0, r.stderr
    ready = rig.event_time("late ready")
    assert returned - before >= 0.95
    assert ready <= returned
    main = wait_for(lambda: [t for t, w in rig.events() if w == "main"])[0]
    assert main >= ready
    ev = rig.events()
    assert position(ev, "late ready") < position(ev, "main")
    status = rig.service_status(container_id, "late")
    assert status["state"] == "ready" and status["ready_since"] and status["pid"]


def test_optional_services_never_block(rig: Rig, container_id: str) -> None:
    late(rig, "slowpoke", 2.5, extra="required = false\n")
    rig.service("broken", 'echo "cannot start"; exit 1\n',
                'required = false\n[restart]\npolicy = "no"\n')
    late(rig, "quick", 0.1)
    took = create_and_start(rig, container_id, "slowpoke,broken,quick")
    assert took < 1.5
    wait_for(lambda: any(w == "main" for _, w in rig.events()))
    ev = rig.events()
    assert position(ev, "quick ready") < position(ev, "main")
    assert all(w != "slowpoke ready" for _, w in ev)
    assert rig.service_status(container_id, "slowpoke")["state"] == "running"
    broken = wait_for(lambda: rig.service_status(container_id, "broken")["last_exit"] and
                      rig.service_status(container_id, "broken"))
    assert broken["state"] == "failed"
    assert broken["last_exit"] == "exited with status 1"
    # And the optional one still becomes ready later.
    wait_for(lambda: rig.service_status(container_id, "slowpoke")["state"] == "ready", 5)


def test_a_failed_wanted_dependency_is_tolerated(rig: Rig, container_id: str) -> None:
    rig.service("cache", "exit 2\n", 'required = false\n[restart]\npolicy = "no"\n')
    late(rig, "app", 0.1, 'wants = ["cache"]\n')
    create_and_start(rig, container_id, "app")
    assert rig.service_status(container_id, "app")["state"] == "ready"


# -- readiness kinds --------------------------------------------------------------------------

READINESS = {
    # kind: (script, [ready] table, a check the main process runs when it starts)
    "started": (
        'ev "svc ready"; exec sleep 1000\n', "", "true",
    ),
    "tcp": (
        # httpd as nobody: readiness is seen from the container's network namespace.
        'sleep 0.3; ev "svc ready"; exec httpd -f -p 8080 -h /retinue/svc\n',
        "tcp = 8080\n",
        "wget -q -O /shared/fetched http://127.0.0.1:8080/index.html",
    ),
    "file": (
        'sleep 0.3; ev "svc ready"; touch /tmp/svc-ready; exec sleep 1000\n',
        'file = "/tmp/svc-ready"\n',
        "test -e /tmp/svc-ready",
    ),
    "exec": (
        'sleep 0.3; ev "svc ready"; touch /tmp/svc-ok; exec sleep 1000\n',
        'exec = ["probe.sh", "/tmp/svc-ok"]\n',
        "test -e /tmp/svc-ok",
    ),
    "notify": (
        # busybox has no sd_notify client; `logger` sends one datagram to /dev/log, which the
        # service points at $NOTIFY_SOCKET. The READY=1 line follows syslog's own prefix.
        # logger runs in the background of a shell that then execs sleep, which never reaps it:
        # the supervisor checks the sender's ancestry in /proc, and a sender that is already
        # gone cannot be checked (as with systemd's NotifyAccess=all).
        'sleep 0.3; ln -sf "$NOTIFY_SOCKET" /dev/log; ev "svc ready"; '
        'logger "$(printf "starting\\nREADY=1")" & exec sleep 1000\n',
        "notify = true\n",
        "true",
    ),
}


@pytest.mark.parametrize("kind", list(READINESS))
def test_readiness_kinds_gate_the_entrypoint(rig: Rig, container_id: str, kind: str) -> None:
    script, ready, check = READINESS[kind]
    user = 'user = "nobody"\n' if kind == "tcp" else ""
    rig.service("svc", script, f'{user}[ready]\n{ready}timeout = "3s"\ninterval = "20ms"\n')
    (rig.files / "svc" / "index.html").write_text("hello from svc\n")
    probe = rig.files / "svc" / "probe.sh"
    probe.write_text('#!/bin/sh\ntest -e "$1"\n')
    probe.chmod(0o755)
    create_and_start(rig, container_id, "svc",
                     main=f'if {check}; then ev main-ok; else ev main-bad; fi; {FOREVER}')
    wait_for(lambda: any(w.startswith("main-") for _, w in rig.events()))
    ev = rig.events()
    assert position(ev, "svc ready") < position(ev, "main")
    assert position(ev, "main-ok") >= 0, ev
    if kind == "tcp":
        assert (rig.shared / "fetched").read_text() == "hello from svc\n"
    assert rig.service_status(container_id, "svc")["state"] == "ready"


def test_extra_capability_of_a_non_root_service(rig: Rig, container_id: str) -> None:
    """A service running as nobody keeps its extra capability across exec (the ambient set):
    it gives a file away, which takes CAP_CHOWN (not among runc's default capabilities)."""
    rig.service(
        "owner",
        "touch /tmp/mine && chown 1:1 /tmp/mine && touch /tmp/given; exec sleep 1000\n",
        'user = "nobody"\ncapabilities = ["CAP_CHOWN"]\n'
        '[ready]\nfile = "/tmp/given"\ntimeout = "3s"\n[restart]\npolicy = "no"\n',
    )
    create_and_start(rig, container_id, "owner")
    assert rig.service_status(container_id, "owner")["state"] == "ready"


def test_notify_from_another_process_is_ignored(rig: Rig, container_id: str) -> None:
    """Only the service (or its children) may say it is ready: READY=1 sent to its socket by
    another service does not open the gate."""
    rig.service("real", "echo waiting; exec sleep 1000\n",
                '[ready]\nnotify = true\ntimeout = "1s"\n')
    rig.service("liar", 'ln -sf /run/retinue/real.sock /dev/log; '
                'ev liar-sent; logger "$(printf "x\\nREADY=1")" & exec sleep 1000\n')
    bundle = rig.bundle(main_args("ev main; sleep 1000"), env=["RETINUE_SERVICES=liar,real"])
    assert rig.create(container_id, bundle).returncode == 0
    r = rig.rt("start", container_id)
    assert r.returncode == 1
    assert rig.errors() == [
        'retinue: service "real" not ready after 1s: still running; last output: waiting'
    ]
    assert any(w == "liar-sent" for _, w in rig.events())
    assert all(w != "main" for _, w in rig.events())


# -- a gate that never opens ------------------------------------------------------------------

FAILURES = {
    # name: (script, extra toml, expected error line)
    "timeout": (
        'echo "waiting for the database"; exec sleep 1000\n',
        '[ready]\nfile = "/tmp/never"\ntimeout = "1s"\n',
        'retinue: service "bad" not ready after 1s: still running; '
        "last output: waiting for the database",
    ),
    "crash-loop": (
        'echo "boom: /etc/bad.conf missing"; exit 3\n',
        '[ready]\nfile = "/tmp/never"\ntimeout = "1s"\n[restart]\ndelay = "100ms"\n',
        'retinue: service "bad" not ready after 1s: exited with status 3; '
        "last output: boom: /etc/bad.conf missing",
    ),
    "exit-no-restart": (
        'echo "boom: /etc/bad.conf missing"; exit 3\n',
        '[ready]\nfile = "/tmp/never"\ntimeout = "3s"\n[restart]\npolicy = "no"\n',
        'retinue: service "bad" exited with status 3 before it was ready; '
        "last output: boom: /etc/bad.conf missing",
    ),
    "not-executable-user": (
        # The files are root-only: the service's user cannot run its command.
        'echo "never runs"\n',
        'user = "nobody"\n[ready]\ntimeout = "1s"\n[restart]\npolicy = "no"\n',
        'retinue: service "bad" could not be started: exec: "/retinue/bad/run.sh": stat '
        "/retinue/bad/run.sh: permission denied",
    ),
    # The lower runtime's errors that no retry can mend fail the start at once, not after the
    # start timeout (30s) of restarts with backoff.
    "not-executable-restarting": (
        'echo "never runs"\n',
        'user = "nobody"\n[ready]\ntimeout = "30s"\n',
        'retinue: service "bad" could not be started: exec: "/retinue/bad/run.sh": stat '
        "/retinue/bad/run.sh: permission denied",
    ),
    "missing-cwd": (
        'echo "never runs"\n',
        'working_dir = "/nonexistent"\n[ready]\ntimeout = "30s"\n',
        'retinue: service "bad" could not be started: chdir to cwd ("/nonexistent") set in '
        "config.json failed: no such file or directory",
    ),
    "command-host-symlink": (
        # The command is a symlink to a host path: the check finds it, the container does not.
        'echo "never runs"\n',
        '[ready]\ntimeout = "30s"\n',
        'retinue: service "bad" could not be started: exec: "/retinue/bad/run.sh": stat '
        "/retinue/bad/run.sh: no such file or directory",
    ),
}


@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.parametrize("case", list(FAILURES))
def test_a_required_service_that_never_gets_ready_fails_start(
    rig: Rig, container_id: str, case: str, log_format: str
) -> None:
    script, toml, expected = FAILURES[case]
    rig.service("bad", script, toml)
    if case.startswith("not-executable"):
        (rig.files / "bad").chmod(0o700)
    if case == "command-host-symlink":
        (rig.files / "bad" / "run.sh").unlink()
        (rig.files / "bad" / "run.sh").symlink_to("/usr/bin/true")
    late(rig, "good", 0.1)
    bundle = rig.bundle(main_args("ev main; echo ran > /shared/marker; sleep 1000"),
                        env=["RETINUE_SERVICES=good,bad"])
    assert rig.create(container_id, bundle).returncode == 0
    t0 = time.monotonic()
    r = rig.rt("start", container_id, log_format=log_format)
    took = time.monotonic() - t0
    assert r.returncode == 1
    assert took < 3.5
    lines = rig.runc_log.read_text().splitlines()
    assert len(lines) == 1, lines
    if log_format == "json":
        (message,) = rig.errors()
    else:
        m = re.fullmatch(r'time="[^"]+" level=error msg="(.*)"', lines[0])
        assert m, lines[0]
        message = json.loads(f'"{m.group(1)}"')  # Go's quoting of ASCII text is JSON's
    if expected is None:
        assert re.match(r'retinue: service "bad" could not be started \(.*exec exited with '
                        r"status \d+\) before it was ready; last output: ", message), message
    else:
        assert message == expected
    assert r.stderr == message + "\n"
    # The entrypoint never ran.
    time.sleep(0.2)
    assert not (rig.shared / "marker").exists()
    assert all(w != "main" for _, w in rig.events())
    # The container ended without its entrypoint (engines delete a task only once it has
    # stopped), every service process is gone, and so is the supervisor.
    assert rig.runc_status(container_id) == "stopped"
    pids = [int(p) for name in ("good", "bad")
            for p in re.findall(r"started, pid (\d+)", rig.service_log(container_id, name))]
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), 5)
    wait_for(lambda: not rig.supervisor_pids(container_id), 5)
    # A second start fails too, and does not run the entrypoint either.
    r2 = rig.rt("start", container_id)
    assert r2.returncode == 1
    assert "stopped" in r2.stderr
    assert not (rig.shared / "marker").exists()
    r = rig.rt("delete", container_id)
    assert r.returncode == 0, r.stderr
    assert rig.state(container_id) is None
    wait_for(lambda: not rig.leftovers(container_id), 5)


def test_a_required_dependency_that_fails_fails_its_dependents(
    rig: Rig, container_id: str
) -> None:
    # Ready only once it has made its file, which it never does: it fails before it is ready.
    # (With the default "started" readiness an exit right after the exec may come after the
    # service already counted as started, and its dependents rightly start.)
    rig.service("db", 'echo "db: no disk"; exit 1\n',
                'required = false\n[restart]\npolicy = "no"\n[ready]\nfile = "/tmp/db.ready"\n')
    late(rig, "app", 0.1, 'requires = ["db"]\n')
    bundle = rig.bundle(main_args("ev main; sleep 1000"), env=["RETINUE_SERVICES=app"])
    assert rig.create(container_id, bundle).returncode == 0
    r = rig.rt("start", container_id)
    assert r.returncode == 1
    assert rig.errors() == ['retinue: service "app" not started: dependency "db" failed']
    assert all(w != "app start" for _, w in rig.events())
