"""One private dockerd and one private containerd per session, with retinue-runtime registered.

The daemons get RETINUE_CONFIG in their environment: the shim passes its environment on to
the runtime, which reads its configuration from there. The configuration lives in a session
directory; `swap_config` replaces it for the length of one test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from retinue.config import cache as confcache

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import capture  # noqa: E402
import engines  # noqa: E402
from support import DEMO_TEXT, POLICY, config_text, write_services  # noqa: E402


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def retinue_config(e2e_dir: Path) -> Iterator[Path]:
    """config.toml + policy.toml + demo/ + services/ for the daemons' RETINUE_CONFIG.

    The services (support.SERVICES) are selectable only: a container gets them by asking.
    """
    d = e2e_dir / "etc"
    (d / "demo").mkdir(parents=True)
    (d / "demo" / "README").write_text(DEMO_TEXT)
    (d / "services").mkdir()
    write_services(d)
    (d / "policy.toml").write_text(POLICY)
    config = d / "config.toml"
    config.write_text(config_text(e2e_dir))
    yield config
    # The runtime's compiled-config cache is keyed on the config's path: this one is gone.
    for cached in confcache.cache_files(str(config)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cached)


@pytest.fixture
def swap_config(retinue_config: Path) -> Iterator[Callable[[str], None]]:
    """swap_config(text) replaces config.toml for the rest of one test; it is restored after.

    The daemons' runtimes read it on their next call (the cache keys on the file's stat).
    """
    original = retinue_config.read_bytes()

    def swap(text: str) -> None:
        retinue_config.write_text(text)

    yield swap
    retinue_config.write_bytes(original)


@pytest.fixture
def broken_config(retinue_config: Path, swap_config: Callable[[str], None]) -> Path:
    """config.toml made invalid TOML for one test."""
    swap_config('runtime = "runc\npolicy = [\n')
    return retinue_config


@pytest.fixture(scope="session")
def capture_dirs(e2e_dir: Path) -> dict[str, Path]:
    """Where the capture wrappers put the config.json files the engines hand to the runtime."""
    dirs = {}
    for engine in ("docker", "containerd"):
        out = e2e_dir / f"captured-{engine}"
        out.mkdir()
        capture.write_wrapper(e2e_dir / f"capture-{engine}", out)
        dirs[engine] = out
    return dirs


def _need(*binaries: str) -> None:
    reason = engines.available(*binaries)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def docker(
    e2e_dir: Path, rootfs_dir: Path, shim: str, retinue_config: Path,
    capture_dirs: dict[str, Path],
) -> Iterator[engines.Dockerd]:
    """A private dockerd (and its containerd) with runtimes `retinue` and `capture`."""
    _need(engines.DOCKERD, engines.DOCKER, engines.CONTAINERD, engines.RUNC)
    runtimes = {"retinue": shim, "capture": str(e2e_dir / "capture-docker")}
    with engines.dockerd(e2e_dir / "docker", runtimes,
                         env={"RETINUE_CONFIG": str(retinue_config)}) as dk:
        dk.import_rootfs(rootfs_dir)
        yield dk


@pytest.fixture(scope="session")
def containerd(
    e2e_dir: Path, rootfs_dir: Path, retinue_config: Path
) -> Iterator[engines.Containerd]:
    """A private containerd with the busybox image imported."""
    _need(engines.CONTAINERD, engines.CTR, engines.RUNC)
    with engines.containerd(e2e_dir / "ctd", env={"RETINUE_CONFIG": str(retinue_config)}) as ctd:
        ctd.import_rootfs(rootfs_dir)
        yield ctd


def _name_for(request: pytest.FixtureRequest) -> str:
    """A container name from the test's (both engines accept [A-Za-z0-9] runs joined by '-')."""
    words = re.findall(r"[A-Za-z0-9]+", request.node.name.removeprefix("test_"))
    return ("t-" + "-".join(words))[:48].rstrip("-")


@pytest.fixture
def docker_name(request: pytest.FixtureRequest, docker: engines.Dockerd) -> Iterator[str]:
    """A container name for this test; the container is force-removed afterwards."""
    name = _name_for(request)
    yield name
    docker.docker("rm", "-f", name, check=False)


@pytest.fixture
def ctr_id(request: pytest.FixtureRequest, containerd: engines.Containerd) -> Iterator[str]:
    """A container id for this test; its task and container are removed afterwards."""
    cid = _name_for(request)
    yield cid
    containerd.ctr("tasks", "delete", "--force", cid, check=False)
    containerd.ctr("containers", "delete", cid, check=False)


def _links() -> set[str]:
    if not shutil.which("ip"):
        return set()
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines() if ":" in line}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(e2e_dir: Path) -> Iterator[None]:
    """After the session: no daemon, shim or container of ours, no mount, no new link."""
    links_before = _links()
    yield
    leftovers = [f"mount {m}" for m in engines.mounts_under(e2e_dir)]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    leftovers += [f"process {line.strip()}" for line in ps.splitlines() if str(e2e_dir) in line]
    leftovers += [f"network link {name}" for name in sorted(_links() - links_before)]
    assert not leftovers, "left behind by the e2e session:\n" + "\n".join(leftovers)


# --- services ---------------------------------------------------------------------------------

ADMIN = os.path.join(sys.prefix, "bin", "retinue")
# The runc roots of the session's engines, relative to e2e_dir: Docker's runtimes share
# EXEC_ROOT/runtime-runc/NAMESPACE; `ctr run --runc-root` and the CRI handlers' `Root` put a
# namespace level under their root.
RUNC_ROOTS = ("docker/dk/exec/runtime-runc/*", "ctd/ctd/runc/*", "cri/ctd/runc/*")


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A host directory for `/shared` in a test's container, with an empty events file that
    services running as nobody can append to."""
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)
    (d / "events").touch()
    (d / "events").chmod(0o666)
    return d


@pytest.fixture
def retinue_admin(retinue_config: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """retinue_admin(*args): the `retinue` admin CLI with the daemons' RETINUE_CONFIG."""
    env = {**os.environ, "RETINUE_CONFIG": str(retinue_config)}

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ADMIN, *args], capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=30)

    return admin


def service_status(
    admin: Callable[..., subprocess.CompletedProcess[str]], container_id: str
) -> dict[str, Any]:
    """`retinue status --json ID`'s one container, with its services by name."""
    result = admin("status", "--json", container_id)
    assert result.returncode == 0, result.stderr
    (container,) = json.loads(result.stdout)
    container["by_name"] = {s["name"]: s for s in container["services"]}
    return dict(container)


def services_footprint(e2e_dir: Path) -> set[str]:
    """What a container with services may leave on the host: its supervisor, its state
    directory, its runc state, its mounts. (Its log files stay on purpose.)"""
    state_dir = e2e_dir / "state"
    found = {f"state dir {p}" for p in state_dir.glob("*/*")}
    for pattern in RUNC_ROOTS:
        found |= {f"runc container {p.parent}" for p in e2e_dir.glob(f"{pattern}/*/state.json")}
    found |= {f"mount {m}" for m in engines.mounts_under(e2e_dir)}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "retinue.supervisor" in cmdline and str(state_dir) in cmdline:
            found.add(f"supervisor {entry}: {cmdline.strip()}")
    return found


def wait_until_gone(e2e_dir: Path, container_id: str, timeout: float = 10) -> None:
    """Wait until nothing in services_footprint names `container_id`; fail naming what is left."""
    deadline = time.monotonic() + timeout
    while left := {f for f in services_footprint(e2e_dir) if container_id in f}:
        if time.monotonic() > deadline:
            pytest.fail(f"left behind by {container_id}:\n" + "\n".join(sorted(left)))
        time.sleep(0.1)


@pytest.fixture
def no_leftovers(e2e_dir: Path) -> Iterator[None]:
    """After the test (and its containers' removal): nothing of its containers is left.

    Request it before the engine's name fixtures (or with `usefixtures`) so that it checks
    after they have removed their containers. Supervisors finish their clean-up right after the
    container's delete returns: a few seconds are allowed for it.
    """
    before = services_footprint(e2e_dir)
    yield
    deadline = time.monotonic() + 10
    while True:
        left = services_footprint(e2e_dir) - before
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail("left behind:\n" + "\n".join(sorted(left)))
        time.sleep(0.1)
