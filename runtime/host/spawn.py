"""The shim's side of the supervisor: preparing its state directory and spawning it.

Runs in the shim during create, before the lower create: the supervisor's control socket must be
bound before the container exists, and the fds the engine handed the shim (the container's stdio,
the console socket, --preserve-fds) must never leak into a process that outlives the call.
"""

from __future__ import annotations

import json
import os
import select
import sys

from .. import control, layout, planfile
from ..errors import RetinueError
from . import statedir

TYPE_CHECKING = False  # typing costs ~10 ms on the create path
if TYPE_CHECKING:
    from typing import Any

    from ..compiled import Plan

READY_TIMEOUT_MS = 10_000
# The supervisor's interpreter flags. -OO: every supervisor keeps its own unmarshalled copy of
# the code of the ~130 modules it imports (asyncio alone pulls in inspect, typing, subprocess,
# concurrent.futures...), and their docstrings are ~0.5 MB of its private memory (issue 12).
# Nothing of retinue's reads a docstring or relies on an assert; seccomp handlers, which may be
# anyone's plugins, might: a supervisor that loads them runs without it. The launcher's install
# step writes the .opt-2.pyc files (launcher.warm_supervisor), so no create waits for a compile.
PYTHON_FLAGS = ("-I", "-S", "-OO")
PLAIN_FLAGS = ("-I", "-S")


def python_flags(plan: dict[str, Any]) -> tuple[str, ...]:
    return PLAIN_FLAGS if plan.get("seccomp") else PYTHON_FLAGS


def supervisor_code(site: str) -> str:
    return (
        f"import sys; sys.path.insert(0, {site!r}); "
        "from retinue.supervisor.__main__ import main; main()"
    )


def alive(container_dir: str) -> bool:
    try:
        control.status(container_dir, 5)
        return True
    except (control.SupervisorGone, OSError, ValueError):
        return False


def prepare(container_dir: str, plan: Plan, processes: dict[str, dict[str, Any]]) -> bool:
    """Write the supervisor's inputs; False if a live supervisor already owns this container.

    The directory is built under a temporary name beside its own and renamed into place once
    complete: a create that fails midway (no space, killed) never leaves a partial one where
    `retinue status`, `delete` or the hook would take it for a container's.
    """
    log_dir = os.path.join(plan["log_dir"], plan["id"])
    try:
        # Root's alone, as the state: the directory names every container with services, and
        # the logs are the services' output. Trees left open by older versions are narrowed.
        statedir.private_dir(plan["log_dir"])
        statedir.private_dir(log_dir)
        # The supervisor's own log must exist before it runs: else "see supervisor.log" would
        # point at a file that cannot exist.
        fd = os.open(
            os.path.join(log_dir, layout.SUPERVISOR_LOG),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as e:
        raise RetinueError(f"{e.filename or log_dir}: cannot create: {e.strerror}") from None
    if os.path.isdir(container_dir):
        if alive(container_dir):
            return False
        # A stale directory from a supervisor that died (a share it staged is unmounted first).
        if statedir.unmount_staged(container_dir):
            statedir.remove_tree(container_dir)
    parent = os.path.dirname(container_dir)
    building = statedir.temp_dir(container_dir)
    for attempt in (1, 2):
        statedir.private_dir(os.path.dirname(parent))
        statedir.private_dir(parent)
        statedir.sweep(container_dir)
        try:
            os.mkdir(building, 0o700)
            break
        except FileNotFoundError:
            # The root's directory was empty and the last container of that root took it
            # along (statedir.remove): make it again. Once `building` is in it, it stays.
            if attempt == 2:
                raise
    try:
        # notify holds the services' notify sockets; the container gets each socket, read-only,
        # never this directory.
        for sub in layout.CONTAINER_SUBDIRS:
            os.mkdir(os.path.join(building, sub), 0o700)
        for name, proc in processes.items():
            _write_json(os.path.join(building, layout.process_file(name)), proc)
        planfile.write(building, plan)
        statedir.write_state_file(building, container_dir)
        statedir.add_marker(container_dir)
        os.rename(building, container_dir)
    except BaseException:
        try:
            statedir.remove_tree(building)
        except OSError:
            pass
        if not os.path.isdir(container_dir):
            statedir.remove_marker(container_dir)
            try:
                os.rmdir(parent)  # only if this create was all it held
            except OSError:
                pass
        raise
    return True


def _write_json(path: str, value: object) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as f:
        json.dump(value, f)


def spawn(container_dir: str, log_path: str, cgroup: dict[str, Any] | None = None) -> None:
    """Start the supervisor detached from the caller and wait until its socket is bound.

    `cgroup` (cgroups.placement) is joined before the interpreter starts: memory is charged
    to the cgroup that was current when it was allocated and never moves with the process, so
    a supervisor that joined its own after its imports left ~9 MB on the caller (measured:
    its cgroup showed 0.3 MiB idle)."""
    try:
        with open(planfile.path(container_dir)) as f:
            flags = python_flags(json.load(f))
    except (OSError, ValueError, AttributeError):
        flags = PLAIN_FLAGS  # the supervisor reports what is wrong with its plan
    site = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = supervisor_code(site)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, w)
            os.closerange(w + 1, 1 << 16)
            os.set_inheritable(w, True)
            if cgroup:
                _enter(cgroup, log_path)
            import _signal  # type: ignore[import-not-found]

            for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
                _signal.signal(sig, _signal.SIG_DFL)
            os.execv(
                sys.executable, [sys.executable, *flags, "-c", code, container_dir, str(w)]
            )
        finally:
            os._exit(127)
    os.close(w)
    os.waitpid(pid, 0)
    poller = select.poll()
    poller.register(r, select.POLLIN)
    try:
        events = poller.poll(READY_TIMEOUT_MS)
        ready = bool(events) and os.read(r, 1) == b"1"
    finally:
        os.close(r)
    if not ready:
        detail = _tail(log_path)
        statedir.remove(container_dir)
        raise RetinueError(
            f"the supervisor did not start{': ' + detail if detail else ''} (see {log_path})"
        )


def _enter(place: dict[str, Any], log_path: str) -> None:  # pragma: no cover - child
    """In the supervisor's process, before its exec: its cgroup, or its one error line in its
    log (the shim quotes it) and exit."""
    from . import cgroups

    try:
        notes = cgroups.enter(place)
        status = 0
    except cgroups.CgroupError as e:
        cgroups.leave(place, place.get("origin") or {})
        cgroups.remove(place, timeout=0)
        notes, status = [f"cannot put the supervisor in its cgroup: {e}"], 1
    if notes:
        with open(log_path, "a") as f:
            f.write("".join(note + "\n" for note in notes))
    if status:
        os._exit(status)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            lines = f.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""
    except OSError:
        return ""
