"""Issue 11 through a private dockerd: a sidecar-placed nginx, from an image retinue imported,
gates a Docker container and serves it on localhost; `docker rm -f` leaves nothing of it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import engines
import imagekit
import pytest
from conftest import service_status
from support import config_text

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]

PORT = 8080


def test_a_docker_app_is_gated_on_and_served_by_an_nginx_sidecar(
    docker: engines.Dockerd,
    docker_name: str,
    e2e_dir: Path,
    retinue_config: Path,
    swap_config: Callable[[str], None],
    retinue_admin: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    images = e2e_dir / "images"
    swap_config(config_text(e2e_dir) + f'image_dir = "{images}"\n')
    layout = imagekit.oci_layout(
        imagekit.nginx_rootfs(tmp_path / "nginx", PORT), tmp_path / "layout",
        ["/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/nginx/nginx.conf"],
    )
    r = retinue_admin("image", "import", "nginx-e2e", str(layout))
    assert r.returncode == 0, r.stderr
    service = retinue_config.parent / "services" / "nginx-sc.toml"
    service.write_text(
        'placement = "container"\nimage = "nginx-e2e"\nuser = "65534:65534"\n'
        f'[ready]\ntcp = {PORT}\n[resources]\nmemory = "64M"\n'
    )
    try:
        cid = docker.docker(
            "run", "-d", "--name", docker_name, "--runtime", "retinue", "--network", "none",
            "-e", "RETINUE_SERVICES=nginx-sc", docker.image,
            "sh", "-c", f"wget -q -O- http://127.0.0.1:{PORT}/ && sleep 1000",
        ).stdout.strip()
        deadline = time.monotonic() + 10
        while "hello" not in docker.docker("logs", docker_name).stdout:
            assert time.monotonic() < deadline, docker.docker("logs", docker_name)
            time.sleep(0.1)
        assert docker.docker("logs", docker_name).stdout == "hello from the nginx sidecar\n"
        status = service_status(retinue_admin, cid)["by_name"]["nginx-sc"]
        assert status["state"] == "ready" and status["placement"] == "container"
        assert status["container"] == f"{cid}.nginx-sc"
        sidecars = e2e_dir / "state" / "sidecars"
        listed = subprocess.run([engines.RUNC, "--root", str(sidecars), "list", "-q"],
                                capture_output=True, text=True).stdout.split()
        assert listed == [f"{cid}.nginx-sc"]
        docker.docker("rm", "-f", docker_name)
        deadline = time.monotonic() + 10
        while subprocess.run([engines.RUNC, "--root", str(sidecars), "list", "-q"],
                             capture_output=True, text=True).stdout.split():
            assert time.monotonic() < deadline, "the sidecar outlived docker rm -f"
            time.sleep(0.1)
    finally:
        service.unlink()
        shutil.rmtree(images, ignore_errors=True)


def test_a_docker_apps_share_swapped_for_a_symlink_never_gives_its_sidecar_a_host_directory(
    docker: engines.Dockerd,
    docker_name: str,
    e2e_dir: Path,
    retinue_config: Path,
    swap_config: Callable[[str], None],
    retinue_admin: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    """Issue 15 item 2 through Docker: the app swaps a directory of its volume with a symlink
    to a root-only host directory while its sidecar restarts; the sidecar never reads it."""
    images = e2e_dir / "images"
    swap_config(config_text(e2e_dir) + f'image_dir = "{images}"\n')
    layout = imagekit.oci_layout(
        imagekit.busybox_rootfs(tmp_path / "bb", ("sh", "cat", "sleep")), tmp_path / "layout",
        ["sleep", "1000"],
    )
    r = retinue_admin("image", "import", "bb-e2e", str(layout))
    assert r.returncode == 0, r.stderr
    secret = tmp_path / "root-only"
    secret.mkdir(mode=0o700)
    (secret / "marker").write_text("HOST-MARKER\n")
    volume = tmp_path / "volume"
    volume.mkdir()
    service = retinue_config.parent / "services" / "reader-sc.toml"
    service.write_text(
        'placement = "container"\nimage = "bb-e2e"\nshare = ["/data/d"]\nrequired = false\n'
        'command = ["sh", "-c", "cat /data/d/marker /data/d/own 2>/dev/null; exit 0"]\n'
        '[restart]\npolicy = "always"\ndelay = "10ms"\nmax_delay = "20ms"\nburst = 100000\n'
    )
    swap = (f"mkdir -p /data/d; echo APP-OWN > /data/d/own; while :; do "
            f"mv /data/d /data/d.real; ln -s {secret} /data/d; "
            f"rm /data/d; mv /data/d.real /data/d; done")
    try:
        cid = docker.docker(
            "run", "-d", "--name", docker_name, "--runtime", "retinue", "--network", "none",
            "-v", f"{volume}:/data", "-e", "RETINUE_SERVICES=reader-sc", docker.image,
            "sh", "-c", swap,
        ).stdout.strip()
        began = time.monotonic()
        log = ""
        while time.monotonic() - began < 40:
            starts = service_status(retinue_admin, cid)["by_name"]["reader-sc"]["restarts"]
            log = retinue_admin("logs", cid, "reader-sc").stdout
            if starts >= 100 or "HOST-MARKER" in log:
                break
            time.sleep(0.5)
        leaks, own = log.count("HOST-MARKER"), log.count("APP-OWN")
        print(f"{starts} starts in {time.monotonic() - began:.1f}s: {leaks} saw the host's "
              f"file, {own} the app's own directory")
        docker.docker("rm", "-f", docker_name)
        assert leaks == 0, log[-2000:]
        assert own > 0, log[-2000:]
    finally:
        service.unlink()
        shutil.rmtree(images, ignore_errors=True)


def test_docker_stop_of_a_sidecar_only_container_keeps_pid_1_and_the_main_exit_code(
    docker: engines.Dockerd,
    docker_name: str,
    e2e_dir: Path,
    retinue_config: Path,
    swap_config: Callable[[str], None],
    retinue_admin: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    """No exec service, no retinue-init: `docker exec` sees the entrypoint as PID 1; `docker
    stop`'s SIGTERM reaches it at once; its exit code is Docker's ExitCode; the sidecar is
    stopped after it without `docker rm`."""
    images = e2e_dir / "images"
    swap_config(config_text(e2e_dir) + f'image_dir = "{images}"\n')
    layout = imagekit.oci_layout(imagekit.busybox_rootfs(tmp_path / "busybox"),
                                 tmp_path / "layout", ["sleep", "1000"])
    assert retinue_admin("image", "import", "agent-e2e", str(layout)).returncode == 0
    service = retinue_config.parent / "services" / "agent-sc.toml"
    service.write_text('placement = "container"\nimage = "agent-e2e"\n'
                       "command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 1000 & wait\"]\n")
    sidecars = e2e_dir / "state" / "sidecars"

    def listed() -> list[str]:
        return subprocess.run([engines.RUNC, "--root", str(sidecars), "list", "-q"],
                              capture_output=True, text=True).stdout.split()

    try:
        cid = docker.docker(
            "run", "-d", "--name", docker_name, "--runtime", "retinue", "--network", "none",
            "-e", "RETINUE_SERVICES=agent-sc", docker.image,
            "sh", "-c", "trap 'exit 7' TERM; sleep 1000 & wait",
        ).stdout.strip()
        assert listed() == [f"{cid}.agent-sc"]
        pid1 = docker.docker("exec", docker_name, "cat", "/proc/1/cmdline").stdout
        assert pid1.split("\0")[:2] == ["sh", "-c"], pid1
        t0 = time.monotonic()
        docker.docker("stop", "-t", "10", docker_name)
        assert time.monotonic() - t0 < 5  # the main got SIGTERM; no SIGKILL after 10 s
        code = docker.docker("inspect", "-f", "{{.State.ExitCode}}", docker_name).stdout
        assert code.strip() == "7"
        deadline = time.monotonic() + 10
        while listed():
            assert time.monotonic() < deadline, "the sidecar outlived its app's main process"
            time.sleep(0.1)
        docker.docker("rm", docker_name)
    finally:
        service.unlink()
        shutil.rmtree(images, ignore_errors=True)
