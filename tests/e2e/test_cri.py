"""Kubernetes' route: containerd 1.6's CRI plugin driven as the kubelet drives it.

One private containerd for the module, with the CRI plugin on, handlers `runc` and `retinue`
(BinaryName = the retinue-runtime launcher, pod annotations `io.retinue.*` passed through), a
busybox sandbox image and a busybox app image. Our own CRI v1 client (tests/cri) creates pods
on the node's network, containers in them, stops and removes them. The services are the e2e
session's (support.SERVICES) plus `hweb`, an HTTP server on a free port of the node's network.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import engines
import grpc
import pytest
from conftest import service_status, services_footprint, wait_until_gone
from cri.client import CRI
from support import BROKEN_ERROR, HELPERS, POLICY, first, main_command, read_events

pytestmark = [pytest.mark.cri, pytest.mark.usefixtures("no_leftovers")]

Admin = Callable[..., CompletedProcess[str]]
HWEB_PAGE = "hello from hweb\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def hweb_port(retinue_config: Path) -> Iterator[int]:
    """Service `hweb`: busybox httpd on 127.0.0.1:PORT, ready when PORT listens. Pods here use
    the node's network, so its port is one nobody on this host uses (8080 may be taken)."""
    etc = retinue_config.parent
    port = _free_port()
    files = etc / "files" / "hweb"
    (files / "www").mkdir(parents=True)
    (files / "www" / "index.html").write_text(HWEB_PAGE)
    run = files / "run.sh"
    run.write_text(
        "#!/bin/sh\n" + HELPERS + "ev hweb-start\n"
        f"httpd -f -p 127.0.0.1:{port} -h /retinue/hweb/www & pid=$!\n"
        "trap 'ev hweb-term; kill $pid 2>/dev/null; ev hweb-exit; exit 0' TERM\n"
        'wait $pid\necho "hweb: httpd exited with status $?"\n'
        # It stays up without its listener (as a service whose listening child died does): a
        # readiness check must not take a neighbour's socket on the port for its own.
        "while :; do sleep 0.2; done\n"
    )
    run.chmod(0o755)
    toml = etc / "services" / "hweb.toml"
    toml.write_text(
        f'files = "files/hweb"\ncommand = ["run.sh"]\n[ready]\ntcp = {port}\ntimeout = "3s"\n'
        '[restart]\npolicy = "no"\n[stop]\ntimeout = "5s"\n'
    )
    yield port
    # Other modules list the selectable services in their expected messages.
    toml.unlink()
    shutil.rmtree(files)


@dataclass
class Node:
    """The module's containerd with its CRI, and the pods a test made (removed after it)."""

    ctd: engines.Containerd
    cri: CRI
    logs: Path
    pods: list[str] = field(default_factory=list)

    def pod(self, name: str, handler: str = "retinue", **kw: Any) -> tuple[str, Any]:
        """Run a pod on the node's network with `handler`; (sandbox id, its config)."""
        config = self.cri.pod_config(
            name, cgroup_parent=f"{self.ctd.cgroup_parent}/{name}", log_dir=self.logs / name,
            **kw,
        )
        pod_id = self.cri.run_pod(config, handler)
        self.pods.append(pod_id)
        return pod_id, config

    def container(
        self, pod: tuple[str, Any], name: str, body: str, *, shared: Path | None = None,
        env: dict[str, str] | None = None, attempt: int = 0, start: bool = True,
    ) -> str:
        """Create (and start) container `name` running `sh -c HELPERS+body` in `pod`."""
        mounts = {"/shared": str(shared)} if shared else {}
        config = self.cri.container_config(name, engines.APP_IMAGE, main_command(body),
                                           env=env, mounts=mounts, attempt=attempt)
        cid = self.cri.create(pod[0], config, pod[1])
        if start:
            self.cri.start(cid)
        return cid

    def log(self, pod_name: str, name: str, attempt: int = 0) -> str:
        """The container's stdout/stderr as the CRI logs them (`TIME STREAM TAG text` lines)."""
        path = self.logs / pod_name / name / f"{attempt}.log"
        return "".join(line.split(" ", 3)[3] + "\n"
                       for line in path.read_text().splitlines() if line.count(" ") >= 3)

    def bundle(self, container_id: str) -> dict[str, Any]:
        """The config.json containerd's shim handed to the runtime for `container_id`."""
        path = (self.ctd.workdir / "state" / "io.containerd.runtime.v2.task" /
                engines.CRI_NAMESPACE / container_id / "config.json")
        return dict(json.loads(path.read_text()))

    def wait_state(self, container_id: str, state: int, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while (status := self.cri.status(container_id)).state != state:
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        return status


@pytest.fixture(scope="module")
def cri_node(
    e2e_dir: Path, rootfs_dir: Path, shim: str, retinue_config: Path, hweb_port: int
) -> Iterator[Node]:
    reason = engines.available(engines.CONTAINERD, engines.CTR, engines.RUNC)
    if reason:
        pytest.skip(reason)
    with engines.cri_containerd(e2e_dir / "cri", rootfs_dir, {"runc": None, "retinue": shim},
                                env={"RETINUE_CONFIG": str(retinue_config)}) as ctd:
        cri = CRI(ctd.address)
        try:
            cri.wait_ready()
            yield Node(ctd, cri, e2e_dir / "cri-logs")
        finally:
            cri.close()


@pytest.fixture
def node(cri_node: Node) -> Iterator[Node]:
    """The module's node; every pod the test ran is stopped and removed after it."""
    yield cri_node
    pods, cri_node.pods = cri_node.pods, []
    for pod_id in pods:
        with contextlib.suppress(grpc.RpcError):
            cri_node.cri.stop_pod(pod_id)
            cri_node.cri.remove_pod(pod_id)


def _pod_name() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


def _supervised(e2e_dir: Path, container_id: str) -> bool:
    return any(container_id in f and f.startswith("state dir") for f in services_footprint(e2e_dir))


def _assert_sandbox_untouched(node: Node, e2e_dir: Path, pod_id: str) -> None:
    """The pause container runs as containerd made it: no retinue mount, no supervisor."""
    spec = node.bundle(pod_id)
    assert spec["process"]["args"] == ["sleep", "2147483647"], spec["process"]
    assert not [m for m in spec["mounts"] if m["destination"].startswith("/retinue")], spec
    assert not _supervised(e2e_dir, pod_id)


def _wait_event(shared: Path, words: str, count: int = 1, timeout: float = 10) -> None:
    """Until `words` happened `count` times (main runs on after StartContainer returns)."""
    deadline = time.monotonic() + timeout
    while [w for _, w in read_events(shared)].count(words) < count:
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        return str(r.read().decode())


MAIN_UNTIL_TERM = "trap 'ev main-term; exit 0' TERM; ev main-start; echo 'main: first words'; " \
                  "while :; do sleep 0.1; done"


# --- selection ----------------------------------------------------------------------------------


def test_plain_pods_under_both_handlers(node: Node, e2e_dir: Path) -> None:
    """Nothing asked for: retinue's pod runs as runc's does, the sandbox included."""
    for handler in ("runc", "retinue"):
        name = _pod_name()
        pod = node.pod(name, handler)
        assert node.cri.pod_status(pod[0]).runtime_handler == handler
        cid = node.container(pod, "app", "echo plain; exit 0")
        status = node.wait_state(cid, node.cri.pb.CONTAINER_EXITED)
        assert (status.exit_code, node.log(name, "app")) == (0, "plain\n")
        _assert_sandbox_untouched(node, e2e_dir, pod[0])
        assert not _supervised(e2e_dir, cid)


def test_sandbox_untouched_by_an_always_rule(
    node: Node, e2e_dir: Path, retinue_config: Path
) -> None:
    """A rule with `when.always` attaches to every app container, never to the pause one."""
    policy = retinue_config.parent / "policy.toml"
    original = policy.read_text()
    policy.write_text(original + '\n[[attach]]\nname = "everywhere"\nwhen.always = true\n'
                      'mounts = [{ source = "demo", destination = "/retinue/everywhere" }]\n'
                      'services = ["db"]\n')
    try:
        name = _pod_name()
        pod = node.pod(name)
        cid = node.container(pod, "app", "cat /retinue/everywhere/README; exit 0")
        status = node.wait_state(cid, node.cri.pb.CONTAINER_EXITED)
        assert status.exit_code == 0, node.log(name, "app")
        _assert_sandbox_untouched(node, e2e_dir, pod[0])
    finally:
        policy.write_text(original)


def test_gate_with_services_chosen_by_env(
    node: Node, e2e_dir: Path, shared: Path, hweb_port: int, retinue_admin: Admin
) -> None:
    """RETINUE_SERVICES in the container's env: StartContainer returns after the gate; main's
    first output comes after `late` is ready and hweb serves; the sandbox gets nothing."""
    name = _pod_name()
    pod = node.pod(name)
    cid = node.container(
        pod, "app", f"wget -q -O- http://127.0.0.1:{hweb_port}/ && ev main-fetched; "
        + MAIN_UNTIL_TERM, shared=shared, env={"RETINUE_SERVICES": "hweb,late"},
    )
    assert node.cri.status(cid).state == node.cri.pb.CONTAINER_RUNNING
    _wait_event(shared, "main-start")
    events = read_events(shared)
    assert first(events, "late-ready") <= first(events, "main-fetched")
    assert node.log(name, "app").startswith(HWEB_PAGE + "main: first words\n")
    status = service_status(retinue_admin, cid)
    assert {s: status["by_name"][s]["state"] for s in ("hweb", "late")} == {
        "hweb": "ready", "late": "ready"}
    _assert_sandbox_untouched(node, e2e_dir, pod[0])


def test_policy_rule_by_env(node: Node, e2e_dir: Path) -> None:
    """The session policy's `demo` rule (when.env RETINUE_DEMO=1) reaches a CRI container."""
    assert 'when.env = { RETINUE_DEMO = "1" }' in POLICY
    name = _pod_name()
    pod = node.pod(name)
    cid = node.container(pod, "app", 'cat /retinue/demo/README; echo "$RETINUE_GREETING"',
                         env={"RETINUE_DEMO": "1"})
    node.wait_state(cid, node.cri.pb.CONTAINER_EXITED)
    assert node.log(name, "app") == "mounted by retinue for the e2e tests\nhello from retinue\n"
    _assert_sandbox_untouched(node, e2e_dir, pod[0])


def test_pod_annotation_selects_for_every_app_container(
    node: Node, e2e_dir: Path, shared: Path
) -> None:
    """`io.retinue.services` on the pod (passed through by pod_annotations): every app
    container gets `db`; the pause container gets nothing."""
    name = _pod_name()
    pod = node.pod(name, annotations={"io.retinue.services": "db"})
    a = node.container(pod, "a", MAIN_UNTIL_TERM, shared=shared)
    b = node.container(pod, "b", MAIN_UNTIL_TERM, shared=shared)
    _wait_event(shared, "main-start", 2)
    assert [w for _, w in read_events(shared)].count("db-start") == 2
    assert _supervised(e2e_dir, a) and _supervised(e2e_dir, b)
    _assert_sandbox_untouched(node, e2e_dir, pod[0])


def test_pod_annotation_per_container(node: Node, e2e_dir: Path, shared: Path) -> None:
    """`io.retinue.services.NAME` chooses for the container named NAME only."""
    name = _pod_name()
    pod = node.pod(name, annotations={"io.retinue.services.app": "late"})
    app = node.container(pod, "app", MAIN_UNTIL_TERM, shared=shared)
    side = node.container(pod, "side", "while :; do sleep 0.1; done")
    assert _supervised(e2e_dir, app)
    assert not _supervised(e2e_dir, side)
    _assert_sandbox_untouched(node, e2e_dir, pod[0])


# --- failures, stop, restart ---------------------------------------------------------------------


def test_failing_required_service_shows_in_container_status(node: Node, shared: Path) -> None:
    """StartContainer fails with the service's error; ContainerStatus carries it as the
    kubelet shows it (reason StartError, the message); main never ran."""
    name = _pod_name()
    pod = node.pod(name)
    cid = node.container(pod, "app", MAIN_UNTIL_TERM, shared=shared,
                         env={"RETINUE_SERVICES": "broken"}, start=False)
    with pytest.raises(grpc.RpcError) as failed:
        node.cri.start(cid)
    assert BROKEN_ERROR in str(failed.value.details())
    status = node.cri.status(cid)
    assert (status.state, status.reason) == (node.cri.pb.CONTAINER_EXITED, "StartError")
    assert BROKEN_ERROR in status.message, status.message
    assert "main-start" not in [w for _, w in read_events(shared)]
    node.cri.remove(cid)


def test_stop_container_with_a_timeout(node: Node, e2e_dir: Path, shared: Path) -> None:
    """StopContainer(timeout=2) with a service that ignores SIGTERM (stop timeout 10 s): the
    runtime's kill reaches the main process at once, through retinue-init; the service is
    signalled only after the main has exited; the whole stop returns after about 2 s."""
    name = _pod_name()
    pod = node.pod(name)
    cid = node.container(pod, "app", MAIN_UNTIL_TERM, shared=shared,
                         env={"RETINUE_SERVICES": "deaf"})
    _wait_event(shared, "main-start")
    with open("/proc/uptime") as f:
        asked = float(f.read().split()[0])
    started = time.monotonic()
    node.cri.stop(cid, timeout=2)
    took = time.monotonic() - started
    assert took < 3.5, took
    status = node.cri.status(cid)
    assert status.state == node.cri.pb.CONTAINER_EXITED
    # The main exited 0 on its SIGTERM, but deaf still held init when the grace period (2 s,
    # shorter than the default stop_budget of 5 s) ran out: the engine's SIGKILL ended init.
    assert status.exit_code == 137, status
    events = read_events(shared)
    assert first(events, "main-term") - asked < 0.5, events
    assert first(events, "main-term") <= first(events, "deaf-term"), events
    node.cri.remove(cid)
    wait_until_gone(e2e_dir, cid)


def test_stop_container_kills_a_main_that_ignores_sigterm(
    node: Node, e2e_dir: Path, shared: Path
) -> None:
    """A main that ignores SIGTERM: when the grace period ends the engine's SIGKILL ends init,
    the main and the services at once; exit code 137, within the grace period."""
    name = _pod_name()
    pod = node.pod(name)
    body = "trap 'ev main-term' TERM; ev main-start; while :; do sleep 0.1; done"
    cid = node.container(pod, "app", body, shared=shared, env={"RETINUE_SERVICES": "late"})
    _wait_event(shared, "main-start")
    started = time.monotonic()
    node.cri.stop(cid, timeout=2)
    took = time.monotonic() - started
    status = node.cri.status(cid)
    assert (status.state, status.exit_code) == (node.cri.pb.CONTAINER_EXITED, 137)
    assert 2 <= took < 15, took
    assert "main-term" in [w for _, w in read_events(shared)]
    node.cri.remove(cid)
    wait_until_gone(e2e_dir, cid)


def test_kubelet_style_restart(node: Node, e2e_dir: Path, shared: Path) -> None:
    """Main exits 1; the kubelet creates attempt 1 of the same container in the same sandbox:
    it gets its services again and is gated again; the old one is removed after."""
    name = _pod_name()
    pod = node.pod(name)
    env = {"RETINUE_SERVICES": "late"}
    first_id = node.container(pod, "app", "ev main-start; exit 1", shared=shared, env=env)
    assert node.wait_state(first_id, node.cri.pb.CONTAINER_EXITED).exit_code == 1
    second_id = node.container(pod, "app", "ev main-start; " + MAIN_UNTIL_TERM, shared=shared,
                               env=env, attempt=1)
    assert second_id != first_id
    assert node.cri.status(second_id).metadata.attempt == 1
    _wait_event(shared, "main-start", 2)
    readies = [t for t, w in read_events(shared) if w == "late-ready"]
    starts = [t for t, w in read_events(shared) if w == "main-start"]
    assert len(readies) == 2 and len(starts) >= 2, read_events(shared)
    assert readies[0] <= starts[0] and readies[1] <= starts[1]
    assert (node.logs / name / "app" / "1.log").exists()
    node.cri.remove(first_id)
    wait_until_gone(e2e_dir, first_id)
    assert _supervised(e2e_dir, second_id)


def test_two_containers_one_pod_same_service(node: Node, e2e_dir: Path, shared: Path) -> None:
    """Each container of a pod gets its own `late`, its own supervisor, its own gate."""
    name = _pod_name()
    pod = node.pod(name)
    env = {"RETINUE_SERVICES": "late"}
    a = node.container(pod, "a", MAIN_UNTIL_TERM, shared=shared, env=env)
    b = node.container(pod, "b", MAIN_UNTIL_TERM, shared=shared, env=env)
    assert _supervised(e2e_dir, a) and _supervised(e2e_dir, b)
    _wait_event(shared, "main-start", 2)
    words = [w for _, w in read_events(shared)]
    assert words.count("late-ready") == 2 and words.count("main-start") == 2, words


def test_two_containers_same_tcp_service_second_fails(
    node: Node, shared: Path, hweb_port: int
) -> None:
    """The pod's network is shared: the second container's hweb cannot bind its port. Its
    start fails (hweb never ready), not declared ready off the first one's listener."""
    name = _pod_name()
    pod = node.pod(name)
    env = {"RETINUE_SERVICES": "hweb"}
    node.container(pod, "a", MAIN_UNTIL_TERM, shared=shared, env=env)
    assert _get(hweb_port) == HWEB_PAGE
    b = node.container(pod, "b", MAIN_UNTIL_TERM, shared=shared, env=env, start=False)
    with pytest.raises(grpc.RpcError) as failed:
        node.cri.start(b)
    assert 'service "hweb"' in str(failed.value.details())
    assert node.cri.status(b).reason == "StartError"


# --- the pod's end, containerd's restart -------------------------------------------------------


def test_stop_and_remove_pod_leave_nothing(node: Node, e2e_dir: Path, shared: Path) -> None:
    """StopPodSandbox then RemovePodSandbox with two supervised containers running: no
    supervisor, state dir, runc container or mount of theirs is left."""
    name = _pod_name()
    pod = node.pod(name)
    env = {"RETINUE_SERVICES": "late"}
    ids = [node.container(pod, n, MAIN_UNTIL_TERM, shared=shared, env=env) for n in ("a", "b")]
    assert all(_supervised(e2e_dir, cid) for cid in ids)
    node.cri.stop_pod(pod[0])
    assert all(node.cri.status(cid).state == node.cri.pb.CONTAINER_EXITED for cid in ids)
    node.cri.remove_pod(pod[0])
    node.pods.remove(pod[0])
    assert not node.cri.containers(pod[0])
    for cid in [*ids, pod[0]]:
        wait_until_gone(e2e_dir, cid)
    assert not list(node.ctd.runc_root.glob(f"*/{pod[0]}"))


def test_containerd_restart_while_a_pod_runs(
    node: Node, e2e_dir: Path, shared: Path, retinue_admin: Admin
) -> None:
    """containerd restarts under a running pod: the container keeps running with its
    services, and is stopped and removed through the new containerd."""
    name = _pod_name()
    pod = node.pod(name)
    cid = node.container(pod, "app", MAIN_UNTIL_TERM, shared=shared,
                         env={"RETINUE_SERVICES": "late"})
    _wait_event(shared, "main-start")
    node.ctd.restart()
    node.cri.wait_ready()
    assert node.cri.status(cid).state == node.cri.pb.CONTAINER_RUNNING
    assert node.cri.pod_status(pod[0]).state == node.cri.pb.SANDBOX_READY
    assert service_status(retinue_admin, cid)["by_name"]["late"]["state"] == "ready"
    node.cri.stop(cid, timeout=5)
    assert node.cri.status(cid).exit_code == 0
    assert "main-term" in [w for _, w in read_events(shared)]
    node.cri.remove(cid)
    wait_until_gone(e2e_dir, cid)
