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
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import images, sidecar
from ..errors import SpecError
from . import probes, procs
from .runner import Run, StartFailed

if TYPE_CHECKING:
    from ..compiled import Plan
    from .unit import Context, Unit

SYMLINK_HOPS = 40
# Built beside the package, as compile_config finds it for the app containers.
INIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "libexec",
                    "retinue-init")  # as the kernel's own limit on one path walk


class ShareError(Exception):
    pass


def resolve_in_root(root: str, path: str) -> str:
    """`path` in the app container (whose root is `root`, /proc/PID/root) without a symlink
    left in it: a symlink is resolved against the container's root, never the host's, so the
    app's owner cannot point a shared path at a host file. (A component swapped after this
    check is a race the mount itself does not close; runc 1.1 has no mount-source fd.)"""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except OSError as e:
            raise ShareError(f"share: {path}: {e.strerror} in the app container") from None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > SYMLINK_HOPS:
                raise ShareError(f"share: {path}: too many symbolic links in the app container")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
        else:
            resolved.append(part)
    return "/" + "/".join(resolved)


def app_cgroup(init_pid: int) -> str:
    """The app's cgroup path in the hierarchy runc places siblings by (memory on v1)."""
    from .. import cgroups

    with open(f"/proc/{init_pid}/cgroup") as f:
        paths = cgroups.parse_proc_cgroup(f.read())
    return paths.get("memory") or paths.get("", "/")


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

    def __init__(self, ctx: Context, plan: Plan) -> None:
        self.ctx = ctx
        self.lower = plan["lower"]
        self.root = plan.get("sidecar_root") or os.path.join(
            os.path.dirname(os.path.dirname(ctx.dir)), "sidecars"
        )
        self.image_dir = plan.get("image_dir") or images.DEFAULT_IMAGE_DIR
        self.bundle = plan.get("bundle", "")
        self._app: dict[str, Any] | None = None
        self.digests: dict[str, str] = {}

    def _argv(self, *args: str) -> list[str]:
        return [self.lower, "--root", self.root, *args]

    def sid(self, unit: Unit) -> str:
        return sidecar.sidecar_id(self.ctx.id, unit.name)

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

    async def remove(self, unit: Unit) -> None:
        """Whatever is left of an earlier run of this unit's sibling."""
        await procs.run(self.ctx.reaper, self._argv("delete", "--force", self.sid(unit)),
                        timeout=30)

    async def start(self, unit: Unit) -> Run:
        ctx = self.ctx
        init_pid = ctx.init_pid()
        if init_pid is None:
            raise StartFailed(1 << 8, "could not be started (the app container has no process)")
        try:
            image = images.resolve(self.image_dir, unit.spec["image"])
        except images.ImageError as e:
            raise StartFailed(1 << 8, f"could not be started: {e}", permanent=True) from None
        proc = f"/proc/{init_pid}"
        try:
            app = self.app_spec()
            shared = {
                p: sidecar.host_path(app, self.bundle, resolve_in_root(f"{proc}/root", p))
                for p in unit.spec["share"]
            }
            spec = sidecar.sibling_spec(
                app, dict(unit.spec), image, app_id=ctx.id, app_proc=proc,
                app_cgroup=app_cgroup(init_pid), container_dir=ctx.dir, shared=shared,
                init=INIT if os.path.isfile(INIT) else None,
            )
        except (ShareError, OSError, SpecError) as e:
            raise StartFailed(1 << 8, f"could not be started: {e}") from None
        bundle = os.path.join(ctx.dir, "sidecars", unit.name)
        os.makedirs(bundle, mode=0o700, exist_ok=True)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        pid_file = os.path.join(bundle, "pid")
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        await self.remove(unit)
        sid = self.sid(unit)
        wfd = unit.open_output()
        try:
            # The sibling's stdio are create's: its output goes to the service's log.
            pid = procs.spawn(
                self._argv("create", "--bundle", bundle, "--pid-file", pid_file, sid), stdout=wfd
            )
        finally:
            os.close(wfd)
        status = await ctx.reaper.wait(pid)
        if status != 0:
            unit.drain_output()
            raise StartFailed(
                status, f"could not be started ({self.lower} create {procs.describe_status(status)}"
                f": {unit.last_output()})",
            )
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            await self.remove(unit)
            raise StartFailed(1 << 8, "could not be started (no pid file)") from None
        pidfd = self.ctx.reaper.pidfd(pid)
        exit_future = ctx.reaper.wait(pid)
        status, _ = await procs.run(ctx.reaper, self._argv("start", sid), timeout=30)
        if status != 0:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
            await exit_future
            await self.remove(unit)
            raise StartFailed(status, f"could not be started ({self.lower} start failed)")
        self.digests[unit.name] = image["digest"]
        cgroup = spec["linux"]["cgroupsPath"]
        # Read before the sibling is deleted (its cgroup with it): why it died is in there.
        exit_future.add_done_callback(lambda _: self.note_oom(unit, cgroup))
        return Run(unit.name, pid, pidfd, exit_future)

    def note_oom(self, unit: Unit, cgroup: str) -> None:
        kills = oom_kills(cgroup)
        if kills:
            limit = (unit.spec.get("resources") or {}).get("memory") or 0
            unit.note(
                f"out of memory: the kernel killed {kills} process(es) at its memory limit"
                + (f" ({limit >> 20}M)" if limit else "")
            )

    async def probe(self, unit: Unit, argv: list[str], timeout: float) -> int:
        spec = unit.spec
        try:
            status, _ = await procs.run(
                self.ctx.reaper,
                self._argv("exec", "--user", f"{spec['uid']}:{spec['gid']}", self.sid(unit),
                           *argv),
                timeout=timeout,
                keep=0,  # the probe's output is the container's, and only its status counts
            )
        except TimeoutError:
            return 1
        return status

    async def command(
        self, unit: Unit, which: str, timeout: float, output: Callable[[bytes], None]
    ) -> tuple[int | None, str]:
        # Detached inside the sibling, as ExecRunner's: a hung command is ours to kill.
        spec = unit.spec
        argv = {
            "probe": spec.get("ready_target"),
            "health": spec.get("health_target"),
            "drain": spec.get("stop_exec"),
        }.get(which)
        if not isinstance(argv, list) or not argv:
            return None, f"no {which} command"
        pid_file = os.path.join(self.ctx.dir, "sidecars", unit.name, f"{which}.pid")
        return await probes.exec_inside(
            self.ctx.reaper,
            self._argv("exec", "--detach", "--pid-file", pid_file, "--user",
                       f"{spec['uid']}:{spec['gid']}", self.sid(unit), *argv),
            pid_file, timeout, output,
        )

    def netns(self, run: Run) -> int | None:
        # The sibling's init is in the app's network namespace: a pidfd of it will do.
        return run.pidfd

    def signal(self, run: Run, sig: int) -> None:
        run.signal(sig)

    def kill_all(self, run: Run) -> None:
        # The sibling's init is PID 1 of its own PID namespace: when it dies the kernel kills
        # every other process in it.
        self.signal(run, signal.SIGKILL)

    async def cleanup(self, unit: Unit) -> None:
        await self.remove(unit)
        shutil.rmtree(os.path.join(self.ctx.dir, "sidecars", unit.name), ignore_errors=True)

    def describe(self, unit: Unit) -> dict[str, Any]:
        return {
            "image": self.digests.get(unit.name) or unit.spec.get("image"),
            "resources": unit.spec.get("resources") or {},
            "container": self.sid(unit),
        }

