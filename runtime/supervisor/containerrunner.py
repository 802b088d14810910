"""`ContainerRunner`: a unit run as a sibling OCI container (placement = "container").

Each start creates the sibling afresh with the lower runtime under retinue's own runtime root
(STATE_DIR/sidecars, which no engine lists): its spec is `sidecar.sibling_spec` of the app's
spec, the service and its image, written to the app's state directory; its stdout and stderr
are the service's log. The sibling's init becomes the supervisor's child (the supervisor is a
subreaper and `create` is its child), so its exit is reaped and its pidfd signalled exactly as
an exec'd service's. A restart deletes what is left of the last run first; the unit's cleanup
(its stop, the container's end) deletes it for good. A supervisor killed outright leaves it to
`retinue gc`, which finds it by its annotations.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import layout
from ..errors import SpecError
from ..host import images, mounts
from ..spec import sibling as sidecar
from ..spec.bundle import has_user_namespace
from . import probes, procs
from .apphandles import AppGone, AppHandles, ShareError
from .runner import CreateFailed, Run, StartFailed, recorded_cgroup_paths

if TYPE_CHECKING:
    from ..compiled import CompiledService, Plan
    from .container import AppContainer

# Built beside the package, as compile_config finds it for the app containers.
INIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "libexec",
                    "retinue-init")
# util-linux, on every Debian and Red Hat system; a path, as posix_spawn needs.
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


def app_cgroup(proc_cgroup: str, recorded: tuple[dict[str, Any], str] | None = None) -> str:
    """The app's cgroup path in the hierarchy runc places siblings by (memory on v1): as runc
    recorded it at create (`recorded`: runner.recorded_cgroup_paths), since something may have
    moved the app's init since (runtime-tools does); else from its init's /proc/PID/cgroup."""
    from ..host import cgroups

    if recorded is not None:
        path = cgroups.recorded_path(*recorded)
        if path:
            return path
    paths = cgroups.parse_proc_cgroup(proc_cgroup)
    return paths.get("memory") or paths.get("", "/")


def oom_note(cgroup: str, limit: int) -> list[str]:
    """What the service's log says of OOM kills in its sibling's cgroup (nothing if none)."""
    kills = oom_kills(cgroup)
    if not kills:
        return []
    return [f"out of memory: the kernel killed {kills} process(es) at its memory limit"
            + (f" ({limit >> 20}M)" if limit else "")]


def oom_kills(cgroup: str) -> int:
    """OOM kills in a cgroup so far (v1 memory.oom_control, v2 memory.events); 0 if unknown."""
    for path in (f"/sys/fs/cgroup/memory{cgroup}/memory.oom_control",
                 f"/sys/fs/cgroup{cgroup}/memory.events"):
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


class ContainerRunner:
    """Runs each unit it is given as a sibling container of the app (see the module)."""

    def __init__(self, container: AppContainer, plan: Plan) -> None:
        self.container = container
        self.lower = plan["lower"]
        self.root = plan.get("sidecar_root") or os.path.join(
            os.path.dirname(os.path.dirname(container.dir)), layout.SIDECARS
        )
        self.image_dir = plan.get("image_dir") or layout.DEFAULT_IMAGE_DIR
        self.bundle = plan.get("bundle", "")
        self._app: dict[str, Any] | None = None
        self.digests: dict[str, str] = {}
        # Each service's definition (exec and describe need it).
        self.specs: dict[str, CompiledService] = {s["name"]: s for s in plan["services"]}

    def _argv(self, *args: str) -> list[str]:
        return [self.lower, "--root", self.root, *args]

    def sid(self, name: str) -> str:
        return sidecar.sidecar_id(self.container.id, name)

    def app_spec(self) -> dict[str, Any]:
        """The app's spec as created (read once: an engine may remove the bundle later)."""
        if self._app is None:
            try:
                with open(os.path.join(self.bundle, "config.json")) as f:
                    self._app = json.load(f)
            except (OSError, ValueError) as e:
                raise StartFailed(
                    1 << 8, f"could not be started (cannot read the app's spec: {e})"
                ) from None
        return self._app

    async def remove(self, name: str) -> None:
        """Whatever is left of an earlier run of this unit's sibling."""
        await procs.run(self.container.reaper, self._argv("delete", "--force", self.sid(name)),
                        timeout=30)

    async def start(self, name: str, spec: CompiledService, out: int) -> Run:
        app = self.container
        self.specs[name] = spec
        init_pid = app.init_pid
        if init_pid is None:
            raise StartFailed(1 << 8, "could not be started (the app container has no process)")
        try:
            images.secure_store(self.image_dir)
            image = images.resolve(self.image_dir, spec["image"])
        except images.ImageError as e:
            raise StartFailed(1 << 8, f"could not be started: {e}", permanent=True) from None
        app_spec = self.app_spec()
        bundle = os.path.join(app.dir, layout.sidecar_bundle(name))
        os.makedirs(bundle, mode=0o700, exist_ok=True)
        # What a start cut short (the supervisor killed) left; never removed recursively.
        staging = os.path.join(bundle, "share")
        if not mounts.clear(staging):
            raise StartFailed(1 << 8, f"could not be started ({staging} is still mounted)")
        _remove_points(staging)
        namespaces = [*sidecar.JOINED]
        view = None
        if has_user_namespace(app_spec):
            namespaces.append("user")
            # In the app's user namespace the lower runtime reaches the image through a view at
            # the store's own path (images.behind_view): the store stays root-only.
            view = image["rootfs"]
            image = {**image, "rootfs": self.image_dir}
        # The last run's sibling goes first: the handles are held only while this one is made.
        await self.remove(name)
        try:
            handles = AppHandles(init_pid, namespaces, app.exited)
        except AppGone as e:
            raise StartFailed(1 << 8, f"could not be started: {e}", permanent=True) from None
        except OSError as e:
            raise StartFailed(1 << 8, f"could not be started (the app's init: {e})") from None
        try:
            return await self._create(name, spec, out, image, app_spec, bundle, handles, view)
        finally:
            handles.release()

    async def _create(
        self, name: str, service: CompiledService, out: int, image: dict[str, Any],
        app: dict[str, Any], bundle: str, handles: AppHandles, view: str | None,
    ) -> Run:
        ctr = self.container
        try:
            shared = {}
            if service["share"]:
                os.mkdir(os.path.join(bundle, "share"), 0o700)
            for i, path in enumerate(service["share"]):
                shared[path] = handles.share(
                    path, lambda p: sidecar.host_place(app, self.bundle, p),
                    os.path.join(bundle, "share", str(i)),
                )
            spec = sidecar.sibling_spec(
                app, dict(service), image, app_id=ctr.id, app_proc=f"/proc/{handles.pid}",
                app_cgroup=app_cgroup(handles.cgroup_file, recorded_cgroup_paths(ctr)),
                container_dir=ctr.dir,
                shared=shared, init=INIT if os.path.isfile(INIT) else None,
                ns_paths=handles.ns_paths(),
            )
        except (ShareError, OSError, SpecError) as e:
            raise StartFailed(1 << 8, f"could not be started: {e}") from None
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        pid_file = os.path.join(bundle, "pid")
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        sid = self.sid(name)
        # The sibling's stdio are create's: its output goes to the service's log.
        argv = self._argv("create", "--bundle", bundle, "--pid-file", pid_file, sid)
        if view:
            argv = images.behind_view(view, self.image_dir, argv, UNSHARE)
        pid = procs.spawn(argv, stdout=out)
        status = await ctr.reaper.wait(pid)
        if status != 0:
            # Its last line of output is appended (CreateFailed.explain).
            raise CreateFailed(
                status, f"could not be started ({self.lower} create {procs.describe_status(status)}"
            )
        if ctr.exited():
            # It joined the namespaces of descriptors held since the init was checked: the
            # app's, never another process's; but the app is gone.
            await self.remove(name)
            raise StartFailed(1 << 8, f"could not be started: {handles.gone()}", permanent=True)
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            await self.remove(name)
            raise StartFailed(1 << 8, "could not be started (no pid file)") from None
        pidfd = ctr.reaper.pidfd(pid)
        exit_future = ctr.reaper.wait(pid)
        status, said_out = await procs.run(ctr.reaper, self._argv("start", sid), timeout=30)
        if status != 0:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
            await exit_future
            await self.remove(name)
            said = said_out.decode("utf-8", "replace").strip().splitlines()
            raise StartFailed(status, f"could not be started ({self.lower} start "
                              f"{procs.describe_status(status)}: {said[-1][:200] if said else ''})")
        self.digests[name] = image["digest"]
        cgroup = spec["linux"]["cgroupsPath"]
        limit = (service.get("resources") or {}).get("memory") or 0
        run = Run(name, pid, pidfd, exit_future)
        # Read before the sibling is deleted (its cgroup with it): why it died is in there.
        exit_future.add_done_callback(lambda _: run.notes.extend(oom_note(cgroup, limit)))
        return run

    async def exec(
        self, run: Run, which: str, timeout: float, output: Callable[[bytes], None]
    ) -> tuple[int | None, str]:
        # Detached inside the sibling, as ExecRunner's: a hung command is ours to kill.
        spec = self.specs[run.name]
        argv = {
            "probe": spec.get("ready_target"),
            "health": spec.get("health_target"),
            "drain": spec.get("stop_exec"),
        }.get(which)
        if not isinstance(argv, list) or not argv:
            return None, f"no {which} command"
        pid_file = os.path.join(self.container.dir, layout.sidecar_bundle(run.name), f"{which}.pid")
        return await probes.exec_inside(
            self.container.reaper,
            self._argv("exec", "--detach", "--pid-file", pid_file, "--user",
                       f"{spec['uid']}:{spec['gid']}", self.sid(run.name), *argv),
            pid_file, timeout, output,
        )

    def kill_all(self, run: Run) -> None:
        # The sibling's init is PID 1 of its own PID namespace: when it dies the kernel kills
        # every other process in it.
        run.signal(signal.SIGKILL)

    async def cleanup(self, name: str) -> None:
        await self.remove(name)
        bundle = os.path.join(self.container.dir, layout.sidecar_bundle(name))
        if mounts.clear(bundle):
            shutil.rmtree(bundle, ignore_errors=True)

    def describe(self, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = dict(self.specs.get(name) or {})
        return {
            "image": self.digests.get(name) or spec.get("image"),
            "resources": spec.get("resources") or {},
            "container": self.sid(name),
        }



def _remove_points(staging: str) -> None:
    """The staging points (empty directories or files once unmounted) and their directory."""
    try:
        names = os.listdir(staging)
    except FileNotFoundError:
        return
    for name in names:
        mounts.remove_point(os.path.join(staging, name))
    try:
        os.rmdir(staging)
    except OSError:
        pass
