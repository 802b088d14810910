"""What the e2e tests attach, shared by their conftest and the tests."""

from __future__ import annotations

import json
from pathlib import Path

# Selects by env (Docker cannot set annotations) or by annotation (containerd, Kubernetes).
POLICY = """\
[[attach]]
name = "demo"
when.env = { RETINUE_DEMO = "1" }
mounts = [{ source = "demo", destination = "/retinue/demo" }]
env = { RETINUE_GREETING = "hello from retinue" }

[[attach]]
name = "annotated"
when.annotations = { "io.retinue.test/attach" = "yes" }
mounts = [{ source = "demo", destination = "/retinue/demo" }]
env = { RETINUE_GREETING = "hello by annotation" }

# Seccomp handlers, merged into Docker's default profile by the shim, served by the supervisor.
[[attach]]
name = "broker"
when.env = { RETINUE_BROKER = "1" }

[[attach.seccomp]]
syscalls = ["mkdir", "mkdirat"]
handler = "deny"
settings = { errno = "EACCES" }

[[attach.seccomp]]
syscalls = ["sysinfo"]
handler = "sysinfo"

# Both engines mount /dev/shm: retinue must refuse to mount over it, and say so.
[[attach]]
name = "collide"
when.env = { RETINUE_COLLIDE = "1" }
mounts = [{ source = "demo", destination = "/dev/shm" }]
"""

DEMO_TEXT = "mounted by retinue for the e2e tests\n"


def config_text(e2e_dir: Path, runtime: str = "") -> str:
    """The e2e config.toml; `runtime` is retinue's lower runtime (empty: runc on PATH)."""
    return (
        f"runtime = {json.dumps(runtime)}\n"
        'policy = "policy.toml"\n'
        'services = "services"\n'
        f'state_dir = "{e2e_dir / "state"}"\n'
        f'log_dir = "{e2e_dir / "log"}"\n'
    )


# --- services ---------------------------------------------------------------------------------
#
# Busybox-made services, defined in the session's services directory and selected per container
# (RETINUE_SERVICES for Docker, the io.retinue.services annotation for containerd). Services and
# main processes append "UPTIME WORDS" lines to /shared/events, a host directory each test binds
# into its container: /proc/uptime is one clock inside and outside the container, in 10 ms steps.

# Both the services' scripts and the main processes start with these helpers.
HELPERS = """\
now() { read -r up _ < /proc/uptime; echo "$up"; }
ev() { echo "$(now) $*" >> /shared/events; }
"""

WEB_PAGE = "hello from web\n"
LATE_SECONDS = 1.0

# name -> (services/NAME.toml without `files` and `command`, files/NAME/run.sh after HELPERS).
SERVICES: dict[str, tuple[str, str]] = {
    # A dependency of web: started before it, stopped after it.
    "db": (
        '[stop]\ntimeout = "5s"\n',
        "sleep 1000 & pid=$!\n"
        "trap 'ev db-term; kill $pid; sleep 0.2; ev db-exit; exit 0' TERM\n"
        'ev db-start\necho "db: up"\nwait\n',
    ),
    # TCP-ready, as nobody: busybox httpd on the container's loopback.
    "web": (
        'user = "nobody"\nrequires = ["db"]\n[ready]\ntcp = 8080\n[stop]\ntimeout = "5s"\n',
        'ev web-start\necho "web: serving as uid $(id -u)"\n'
        "httpd -f -p 127.0.0.1:8080 -h /retinue/web/www & pid=$!\n"
        "trap 'ev web-term; kill $pid; wait $pid; sleep 0.2; ev web-exit; exit 0' TERM\n"
        "wait\n",
    ),
    # Ready late: a file, LATE_SECONDS after it starts.
    "late": (
        '[ready]\nfile = "/tmp/late.ready"\n',
        "sleep 1000 & pid=$!\n"
        "trap 'ev late-term; kill $pid; ev late-exit; exit 0' TERM\n"
        f"ev late-start\nsleep {LATE_SECONDS:g}\nev late-ready\ntouch /tmp/late.ready\nwait\n",
    ),
    # Ignores SIGTERM, with a long stop timeout: only the stop budget or the engine's SIGKILL
    # ends it.
    "deaf": (
        '[stop]\ntimeout = "10s"\n',
        "trap 'ev deaf-term' TERM\nev deaf-start\nwhile :; do sleep 0.1; done\n",
    ),
    # Fails before it is ready.
    "broken": (
        '[ready]\nfile = "/tmp/broken.ready"\n[restart]\npolicy = "no"\n',
        'echo "broken: cannot open /etc/broken.conf" >&2\nexit 1\n',
    ),
    # Optional and crash-looping: restarted with backoff until its start limit, then failed.
    "flaky": (
        'required = false\n[restart]\ndelay = "100ms"\nburst = 3\ninterval = "30s"\n',
        'echo "flaky: crashing"\nexit 1\n',
    ),
    # Ready by READY=1 on its notify socket (busybox's logger sends one datagram to /dev/log).
    "ntf": (
        "[ready]\nnotify = true\n",
        'sleep 0.3\nln -sf "$NOTIFY_SOCKET" /dev/log\nev ntf-ready\n'
        'logger "$(printf "x\\nREADY=1")" & exec sleep 1000\n',
    ),
    # A one-shot task (issue 10): done before the services after it and the entrypoint.
    "setup": (
        'type = "oneshot"\n',
        "ev setup-start\nsleep 0.2\nev setup-done\n",
    ),
    # Fails for good once /shared/die exists and takes the container with it (exit 222).
    "fatal": (
        'after = ["setup"]\non_failure = "stop-container"\n[restart]\npolicy = "no"\n'
        '[stop]\ntimeout = "1s"\n',
        "ev fatal-start\nwhile [ ! -e /shared/die ]; do sleep 0.05; done\n"
        'echo "fatal: lost the upstream"\nexit 1\n',
    ),
    # Drained before its SIGTERM ([stop] exec runs `run.sh drain` inside the container).
    "drainer": (
        '[stop]\nexec = ["run.sh", "drain"]\ntimeout = "5s"\n',
        'if [ "$1" = drain ]; then ev drain-start; sleep 0.2; ev drain-done; exit 0; fi\n'
        "sleep 1000 & pid=$!\n"
        "trap 'ev drainer-term; kill $pid; exit 0' TERM\nev drainer-start\nwait\n",
    ),
    # Never ready: misses its start timeout.
    "stuck": (
        '[ready]\ntcp = 9999\ntimeout = "1s"\n',
        "sleep 1000 & pid=$!\n"
        "trap 'kill $pid; exit 0' TERM\n"
        'echo "stuck: waiting for a disk"\nwait\n',
    ),
}

BROKEN_ERROR = (
    'retinue: service "broken" exited with status 1 before it was ready; '
    "last output: broken: cannot open /etc/broken.conf"
)
STUCK_ERROR = (
    'retinue: service "stuck" not ready after 1s: still running; '
    "last output: stuck: waiting for a disk"
)


def unknown_service_error(source: str) -> str:
    selectable = ", ".join(sorted(SERVICES))
    return (
        f"retinue: the container asks for service 'nope' ({source}), which is not defined "
        f"(selectable services: {selectable})"
    )


def write_services(etc: Path) -> None:
    """etc/services/NAME.toml and etc/files/NAME/run.sh for every service in SERVICES."""
    for name, (toml, script) in SERVICES.items():
        files = etc / "files" / name
        files.mkdir(parents=True)
        run = files / "run.sh"
        run.write_text("#!/bin/sh\n" + HELPERS + script)
        # Mounted as they are: a service running as nobody must read and run them.
        for path, mode in ((etc / "files", 0o755), (files, 0o755), (run, 0o755)):
            path.chmod(mode)
        if name == "web":
            (files / "www").mkdir(mode=0o755)
            (files / "www" / "index.html").write_text(WEB_PAGE)
            (files / "www").chmod(0o755)
            (files / "www" / "index.html").chmod(0o644)
        (etc / "services" / f"{name}.toml").write_text(
            f'files = "files/{name}"\ncommand = ["run.sh"]\n{toml}'
        )


def main_command(body: str) -> list[str]:
    """A container's command: `sh -c` with HELPERS defined, then `body`."""
    return ["sh", "-c", HELPERS + body]


def read_events(shared: Path) -> list[tuple[float, str]]:
    """(uptime, words) of every line in shared/events, in the order written."""
    out = []
    for line in (shared / "events").read_text().splitlines():
        stamp, _, words = line.partition(" ")
        out.append((float(stamp), words))
    return out


def first(events: list[tuple[float, str]], words: str) -> float:
    """When `words` first happened; AssertionError naming every event if it never did."""
    for stamp, w in events:
        if w == words:
            return stamp
    raise AssertionError(f"no {words!r} in {events}")
