"""`retinue`: the administrator's command line: check, plan, install, demo, status, logs,
image (import, ls, rm), gc, and restart/stop/start of one service."""

from __future__ import annotations

import difflib
import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

import click

from .. import layout, planfile
from ..config import cache as confcache
from ..config import settings as config
from ..errors import RetinueError
from ..host import images, lower, statedir
from ..policy import attach
from ..policy import select as policy
from ..spec import bundle

if TYPE_CHECKING:
    from ..control import ServiceOp


def _fail(e: RetinueError) -> None:
    click.echo(f"retinue: {e}", err=True)
    sys.exit(1)


def _load(config_path: str | None) -> config.Config:
    try:
        return config.load(config_path)
    except RetinueError as e:
        _fail(e)
        raise


def _lower_runtime(cfg: config.Config) -> str:
    """The lower runtime the configuration resolves to, for this shell's PATH."""
    try:
        return lower.resolve(cfg.settings.runtime, os.environ.get("PATH", ""), "")
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
    runtime = _lower_runtime(cfg)
    click.echo(f"config:   {cfg.path}")
    click.echo(f"runtime:  {runtime}")
    click.echo(f"policy:   {cfg.policy_path or '(none)'} ({len(cfg.policy.attach)} rules)")
    for rule in cfg.policy.attach:
        extra = f", services {', '.join(rule.services)}" if rule.services else ""
        extra += ", pod sandboxes only" if rule.when.sandbox else ""
        click.echo(f"  {rule.name}: {len(rule.mounts)} mounts, {len(rule.env)} env{extra}")
    click.echo(f"services: {cfg.services_dir or '(none)'} ({len(cfg.services)} defined)")
    problems: list[str] = []
    for name, svc in sorted(cfg.services.items()):
        kind = "required" if svc.required else "optional"
        if svc.type == "oneshot":
            kind += ", oneshot"
        if svc.on_failure != "ignore":
            kind += f", on failure {svc.on_failure}"
        if svc.health is not None:
            probe = next(k for k in ("exec", "tcp", "http") if getattr(svc.health, k) is not None)
            kind += f", health {probe}"
        if svc.stop.exec:
            kind += ", drain"
        deps = [
            f"{k} {', '.join(getattr(svc, k))}"
            for k in ("requires", "wants", "after")
            if getattr(svc, k)
        ]
        where = ""
        if svc.placement == "container":
            where = f"; container from image {svc.image}"
            try:
                found_image = images.resolve(cfg.settings.image_dir, svc.image)
            except RetinueError as e:
                problems.append(f"{cfg.services_dir}/{name}.toml: image: {e}")
            else:
                where += f" ({found_image['digest'][:19]})"
        click.echo(f"  {name}: {kind}{where}{'; ' + '; '.join(deps) if deps else ''}")
    if problems:
        for problem in problems:
            click.echo(f"retinue: {problem}", err=True)
        sys.exit(1)
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
    sandbox = policy.sandbox_mark(spec)
    if found is None:
        if sandbox:
            click.echo(
                f"{path}: a pod's sandbox container ({sandbox}): passed through untouched; "
                "only a rule with when.sandbox = true selects a sandbox (none here), and the "
                "pod's io.retinue.services annotations are for its app containers"
            )
            return
        click.echo(f"{path}: no rule selects this container; it is passed through untouched")
        return
    edited = found.edited
    before = json.dumps(spec, indent=2, ensure_ascii=False).splitlines(keepends=True)
    after = json.dumps(edited, indent=2, ensure_ascii=False).splitlines(keepends=True)
    click.echo(f"# rules: {', '.join(r['name'] for r in found.rules) or '(none)'}")
    if sandbox:
        click.echo(f"# sandbox: {sandbox}, selected by when.sandbox = true; it asks for nothing")
    if found.services:
        click.echo(f"# services: {', '.join(s['name'] for s in found.services)}")
    requested, source = policy.requested_services(spec)
    if source:
        click.echo(f"# asked for: {', '.join(requested) or '(none)'} ({source})")
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
    elif found.services and attach.watches_main(found.init, found.services):
        click.echo(
            f"# init: none; the container's entrypoint stays PID 1 (only sidecars); they stop "
            f"after the main process, within {found.stop_budget:g}s"
        )
    elif found.services:
        click.echo(
            "# init: none (init = false); the exec services stop before the main process is "
            "signalled, and die with it if it exits by itself"
        )
    _show_edits(found)
    before[-1] += "\n"
    after[-1] += "\n"
    shown = path.lstrip("/")
    sys.stdout.writelines(difflib.unified_diff(before, after, f"a/{shown}", f"b/{shown}"))
    for svc in found.services:
        if svc.get("placement") == "container":
            _plan_sibling(
                cfg, edited, dict(svc), container_id, found.container_dir, compiled["init"],
                os.path.abspath(bundle_dir),
            )


def _show_edits(found: attach.Attachment) -> None:
    """Who asks for what: each source's edits, as composed into the diff below."""
    from ..spec import edits

    click.echo("# edits:")
    for source in found.sources:
        for line in edits.describe(source):
            click.echo(f"#   {line}")
    for owner, name, earlier in found.edits.overrides:
        click.echo(f"#   {owner}: env {name} over {earlier}'s (the later rule in the policy wins)")


def _plan_sibling(
    cfg: config.Config,
    app: dict[str, object],
    svc: dict[str, object],
    app_id: str,
    cdir: str,
    init: str,
    bundle_dir: str,
) -> None:
    """The sibling container's spec, with the app's init pid not known yet."""
    from ..host import cgroups
    from ..spec import sibling as sidecar

    name = str(svc["name"])
    try:
        image = images.resolve(cfg.settings.image_dir, str(svc["image"]))
    except RetinueError as e:
        click.echo(f"# sidecar {name}: {e}")
        return
    linux = app.get("linux")
    cgroups_path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    share = svc.get("share")
    share = share if isinstance(share, list) else []
    try:
        app_cgroup = cgroups.container_path(
            cgroups_path if isinstance(cgroups_path, str) else "", app_id, False, "/"
        )
        spec = sidecar.sibling_spec(
            app, svc, image, app_id=app_id, app_proc="/proc/<app init pid>",
            app_cgroup=app_cgroup, container_dir=cdir, init=init,
            shared={str(p): sidecar.host_path(app, bundle_dir, str(p)) for p in share},
        )
    except (RetinueError, cgroups.CgroupError) as e:
        click.echo(f"# sidecar {name}: {e}")
        return
    click.echo(
        f"# sidecar {name}: container {sidecar.sidecar_id(app_id, name)} from {image['digest']}"
    )
    click.echo(json.dumps(spec, indent=2, ensure_ascii=False))


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
    from ..host import install as registration

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


def _containers(state_dir: str) -> list[dict[str, str]]:
    """{id, root, dir, pod, name} of every container that has a supervisor."""
    out = []
    try:
        roots = sorted(os.listdir(state_dir))
    except OSError:
        return []
    for key in roots:
        root_dir = os.path.join(state_dir, key)
        if key in layout.NOT_ROOTS or not os.path.isdir(root_dir):
            continue
        root = statedir.root_from_key(key)
        for cid in sorted(os.listdir(root_dir)):
            if not statedir.valid_id(cid):
                continue  # not a create's directory under construction
            directory = os.path.join(root_dir, cid)
            plan = planfile.recorded(directory)
            out.append({"id": cid, "root": root, "dir": directory, **_names(plan)})
    return out


def _names(found: object) -> dict[str, str]:
    if not isinstance(found, dict):
        return {"pod": "", "name": ""}
    return {k: v if isinstance(v := found.get(k), str) else "" for k in ("pod", "name")}


def _label(c: dict[str, str]) -> str:
    """NAMESPACE/POD/CONTAINER for a container the CRI created, else ""."""
    return f"{c['pod']}/{c['name']}" if c["pod"] and c["name"] else c["pod"]


def select_containers(
    wanted: str, found: list[dict[str, str]], what: str = "container"
) -> list[dict[str, str]]:
    """The containers `wanted` names: an id; NAMESPACE/POD/CONTAINER or NAMESPACE/POD (every
    container of the pod); else a unique id prefix, as docker takes. Raises RetinueError when a
    prefix is ambiguous."""
    exact = [c for c in found if c["id"] == wanted]
    if exact:
        return exact
    if "/" in wanted:
        return [c for c in found if c["pod"] and wanted in (c["pod"], _label(c))]
    ids = sorted({c["id"] for c in found if c["id"].startswith(wanted)})
    if len(ids) > 1:
        shown = ", ".join(i[:12] for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise RetinueError(f"{what} id prefix {wanted!r} is ambiguous: {shown}")
    return [c for c in found if c["id"] in ids]


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
@click.argument("container_id", metavar="[CONTAINER]", required=False)
def status(config_path: str | None, as_json: bool, container_id: str | None) -> None:
    """Show the services of every container (or of CONTAINER: an id, a unique id prefix,
    NAMESPACE/POD/CONTAINER or NAMESPACE/POD for a container the CRI created)."""
    from .. import control

    cfg = _load(config_path)
    candidates = _containers(cfg.settings.state_dir)
    if container_id:
        try:
            candidates = select_containers(container_id, candidates)
        except RetinueError as e:
            _fail(e)
    found = []
    for candidate in candidates:
        try:
            reply: dict[str, Any] = dict(control.status(candidate["dir"], 5))
        except (control.SupervisorGone, OSError, ValueError):
            if not statedir.is_complete(candidate["dir"]):
                continue  # what a create that failed midway left: no container to show
            reply = {"id": candidate["id"], "phase": "supervisor gone", "services": []}
        reply.setdefault("pod", candidate["pod"])
        reply.setdefault("name", candidate["name"])
        reply["root"] = candidate["root"]
        reply.pop("ok", None)
        found.append(reply)
    if container_id and not found:
        click.echo(f"retinue: no container {container_id!r} with services", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    # The pod's and container's names only when the CRI gave some: Docker and by-hand containers
    # have none, and the id is all their users know.
    named = any(c.get("pod") for c in found)
    header: tuple[str, ...] = ("CONTAINER", "SERVICE", "STATE", "PID", "RESTARTS", "READY",
                               "LAST EXIT")
    if named:
        header = ("CONTAINER", "POD/CONTAINER", *header[1:])
    rows = [header]
    for c in found:
        first: tuple[str, ...] = (c["id"][:20],)
        if named:
            first += (_label({"pod": c.get("pod") or "", "name": c.get("name") or ""}) or "-",)
        if not c["services"]:
            rows.append((*first, "-", c["phase"], "-", "-", "-", "-"))
        for s in c["services"]:
            state = s["state"] + ("" if s["required"] else " (optional)")
            name = s["name"]
            if s.get("placement") == "container":
                # A sidecar: the digest it runs (short, as docker shows image ids).
                name += f" (sidecar {str(s.get('image') or '')[7:19] or '?'})"
            if s.get("stopped_by") and s["state"] == "stopped":
                state += f" by {s['stopped_by']}"
            if s.get("health") and s["state"] in ("ready", "running"):
                state += f", {s['health']}"
                if s["health"] != "healthy" and s.get("probe"):
                    state += f" ({s['probe']})"
            rows.append(
                (
                    *first,
                    name,
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
    # A full log filesystem, the container's cap or the node's floor: what the services say is
    # being lost, and the table alone would not show it.
    for c in found:
        logs = c.get("logs") or {}
        if logs.get("writing") is False:
            click.echo(f"{c['id'][:20]}: service output is being dropped ({logs.get('why')}); "
                       f"{logs.get('dropped', 0)} bytes so far")
        elif logs.get("dropped"):
            click.echo(f"{c['id'][:20]}: {logs['dropped']} bytes of service output were dropped "
                       "(each service's log says when and why)")


@main.command()
@config_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the service writes.")
@click.argument("container_id", metavar="CONTAINER")
@click.argument("service")
def logs(config_path: str | None, follow: bool, container_id: str, service: str) -> None:
    """Print a service's log (kept on the host after the container is gone).

    CONTAINER is an id, a unique id prefix, or NAMESPACE/POD/CONTAINER for a container the CRI
    created (its newest run: a restarted container is a new id).
    """
    import time

    cfg = _load(config_path)
    try:
        chosen = _log_container(cfg.settings.log_dir, cfg.settings.state_dir, container_id)
    except RetinueError as e:
        _fail(e)
        raise
    path = os.path.join(cfg.settings.log_dir, chosen, f"{service}.log")
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


def _log_container(log_dir: str, state_dir: str, wanted: str) -> str:
    """The id whose log directory `wanted` names; `wanted` itself when nothing matches (the
    caller then says which log is missing)."""
    from ..supervisor import retention

    if statedir.valid_id(wanted) and os.path.isdir(os.path.join(log_dir, wanted)):
        return wanted
    try:
        ids = [n for n in os.listdir(log_dir) if statedir.valid_id(n)]
    except OSError:
        return wanted
    found = []
    for cid in ids:
        record = retention.read_record(os.path.join(log_dir, cid))
        created = record.get("created")
        found.append({
            "id": cid,
            **_names(record),
            "created": str(created if isinstance(created, int | float) else 0),
            "alive": "1" if retention.alive(state_dir, cid) else "",
        })
    matched = select_containers(wanted, found)
    if not matched:
        return wanted
    # A name matches every run of that container: the living one, else the newest.
    matched.sort(key=lambda c: (c["alive"], float(c["created"])))
    return matched[-1]["id"]


@main.group()
def image() -> None:
    """Service images: import (from local files only), list, remove."""


@image.command("import")
@config_option
@click.argument("name")
@click.argument("source")
def image_import(config_path: str | None, name: str, source: str) -> None:
    """Import SOURCE (an OCI layout directory, an OCI archive or a `docker save` archive; or
    oci:PATH, oci-archive:PATH, docker-archive:PATH) as NAME. Never reaches a registry."""
    cfg = _load(config_path)
    try:
        record = images.import_image(
            cfg.settings.image_dir, name, source, cfg.settings.image_max_size
        )
    except (RetinueError, OSError) as e:
        _fail(e if isinstance(e, RetinueError) else RetinueError(f"{source}: {e}"))
        raise
    click.echo(f"{record['name']} {record['digest']}")


def _sidecar_users(cfg: config.Config) -> dict[str, list[str]]:
    from ..host import siblings

    try:
        runtime = lower.resolve(cfg.settings.runtime, os.environ.get("PATH", ""), "")
    except RetinueError:
        return {}
    return siblings.in_use(runtime, siblings.runtime_root(cfg.settings.state_dir))


@image.command("ls")
@config_option
def image_ls(config_path: str | None) -> None:
    """List imported images: name, digest, size, the sibling containers using it."""
    cfg = _load(config_path)
    store = cfg.settings.image_dir
    users = _sidecar_users(cfg)
    rows = [("NAME", "DIGEST", "SIZE", "IN USE")]
    named = set()
    for record in images.names(store):
        digest = str(record.get("digest"))
        named.add(digest)
        size = images.size(images.image_path(store, digest)) >> 20
        used = str(len(users.get(digest, [])))
        rows.append((str(record.get("name")), digest[:19], f"{size}M", used))
    for digest in images.digests(store):
        if digest not in named:
            size = images.size(images.image_path(store, digest)) >> 20
            rows.append(("-", digest[:19], f"{size}M", str(len(users.get(digest, [])))))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])


@image.command("rm")
@config_option
@click.argument("ref")
def image_rm(config_path: str | None, ref: str) -> None:
    """Remove an image name (its unpacked copy too once no name has it) or a digest.
    Refuses an image a sibling container runs."""
    cfg = _load(config_path)
    try:
        removed = images.remove(cfg.settings.image_dir, ref, _sidecar_users(cfg))
    except RetinueError as e:
        _fail(e)
        raise
    for item in removed:
        click.echo(f"removed {item}")


@main.command()
@config_option
@click.option("--root", default=None, help="With --keep-ids: the lower runtime's --root to sweep.")
@click.option(
    "--keep-ids",
    "keep_ids",
    type=click.File("r"),
    default=None,
    help="The ids the engine still knows, one per line ('-': stdin); every container with "
    "services under --root that is not listed is deleted.",
)
@click.option(
    "--keep-none",
    is_flag=True,
    help="Instead of --keep-ids: the engine knows no container under --root.",
)
def gc(
    config_path: str | None, root: str | None, keep_ids: TextIO | None, keep_none: bool
) -> None:
    """Remove sibling containers whose app's supervisor is gone, the shares such a supervisor
    left mounted and the state directory's empty per-root directories; drop configuration
    cache entries nothing can use any more; with --root and --keep-ids
    (or --keep-none), also containers with services that their engine forgot (an engine
    killed while their start waited for the services)."""
    from ..host import siblings

    cfg = _load(config_path)
    runtime = _lower_runtime(cfg)
    if keep_ids is not None and keep_none:
        click.echo("retinue: gc: give --keep-ids or --keep-none, not both", err=True)
        sys.exit(2)
    if (root is not None) != (keep_ids is not None or keep_none):
        click.echo("retinue: gc: --root goes with --keep-ids or --keep-none", err=True)
        sys.exit(2)
    if root is not None:
        kept = set() if keep_ids is None else {ln.strip() for ln in keep_ids if ln.strip()}
        if keep_ids is not None and not kept:
            # An engine that could not be reached prints nothing: that must not read as "it
            # knows no container", which would delete every one of them.
            click.echo(f"retinue: gc: no ids read from --keep-ids {keep_ids.name}; nothing "
                       "deleted (say --keep-none if the engine knows no container)", err=True)
            sys.exit(1)
        _collect_forgotten(cfg, config_path, root, kept)
    for sid in siblings.collect(runtime, siblings.runtime_root(cfg.settings.state_dir)):
        click.echo(f"removed sidecar {sid}")
    for point in siblings.unstage_orphans(cfg.settings.state_dir):
        click.echo(f"unmounted share {point}")
    for path in statedir.collect_empty_roots(cfg.settings.state_dir):
        click.echo(f"removed empty state directory {path}")
    # Not listed: a cache is no state of anyone's, and /run/retinue/cache is the host's (every
    # configuration's and install's), so the list would be about other callers' leftovers.
    confcache.collect()


def _collect_forgotten(
    cfg: config.Config, config_path: str | None, root: str, kept: set[str]
) -> None:
    """Delete, through retinue-runtime's own `delete --force` (services stopped in order,
    sidecars, supervisor, state, cgroups and the lower container), every container with
    services under `root` whose id is not in `kept`."""
    import subprocess

    wanted = os.path.realpath(root)
    shim = os.path.join(os.path.dirname(sys.argv[0]), "retinue-runtime")
    env = dict(os.environ)
    if config_path:
        env[confcache.CONFIG_ENV] = config_path
    failed = False
    for c in _containers(cfg.settings.state_dir):
        if os.path.realpath(c["root"]) != wanted or c["id"] in kept:
            continue
        r = subprocess.run(
            [shim, "--root", c["root"], "delete", "--force", c["id"]],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120,
        )
        if r.returncode == 0:
            click.echo(f"removed container {c['id']} (not known to its engine)")
        else:
            failed = True
            click.echo(f"retinue: gc: delete {c['id']}: {r.stderr.strip()}", err=True)
    if failed:
        sys.exit(1)


def _control_service(
    config_path: str | None, container_id: str, service: str, op: ServiceOp
) -> None:
    """Send one service-control request to the supervisor of CONTAINER and report its answer."""
    from .. import control

    cfg = _load(config_path)
    try:
        matched = select_containers(container_id, _containers(cfg.settings.state_dir))
    except RetinueError as e:
        _fail(e)
        raise
    if len(matched) != 1:
        many = f"names {len(matched)} containers" if matched else "names no container with services"
        click.echo(f"retinue: {container_id!r} {many}", err=True)
        sys.exit(1)
    target = matched[0]
    try:
        # No timeout: a stop waits for the service's stop timeout, a start for its readiness;
        # both are bounded by the service's own settings.
        reply = control.service(target["dir"], op, service, f"retinue {op.split('-')[0]}")
    except (control.SupervisorGone, OSError, ValueError) as e:
        click.echo(f"retinue: container {target['id'][:12]}: no supervisor answers ({e})", err=True)
        sys.exit(1)
    if not reply.get("ok"):
        click.echo(f"retinue: {reply.get('error') or 'failed'}", err=True)
        sys.exit(1)
    click.echo(f"{target['id'][:12]} {service}: {reply.get('state', 'ok')}")


_CONTROL_HELP = (
    "\n\nCONTAINER is an id, a unique id prefix, or NAMESPACE/POD/CONTAINER for a container the "
    "CRI created."
)


# The service-control commands, one row each: (command, control op, help). The op also names
# who asked (`retinue restart`, ...) in the service's log.
_SERVICE_COMMANDS: tuple[tuple[str, ServiceOp, str], ...] = (
    (
        "restart", "restart",
        "Restart SERVICE of CONTAINER (stop it as configured, start it, wait until ready).",
    ),
    (
        "stop", "stop-service",
        "Stop SERVICE of CONTAINER until `retinue start`: not a failure, no restart, no fate\n"
        "sharing; the container keeps running.",
    ),
    (
        "start", "start-service",
        "Start SERVICE of CONTAINER again (one that was stopped, exited or failed for good) and\n"
        "wait until it is ready.",
    ),
)


def _service_command(name: str, op: ServiceOp, text: str) -> None:
    @main.command(name, help=text + _CONTROL_HELP)
    @config_option
    @click.argument("container_id", metavar="CONTAINER")
    @click.argument("service")
    def command(config_path: str | None, container_id: str, service: str) -> None:
        _control_service(config_path, container_id, service, op)


for _name, _op, _text in _SERVICE_COMMANDS:
    _service_command(_name, _op, _text)
