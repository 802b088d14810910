"""Supervision: restarts by policy with exponential backoff and a start limit, `retinue status`,
`retinue logs` (kept after the container is gone) and size-capped rotation of the logs."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import time

from conftest import ADMIN, FOREVER, Rig, main_args, wait_for


def start(rig: Rig, cid: str, services: str) -> None:
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=[f"RETINUE_SERVICES={services}"])
    r = rig.create(cid, bundle)
    assert r.returncode == 0, r.stderr
    r = rig.rt("start", cid)
    assert r.returncode == 0, (r.stderr, rig.log_entries())


def starts_of(rig: Rig, name: str) -> list[float]:
    return [t for t, w in rig.events() if w == f"{name} start"]


def test_crash_loop_backs_off_then_hits_the_start_limit(rig: Rig, container_id: str) -> None:
    rig.service("crash", 'ev "crash start"; echo "crash: cannot open /data"; exit 1\n',
                'required = false\n[restart]\ndelay = "100ms"\nmax_delay = "1s"\nburst = 4\n'
                'interval = "10s"\n')
    rig.service("web", "exec httpd -f -p 8080\n", "[ready]\ntcp = 8080\n")
    start(rig, container_id, "web,crash")
    failed = wait_for(
        lambda: (s := rig.service_status(container_id, "crash"))["state"] == "failed" and s, 8
    )
    # Four starts (the burst), with delays of 100, 200 and 400 ms between them.
    times = starts_of(rig, "crash")
    assert len(times) == 4, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each gap is its delay plus the time runc exec takes (generous: the host is shared).
    for gap, delay in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert delay - 0.01 <= gap < delay + 0.45, gaps
    assert failed["pid"] is None
    assert failed["restarts"] == 3
    assert failed["last_exit"] == "exited with status 1"
    assert failed["ready_since"] is None
    assert failed["reason"] == "start limit hit: 4 starts within 10s"
    # Nothing restarts it afterwards.
    time.sleep(0.6)
    assert len(starts_of(rig, "crash")) == 4
    # The container and its other service are unaffected.
    assert rig.runc_status(container_id) == "running"
    web = rig.service_status(container_id, "web")
    assert web["state"] == "ready" and web["pid"] and web["ready_since"]

    # The table shows the same.
    r = rig.retinue("status", container_id)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert re.match(r"CONTAINER\s+SERVICE\s+STATE\s+PID\s+RESTARTS\s+READY\s+LAST EXIT$", lines[0])
    (crash_row,) = [line for line in lines if " crash " in line]
    assert re.fullmatch(
        rf"{container_id}\s+crash\s+failed \(optional\)\s+-\s+3\s+-\s+exited with status 1",
        crash_row,
    ), crash_row
    (web_row,) = [line for line in lines if " web " in line]
    assert re.fullmatch(rf"{container_id}\s+web\s+ready\s+{web['pid']}\s+0\s+\d+s\s+-", web_row)
    # Every container of this state dir, without an id.
    assert crash_row in rig.retinue("status").stdout

    # The log has every run's output and what the supervisor did.
    log = rig.retinue("logs", container_id, "crash")
    assert log.returncode == 0
    assert log.stdout.count("crash: cannot open /data") == 4
    assert "restarting in 100ms" in log.stdout and "restarting in 400ms" in log.stdout
    assert "start limit hit" in log.stdout

    # The logs outlive the container.
    r = rig.rt("delete", "--force", container_id)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not rig.leftovers(container_id), 5)
    after = rig.retinue("logs", container_id, "crash")
    assert after.returncode == 0
    assert after.stdout.startswith(log.stdout)
    gone = rig.retinue("status", container_id)
    assert gone.returncode == 1 and "no container" in gone.stderr


def test_restart_policies(rig: Rig, container_id: str) -> None:
    fast = '[restart]\ndelay = "100ms"\nburst = 50\n'
    # on-failure: a clean exit (0, or a stop signal) is not restarted; SIGKILL is a failure.
    rig.service("once", 'ev "once start"; sleep 0.2; exit 0\n', fast)
    rig.service("always", 'ev "always start"; sleep 0.2; exit 0\n',
                fast.replace("[restart]\n", '[restart]\npolicy = "always"\n'))
    rig.service("never", 'ev "never start"; sleep 0.2; exit 7\n',
                'required = false\n[restart]\npolicy = "no"\n')
    rig.service("termed", 'ev "termed start"; exec sleep 1000\n', fast)
    rig.service("killed", 'ev "killed start"; exec sleep 1000\n', fast)
    start(rig, container_id, "once,always,never,termed,killed")

    os.kill(rig.service_status(container_id, "termed")["pid"], signal.SIGTERM)
    killed_pid = rig.service_status(container_id, "killed")["pid"]
    os.kill(killed_pid, signal.SIGKILL)
    wait_for(lambda: len(starts_of(rig, "always")) >= 3 and len(starts_of(rig, "killed")) >= 2)
    time.sleep(0.4)

    once = rig.service_status(container_id, "once")
    assert (once["state"], once["restarts"], once["last_exit"]) == ("exited", 0,
                                                                    "exited with status 0")
    assert len(starts_of(rig, "once")) == 1
    never = rig.service_status(container_id, "never")
    assert (never["state"], never["restarts"], never["last_exit"]) == ("failed", 0,
                                                                       "exited with status 7")
    assert len(starts_of(rig, "never")) == 1
    termed = rig.service_status(container_id, "termed")
    assert (termed["state"], termed["restarts"], termed["last_exit"]) == (
        "exited", 0, "killed by SIGTERM")
    killed = rig.service_status(container_id, "killed")
    assert killed["restarts"] == 1 and killed["last_exit"] == "killed by SIGKILL"
    assert killed["state"] == "ready" and killed["pid"] not in (None, killed_pid)
    assert rig.service_status(container_id, "always")["restarts"] >= 2


def test_backoff_resets_after_a_healthy_period(rig: Rig, container_id: str) -> None:
    """Runs of 0.5s, longer than reset_after: the delay stays at 200ms instead of doubling."""
    rig.service("flappy", 'ev "flappy start"; sleep 0.5; exit 1\n',
                'required = false\n[restart]\ndelay = "200ms"\nreset_after = "300ms"\n'
                "burst = 10\n")
    start(rig, container_id, "flappy")
    times = wait_for(lambda: len(t := starts_of(rig, "flappy")) >= 4 and t, 8)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # The supervisor's own account: the delay never doubled.
    assert rig.service_log(container_id, "flappy").count("restarting in 200ms") >= 3
    assert "restarting in 400ms" not in rig.service_log(container_id, "flappy")
    # 0.5s of run + 0.2s of delay + the exec; doubling would make the third gap 0.5 + 0.8.
    assert all(0.69 <= g < 1.25 for g in gaps[:3]), gaps


def test_a_required_service_restarts_after_the_gate(rig: Rig, container_id: str) -> None:
    rig.service("web", 'ev "web start"; exec httpd -f -p 8080\n',
                '[ready]\ntcp = 8080\n[restart]\ndelay = "100ms"\n')
    start(rig, container_id, "web")
    first = rig.service_status(container_id, "web")
    os.kill(first["pid"], signal.SIGKILL)
    again = wait_for(
        lambda: (s := rig.service_status(container_id, "web"))["restarts"] == 1
        and s["state"] == "ready" and s, 5,
    )
    assert again["pid"] != first["pid"]
    assert again["ready_since"] > first["ready_since"]
    assert rig.runc_status(container_id) == "running"


def test_logs_follow(rig: Rig, container_id: str) -> None:
    rig.service("talker", 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.1; done\n')
    start(rig, container_id, "talker")
    follow = subprocess.Popen([ADMIN, "logs", "-f", container_id, "talker"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while not any(line.startswith("tick 15") for line in seen):
            assert time.monotonic() < deadline, seen
            seen.append(follow.stdout.readline())
        ticks = [int(line.split()[1]) for line in seen if line.startswith("tick ")]
        assert ticks == list(range(1, 16))
    finally:
        follow.terminate()
        follow.wait(5)
    missing = rig.retinue("logs", container_id, "nope")
    assert missing.returncode == 1
    assert f"{rig.log_dir}/{container_id}/nope.log: no such log" in missing.stderr


def test_logs_rotate_at_the_size_cap(rig: Rig, container_id: str) -> None:
    rig.write_config("log_max_bytes = 2048\nlog_keep = 2\n")
    # 300 lines of 32 bytes, written as fast as the shell can: one pipe read may bring many.
    rig.service("chatty",
                'i=100; while [ $i -lt 400 ]; do echo "line $i ......................"; '
                "i=$((i+1)); done; echo done; exec sleep 1000\n")
    start(rig, container_id, "chatty")
    log = rig.log_dir / container_id / "chatty.log"
    wait_for(lambda: "done\n" in log.read_text(), 5)
    files = [log, log.with_name("chatty.log.1"), log.with_name("chatty.log.2")]
    assert not log.with_name("chatty.log.3").exists()
    for f in files:
        assert 0 < f.stat().st_size <= 2048, (f, f.stat().st_size)
    # The newest lines are in the current file, older ones in .1 and .2, with no gap or tear.
    text = "".join(f.read_text() for f in reversed(files))
    numbers = [int(m) for m in re.findall(r"^line (\d+) \.+$", text, re.M)]
    assert numbers == list(range(numbers[0], 400))
    assert numbers[0] > 100  # the oldest were rotated away
    assert all(line.startswith(("line ", "retinue: ", "done")) for line in text.splitlines())


def test_log_settings_are_checked(rig: Rig) -> None:
    rig.write_config('log_max_bytes = 10\nlog_keep = 0\n')
    r = rig.retinue("check")
    assert r.returncode == 1
    assert f"{rig.config_path}: log_max_bytes: expected at least 1024, got 10" in r.stderr
    assert f"{rig.config_path}: log_keep: expected 1 or more, got 0" in r.stderr
    rig.write_config('log_max_bytes = "1M"\n')
    r = rig.retinue("check")
    assert "log_max_bytes: expected an integer, got a string: '1M'" in r.stderr
