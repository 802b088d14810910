"""retinue-init as the container's PID 1, on real runc: the main process is its child, signals
reach it, zombies are reaped, the exit status is the main's, and the services stop after the
main process has exited, within the container's stop budget."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FOREVER, Rig, main_args, uptime, wait_for

# A log shipper: on SIGTERM it flushes (one line in its log, one event) and exits.
SHIPPER = (
    'trap \'ev flushed; echo flushed; exit 0\' TERM\n'
    'ev "shipper start"\n'
    "sleep 1000 & wait\n"
)


def run(rig: Rig, cid: str, bundle: Path, timeout: float = 60) -> tuple[int, str]:
    """`retinue-runtime run`: the container's exit status and its stdout."""
    out_path = rig.base / f"{cid}.run.out"
    with open(out_path, "w") as out:
        proc = subprocess.run(
            rig.rt_argv("run", "--bundle", str(bundle), cid),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
        )
    return proc.returncode, out_path.read_text()


def start(rig: Rig, cid: str, bundle: Path) -> None:
    r = rig.create(cid, bundle)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    r = rig.rt("start", cid)
    assert r.returncode == 0, (r.stderr, rig.log_entries())


@pytest.mark.parametrize(
    ("main", "code"),
    [
        ("exit 0", 0),
        ("exit 7", 7),
        ("kill -TERM $$", 143),
        ("kill -KILL $$", 137),
    ],
)
def test_a_job_ends_and_its_shipper_flushes_after_it(
    rig: Rig, container_id: str, main: str, code: int
) -> None:
    rig.service("shipper", SHIPPER)
    bundle = rig.bundle(main_args(f"sleep 0.2; ev main-exit; {main}"),
                        env=["RETINUE_SERVICES=shipper"])
    status, _ = run(rig, container_id, bundle)
    assert status == code
    words = [w for _, w in rig.events()]
    assert words.index("main-exit") < words.index("flushed"), words
    log = rig.service_log(container_id, "shipper")
    assert "flushed" in log and "stopping with SIGTERM" in log
    assert rig.errors() == [] and rig.warnings() == []


def test_kill_term_returns_at_once_and_the_main_gets_it_first(
    rig: Rig, container_id: str
) -> None:
    rig.service("shipper", SHIPPER)
    start(rig, container_id, rig.bundle(main_args(f"ev main; {FOREVER}"),
                                        env=["RETINUE_SERVICES=shipper"]))
    wait_for(lambda: any(w == "main" for _, w in rig.events()))
    t0 = time.monotonic()
    r = rig.rt("kill", container_id, "TERM")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 0.5
    wait_for(lambda: rig.runc_status(container_id) == "stopped")
    assert rig.event_time("main-term") <= rig.event_time("flushed")
    assert rig.rt("delete", container_id).returncode == 0
    wait_for(lambda: not rig.leftovers(container_id), 5)


@pytest.mark.parametrize("sig", ["HUP", "USR1", "INT", "TERM"])
def test_signals_are_forwarded_to_the_main_process(rig: Rig, container_id: str, sig: str) -> None:
    rig.service("idle", "sleep 1000 & wait\n")
    start(rig, container_id, rig.bundle(
        main_args(f'trap "ev got-{sig}; exit 0" {sig}; ev main; sleep 1000 & wait'),
        env=["RETINUE_SERVICES=idle"]))
    wait_for(lambda: any(w == "main" for _, w in rig.events()))
    assert rig.rt("kill", container_id, sig).returncode == 0
    wait_for(lambda: any(w == f"got-{sig}" for _, w in rig.events()))
    wait_for(lambda: rig.runc_status(container_id) == "stopped")


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def test_orphans_of_a_service_leave_no_zombies(rig: Rig, container_id: str) -> None:
    # Each round leaves a grandchild that outlives its parent: re-parented to PID 1, it must be
    # reaped by retinue-init once it exits.
    rig.service("forker",
                "for i in 1 2 3 4 5; do sh -c 'sleep 0.1 &'; done\n"
                'ev "forked"\nsleep 1000 & wait\n')
    start(rig, container_id, rig.bundle(main_args(f"ev main; {FOREVER}"),
                                        env=["RETINUE_SERVICES=forker"]))
    wait_for(lambda: any(w == "forked" for _, w in rig.events()))
    state = rig.state(container_id)
    assert state is not None
    init_pid = state["pid"]
    with open(f"/proc/{init_pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"/.retinue/init"
    time.sleep(0.5)  # every orphan has exited by now
    assert zombies_of(init_pid) == []


def static_binary(tmp: Path) -> Path:
    """A static program that prints a line and exits 3, built here."""
    cc = shutil.which("musl-gcc") or shutil.which("gcc")
    assert cc, "no C compiler (make deps installs musl-tools and gcc)"
    src = tmp / "app.c"
    src.write_text(
        '#include <unistd.h>\nint main(void){write(1,"hello from app\\n",15);return 3;}\n'
    )
    out = tmp / "app"
    subprocess.run([cc, "-static", "-Os", "-o", str(out), str(src)], check=True)
    return out


def test_a_rootfs_with_one_static_binary(rig: Rig, container_id: str) -> None:
    """Nothing in the image but the app: no shell, no libc. The service brings its own static
    busybox in its files."""
    rootfs = rig.base / "scratch"
    rootfs.mkdir()
    shutil.copy(static_binary(rig.base), rootfs / "app")
    svc_files = rig.files / "idle"
    svc_files.mkdir()
    shutil.copy("/bin/busybox", svc_files / "busybox")
    rig.service("idle", files=str(svc_files),
                command='["/retinue/idle/busybox", "sleep", "1000"]')

    def scratch(spec: dict[str, object]) -> None:
        spec["root"] = {"path": str(rootfs), "readonly": True}
        spec["mounts"] = [m for m in spec["mounts"]  # type: ignore[attr-defined]
                          if m["destination"] in ("/proc", "/dev", "/shared")]

    bundle = rig.bundle(["/app"], env=["RETINUE_SERVICES=idle"], edit=scratch)
    status, out = run(rig, container_id, bundle)
    assert status == 3, out
    assert "hello from app" in out
    assert "stopping with SIGTERM" in rig.service_log(container_id, "idle")


def test_a_policy_rule_gives_init_without_services(rig: Rig, container_id: str) -> None:
    rig.policy('[[attach]]\nname = "tini-like"\nwhen.always = true\ninit = true\n')
    # PID 1 without a handler ignores TERM; as retinue-init's child, the default action applies.
    bundle = rig.bundle(main_args("ev main; sleep 1000 & wait"))
    spec = json.loads((bundle / "config.json").read_text())
    start(rig, container_id, bundle)
    edited = json.loads((bundle / "config.json").read_text())
    assert edited["process"]["args"] == ["/.retinue/init", "--", *spec["process"]["args"]]
    assert edited["annotations"]["io.retinue.init"] == "/.retinue/init --"
    wait_for(lambda: any(w == "main" for _, w in rig.events()))
    assert rig.rt("kill", container_id, "TERM").returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped")


def test_init_false_keeps_the_entrypoint_as_pid_1(rig: Rig, container_id: str) -> None:
    rig.policy('[[attach]]\nname = "systemd"\nwhen.always = true\ninit = false\n'
               'services = ["idle"]\n')
    rig.service("idle", "sleep 1000 & wait\n")
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"))
    start(rig, container_id, bundle)
    state = rig.state(container_id)
    assert state is not None
    with open(f"/proc/{state['pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sh"


def test_the_main_process_sees_what_it_would_see_as_pid_1(rig: Rig, container_id: str) -> None:
    """Same env, fds, cwd and ids with retinue-init as without it (plain runc)."""
    rig.service("idle", "sleep 1000 & wait\n")
    probe = main_args("ls /proc/self/fd > /shared/fds; env | sort > /shared/env; "
                      "pwd > /shared/cwd; id > /shared/id")
    files = ("fds", "env", "cwd", "id")
    seen = {}
    for cid, through_shim in ((container_id, True), (container_id + "-plain", False)):
        bundle = rig.bundle(probe, env=["RETINUE_SERVICES=idle"])
        if through_shim:
            status, _ = run(rig, cid, bundle)
        else:
            status = rig.runc("run", "--bundle", str(bundle), cid).returncode
        assert status == 0
        seen[through_shim] = {f: (rig.shared / f).read_text() for f in files}
    assert seen[True] == seen[False]


def test_stop_budget_caps_a_service_that_ignores_sigterm(rig: Rig, container_id: str) -> None:
    rig.write_config('stop_budget = "2s"\n')
    rig.service("stubborn", 'trap \'ev "ignoring TERM"\' TERM\nev "stubborn start"\n'
                "while :; do sleep 0.05; done\n", '[stop]\ntimeout = "10s"\n')
    start(rig, container_id, rig.bundle(main_args(f"ev main; {FOREVER}"),
                                        env=["RETINUE_SERVICES=stubborn"]))
    wait_for(lambda: any(w == "stubborn start" for _, w in rig.events()))
    t0 = time.monotonic()
    assert rig.rt("kill", container_id, "TERM").returncode == 0
    assert time.monotonic() - t0 < 0.5
    wait_for(lambda: rig.runc_status(container_id) == "stopped", 5)
    took = time.monotonic() - t0
    assert 1.9 <= took < 3.0, took
    assert "stop budget of 2s spent" in rig.service_log(container_id, "stubborn")


# -- configuration and the spec edit ------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "policy", "fragment"),
    [
        ('stop_budget = "soon"\n', "", "stop_budget: expected a duration like 5s or 500ms, got "
         "a string: 'soon'"),
        ("stop_budget = 7200\n", "", "stop_budget: expected between 0s and 1h, got an integer"),
        ("", '[[attach]]\nname = "x"\nwhen.always = true\nstop_budget = "-1s"\n',
         "attach[0].stop_budget: expected a duration"),
        ("", '[[attach]]\nname = "x"\nwhen.always = true\ninit = "yes"\n', "attach[0].init"),
    ],
)
def test_bad_init_settings_are_named(rig: Rig, config: str, policy: str, fragment: str) -> None:
    rig.write_config(config)
    rig.policy(policy)
    r = rig.retinue("check")
    assert r.returncode == 1
    assert fragment in r.stdout + r.stderr, r.stdout + r.stderr


def test_plan_shows_the_init_and_a_retried_create_wraps_once(rig: Rig) -> None:
    from retinue.spec import edits

    rig.service("idle", "sleep 1000 & wait\n")
    bundle = rig.bundle(["sh", "-c", "true"], env=["RETINUE_SERVICES=idle"])
    r = rig.retinue("plan", "--id", "c1", "--root", str(rig.root), str(bundle))
    assert r.returncode == 0, r.stderr
    assert "# init: retinue-init is PID 1" in r.stdout
    assert '+      "/.retinue/init",' in r.stdout

    rules: list[dict[str, object]] = []
    spec = json.loads((bundle / "config.json").read_text())
    init = {"binary": "/x/retinue-init", "supervised": True, "wait_ms": 7000}
    svc = {"name": "idle", "files": "/f", "ready": "started"}
    once = edits.edit(spec, rules, "/h", "/s/c1", [svc], init)
    assert once["process"]["args"] == [
        "/.retinue/init", "-s", "/.retinue/init.sock", "-t", "7000", "--", "sh", "-c", "true"
    ]
    assert edits.edit(once, rules, "/h", "/s/c1", [svc], init) is once
    # The same bundle, reused for another container: unwrapped, rewrapped, mounts not doubled.
    other = edits.edit(once, rules, "/h", "/s/c2", [svc], init)
    assert other["process"]["args"] == once["process"]["args"]
    assert [m["destination"] for m in other["mounts"]].count("/.retinue/init.sock") == 1
    sock_mount = next(m for m in other["mounts"] if m["destination"] == "/.retinue/init.sock")
    assert sock_mount["source"] == "/s/c2/init.sock" and "ro" in sock_mount["options"]
    # And for a container that gets no init: the container's own args again.
    plain = edits.undo(once)
    assert plain["process"]["args"] == ["sh", "-c", "true"]
    assert "io.retinue.init" not in plain["annotations"]


def test_the_main_process_keeps_the_terminal(rig: Rig, container_id: str) -> None:
    """process.terminal: the main process has the container's pty as its controlling terminal
    and is its foreground process group, so ^C on the terminal reaches it (not init)."""
    import socket

    rig.service("idle", "sleep 1000 & wait\n")

    def with_tty(spec: dict[str, object]) -> None:
        spec["process"]["terminal"] = True  # type: ignore[index]

    body = ('set -- $(cat /proc/$$/stat); echo "$5 $7 $8" > /shared/tty; '
            'trap "ev got-int; exit 0" INT; ev main; sleep 1000 & wait')
    bundle = rig.bundle(main_args(body), env=["RETINUE_SERVICES=idle"], edit=with_tty)
    path = str(rig.base / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(30)
    r = subprocess.run(rig.rt_argv("create", "--bundle", str(bundle), "--console-socket", path,
                                   container_id),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stderr, rig.log_entries())
    conn, _ = listener.accept()
    _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    conn.close()
    listener.close()
    with os.fdopen(fds[0], "r+b", buffering=0) as master:
        assert rig.rt("start", container_id).returncode == 0
        wait_for(lambda: any(w == "main" for _, w in rig.events()))
        pgrp, tty_nr, tpgid = (int(x) for x in (rig.shared / "tty").read_text().split())
        assert tty_nr != 0 and pgrp == tpgid
        master.write(b"\x03")  # ^C: SIGINT to the terminal's foreground process group
        wait_for(lambda: any(w == "got-int" for _, w in rig.events()))
        wait_for(lambda: rig.runc_status(container_id) == "stopped")


def test_only_init_is_heard_on_its_socket(rig: Rig, container_id: str) -> None:
    """Anyone else who reaches init.sock (here the host test process; inside the container the
    same rule holds) and claims the main process exited is not listened to."""
    import socket

    rig.service("shipper", SHIPPER)
    start(rig, container_id, rig.bundle(main_args(f"ev main; {FOREVER}"),
                                        env=["RETINUE_SERVICES=shipper"]))
    wait_for(lambda: rig.service_status(container_id, "shipper")["state"] == "ready")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        # Once init is connected the socket no longer listens: the connect is refused.
        sock.connect(str(rig.container_dir(container_id) / "init.sock"))
        # The supervisor may close the connection of a peer that is not init before it has
        # read anything: the write then fails (EPIPE) or the read finds it reset.
        sock.sendall(b"exit 0\n")
        assert sock.recv(100) == b""  # closed without an answer
    except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError):
        pass  # closed (or refused) without an answer either way
    sock.close()
    time.sleep(0.3)
    assert rig.service_status(container_id, "shipper")["state"] == "ready"
    assert "flushed" not in [w for _, w in rig.events()]


def exiting(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            flags = int(f.read().rpartition(")")[2].split()[6])
    except (OSError, ValueError, IndexError):
        return True
    return bool(flags & 0x4)  # PF_EXITING


def test_without_its_supervisor_init_exits_at_once(rig: Rig, container_id: str) -> None:
    rig.service("shipper", SHIPPER)
    start(rig, container_id, rig.bundle(
        main_args("ev main; while [ ! -e /shared/go ]; do sleep 0.05; done; ev main-exit; "
                  "exit 5"),
        env=["RETINUE_SERVICES=shipper"]))
    wait_for(lambda: any(w == "main" for _, w in rig.events()))
    state = rig.state(container_id)
    assert state is not None
    (pid,) = rig.supervisor_pids(container_id)
    os.kill(pid, 9)
    wait_for(lambda: not rig.supervisor_pids(container_id))
    (rig.shared / "go").touch()
    # When init begins to exit: the kernel then waits for the whole PID namespace to be reaped,
    # and the services, orphaned by the killed supervisor, are the host's PID 1's to reap.
    wait_for(lambda: exiting(state["pid"]), 10, 0.01)
    exited = uptime()
    assert exited - rig.event_time("main-exit") < 0.3


@pytest.mark.parametrize(
    ("rule_init", "placements", "init", "watch"),
    [
        (None, ["exec"], True, False),
        (None, ["container"], False, True),  # sidecars only: the entrypoint stays PID 1
        (None, ["exec", "container"], True, False),
        (None, [], False, True),  # seccomp handlers only
        (True, ["container"], True, False),  # an explicit init = true still injects it
        (False, ["exec"], False, False),  # exec services stopped before the main instead
        (False, ["container"], False, True),
    ],
)
def test_who_gets_init_and_who_watches_the_main(
    rule_init: bool | None, placements: list[str], init: bool, watch: bool
) -> None:
    from retinue.policy import attach

    rules = [{"init": rule_init}]
    services = [{"name": f"s{i}", "placement": p} for i, p in enumerate(placements)]
    got = attach.wants_init(rules, services)  # type: ignore[arg-type]
    assert got is init
    assert attach.watches_main({} if got else None, services) is watch  # type: ignore[arg-type]
