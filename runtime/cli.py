"""`retinue`: the administrator's command line (check, plan, install, demo)."""

from __future__ import annotations

import difflib
import json
import os
import sys

import click

from . import attach, bundle, confcache, config, lower, statedir
from .errors import RetinueError


def _fail(e: RetinueError) -> None:
    click.echo(f"retinue: {e}", err=True)
    sys.exit(1)


def _load(config_path: str | None) -> config.Config:
    try:
        return config.load(config_path)
    except RetinueError as e:
        _fail(e)
        raise


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Configuration file (default: ${confcache.CONFIG_ENV} or {confcache.DEFAULT_CONFIG}).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="retinue")
def main() -> None:
    """Give containers their own system services, through a drop-in OCI runtime."""


@main.command()
@config_option
def check(config_path: str | None) -> None:
    """Validate the configuration and say what it resolves to."""
    cfg = _load(config_path)
    try:
        runtime = lower.resolve(cfg.settings.runtime, os.environ.get("PATH", ""), "")
    except RetinueError as e:
        _fail(e)
        raise
    click.echo(f"config:   {cfg.path}")
    click.echo(f"runtime:  {runtime}")
    click.echo(f"policy:   {cfg.policy_path or '(none)'} ({len(cfg.policy.attach)} rules)")
    for rule in cfg.policy.attach:
        extra = f", services {', '.join(rule.services)}" if rule.services else ""
        click.echo(f"  {rule.name}: {len(rule.mounts)} mounts, {len(rule.env)} env{extra}")
    click.echo(f"services: {cfg.services_dir or '(none)'} ({len(cfg.services)} defined)")
    for name, svc in sorted(cfg.services.items()):
        kind = "required" if svc.required else "optional"
        deps = [
            f"{k} {', '.join(getattr(svc, k))}"
            for k in ("requires", "wants", "after")
            if getattr(svc, k)
        ]
        click.echo(f"  {name}: {kind}{'; ' + '; '.join(deps) if deps else ''}")
    click.echo("ok")


@main.command()
@config_option
@click.option("--id", "container_id", default="plan", show_default=True, help="Container id.")
@click.option("--root", default="/run/runc", show_default=True, help="The lower runtime's --root.")
@click.argument("bundle_dir", metavar="BUNDLE", type=click.Path(file_okay=False))
def plan(config_path: str | None, container_id: str, root: str, bundle_dir: str) -> None:
    """Show what create would change in BUNDLE/config.json, as a unified diff. Changes nothing."""
    cfg = _load(config_path)
    self_path = os.path.join(os.path.dirname(sys.argv[0]), "retinue-runtime")
    compiled = config.compile_config(
        cfg, "(not resolved)", cfg.settings.hook or confcache.default_hook(self_path)
    )
    try:
        path, spec = bundle.load(bundle_dir)
        found = attach.plan(compiled, spec, root, container_id, bundle_dir)
    except RetinueError as e:
        _fail(e)
        raise
    if found is None:
        click.echo(f"{path}: no rule selects this container; it is passed through untouched")
        return
    edited = found.edited
    before = json.dumps(spec, indent=2, ensure_ascii=False).splitlines(keepends=True)
    after = json.dumps(edited, indent=2, ensure_ascii=False).splitlines(keepends=True)
    click.echo(f"# rules: {', '.join(r['name'] for r in found.rules) or '(none)'}")
    if found.services:
        click.echo(f"# services: {', '.join(s['name'] for s in found.services)}")
    if found.seccomp:
        syscalls = sorted({name for r in found.seccomp for name in r["syscalls"]})
        click.echo(f"# seccomp: {', '.join(syscalls)} -> {found.listener}")
    for note in found.notes:
        click.echo(f"# seccomp: {note}")
    if found.init:
        click.echo(
            f"# init: retinue-init is PID 1; services stop after the main process, "
            f"within {found.stop_budget:g}s"
        )
    before[-1] += "\n"
    after[-1] += "\n"
    shown = path.lstrip("/")
    sys.stdout.writelines(difflib.unified_diff(before, after, f"a/{shown}", f"b/{shown}"))


@main.command()
@click.argument("engine", type=click.Choice(["docker", "containerd"]))
@click.option("--dry-run", is_flag=True, help="Print the new file instead of writing it.")
@click.option(
    "--file",
    "target",
    type=click.Path(dir_okay=False),
    default=None,
    help="The engine's config file (default: the engine's standard path).",
)
@click.option(
    "--runtime-path",
    default="/usr/local/bin/retinue-runtime",
    show_default=True,
    help="Where retinue-runtime is installed.",
)
@click.option("--name", default="retinue", show_default=True, help="The runtime's name.")
def install(engine: str, dry_run: bool, target: str | None, runtime_path: str, name: str) -> None:
    """Register retinue-runtime with Docker or containerd, keeping the rest of the file."""
    from . import install as registration

    try:
        registration.run(engine, target, runtime_path, name, dry_run)
    except RetinueError as e:
        _fail(e)


@main.command()
@click.option("--workdir", default="/tmp/retinue-demo", show_default=True)
def demo(workdir: str) -> None:
    """Run a busybox container through retinue-runtime with the demo rule attached."""
    from . import demo as demo_module

    sys.exit(demo_module.run(workdir))


def _containers(state_dir: str) -> list[tuple[str, str]]:
    """(runc root, container dir) of every container that has a supervisor."""
    out = []
    try:
        roots = sorted(os.listdir(state_dir))
    except OSError:
        return []
    for key in roots:
        root_dir = os.path.join(state_dir, key)
        if key in ("cache", "seccomp", statedir.MARKERS) or not os.path.isdir(root_dir):
            continue
        root = statedir.root_from_key(key)
        for cid in sorted(os.listdir(root_dir)):
            out.append((root, os.path.join(root_dir, cid)))
    return out


def _age(since: float | None) -> str:
    if not since:
        return "-"
    import time

    seconds = int(time.time() - since)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("container_id", required=False)
def status(config_path: str | None, as_json: bool, container_id: str | None) -> None:
    """Show the services of every container (or of CONTAINER_ID)."""
    from .supervisor import control

    cfg = _load(config_path)
    found = []
    for root, directory in _containers(cfg.settings.state_dir):
        if container_id and os.path.basename(directory) != container_id:
            continue
        try:
            reply = control.request(
                os.path.join(directory, control.SOCKET_NAME), {"op": "status"}, 5
            )
        except (control.SupervisorGone, OSError, ValueError):
            reply = {"id": os.path.basename(directory), "phase": "supervisor gone", "services": []}
        reply["root"] = root
        reply.pop("ok", None)
        found.append(reply)
    if container_id and not found:
        click.echo(f"retinue: no container {container_id!r} with services", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    header = ("CONTAINER", "SERVICE", "STATE", "PID", "RESTARTS", "READY", "LAST EXIT")
    rows = [header]
    for c in found:
        if not c["services"]:
            rows.append((c["id"][:20], "-", c["phase"], "-", "-", "-", "-"))
        for s in c["services"]:
            state = s["state"] + ("" if s["required"] else " (optional)")
            rows.append(
                (
                    c["id"][:20],
                    s["name"],
                    state,
                    str(s["pid"] or "-"),
                    str(s["restarts"]),
                    _age(s["ready_since"]),
                    s["last_exit"] or "-",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])


@main.command()
@config_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the service writes.")
@click.argument("container_id")
@click.argument("service")
def logs(config_path: str | None, follow: bool, container_id: str, service: str) -> None:
    """Print a service's log (kept on the host after the container is gone)."""
    import time

    cfg = _load(config_path)
    path = os.path.join(cfg.settings.log_dir, container_id, f"{service}.log")
    if not os.path.exists(path):
        click.echo(f"retinue: {path}: no such log", err=True)
        sys.exit(1)
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                continue
            if not follow:
                return
            if os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                f.close()
                f = open(path, "rb")  # noqa: SIM115 - rotated: follow the new file
            time.sleep(0.2)
