"""`retinue-runtime`: called exactly like runc.

The entry point is small on purpose: parse argv, decide, and either hand the call to the lower
runtime with execve or take one of the paths that need more. A pass-through call imports only
`os`, `sys`, `marshal`, `binascii` and `_signal`; everything else is loaded on the paths that use
it.

Paths that are not pass-through:
- create/run of a container the policy selects: edit the bundle, spawn the supervisor;
- start/kill/delete of a container that has a supervisor: talk to it first;
- update of a container that has a supervisor: its services' sub-cgroups make room and follow.

A container with a supervisor is found through statedir's registry, never through this call's
configuration: every call about it goes to the lower runtime it was created with. `-h`/`--help`
goes to the lower runtime untouched; so does every call that needs no policy while the
configuration is broken (with the last good configuration's lower runtime).
"""

from __future__ import annotations

import os
import sys

from .. import argv as runc_argv
from .. import config_source, layout
from ..config import cache as confcache
from ..errors import LowerRuntimeError, RetinueError, clip
from ..host import lower, runclog, statedir

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from ..compiled import Compiled, Plan
    from ..policy.attach import Attachment

PREFIX = "retinue: "
# Without retinue-init (a rule's `init = false`), signals that ask a container to stop: its
# services are stopped first, in reverse order, each with its own stop signal and timeout;
# SIGKILL kills them at once.
GRACEFUL_SIGNALS = frozenset({2, 3, 15})  # SIGINT, SIGQUIT, SIGTERM
SIGKILL = 9


def _self_path() -> str:
    return sys.argv[0] if "/" in sys.argv[0] else _which(sys.argv[0])


def _which(name: str) -> str:
    for d in _path_env().split(os.pathsep):
        candidate = os.path.join(d, name)
        if d and os.path.isfile(candidate):
            return candidate
    return name


def _path_env() -> str:
    return os.environ.get("PATH") or lower.DEFAULT_PATH


def load_config() -> Compiled:
    path, explicit = config_source()
    return confcache.load(path, explicit, _path_env(), _self_path())


# Go's strconv.ParseBool spellings of true: `-h=false` is not a request for help.
_TRUE = frozenset({"", "1", "t", "T", "true", "TRUE", "True"})


def wants_help(args: runc_argv.RuncArgs) -> bool:
    """`-h`/`--help` anywhere runc reads flags: runc prints help and touches nothing."""
    return any(
        flags.get(name) in _TRUE for flags in (args.globals, args.options) for name in ("h", "help")
    )


def passthrough_config(args: runc_argv.RuncArgs) -> tuple[str, Compiled | None]:
    """The lower runtime for a call that needs no policy, and the configuration if it loads.

    A broken configuration must not take down the containers that are already there: such calls
    use the lower runtime of the last good configuration, else the default one, and say so only
    in `--log` (on stdout or stderr it would corrupt what the engine parses, e.g. `state`).
    """
    defaults = True
    broken: Exception
    try:
        compiled = load_config()
        return compiled["runtime"], compiled
    except LowerRuntimeError as e:
        # The configuration reads well but names no usable runtime: runc in its place could
        # only answer for containers it never made.
        broken, defaults = e, False
    except Exception as e:  # whatever else is wrong with it, the answer is the same
        broken = e
    path, explicit = config_source()
    path_env, self_path = _path_env(), _self_path()
    try:
        good = confcache.last_good(path, explicit, path_env, self_path)
        runtime, source = lower.resolve(good["runtime"], path_env, self_path), "last good"
    except (LookupError, KeyError, TypeError, RetinueError):
        if not defaults:
            raise broken from None
        try:
            runtime, source = lower.resolve("", path_env, self_path), "default"
        except RetinueError:
            raise broken from None
    reason = (str(broken).splitlines() or [type(broken).__name__])[0]
    runclog.log_only(
        args,
        "warning",
        f"{PREFIX}the configuration cannot be used ({clip(reason)}); "
        f"{args.command or 'the call'} goes to {runtime}, the {source} lower runtime",
    )
    return runtime, None


def lower_globals(args: runc_argv.RuncArgs) -> list[str]:
    """The global flags a supervisor must repeat when it calls the lower runtime itself."""
    out = ["--root", args.root]
    if "systemd-cgroup" in args.globals:
        out.append("--systemd-cgroup")
    if "rootless" in args.globals:
        out += ["--rootless", args.globals["rootless"]]
    return out


def create(args: runc_argv.RuncArgs, compiled: Compiled) -> Attachment | None:
    """Edit the bundle if the policy selects the container; leave it byte-for-byte alone if not.

    Returns what was attached when the container has a supervisor (one was spawned).
    """
    if not compiled["rules"] and not compiled["services"]:
        return None
    from ..policy import attach
    from ..spec import bundle

    path, spec = bundle.load(args.bundle)
    container_id = args.container_id
    if not statedir.valid_id(container_id):
        # runc refuses it with its own message; there is nothing for us to attach to.
        return None
    found = attach.plan(compiled, spec, args.root, container_id, args.bundle)
    if found is None:
        return None
    if found.init is not None and not os.access(found.init["binary"], os.X_OK):
        raise RetinueError(
            f"{found.init['binary']}: retinue-init is missing or not executable; reinstall "
            "retinue (its package build compiles it)"
        )
    if found.supervised:
        start_supervisor(args, compiled, spec, found)
    if found.edited is not spec:
        try:
            bundle.write_atomic(path, bundle.dumps(found.edited))
        except OSError as e:
            raise RetinueError(f"{path}: cannot write: {e.strerror}") from None
    return found if found.supervised else None


def start_supervisor(
    args: runc_argv.RuncArgs, compiled: Compiled, spec: dict[str, Any], found: Attachment
) -> None:
    from ..host import cgroups, spawn
    from ..policy import attach
    from ..policy import select as policy
    from ..spec import execspec

    container_id, container_dir = args.container_id, found.container_dir
    processes: dict[str, dict[str, Any]] = {}
    for svc in found.services:
        processes[svc["name"]] = execspec.process(svc, spec, container_id)
        if svc["ready"] == "exec":
            processes[f"{svc['name']}.probe"] = execspec.process(
                svc, spec, container_id, args=svc["ready_target"]
            )
        # Run inside the container like the probe above, as the service's user.
        if svc.get("health") == "exec":
            processes[f"{svc['name']}.health"] = execspec.process(
                svc, spec, container_id, args=svc["health_target"]
            )
        if svc.get("stop_exec"):
            processes[f"{svc['name']}.drain"] = execspec.process(
                svc, spec, container_id, args=svc["stop_exec"]
            )
    try:
        # Where the supervisor's own cost is charged (beside the container's cgroup).
        cgroup = cgroups.for_container(spec, container_id, lower_globals(args), compiled)
    except cgroups.CgroupError as e:
        raise RetinueError(str(e)) from None
    plan: Plan = {
        "id": container_id,
        "root": args.root,
        "lower": compiled["runtime"],
        "lower_globals": lower_globals(args),
        "bundle": os.path.abspath(args.bundle),
        "log_dir": compiled["log_dir"],
        "log_max_bytes": compiled["log_max_bytes"],
        "log_keep": compiled["log_keep"],
        "log_retention": compiled["log_retention"],
        "log_keep_containers": compiled["log_keep_containers"],
        "log_max_container_bytes": compiled.get("log_max_container_bytes", 0),
        "log_min_free": compiled.get("log_min_free", 0.0),
        # Pod and container names, when the CRI created it: `retinue status` and `logs` take them.
        **policy.cri_names(spec),
        "services": found.services,
        "seccomp": found.seccomp,
        "seccomp_listener": found.listener,
        "creator_pid": os.getpid(),
        "notify_rate": compiled.get("notify_rate", layout.NOTIFY_RATE),
        "seccomp_rate": compiled.get("seccomp_rate", layout.SECCOMP_RATE),
        # retinue-init is PID 1 and connects to the supervisor: the services stop after the main
        # process, and kill goes straight to the lower runtime.
        "init": bool(found.init and found.init["supervised"]),
        # Or, with sidecars only and no init, the supervisor watches the main process itself.
        "watch_main": attach.watches_main(found.init, found.services),
        "stop_budget": found.stop_budget,
        "cgroup": cgroup,
        # Sidecar-placed services: their images, and the runtime root of their containers.
        "image_dir": compiled.get("image_dir", layout.DEFAULT_IMAGE_DIR),
        "sidecar_root": os.path.join(compiled["state_dir"], layout.SIDECARS),
    }
    try:
        if spawn.prepare(container_dir, plan, processes):
            config, explicit = config_source()
            # Before the lower create: every later call finds the container through this,
            # whatever its environment (see statedir.REGISTRY).
            statedir.register(
                container_dir, config, explicit, compiled["runtime"], compiled["log_dir"]
            )
            log = os.path.join(compiled["log_dir"], container_id, layout.SUPERVISOR_LOG)
            spawn.spawn(container_dir, log, cgroup)
    except OSError as e:
        raise RetinueError(f"cannot prepare {container_dir}: {e.strerror}") from None


def _signal_number(text: str) -> int:
    if text.isdigit():
        return int(text)
    import _signal  # type: ignore[import-not-found]

    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    return int(getattr(_signal, name, 0))


def _gone_message(container_id: str, log_dir: str) -> str:
    log = os.path.join(log_dir, container_id, layout.SUPERVISOR_LOG)
    return f"the supervisor of container {container_id} is gone (killed or crashed; see {log})"


def recorded_lower(container_dir: str, default: str) -> str:
    """The lower runtime the container was created with: it keeps it until it is deleted, even
    if the configuration names another one since."""
    lower_runtime = recorded_plan(container_dir).get("lower")
    return lower_runtime if isinstance(lower_runtime, str) and lower_runtime else default


def recorded_plan(container_dir: str) -> dict[str, Any]:
    """What the container was created with (its plan.json); empty if it cannot be read."""
    from .. import planfile

    return planfile.recorded(container_dir)


def supervised(args: runc_argv.RuncArgs, runtime: str, log_dir: str, container_dir: str) -> str:
    """start, kill and delete of a container that has a supervisor, which goes first.

    `runtime` is the lower runtime the container was created with; returns the one to hand the
    call to.
    """
    from .. import control
    from ..control import SupervisorGone

    plan = recorded_plan(container_dir)
    command, container_id = args.command, args.container_id
    gone = _gone_message(container_id, log_dir)
    if command == "start":
        try:
            reply = control.start(container_dir)
        except SupervisorGone:
            # As the supervisor does when its gate fails: the entrypoint never runs, and the
            # container's init (runc init, waiting for this start) is ended, so the engine sees
            # it stopped. containerd refuses to delete a `created` task: Docker would keep the
            # task, its shim and the services that already run for good.
            _end_waiting_init(runtime, args)
            raise RetinueError(
                f"{gone}: its services cannot run, so the container is not started; "
                "delete it and create it again"
            ) from None
        if not reply.get("ok"):
            raise RetinueError(str(reply.get("error")))
    elif command == "kill":
        # Only the signals that end the main process concern the services.
        sig = _signal_number(args.positionals[1] if len(args.positionals) > 1 else "SIGTERM")
        if sig in GRACEFUL_SIGNALS or sig == SIGKILL:
            unanswered: tuple[type[Exception], ...] = (SupervisorGone,)
            try:
                if plan.get("init") is True or plan.get("watch_main") is True:
                    # retinue-init is PID 1, or the container has only sidecars (its own
                    # entrypoint is PID 1): the signal goes straight to the main process, and the
                    # services stop after it has exited (init tells the supervisor, or the
                    # supervisor sees the exit on its pidfd). A kill that waited for the services
                    # would eat the engine's grace period; only whether anyone will stop them is
                    # asked (answered at once, bounded anyway: no answer in time is no answer).
                    unanswered = (SupervisorGone, OSError)
                    control.status(container_dir, timeout=1.0)
                else:
                    control.stop(container_dir, force=sig == SIGKILL)
            except unanswered:
                runclog.log(args, "warning", f"{PREFIX}{gone}; its services were not stopped")
    elif command == "delete":
        force = "force" in args.options or "f" in args.options
        if not force and _is_running(runtime, args):
            return runtime  # the lower runtime refuses to delete it, with its own message
        try:
            # Even --force stops the services gracefully, in reverse order, within their stop
            # timeouts: every path to the container's end stops them the same way; the lower
            # delete --force then kills what is left.
            control.delete(container_dir, force=False)
        except SupervisorGone:
            _remove_siblings(plan, runtime, container_id)
            # With retinue-init the supervisor ends by itself right after the container stops,
            # and engines delete at once: it may be removing its state this very moment.
            if not _vanishes(container_dir):
                if statedir.is_complete(container_dir):
                    runclog.log(
                        args, "warning", f"{PREFIX}{gone}; removed its state {container_dir}"
                    )
                statedir.remove(container_dir)
    return runtime


def _end_waiting_init(runtime: str, args: runc_argv.RuncArgs) -> None:
    """SIGKILL a created container's init through the lower runtime and wait (5 s at most)
    until it has been reaped: by then the engine's shim, its parent, has seen the exit and
    reports the task stopped. The services exec'd into it end with its PID namespace."""
    import json
    import subprocess
    import time

    base = [runtime, *lower_globals(args)]
    out = subprocess.run([*base, "state", args.container_id], stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=30, check=False)
    try:
        state = json.loads(out.stdout) if out.returncode == 0 else {}
    except ValueError:
        state = {}
    pid = state.get("pid") if isinstance(state, dict) else None
    if not isinstance(pid, int) or pid <= 0 or state.get("status") != "created":
        return
    started = _start_time(pid)
    subprocess.run([*base, "kill", args.container_id, "KILL"], stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=30, check=False)
    deadline = time.monotonic() + 5
    while started is not None and _start_time(pid) == started and time.monotonic() < deadline:
        time.sleep(0.01)


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None once it has been reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def _remove_siblings(plan: dict[str, Any], runtime: str, container_id: str) -> None:
    """The sidecar containers a supervisor that is gone (killed) left behind."""
    root = plan.get("sidecar_root")
    names = [
        s.get("name") for s in plan.get("services") or [] if s.get("placement") == "container"
    ]
    if not isinstance(root, str) or not names:
        return
    import subprocess

    for name in names:
        subprocess.run(
            [runtime, "--root", root, "delete", "--force", f"{container_id}.{name}"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False,
        )


def _vanishes(path: str, seconds: float = 1.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while os.path.isdir(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _is_running(runtime: str, args: runc_argv.RuncArgs) -> bool:
    import json
    import subprocess

    out = subprocess.run(
        [runtime, *lower_globals(args), "state", args.container_id],
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        return False
    try:
        return bool(json.loads(out.stdout).get("status") in ("running", "paused"))
    except ValueError:
        return False


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return None


def update(args: runc_argv.RuncArgs, runtime: str, container_dir: str) -> int:
    """`update` of a container with services, around the lower runtime's: its services'
    sub-cgroups must not stop the container's cgroup from narrowing (v1), and must follow it.

    Only the cpuset and the CFS quota need room made first; everything else (and whether the
    values are valid) is the lower runtime's, which gets the same argv and the same bytes on
    stdin. Returns its exit status.
    """
    import json
    import subprocess

    from ..host import cgroups

    source = args.options.get("resources", args.options.get("r"))
    data: bytes | None = None
    cpu: dict[str, Any] = {}
    if source is not None:  # then runc ignores every other flag
        try:
            if source == "-":
                data = sys.stdin.buffer.read()
                text = data
            else:
                with open(source, "rb") as f:
                    text = f.read()
            found = json.loads(text)
            cpu = found.get("cpu") or {} if isinstance(found, dict) else {}
            cpu = cpu if isinstance(cpu, dict) else {}
        except (OSError, ValueError):
            cpu = {}  # the lower runtime reports it
    else:
        cpu = {"cpus": args.options.get("cpuset-cpus"), "mems": args.options.get("cpuset-mems"),
               "quota": args.options.get("cpu-quota"), "period": args.options.get("cpu-period")}
    plan = recorded_plan(container_dir)
    services = {
        str(svc.get("name")): svc.get("resources") or {}
        for svc in plan.get("services") or []
        if isinstance(svc, dict) and svc.get("placement") != "container"
    }
    dirs: dict[str, str] = {}
    pid = _init_pid(runtime, args) if services else None
    if pid:
        try:
            dirs = cgroups.container_dirs(pid)
        except OSError:
            dirs = {}
    undo: list[tuple[str, str]] = []
    if dirs:
        cores = cgroups.updated_cores(
            dirs, _int_or_none(cpu.get("quota")), _int_or_none(cpu.get("period"))
        )
        try:
            undo = cgroups.before_update(
                dirs, list(services), cpu.get("cpus") or None, cpu.get("mems") or None, cores
            )
        except cgroups.CgroupError as e:
            cgroups.after_update(dirs, services, [])
            raise RetinueError(
                f"cannot make room in the services' cgroups for the update: {e}"
            ) from None
    done = subprocess.run(
        [runtime, *args.argv[1:]], input=data, stdin=None if data is not None else sys.stdin,
        check=False,
    )
    if dirs:
        for error in cgroups.after_update(dirs, services, undo if done.returncode else []):
            runclog.log(args, "warning", f"{PREFIX}a service's cgroup did not follow: {error}")
    return done.returncode


def _init_pid(runtime: str, args: runc_argv.RuncArgs) -> int | None:
    import json
    import subprocess

    out = subprocess.run(
        [runtime, *lower_globals(args), "state", args.container_id],
        capture_output=True, stdin=subprocess.DEVNULL, check=False,
    )
    try:
        state = json.loads(out.stdout) if out.returncode == 0 else {}
        pid = state.get("pid") if state.get("status") in ("running", "paused", "created") else 0
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 else None


# Subcommands whose first argument is an existing container (create, run and restore make one).
_ABOUT_A_CONTAINER = frozenset(
    {"start", "kill", "delete", "state", "exec", "pause", "resume", "ps", "events", "update",
     "checkpoint"}
)


def _about_supervised(
    args: runc_argv.RuncArgs, runtime: str, log_dir: str, container_dir: str
) -> str:
    """start, kill or delete of a container that has (or had) a supervisor."""
    if os.path.isdir(container_dir):
        return supervised(args, runtime, log_dir, container_dir)
    if args.command == "delete":
        statedir.sweep(container_dir)  # what a create killed midway left
    return runtime


def main() -> NoReturn:
    argv = sys.argv
    args = runc_argv.parse(argv)
    try:
        command, container_id = args.command, args.container_id
        if wants_help(args):
            lower.handoff(passthrough_config(args)[0], argv)
        if command in ("create", "run"):
            compiled = load_config()
            found = create(args, compiled)
            if command == "run" and found is not None:
                from . import run

                terminal = bool((found.edited.get("process") or {}).get("terminal"))
                run.run(
                    args, compiled["runtime"], lower_globals(args), found.container_dir, terminal
                )
            lower.handoff(compiled["runtime"], argv)
        entry = None
        if command in _ABOUT_A_CONTAINER and statedir.valid_id(container_id):
            entry = statedir.lookup(args.root, container_id)
        if entry is not None and entry.lower:
            # A container with a supervisor keeps what it was created with: no configuration
            # (this call's environment may name another one, or none) is read.
            runtime = entry.lower
            if command == "update":
                sys.stdout.flush()
                os._exit(update(args, runtime, entry.container_dir))
            if command in ("start", "kill", "delete"):
                runtime = _about_supervised(args, runtime, entry.log_dir, entry.container_dir)
            lower.handoff(runtime, argv)
        runtime, current = passthrough_config(args)
        if (
            command in ("start", "kill", "delete")
            and current
            and current["supervised"]
            and statedir.valid_id(container_id)
        ):
            # A container registered by an older version without its record, or what a create
            # killed midway left (a partial state directory, an entry without a record).
            container_dir = statedir.container_dir(current["state_dir"], args.root, container_id)
            runtime = _about_supervised(
                args, recorded_lower(container_dir, runtime), current["log_dir"], container_dir
            )
        lower.handoff(runtime, argv)
    except RetinueError as e:
        runclog.fail(args, PREFIX + str(e))
    except Exception as e:  # a bug: still one error line the engine can show, not a traceback
        runclog.fail(args, f"{PREFIX}internal error: {type(e).__name__}: {e}")
    raise AssertionError("unreachable")


if __name__ == "__main__":
    main()
