"""Two containers of one pod share a network namespace (the sandbox's): a tcp readiness check
counts only the service's own listener, so a neighbour's socket on the same port never makes a
service ready whose server failed to bind; the failure reaches the engine with its output."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import imagekit
import pytest
from conftest import FOREVER, Rig, main_args, wait_for
from test_sidecar import setup, sidecar

# A server that takes a moment before it binds, as most do: meanwhile the neighbour's socket is
# already there.
WEB = "sleep 0.5; exec httpd -f -p 8080\n"
READY = '[ready]\ntcp = 8080\ntimeout = "5s"\ninterval = "20ms"\n'
RESTART = {
    "no": ('[restart]\npolicy = "no"\n',
           'retinue: service "web" exited with status 1 before it was ready; last output: '),
    "on-failure": ('[restart]\ndelay = "100ms"\nburst = 3\n',
                   'retinue: service "web" failed: exited with status 1; start limit hit: 3 '
                   "starts within 30s; last output: "),
}


def join_network_of(pid: int) -> Any:
    def edit(spec: dict[str, Any]) -> None:
        for ns in spec["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = f"/proc/{pid}/ns/net"
    return edit


@pytest.mark.parametrize("restart", list(RESTART))
def test_a_neighbours_listener_does_not_make_a_service_ready(rig: Rig, restart: str) -> None:
    toml, expected = RESTART[restart]
    rig.service("web", WEB, READY + toml)
    first, second = "pod-first", "pod-second"
    bundle = rig.bundle(main_args(f"ev first-main; {FOREVER}"), env=["RETINUE_SERVICES=web"])
    assert rig.create(first, bundle).returncode == 0
    r = rig.rt("start", first)
    assert r.returncode == 0, r.stderr
    web = rig.service_status(first, "web")
    assert web["state"] == "ready"
    state = rig.state(first)
    assert state is not None

    # The same netns as the first container, as a pod's containers join their sandbox's.
    bundle2 = rig.bundle(main_args(f"ev second-main; {FOREVER}"), env=["RETINUE_SERVICES=web"],
                         edit=join_network_of(state["pid"]))
    assert rig.create(second, bundle2).returncode == 0
    r = rig.rt("start", second)
    assert r.returncode == 1, "the second web was declared ready off the first one's socket"
    (message,) = rig.errors()
    assert message.startswith(expected), message
    assert "httpd: bind: Address already in use" in message, message
    assert all(w != "second-main" for _, w in rig.events())
    wait_for(lambda: rig.runc_status(second) == "stopped", 5)

    # The first container and its web are unaffected.
    assert rig.runc_status(first) == "running"
    after = rig.service_status(first, "web")
    assert (after["state"], after["pid"], after["restarts"]) == ("ready", web["pid"], 0)
    assert any(w == "first-main" for _, w in rig.events())
    assert rig.rt("delete", second).returncode == 0


# A web server with a page to serve (busybox httpd answers 404 without one).
WWW = "mkdir -p /tmp/www; echo ok > /tmp/www/index.html; "


def test_a_neighbours_http_server_does_not_make_a_service_ready(rig: Rig) -> None:
    rig.service("web", WWW + "sleep 0.5; exec httpd -f -p 8080 -h /tmp/www\n",
                '[ready]\nhttp = "http://127.0.0.1:8080/"\ntimeout = "5s"\ninterval = "20ms"\n'
                '[restart]\npolicy = "no"\n')
    first, second = "pod-first", "pod-second"
    bundle = rig.bundle(main_args(f"ev first-main; {FOREVER}"), env=["RETINUE_SERVICES=web"])
    assert rig.create(first, bundle).returncode == 0
    r = rig.rt("start", first)
    assert r.returncode == 0, r.stderr
    state = rig.state(first)
    assert state is not None
    bundle2 = rig.bundle(main_args(f"ev second-main; {FOREVER}"), env=["RETINUE_SERVICES=web"],
                         edit=join_network_of(state["pid"]))
    assert rig.create(second, bundle2).returncode == 0
    r = rig.rt("start", second)
    assert r.returncode == 1, "the second web was declared ready off the first one's server"
    (message,) = rig.errors()
    assert message.startswith(RESTART["no"][1]), message
    assert "httpd: bind: Address already in use" in message, message
    assert all(w != "second-main" for _, w in rig.events())
    assert rig.service_status(first, "web")["state"] == "ready"
    wait_for(lambda: rig.runc_status(second) == "stopped", 5)
    assert rig.rt("delete", second).returncode == 0


@pytest.mark.parametrize("kind", ["tcp", "http"])
def test_a_neighbours_server_does_not_keep_a_service_healthy(rig: Rig, kind: str) -> None:
    """The second container's agent serves on 8081 and is probed on 8080, where only the first
    container's server listens: the probe must fail, whoever answers there."""
    rig.service("web", WWW + "exec httpd -f -p 8080 -h /tmp/www\n",
                '[ready]\ntcp = 8080\ntimeout = "5s"\ninterval = "20ms"\n')
    health = "tcp = 8080" if kind == "tcp" else 'http = "http://127.0.0.1:8080/"'
    rig.service("agent", WWW + "exec httpd -f -p 8081 -h /tmp/www\n",
                '[ready]\ntcp = 8081\ntimeout = "5s"\ninterval = "20ms"\n'
                f'[health]\n{health}\ninterval = "100ms"\nfailures = 2\n'
                '[restart]\ndelay = "10s"\n')
    first, second = "pod-first", "pod-second"
    bundle = rig.bundle(main_args(f"ev first-main; {FOREVER}"), env=["RETINUE_SERVICES=web"])
    assert rig.create(first, bundle).returncode == 0
    assert rig.rt("start", first).returncode == 0
    state = rig.state(first)
    assert state is not None
    bundle2 = rig.bundle(main_args(f"ev second-main; {FOREVER}"),
                         env=["RETINUE_SERVICES=agent"], edit=join_network_of(state["pid"]))
    assert rig.create(second, bundle2).returncode == 0
    assert rig.rt("start", second).returncode == 0
    log = wait_for(lambda: "health check failed 2 times in a row" in
                   rig.service_log(second, "agent") and rig.service_log(second, "agent"), 10)
    assert "8080" in log, log
    assert rig.service_status(first, "web")["state"] == "ready"


@pytest.fixture(scope="module")
def sidecar_layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pod-images")
    busybox = imagekit.busybox_rootfs(base / "busybox")
    return {"busybox": imagekit.oci_layout(busybox, base / "layout", ["sleep", "1000"])}


def test_a_sidecars_own_http_server_makes_it_ready_and_healthy(
    rig: Rig, container_id: str, sidecar_layouts: dict[str, Path]
) -> None:
    """For a sidecar, the sockets that count are its container's: its http server, started by
    a shell (a child of the sidecar's init), is ready and healthy; the app's server on another
    port of the same network namespace is not its own."""
    setup(rig, sidecar_layouts, "busybox")
    sidecar(rig, "web", 'placement = "container"\nimage = "busybox"\n'
            'command = ["sh", "-c", "mkdir -p /tmp/www; echo ok > /tmp/www/index.html; '
            'httpd -f -p 8090 -h /tmp/www & wait"]\n'
            '[ready]\nhttp = "http://127.0.0.1:8090/"\ninterval = "50ms"\n'
            '[health]\nhttp = "http://127.0.0.1:8090/"\ninterval = "100ms"\nfailures = 2\n')
    bundle = rig.bundle(main_args(f"ev main; {FOREVER}"), env=["RETINUE_SERVICES=web"])
    assert rig.create(container_id, bundle).returncode == 0, rig.log_entries()
    assert rig.rt("start", container_id).returncode == 0, rig.log_entries()
    wait_for(lambda: rig.service_status(container_id, "web").get("health") == "healthy", 10)
    time.sleep(0.5)
    web = rig.service_status(container_id, "web")
    assert (web["state"], web["health"], web["restarts"]) == ("ready", "healthy", 0)
    assert rig.rt("delete", "--force", container_id).returncode == 0
