"""Two containers of one pod share a network namespace (the sandbox's): a tcp readiness check
counts only the service's own listener, so a neighbour's socket on the same port never makes a
service ready whose server failed to bind; the failure reaches the engine with its output."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FOREVER, Rig, main_args, wait_for

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
