"""`retinue`: the administrator's command line (check, plan, install, demo)."""

from __future__ import annotations

import difflib
import json
import os
import sys

import click

from . import bundle, config, confcache, edits, lower, policy, statedir
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
    help=f"Configuration file (default: ${config.CONFIG_ENV} or {config.DEFAULT_CONFIG}).",
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
        click.echo(f"  {rule.name}: {len(rule.mounts)} mounts, {len(rule.env)} env")
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
        rules = policy.select(compiled["rules"], spec)
        if not rules:
            click.echo(f"{path}: no rule selects this container; it is passed through untouched")
            return
        directory = statedir.container_dir(compiled["state_dir"], root, container_id)
        edited = edits.apply(spec, rules, compiled["hook"], directory)
    except RetinueError as e:
        _fail(e)
        raise
    before = json.dumps(spec, indent=2, ensure_ascii=False).splitlines(keepends=True)
    after = json.dumps(edited, indent=2, ensure_ascii=False).splitlines(keepends=True)
    click.echo(f"# rules: {', '.join(r['name'] for r in rules)}")
    before[-1] += "\n"
    after[-1] += "\n"
    sys.stdout.writelines(difflib.unified_diff(before, after, f"a/{path}", f"b/{path}"))


@main.command()
@click.argument("engine", type=click.Choice(["docker", "containerd"]))
@click.option("--dry-run", is_flag=True, help="Print the new file instead of writing it.")
@click.option("--file", "target", type=click.Path(dir_okay=False), default=None,
              help="The engine's config file (default: the engine's standard path).")
@click.option("--runtime-path", default="/usr/local/bin/retinue-runtime", show_default=True,
              help="Where retinue-runtime is installed.")
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
