"""Private containerd and dockerd daemons for end-to-end tests and benchmarks.

    with engines.containerd(workdir, env={"RETINUE_CONFIG": cfg}) as ctd:
        ctd.import_rootfs(rootfs_dir)                     # -> "docker.io/library/busybox:latest"
        ctd.run("c1", "sh", "-c", "echo hi", runc_binary=shim, rm=True)

    with engines.dockerd(workdir, {"retinue": shim}, env={"RETINUE_CONFIG": cfg}) as dk:
        dk.import_rootfs(rootfs_dir)                      # -> "busybox:latest"
        dk.docker("run", "--rm", "--network", "none", "--runtime", "retinue", dk.image, "true")
        dk.docker("run", "--rm", "--network", "none", dk.image, "true")       # plain runc

Each daemon gets its own sockets, root and state directories under `workdir` (kept short: unix
socket paths are limited to 108 bytes), its own cgroup parent, and no network set-up at all
(dockerd runs with `--bridge=none --iptables=false`, so containers use `--network none`).
Nothing touches the host's default sockets or roots. `dockerd()` starts a private containerd of
its own unless it is given one.

Leaving the `with` block tears everything down, whatever happened inside it: containers and
tasks are removed, the daemon stops (SIGTERM, then SIGKILL), any shim or container left over is
killed by pid, every mount under the daemon's directory is unmounted, its cgroup parent is
removed, and then the directory itself (`workdir/ctd`, `workdir/dk`). Two paths outside
`workdir` cannot be moved: containerd's shim sockets live in /run/containerd/s (named by a hash
of our socket's path, so they cannot collide), and dockerd creates /run/docker/plugins. Both,
and their parents, are removed again when empty.

The runtime a container runs under gets the environment of the process that starts the shim:
containerd's (dockerd too goes through containerd). Pass what the runtime must see
(RETINUE_CONFIG) in the `env` of the containerd, or of `dockerd()` when it starts its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
# The docker.io package's client matches its daemon; a newer client elsewhere on PATH would
# negotiate a different API version than the one Docker users of this engine have.
DOCKER = (
    "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker") or "docker"
)
RUNC = shutil.which("runc") or "/usr/sbin/runc"

# The containerd shim's socket lives in containerd's built-in state dir whatever the config
# says; its name is a hash of our private address, so it cannot collide with the host's.
SHIM_SOCKET_DIR = "/run/containerd/s"
# dockerd's managed-plugin exec root is hard-wired (socket path length), not under --exec-root.
DOCKER_PLUGIN_DIR = "/run/docker/plugins"

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
CMD_TIMEOUT = 120.0


class EngineError(RuntimeError):
    """A daemon failed to start or to stop cleanly; the message carries its log's tail."""


def available(*binaries: str) -> str | None:
    """None when every binary exists, else a reason naming the missing ones (for pytest.skip)."""
    missing = [b for b in binaries if not (os.path.isabs(b) and os.access(b, os.X_OK))
               and shutil.which(b) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


# --- images -----------------------------------------------------------------------------------


def _layer_bytes(rootfs: Path) -> bytes:
    """A deterministic uncompressed tar of `rootfs` (sorted, owned by root, mtime 0)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(path: Path, arcname: str) -> None:
            info = tar.gettarinfo(str(path), arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if info.isdir():
                for child in sorted(os.listdir(path)):
                    add(path / child, f"{arcname}/{child}")

        for child in sorted(os.listdir(rootfs)):
            add(rootfs / child, child)
    return buf.getvalue()


def layer_tar(rootfs: Path, dest: Path) -> Path:
    """Write a tar of `rootfs` to `dest`: what `docker import` takes."""
    dest.write_bytes(_layer_bytes(rootfs))
    return dest


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest[7:]}")
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    return digest, len(data)


def oci_archive(
    rootfs: Path, dest: Path, ref: str, cmd: Sequence[str] = ("sh",)
) -> Path:
    """Write an OCI image layout tar of `rootfs` (one layer) named `ref`, for `ctr import`."""
    layer = _layer_bytes(rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": list(cmd),
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "tests/engines.py: busybox-static rootfs"}],
    }
    with tarfile.open(dest, "w") as tar:
        layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        info = tarfile.TarInfo("oci-layout")
        info.size = len(layout)
        tar.addfile(info, io.BytesIO(layout))
        layer_digest, layer_size = _blob(tar, layer)
        config_digest, config_size = _blob(tar, json.dumps(image_config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = _blob(tar, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                },
            }],
        }
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return dest


# --- process and host-state helpers -----------------------------------------------------------


def _die_with_parent() -> None:
    """Run in the daemon's child before exec: if the test process dies, so does the daemon.

    The kernel sends the signal when the *thread* that started the daemon exits: start daemons
    from the main thread (or one that outlives them).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _daemon_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOCKER_", "CONTAINERD_", "NOTIFY_SOCKET"))}
    path = env.get("PATH", "")
    env["PATH"] = f"{path}:{SYSTEM_PATH}" if path else SYSTEM_PATH
    env.update(extra or {})
    return env


def _start(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=_die_with_parent,
        )


def _tail(path: Path, lines: int = 30, problems_only: bool = False) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path}: no log)"
    kept = text.splitlines()
    if problems_only:
        kept = [line for line in kept if "level=info" not in line and "level=debug" not in line]
    return "\n".join(kept[-lines:])


def _wait_ready(
    process: subprocess.Popen[bytes], probe: Any, what: str, log_path: Path, timeout: float
) -> float:
    """Poll `probe()` until true; EngineError with the log tail if the daemon exits or stalls."""
    start = time.monotonic()
    delay = 0.01
    while True:
        if probe():
            return time.monotonic() - start
        code = process.poll()
        if code is not None:
            raise EngineError(f"{what} exited with status {code} while starting; "
                              f"log {log_path}:\n{_tail(log_path)}")
        if time.monotonic() - start > timeout:
            raise EngineError(f"{what} not ready after {timeout:.0f} s; "
                              f"log {log_path}:\n{_tail(log_path)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def _unix_connects(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _docker_ping(path: str) -> bool:
    """True when dockerd answers GET /_ping with 200 (its socket exists before the API is up)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False
    finally:
        s.close()


def _stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _pids_with_arg(flag: str, value: str) -> list[int]:
    """Processes whose argv contains `flag value` (how containerd names a shim's daemon)."""
    needle = f"\0{flag}\0{value}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = b"\0" + f.read()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    for pid in pids:
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.02)


def _runc_delete_all(root: Path) -> None:
    """Force-delete every container runc still knows under `root` and its sub-roots."""
    if not root.is_dir():
        return
    roots = [root] + [p for p in root.iterdir() if p.is_dir()]
    for r in roots:
        listed = subprocess.run([RUNC, "--root", str(r), "list", "-q"],
                                capture_output=True, text=True, check=False).stdout.split()
        for cid in listed:
            subprocess.run([RUNC, "--root", str(r), "delete", "-f", cid],
                           capture_output=True, check=False)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace, deepest first."""
    prefix = str(path).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mount_point = line.split()[4].encode().decode("unicode_escape")
            if mount_point == prefix[:-1] or mount_point.startswith(prefix):
                found.append(mount_point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def _unmount_all(path: Path) -> None:
    for _ in range(3):
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    left = mounts_under(path)
    if left:
        raise EngineError(f"cannot unmount under {path}: {', '.join(left)}")


def _remove_cgroup(parent: str) -> None:
    """rmdir the cgroup `parent` (and empty children) in every v1 hierarchy and in v2."""
    base = Path("/sys/fs/cgroup")
    hierarchies = [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()]
    if (base / "cgroup.controllers").exists():
        hierarchies = [base]
    for hierarchy in hierarchies:
        top = hierarchy / parent.strip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def _remove_tree(path: Path) -> None:
    """Remove `path`'s contents only when nothing is mounted below it (never delete through one)."""
    _unmount_all(path)
    if path.exists():
        shutil.rmtree(path)


def _cleanup_steps(steps: list[tuple[str, Any]]) -> None:
    """Run every teardown step even if some fail; raise one EngineError naming all failures."""
    errors = []
    for what, step in steps:
        try:
            step()
        except Exception as e:
            errors.append(f"{what}: {e}")
    if errors:
        raise EngineError("teardown incomplete: " + "; ".join(errors))


def _short_dir(workdir: Path, name: str) -> Path:
    """workdir/name, created; unix socket paths must stay under 108 bytes."""
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    if len(str(d)) > 60:
        raise EngineError(f"{d}: too long for the daemons' unix sockets; use a shorter workdir")
    return d


# --- containerd -------------------------------------------------------------------------------


@dataclass
class Containerd:
    """A running private containerd. `ctr()` talks to it; `run()` starts containers in it."""

    workdir: Path
    address: str
    namespace: str
    runc_root: Path
    fifo_dir: Path
    cgroup_parent: str
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    startup_seconds: float = 0.0
    image: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def ctr(
        self, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`ctr --address SOCK --namespace NS ARGS...`, captured as text.

        With check=True a non-zero exit raises EngineError with the command's stderr.
        """
        argv = [CTR, "--address", self.address, "--namespace", self.namespace, *args]
        return _run(argv, check, timeout, input, None, self.log_path)

    def run(
        self,
        container_id: str,
        *cmd: str,
        image: str | None = None,
        runc_binary: str | None = None,
        annotations: Mapping[str, str] | None = None,
        env: Sequence[str] = (),
        detach: bool = False,
        rm: bool = False,
        extra: Sequence[str] = (),
        check: bool = True,
        timeout: float = CMD_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """`ctr run` with this daemon's private runc root, fifo dir and cgroup parent.

        Foreground (the default) returns when the container exits, with its output and its exit
        status; `detach=True` returns once it started. `rm=True` removes it after it exits.
        """
        argv = ["run", "--runc-root", str(self.runc_root), "--fifo-dir", str(self.fifo_dir),
                "--cgroup", f"{self.cgroup_parent}/{container_id}"]
        if runc_binary:
            argv += ["--runc-binary", runc_binary]
        for key, value in (annotations or {}).items():
            argv += ["--annotation", f"{key}={value}"]
        for item in env:
            argv += ["--env", item]
        if detach:
            argv.append("--detach")
        if rm:
            argv.append("--rm")
        argv += [*extra, image or self.image, container_id, *cmd]
        return self.ctr(*argv, check=check, timeout=timeout)

    def import_rootfs(
        self, rootfs: Path, ref: str = "docker.io/library/busybox:latest",
        cmd: Sequence[str] = ("sh",),
    ) -> str:
        """Import `rootfs` as the one-layer image `ref`; it becomes the default for `run()`."""
        archive = oci_archive(rootfs, self.workdir / "image.tar", ref, cmd)
        self.ctr("images", "import", str(archive))
        archive.unlink()
        self.image = ref
        return ref

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop the daemon (SIGTERM) and start it again on the same config; its shims and
        containers keep running meanwhile, as with `systemctl restart containerd`."""
        _stop(self.process)
        self.process = _start([CONTAINERD, "--config", str(self.config_path)], self.log_path,
                              self.env)
        _wait_ready(self.process, lambda: _unix_connects(self.address), "containerd",
                    self.log_path, timeout)

    def remove_all(self) -> None:
        """Kill and delete every task and container, in every namespace (dockerd's too)."""
        namespaces = self.ctr("namespaces", "list", "-q", check=False).stdout.split()
        for ns in namespaces:
            def ctr(*args: str, ns: str = ns) -> subprocess.CompletedProcess[str]:
                return _run([CTR, "--address", self.address, "--namespace", ns, *args],
                            False, CMD_TIMEOUT, None, None, self.log_path)

            tasks = ctr("tasks", "list", "-q").stdout.split()
            for task in tasks:
                ctr("tasks", "kill", "-a", "-s", "SIGKILL", task)
            for task in tasks:
                ctr("tasks", "delete", "-f", task)
            for container in ctr("containers", "list", "-q").stdout.split():
                ctr("containers", "delete", container)

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)


def _run(
    argv: list[str], check: bool, timeout: float, input: str | None,
    env: dict[str, str] | None, log_path: Path,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                            env=env, stdin=None if input is not None else subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise EngineError(
            f"{' '.join(argv)}: exit status {result.returncode}\nstdout: {result.stdout}"
            f"\nstderr: {result.stderr}\ndaemon log {log_path}, last warnings:\n"
            f"{_tail(log_path, 10, problems_only=True)}"
        )
    return result


# Plugins a test daemon never uses: CRI (slow, wants CNI), `opt` (creates /opt/containerd),
# snapshotters that only warn here. The v1 runtime stays: the tasks service refuses to load
# without it.
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
_DISABLED_PLUGINS = [
    CRI_PLUGIN,
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


@contextlib.contextmanager
def containerd(
    workdir: Path, env: Mapping[str, str] | None = None, namespace: str = "retinue",
    timeout: float = START_TIMEOUT, cri: bool = False,
    configure: Callable[[Path], None] | None = None,
) -> Iterator[Containerd]:
    """Start a private containerd under `workdir`; stop it and remove everything on exit.

    `env` is added to the daemon's environment, which its shims and therefore the runtimes
    (runc, retinue-runtime) inherit. `cri=True` loads the CRI plugin (its CNI directories under
    `workdir`; it sets up no pod network). `configure(config_path)` may edit the config file
    before the daemon starts.
    """
    workdir = Path(workdir)
    d = _short_dir(workdir, "ctd")
    address = str(d / "containerd.sock")
    token = uuid.uuid4().hex[:8]
    cgroup_parent = f"/retinue-test-{token}"
    config_path = d / "config.toml"
    disabled = [p for p in _DISABLED_PLUGINS if not (cri and p == CRI_PLUGIN)]
    config_path.write_text(
        "version = 2\n"
        f'root = "{d / "root"}"\n'
        f'state = "{d / "state"}"\n'
        f"disabled_plugins = {json.dumps(disabled)}\n"
        "[grpc]\n"
        f'  address = "{address}"\n'
        "[ttrpc]\n"
        f'  address = "{address}.ttrpc"\n'
        "[debug]\n"
        '  level = "info"\n'
    )
    if cri:
        # Its default CNI directories are created on the host (/etc/cni/net.d).
        (d / "cni").mkdir(exist_ok=True)
        with open(config_path, "a") as f:
            f.write(f'[plugins."{CRI_PLUGIN}".cni]\n'
                    f'  conf_dir = "{d / "cni"}"\n  bin_dir = "{d / "cni"}"\n')
    if configure is not None:
        configure(config_path)
    log_path = d / "containerd.log"
    runc_root = d / "runc"
    fifo_dir = d / "fifo"
    for p in (runc_root, fifo_dir):
        p.mkdir(exist_ok=True)
    daemon_env = _daemon_env(env)
    process = _start([CONTAINERD, "--config", str(config_path)], log_path, daemon_env)
    daemon = Containerd(d, address, namespace, runc_root, fifo_dir, cgroup_parent, config_path,
                        log_path, process, env=daemon_env)
    try:
        daemon.startup_seconds = _wait_ready(
            process, lambda: _unix_connects(address), "containerd", log_path, timeout
        )
        yield daemon
    finally:
        _teardown_containerd(daemon)


_private_containerd = containerd  # `dockerd()` has a parameter of that name


# --- containerd's CRI plugin, as a kubelet's node runs it -------------------------------------

CRI_NAMESPACE = "k8s.io"
PAUSE_IMAGE = "registry.test/retinue/pause:1"
APP_IMAGE = "docker.io/library/busybox:latest"


def _cri_section(
    runc_root: Path, runtimes: Mapping[str, str | None], pod_annotations: Sequence[str]
) -> str:
    """The CRI plugin's part of a version 2 config: handler name -> runc binary (None: runc).

    Every handler keeps its runc state under `runc_root` (runc's default is the host's
    /run/containerd/runc). `restrict_oom_score_adj`: the shims here cannot lower their score.
    """
    cri = f'plugins."{CRI_PLUGIN}"'
    lines = [
        f"[{cri}]",
        f'  sandbox_image = "{PAUSE_IMAGE}"',
        "  restrict_oom_score_adj = true",
        "  enable_selinux = false",
        f"[{cri}.containerd]",
        '  default_runtime_name = "runc"',
        '  snapshotter = "overlayfs"',
    ]
    for name, binary in runtimes.items():
        lines += [
            f"[{cri}.containerd.runtimes.{name}]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"  pod_annotations = {json.dumps(list(pod_annotations))}",
            f"[{cri}.containerd.runtimes.{name}.options]",
            f'  Root = "{runc_root}"',
        ]
        if binary:
            lines.append(f'  BinaryName = "{binary}"')
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def cri_containerd(
    workdir: Path,
    rootfs: Path,
    runtimes: Mapping[str, str | None],
    env: Mapping[str, str] | None = None,
    pod_annotations: Sequence[str] = ("io.retinue.*",),
    timeout: float = START_TIMEOUT,
) -> Iterator[Containerd]:
    """A private containerd with its CRI plugin on, handlers `runtimes` (name -> runc binary,
    None for runc itself), `pod_annotations` passed through to every handler, and two images
    made of `rootfs` in the k8s.io namespace: PAUSE_IMAGE (the sandbox image: `sleep`) and
    APP_IMAGE (`sh`). Pods run on the node's network: no CNI is set up.

    Leaving the block stops and removes every pod through the CRI first (CRI keeps its own
    records of sandboxes), then tears down as `containerd()` does.
    """
    workdir = Path(workdir)

    def configure(config_path: Path) -> None:
        runc_root = config_path.parent / "runc"
        with open(config_path, "a") as f:
            f.write(_cri_section(runc_root, runtimes, pod_annotations))

    with containerd(workdir, env=env, namespace=CRI_NAMESPACE, timeout=timeout, cri=True,
                    configure=configure) as ctd:
        ctd.import_rootfs(rootfs, PAUSE_IMAGE, cmd=("sleep", "2147483647"))
        ctd.import_rootfs(rootfs, APP_IMAGE)
        try:
            yield ctd
        finally:
            if ctd.process.poll() is None:
                _cri_remove_pods(ctd)


def _cri_remove_pods(ctd: Containerd) -> None:
    # The test's client module may not be importable here (benchmarks import engines alone).
    try:
        from cri.client import CRI
    except ImportError:
        return
    cri = CRI(ctd.address)
    try:
        cri.remove_all_pods()
    except Exception:
        pass  # containerd's teardown below removes what is left by force
    finally:
        cri.close()


def _rmdir_empty(*paths: str) -> None:
    """rmdir each of `paths`, deepest first, if it is empty.

    Not "if we created it": concurrent private daemons (other sessions on this host) would then
    each leave it to the other. An empty one serves nobody; a daemon in use keeps files there.
    """
    for path in paths:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _teardown_containerd(daemon: Containerd) -> None:
    def remove_all() -> None:
        if daemon.process.poll() is None:
            daemon.remove_all()

    _cleanup_steps([
        ("remove containers", remove_all),
        ("stop containerd", lambda: _stop(daemon.process)),
        ("kill shims", lambda: _kill_pids(_pids_with_arg("-address", daemon.address))),
        ("runc delete", lambda: _runc_delete_all(daemon.runc_root)),
        ("cgroups", lambda: _remove_cgroup(daemon.cgroup_parent)),
        ("host dirs", lambda: _rmdir_empty(SHIM_SOCKET_DIR, os.path.dirname(SHIM_SOCKET_DIR))),
        ("remove files", lambda: _remove_tree(daemon.workdir)),
    ])


# --- dockerd ----------------------------------------------------------------------------------


@dataclass
class Dockerd:
    """A running private dockerd. `docker()` talks to it."""

    workdir: Path
    host: str
    data_root: Path
    exec_root: Path
    config_path: Path
    log_path: Path
    cgroup_parent: str
    process: subprocess.Popen[bytes]
    containerd: Containerd
    client_env: dict[str, str] = field(default_factory=dict)
    startup_seconds: float = 0.0
    image: str = ""

    def docker(
        self, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS...` against this daemon, captured as text.

        With check=True a non-zero exit raises EngineError with the command's stderr.
        """
        return _run([DOCKER, *args], check, timeout, input, self.client_env, self.log_path)

    def import_rootfs(self, rootfs: Path, ref: str = "busybox:latest") -> str:
        """`docker import` a tar of `rootfs` as `ref` (CMD sh); it becomes `self.image`."""
        tar = layer_tar(rootfs, self.workdir / "rootfs.tar")
        self.docker("import", "--change", 'CMD ["sh"]', str(tar), ref)
        tar.unlink()
        self.image = ref
        return ref

    def remove_all(self) -> None:
        """Force-remove every container."""
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)


@contextlib.contextmanager
def dockerd(
    workdir: Path,
    runtimes: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    containerd: Containerd | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[Dockerd]:
    """Start a private dockerd under `workdir` with `runtimes` (name -> path) registered.

    dockerd talks to `containerd` (namespace "moby"), else to a private containerd of its own
    started here with `env`, the way Debian's docker.service uses the system containerd (a
    containerd managed by dockerd itself would create /opt/containerd on the host). The runtimes
    see that containerd's environment: with a given `containerd`, `env` reaches dockerd only.
    """
    workdir = Path(workdir)
    if containerd is None:
        with (
            _private_containerd(workdir, env=env, timeout=timeout) as own,
            _dockerd(workdir, runtimes, env, own, timeout) as daemon,
        ):
            yield daemon
    else:
        with _dockerd(workdir, runtimes, env, containerd, timeout) as daemon:
            yield daemon


@contextlib.contextmanager
def _dockerd(
    workdir: Path, runtimes: Mapping[str, str] | None, env: Mapping[str, str] | None,
    ctd: Containerd, timeout: float,
) -> Iterator[Dockerd]:
    d = _short_dir(workdir, "dk")
    data_root, exec_root = d / "data", d / "exec"
    for p in (data_root, exec_root, d / "cli"):
        p.mkdir(exist_ok=True)
    host_socket = d / "docker.sock"
    config = {
        "runtimes": {name: {"path": path} for name, path in (runtimes or {}).items()},
        # Otherwise dockerd 20.10 writes its trust key to /etc/docker/key.json.
        "deprecated-key-path": str(d / "key.json"),
    }
    config_path = d / "daemon.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    cgroup_parent = f"/retinue-test-{uuid.uuid4().hex[:8]}"
    argv = [
        DOCKERD, "--config-file", str(config_path), "--data-root", str(data_root),
        "--exec-root", str(exec_root), "--pidfile", str(d / "docker.pid"),
        "-H", f"unix://{host_socket}", "--bridge=none", "--iptables=false", "--ip-masq=false",
        "--ip6tables=false", "--userland-proxy=false", "--cgroup-parent", cgroup_parent,
        "--containerd", ctd.address, "--containerd-namespace", "moby",
        "--containerd-plugins-namespace", "moby-plugins",
    ]
    log_path = d / "dockerd.log"
    process = _start(argv, log_path, _daemon_env(env))
    client_env = _daemon_env(None)
    client_env.update(DOCKER_HOST=f"unix://{host_socket}", DOCKER_CONFIG=str(d / "cli"))
    daemon = Dockerd(d, f"unix://{host_socket}", data_root, exec_root, config_path, log_path,
                     cgroup_parent, process, ctd, client_env)
    try:
        daemon.startup_seconds = _wait_ready(
            process, lambda: _docker_ping(str(host_socket)), "dockerd", log_path, timeout
        )
        yield daemon
    finally:
        _teardown_dockerd(daemon)


def _teardown_dockerd(daemon: Dockerd) -> None:
    def remove_all() -> None:
        if daemon.process.poll() is None:
            daemon.remove_all()

    _cleanup_steps([
        ("remove containers", remove_all),
        ("stop dockerd", lambda: _stop(daemon.process)),
        ("runc delete", lambda: _runc_delete_all(daemon.exec_root / "runtime-runc")),
        ("cgroups", lambda: _remove_cgroup(daemon.cgroup_parent)),
        ("host dirs", lambda: _rmdir_empty(DOCKER_PLUGIN_DIR, os.path.dirname(DOCKER_PLUGIN_DIR))),
        ("remove files", lambda: _remove_tree(daemon.workdir)),
    ])


# --- podman -----------------------------------------------------------------------------------

PODMAN = shutil.which("podman") or "/usr/bin/podman"
# Podman 4.3 passes no --root to the runtime from every one of its processes (`podman container
# cleanup`, run by conmon when a container exits, drops --runtime-flag): runc's default root.
PODMAN_RUNC_ROOT = "/run/runc"
# netavark's run directory; Podman creates it even for `--network none`.
PODMAN_NETWORK_RUN_DIR = "/run/containers/networks"


@dataclass
class Podman:
    """Podman with a private root, runroot, tmp dir and containers.conf; `podman()` runs it."""

    workdir: Path
    runtime: str
    env: dict[str, str]
    # Run Podman through this (e.g. nsenter into a mount namespace with private /etc/subuid).
    prefix: Sequence[str] = ()

    @property
    def global_args(self) -> list[str]:
        return ["--root", str(self.workdir / "root"), "--runroot", str(self.workdir / "rr"),
                "--runtime", self.runtime, "--storage-driver", "overlay"]

    def podman(
        self, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`podman GLOBAL-ARGS ARGS...`, captured as text; check=True raises on failure."""
        return _run([*self.prefix, PODMAN, *self.global_args, *args], check, timeout, input,
                    self.env, self.workdir / "podman.log")

    def runc_containers(self) -> dict[str, str]:
        """id -> bundle of the containers runc holds for this Podman (its bundles are ours)."""
        listed = subprocess.run([RUNC, "--root", PODMAN_RUNC_ROOT, "list", "-f", "json"],
                                capture_output=True, text=True, check=False).stdout
        prefix = str(self.workdir) + "/"
        return {c["id"]: c["bundle"] for c in json.loads(listed or "null") or []
                if str(c.get("bundle", "")).startswith(prefix)}


@contextlib.contextmanager
def podman(
    workdir: Path, runtime: str, env: Mapping[str, str] | None = None,
    cleanup_runtime: Sequence[str] = (), prefix: Sequence[str] = (),
) -> Iterator[Podman]:
    """Podman on private storage under `workdir/pm` with `runtime`, cgroupfs, file events, no
    network, the ulimits this host allows. `env` is Podman's (and so conmon's and the runtime's
    `create`; Podman calls `kill` and `delete` with an empty environment).

    Leaving the block removes every container: through Podman, then whatever runc still holds
    for it (with `cleanup_runtime`, e.g. retinue-runtime with its configuration, so that its
    supervisors stop too; else runc), then the files and mounts, and Podman's host directories
    when empty.
    """
    d = _short_dir(Path(workdir), "pm")
    for sub in ("root", "rr", "tmp", "net"):
        (d / sub).mkdir(exist_ok=True)
    conf = d / "containers.conf"
    conf.write_text(
        "[containers]\n"
        # Podman gives root containers nofile/nproc limits above this host's hard limits.
        'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
        'netns = "none"\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'tmp_dir = "{d / "tmp"}"\n'
        "[network]\n"
        f'network_config_dir = "{d / "net"}"\n'
    )
    full_env = _daemon_env(env)
    full_env["CONTAINERS_CONF"] = str(conf)
    pm = Podman(d, runtime, full_env, prefix)
    try:
        yield pm
    finally:
        _teardown_podman(pm, list(cleanup_runtime))


def _teardown_podman(pm: Podman, cleanup_runtime: list[str]) -> None:
    def runtime_delete() -> None:
        argv = cleanup_runtime or [RUNC]
        for cid in pm.runc_containers():
            subprocess.run([*argv, "--root", PODMAN_RUNC_ROOT, "delete", "--force", cid],
                           capture_output=True, check=False, env=pm.env, timeout=CMD_TIMEOUT)
        for cid in pm.runc_containers():  # what the runtime could not delete
            subprocess.run([RUNC, "--root", PODMAN_RUNC_ROOT, "delete", "--force", cid],
                           capture_output=True, check=False)

    _cleanup_steps([
        ("podman rm", lambda: pm.podman("rm", "--all", "--force", "--time", "0", check=False)),
        ("runtime delete", runtime_delete),
        ("podman rm again", lambda: pm.podman("rm", "--all", "--force", check=False)),
        ("host dirs", lambda: _rmdir_empty(PODMAN_NETWORK_RUN_DIR,
                                           os.path.dirname(PODMAN_NETWORK_RUN_DIR),
                                           PODMAN_RUNC_ROOT)),
        ("remove files", lambda: _remove_tree(pm.workdir)),
    ])
