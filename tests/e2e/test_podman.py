"""Podman's route: Debian's podman 4.3 with `--runtime retinue-runtime`, private storage.

`podman run --rootfs` on a copy of the session's busybox rootfs (no image store: importing an
image writes Podman's blob cache under /var/lib/containers whatever --root says), no network,
cgroupfs, file events. Podman's own runc root is runc's default, /run/runc: the tests look there
for containers whose bundles are ours.

Podman does not pass RETINUE_CONFIG on to the runtime (`create` and `start` see little more
than PATH; `kill` and `delete` get an empty environment): RETINUE_CONFIG set for podman never
reaches retinue. A Podman user keeps the configuration at /etc/retinue/config.toml; here, where
/etc is the host's, `--runtime` is a two-line wrapper that sets RETINUE_CONFIG and execs the
launcher. Podman's empty environment for kill and delete is the real one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import engines
import imagekit
import pytest
from conftest import service_status, services_footprint
from support import config_text, first, main_command, read_events

pytestmark = [pytest.mark.podman]

MAIN_UNTIL_TERM = "trap 'ev main-term; exit 0' TERM; ev main-start; while :; do sleep 0.1; done"


@pytest.fixture(scope="module")
def pm(e2e_dir: Path, shim: str, retinue_config: Path) -> Iterator[engines.Podman]:
    reason = engines.available(engines.PODMAN, engines.RUNC, "conmon")
    if reason:
        pytest.skip(reason)
    runtime = e2e_dir / "retinue-podman"
    runtime.write_text(f"#!/bin/sh\nexport RETINUE_CONFIG={retinue_config}\nexec {shim} \"$@\"\n")
    runtime.chmod(0o755)
    with engines.podman(e2e_dir / "podman", str(runtime), cleanup_runtime=[str(runtime)]) as p:
        yield p


@pytest.fixture(scope="module")
def podman_rootfs(e2e_dir: Path, rootfs_dir: Path) -> Path:
    """Podman adds mount points (etc/hostname, run/...) to a --rootfs: a copy of our own."""
    copy = e2e_dir / "podman-rootfs"
    shutil.copytree(rootfs_dir, copy, symlinks=True)
    return copy


@pytest.fixture
def name(request: pytest.FixtureRequest, pm: engines.Podman) -> Iterator[str]:
    """A container name for this test; whatever is left of it is removed afterwards."""
    n = "t-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name.removeprefix("test_"))[:40]
    yield n
    pm.podman("rm", "--force", "--time", "0", n, check=False)


def _run(pm: engines.Podman, rootfs: Path, *args: str, check: bool = False,
         shared: Path | None = None, body: str | None = None) -> CompletedProcess[str]:
    """`podman run ARGS --rootfs ROOTFS [sh -c HELPERS+body]`. The rootfs is shared by every
    container: each gets a /tmp of its own (where services put their ready files)."""
    volumes = ["--tmpfs", "/tmp", *(["--volume", f"{shared}:/shared"] if shared else [])]
    command = main_command(body) if body is not None else []
    return pm.podman("run", *volumes, *args, "--rootfs", str(rootfs), *command, check=check)


def _ours_in_runc(pm: engines.Podman) -> dict[str, str]:
    return pm.runc_containers()


def _state(pm: engines.Podman, name: str) -> tuple[str, int]:
    out = pm.podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)
    status, code = out.stdout.split()
    return status, int(code)


def _wait_exited(pm: engines.Podman, name: str, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while (state := _state(pm, name))[0] != "exited":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    return state[1]


def _wait_event(shared: Path, words: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while words not in [w for _, w in read_events(shared)]:
        assert time.monotonic() < deadline, read_events(shared)
        time.sleep(0.05)


def _footprint(e2e_dir: Path, pm: engines.Podman, cid: str) -> set[str]:
    found = {f for f in services_footprint(e2e_dir) if cid in f}
    return found | {f"runc container {c}" for c in _ours_in_runc(pm) if c == cid}


def _id(pm: engines.Podman, name: str) -> str:
    return pm.podman("inspect", "--format", "{{.Id}}", name).stdout.strip()


# --- plain containers ----------------------------------------------------------------------------


def test_run_output_and_exit_code(pm: engines.Podman, podman_rootfs: Path, name: str) -> None:
    result = _run(pm, podman_rootfs, "--name", name, body="echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout) == (3, "out\n"), result.stderr
    assert "err\n" in result.stderr


def test_run_rm_leaves_nothing(pm: engines.Podman, podman_rootfs: Path) -> None:
    before = set(_ours_in_runc(pm))
    result = _run(pm, podman_rootfs, "--rm", body="exit 0")
    assert result.returncode == 0, result.stderr
    assert "retinue" not in result.stderr, result.stderr
    assert set(_ours_in_runc(pm)) == before


def test_run_with_a_terminal(pm: engines.Podman, podman_rootfs: Path, name: str) -> None:
    """`-t`: conmon holds the pty through the console socket the runtime hands on. (The
    pty's CR LF arrives as LF: the output is read as text.)"""
    result = _run(pm, podman_rootfs, "--name", name, "-t",
                  body="test -t 0 && test -t 1 && echo tty; exit 0")
    assert (result.returncode, result.stdout) == (0, "tty\n"), result.stderr


def test_exec(pm: engines.Podman, podman_rootfs: Path, name: str) -> None:
    _run(pm, podman_rootfs, "-d", "--name", name, check=True, body="while :; do sleep 0.1; done")
    result = pm.podman("exec", name, "sh", "-c", "echo $((1 + 2)); exit 4", check=False)
    assert (result.returncode, result.stdout) == (4, "3\n"), result.stderr


def test_stop_and_rm(pm: engines.Podman, podman_rootfs: Path, name: str) -> None:
    _run(pm, podman_rootfs, "-d", "--name", name, check=True,
         body="trap 'exit 0' TERM; while :; do sleep 0.1; done")
    cid = _id(pm, name)
    stopped = pm.podman("stop", "--time", "5", name, check=False)
    assert stopped.returncode == 0, stopped.stderr
    assert _state(pm, name) == ("exited", 0)
    assert pm.podman("rm", name, check=False).returncode == 0
    assert cid not in _ours_in_runc(pm)


def test_kill_and_rm(pm: engines.Podman, podman_rootfs: Path, name: str) -> None:
    _run(pm, podman_rootfs, "-d", "--name", name, check=True,
         body="while :; do sleep 0.1; done")
    cid = _id(pm, name)
    killed = pm.podman("kill", name, check=False)
    assert killed.returncode == 0, killed.stderr
    assert _wait_exited(pm, name) == 137
    assert pm.podman("rm", name, check=False).returncode == 0
    assert cid not in _ours_in_runc(pm)


# --- with services ------------------------------------------------------------------------------


@pytest.mark.parametrize("select", [
    ("--env", "RETINUE_SERVICES=late"),
    ("--annotation", "io.retinue.services=late"),
], ids=["env", "annotation"])
def test_services_gate_the_entrypoint(
    pm: engines.Podman, podman_rootfs: Path, name: str, shared: Path, e2e_dir: Path,
    select: tuple[str, str],
) -> None:
    """`podman run -d` with services chosen by env or by annotation: the entrypoint starts
    after `late` is ready; the container has its supervisor."""
    _run(pm, podman_rootfs, "-d", "--name", name, *select, check=True, shared=shared,
         body=MAIN_UNTIL_TERM)
    _wait_event(shared, "main-start")
    events = read_events(shared)
    assert first(events, "late-ready") <= first(events, "main-start")
    cid = _id(pm, name)
    assert any(f.startswith("supervisor") for f in _footprint(e2e_dir, pm, cid))


def test_stop_and_rm_with_services_leave_nothing(
    pm: engines.Podman, podman_rootfs: Path, name: str, shared: Path, e2e_dir: Path
) -> None:
    _run(pm, podman_rootfs, "-d", "--name", name, "--env", "RETINUE_SERVICES=late",
         check=True, shared=shared, body=MAIN_UNTIL_TERM)
    _wait_event(shared, "main-start")
    cid = _id(pm, name)
    stopped = pm.podman("stop", "--time", "5", name, check=False)
    assert stopped.returncode == 0, stopped.stderr
    words = [w for _, w in read_events(shared)]
    assert "late-term" in words and "main-term" in words, words
    assert pm.podman("rm", name, check=False).returncode == 0
    deadline = time.monotonic() + 10
    while left := _footprint(e2e_dir, pm, cid):
        assert time.monotonic() < deadline, left
        time.sleep(0.1)


def test_run_rm_with_services_leaves_nothing(
    pm: engines.Podman, podman_rootfs: Path, shared: Path, e2e_dir: Path
) -> None:
    before = services_footprint(e2e_dir) | set(_ours_in_runc(pm))
    result = _run(pm, podman_rootfs, "--rm", "--env", "RETINUE_SERVICES=late", shared=shared,
                  body="ev main-start; exit 0")
    assert result.returncode == 0, result.stderr
    assert "main-start" in [w for _, w in read_events(shared)]
    deadline = time.monotonic() + 10
    while left := (services_footprint(e2e_dir) | set(_ours_in_runc(pm))) - before:
        assert time.monotonic() < deadline, left
        time.sleep(0.1)


# --- user namespaces: --userns=auto -------------------------------------------------------------

# /etc/subuid and /etc/subgid lines for `containers`, the user --userns=auto takes ranges from.
SUBIDS = "containers:400000:200000\n"


@pytest.fixture(scope="module")
def private_etc(e2e_dir: Path) -> Iterator[list[str]]:
    """A mount namespace where /etc/subuid, /etc/subgid and /var/lib/containers (Podman's blob
    cache, written whatever --root says) are files of this test's: the host's stay untouched.
    Yields the command prefix that runs a program in it."""
    reason = engines.available("unshare", "nsenter")
    if reason:
        pytest.skip(reason)
    d = e2e_dir / "userns-etc"
    (d / "var-lib-containers").mkdir(parents=True)
    for name in ("subuid", "subgid"):
        (d / name).write_text(SUBIDS)
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "sleep", "3600"])
    try:
        ns = f"/proc/{holder.pid}/ns/mnt"
        deadline = time.monotonic() + 5
        while os.readlink(ns) == os.readlink("/proc/self/ns/mnt"):
            assert time.monotonic() < deadline, "unshare did not make a mount namespace"
            time.sleep(0.01)
        prefix = ["nsenter", f"--mount={ns}", "--"]
        for source, target in ((d / "subuid", "/etc/subuid"), (d / "subgid", "/etc/subgid"),
                               (d / "var-lib-containers", "/var/lib/containers")):
            subprocess.run([*prefix, "mount", "--bind", str(source), target], check=True)
        yield prefix
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="module")
def pm_userns(
    e2e_dir: Path, shim: str, retinue_config: Path, private_etc: list[str], podman_rootfs: Path
) -> Iterator[engines.Podman]:
    """Podman in that namespace, with the busybox rootfs imported as an image: --userns=auto
    maps an image's layers for the container (a --rootfs gets no mappings from it)."""
    reason = engines.available(engines.PODMAN, engines.RUNC, "conmon")
    if reason:
        pytest.skip(reason)
    runtime = e2e_dir / "retinue-podman-userns"
    runtime.write_text(f"#!/bin/sh\nexport RETINUE_CONFIG={retinue_config}\nexec {shim} \"$@\"\n")
    runtime.chmod(0o755)
    tarball = e2e_dir / "podman-rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(podman_rootfs, arcname=".")
    with engines.podman(e2e_dir / "pmu", str(runtime), cleanup_runtime=[str(runtime)],
                        prefix=private_etc) as p:
        p.podman("import", str(tarball), "localhost/retinue-busybox:userns")
        yield p
        # Podman's mounts live in the private namespace: none of this container's may be left.
        p.podman("rm", "--all", "--force", "--time", "0", check=False)


def _namespace_mounts(prefix: list[str], needle: str) -> list[str]:
    out = subprocess.run([*prefix, "cat", "/proc/self/mountinfo"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if needle in line]


def test_userns_auto_with_services(
    pm_userns: engines.Podman, private_etc: list[str], shared: Path, e2e_dir: Path
) -> None:
    """`podman run --userns=auto` with an exec service: the container's root is an unprivileged
    host uid; the service's files and retinue-init are mounted where that root can make the
    mount points (the image's layers are mapped for it), the service gates the entrypoint, and
    stop and rm leave nothing, in the namespace's mounts either."""
    pm, name = pm_userns, "t-userns-auto"
    shared.chmod(0o777)
    try:
        result = pm.podman("run", "-d", "--name", name, "--userns=auto", "--pull=never",
                           "--tmpfs", "/tmp", "--volume", f"{shared}:/shared",
                           "--env", "RETINUE_SERVICES=late", "localhost/retinue-busybox:userns",
                           *main_command(MAIN_UNTIL_TERM), check=False)
        assert result.returncode == 0, result.stderr
        _wait_event(shared, "main-start")
        events = read_events(shared)
        assert first(events, "late-ready") <= first(events, "main-start")
        uid_map = pm.podman("exec", name, "cat", "/proc/1/uid_map").stdout.split()
        assert uid_map[0] == "0" and int(uid_map[1]) >= 400000, uid_map
        cmdline = pm.podman("exec", name, "cat", "/proc/1/cmdline").stdout
        assert cmdline.startswith("/.retinue/init"), cmdline
        cid = _id(pm, name)
        assert any(f.startswith("supervisor") for f in _footprint(e2e_dir, pm, cid))
        stopped = pm.podman("stop", "--time", "5", name, check=False)
        assert stopped.returncode == 0, stopped.stderr
        words = [w for _, w in read_events(shared)]
        assert "late-term" in words and "main-term" in words, words
        assert pm.podman("rm", name, check=False).returncode == 0
        deadline = time.monotonic() + 10
        while left := _footprint(e2e_dir, pm, cid) | set(_namespace_mounts(private_etc, cid)):
            assert time.monotonic() < deadline, left
            time.sleep(0.1)
    finally:
        pm.podman("rm", "--force", "--time", "0", name, check=False)


def test_userns_auto_with_a_sidecar(
    pm_userns: engines.Podman, e2e_dir: Path, retinue_config: Path,
    swap_config: Callable[[str], None],
    retinue_admin: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path,
) -> None:
    """A sidecar-placed service of a `--userns=auto` container joins its user namespace, with
    the same mapping, and goes with it."""
    pm, name = pm_userns, "t-userns-sidecar"
    images = e2e_dir / "images-userns"
    swap_config(config_text(e2e_dir) + f'image_dir = "{images}"\n')
    layout = imagekit.oci_layout(imagekit.busybox_rootfs(tmp_path / "bb"), tmp_path / "layout",
                                 ["sleep", "1000"])
    assert retinue_admin("image", "import", "bb-userns", str(layout)).returncode == 0
    service = retinue_config.parent / "services" / "side-userns.toml"
    service.write_text('placement = "container"\nimage = "bb-userns"\n'
                       'command = ["sleep", "1000"]\n')
    try:
        pm.podman("run", "-d", "--name", name, "--userns=auto", "--pull=never",
                  "--env", "RETINUE_SERVICES=side-userns", "localhost/retinue-busybox:userns",
                  "sleep", "1000")
        cid = _id(pm, name)
        assert service_status(retinue_admin, cid)["by_name"]["side-userns"]["state"] == "ready"
        sidecars = e2e_dir / "state" / "sidecars"
        side = json.loads(subprocess.run(
            [engines.RUNC, "--root", str(sidecars), "state", f"{cid}.side-userns"],
            capture_output=True, text=True, check=True).stdout)
        app_pid = int(pm.podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        assert os.readlink(f"/proc/{side['pid']}/ns/user") == os.readlink(
            f"/proc/{app_pid}/ns/user")
        uid_map = Path(f"/proc/{side['pid']}/uid_map").read_text().split()
        assert uid_map[0] == "0" and int(uid_map[1]) >= 400000, uid_map
        assert pm.podman("rm", "--force", "--time", "5", name, check=False).returncode == 0
        deadline = time.monotonic() + 10
        while subprocess.run([engines.RUNC, "--root", str(sidecars), "list", "-q"],
                             capture_output=True, text=True).stdout.split():
            assert time.monotonic() < deadline, "the sidecar outlived podman rm"
            time.sleep(0.1)
    finally:
        pm.podman("rm", "--force", "--time", "0", name, check=False)
        service.unlink()
        shutil.rmtree(images, ignore_errors=True)
