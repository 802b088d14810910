"""Issue 11 through containerd's CRI: an nginx sidecar from an imported image gates a pod's app
container, its cgroup sits inside the pod's (the pod's accounting holds), and removing the pod
removes it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import engines
import imagekit
import pytest
import test_cri
from conftest import service_status
from support import config_text
from test_cri import Node, _free_port, _pod_name

# test_cri's fixtures: its module's containerd with the CRI plugin, and its per-test node.
cri_node = test_cri.cri_node
hweb_port = test_cri.hweb_port
node = test_cri.node

pytestmark = [pytest.mark.cri, pytest.mark.usefixtures("no_leftovers")]


def _siblings(e2e_dir: Path) -> list[str]:
    return subprocess.run(
        [engines.RUNC, "--root", str(e2e_dir / "state" / "sidecars"), "list", "-q"],
        capture_output=True, text=True,
    ).stdout.split()


def test_a_pod_app_gated_on_an_nginx_sidecar_inside_the_pod_cgroup(
    node: Node,
    e2e_dir: Path,
    retinue_config: Path,
    swap_config: Callable[[str], None],
    retinue_admin: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    port = _free_port()  # pods here use the node's network
    images = e2e_dir / "images"
    swap_config(config_text(e2e_dir) + f'image_dir = "{images}"\n')
    layout = imagekit.oci_layout(
        imagekit.nginx_rootfs(tmp_path / "nginx", port), tmp_path / "layout",
        ["/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/nginx/nginx.conf"],
    )
    assert retinue_admin("image", "import", "nginx-cri", str(layout)).returncode == 0
    service = retinue_config.parent / "services" / "nginx-cri.toml"
    service.write_text(
        'placement = "container"\nimage = "nginx-cri"\nuser = "65534:65534"\n'
        f'[ready]\ntcp = {port}\n[resources]\nmemory = "64M"\n'
    )
    try:
        name = _pod_name()
        pod = node.pod(name)
        cid = node.container(pod, "app", f"wget -q -O- http://127.0.0.1:{port}/; sleep 1000",
                             env={"RETINUE_SERVICES": "nginx-cri"})
        deadline = time.monotonic() + 10
        while "hello" not in node.log(name, "app"):
            assert time.monotonic() < deadline, node.log(name, "app")
            time.sleep(0.1)
        assert node.log(name, "app").startswith("hello from the nginx sidecar\n")
        status = service_status(retinue_admin, cid)["by_name"]["nginx-cri"]
        assert status["state"] == "ready"
        assert _siblings(e2e_dir) == [f"{cid}.nginx-cri"]
        pid = status["pid"]
        with open(f"/proc/{pid}/cgroup") as f:
            memory = next(x for x in f.read().splitlines() if ":memory:" in x).split(":", 2)[2]
        assert memory.startswith(f"{node.ctd.cgroup_parent}/{name}/"), memory
        assert memory.endswith(".retinue-nginx-cri")
        node.cri.stop_pod(pod[0])
        node.cri.remove_pod(pod[0])
        node.pods.remove(pod[0])
        deadline = time.monotonic() + 10
        while _siblings(e2e_dir):
            assert time.monotonic() < deadline, "the sidecar outlived its pod"
            time.sleep(0.1)
    finally:
        service.unlink()
        shutil.rmtree(images, ignore_errors=True)


# critest's "Security Context NamespaceOption runtime should support ContainerPID"
# (cri-tools pkg/validate/security_context_linux.go), reproduced: a pod whose PID namespace is
# per container (NamespaceMode CONTAINER), a container from an nginx image with the image's own
# command, started, then ExecSync `sh -c 'while ! cat /proc/1/cmdline | grep "master process";
# do sleep 1; done'`, which must succeed. critest's image is e2e-test-images/nginx (nginx
# master and workers, busybox tools); this one is built from this machine's nginx and busybox.
CRITEST_NGINX_CONF = """\
user nobody nogroup;
worker_processes 1;
daemon off;
pid /tmp/nginx.pid;
error_log stderr info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server { listen 127.0.0.1:PORT; location / { return 200 "critest\\n"; } }
}
"""
CRITEST_PID1_CHECK = 'while ! cat /proc/1/cmdline | grep "master process"; do sleep 1; done'


def test_critest_container_pid_passes_with_a_sidecar_on_every_container(
    node: Node,
    e2e_dir: Path,
    retinue_config: Path,
    swap_config: Callable[[str], None],
    retinue_admin: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    images = e2e_dir / "images"
    swap_config(config_text(e2e_dir) + f'image_dir = "{images}"\n')
    layout = imagekit.oci_layout(
        imagekit.busybox_rootfs(tmp_path / "busybox"), tmp_path / "layout", ["sleep", "1000"]
    )
    assert retinue_admin("image", "import", "agent-cri", str(layout)).returncode == 0
    service = retinue_config.parent / "services" / "agent-cri.toml"
    service.write_text(
        'placement = "container"\nimage = "agent-cri"\n'
        "command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 1000 & wait\"]\n"
    )
    policy = retinue_config.parent / "policy.toml"
    original_policy = policy.read_text()
    policy.write_text(original_policy + '\n[[attach]]\nname = "agent-everywhere"\n'
                      'when.always = true\nservices = ["agent-cri"]\n')
    rootfs = imagekit.busybox_rootfs(tmp_path / "nginx", ("sh", "cat", "grep", "sleep"))
    imagekit.copy_with_libraries("/usr/sbin/nginx", rootfs)
    (rootfs / "tmp").mkdir(mode=0o1777)
    (rootfs / "etc" / "nginx").mkdir()
    (rootfs / "etc" / "nginx" / "nginx.conf").write_text(
        CRITEST_NGINX_CONF.replace("PORT", str(_free_port())))
    ctd, default_image = node.ctd, node.ctd.image
    image = ctd.import_rootfs(rootfs, "registry.test/retinue/critest-nginx:1",
                              cmd=("/usr/sbin/nginx", "-e", "stderr"))
    ctd.image = default_image
    try:
        name = _pod_name()
        pod = node.pod(name)
        assert pod[1].linux.security_context.namespace_options.pid == node.cri.pb.CONTAINER
        config = node.cri.container_config("nginx-container-pid", image, [])
        cid = node.cri.create(pod[0], config, pod[1])
        node.cri.start(cid)
        node.wait_state(cid, node.cri.pb.CONTAINER_RUNNING)
        status = service_status(retinue_admin, cid)["by_name"]["agent-cri"]
        assert status["state"] == "ready"  # the policy's sidecar is attached and running
        assert _siblings(e2e_dir) == [f"{cid}.agent-cri"]
        time.sleep(1)  # as critest: nginx up and running
        reply = node.cri.exec_sync(cid, ["sh", "-c", CRITEST_PID1_CHECK], timeout=10)
        app_log = node.log(name, "nginx-container-pid")
        assert reply.exit_code == 0, (reply.stdout, reply.stderr, app_log)
        assert b"master process" in reply.stdout
        node.cri.stop_pod(pod[0])
        node.cri.remove_pod(pod[0])
        node.pods.remove(pod[0])
        deadline = time.monotonic() + 10
        while _siblings(e2e_dir):
            assert time.monotonic() < deadline, "the sidecar outlived its pod"
            time.sleep(0.1)
    finally:
        policy.write_text(original_policy)
        service.unlink()
        shutil.rmtree(images, ignore_errors=True)
