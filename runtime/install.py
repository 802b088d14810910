"""`retinue install docker|containerd`: register retinue-runtime with an engine.

Docker: `runtimes.NAME = {"path": RUNTIME_PATH}` in /etc/docker/daemon.json. The file is
re-serialised (JSON has no comments to lose); every other key keeps its value and its place.

containerd: a CRI runtime entry of type `io.containerd.runc.v2` whose `options.BinaryName` is
RUNTIME_PATH, in /etc/containerd/config.toml. The entry is appended as text, so the rest of the
file (comments, layout) stays byte for byte; tomllib reads the file to see what is there and
checks the result. containerd replaces its built-in `runtimes` table with the file's, so a file
that had none also gets the default `runc` entry written out, or every other pod would lose
its runtime. The entry lists `io.retinue.*` in `pod_annotations`: without it containerd's CRI
drops a pod's `io.retinue.services` annotations and its containers silently run without their
services. An entry registered before (without it) gets that one line inserted under its header.

Both are idempotent: when the entry is already there, the file is not touched. Writes are atomic
(temp file + rename, mode and owner kept). Errors name the file and the key.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from typing import Any

import click

from . import bundle
from .bundle import _got
from .errors import RetinueError
from .tomlmodel import describe_value

DOCKER_CONFIG = "/etc/docker/daemon.json"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
RUNC_V2 = "io.containerd.runc.v2"

# containerd's config `version` -> the CRI plugin's key, as `containerd config default` spells it.
CRI_PLUGIN = {
    1: "cri",
    2: '"io.containerd.grpc.v1.cri"',
    3: "'io.containerd.cri.v1.runtime'",
}
CRI_PLUGIN_KEY = {1: "cri", 2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}

# The pod annotations containerd's CRI must pass through to this runtime (globs, as containerd
# matches them): the pod's choice of services.
POD_ANNOTATIONS = ["io.retinue.*"]
PROBE_ANNOTATION = "io.retinue.services.app"

# Kubernetes requires a RuntimeClass handler to be a DNS label.
DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
DOCKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
# dockerd refuses these names; containerd's default runtime is named runc.
RESERVED = ("runc", RUNC_V2, "io.containerd.runtime.v1.linux")


class InstallError(RetinueError):
    """The engine's config file cannot take the registration; the message says where and why."""


@dataclass
class Plan:
    """What registering would do to one file. `new is None`: nothing to change."""

    path: str
    new: bytes | None
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _check_name(name: str, pattern: re.Pattern[str], what: str) -> None:
    if not pattern.match(name):
        raise InstallError(f"runtime name {name!r}: {what}")
    if name in RESERVED:
        raise InstallError(
            f"runtime name {name!r} is the engine's own default runtime; choose another --name"
        )


def _check_runtime_path(runtime_path: str) -> None:
    if not os.path.isabs(runtime_path):
        raise InstallError(
            f"runtime path {runtime_path!r}: must be absolute (engines do not search PATH)"
        )


def _decode(path: str, old: bytes) -> str:
    try:
        return old.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InstallError(f"{path}: not UTF-8 text (byte {e.start})") from None


# --- Docker -----------------------------------------------------------------------------------


def _indent(text: str) -> str:
    """The file's own indentation unit, so the rewritten file reads like the old one."""
    m = re.search(r"\n([ \t]+)\S", text)
    return m.group(1) if m else "  "


def plan_docker(path: str, old: bytes | None, runtime_path: str, name: str) -> Plan:
    """Add `runtimes.NAME = {"path": runtime_path}` to daemon.json's bytes `old` (None: absent)."""
    _check_runtime_path(runtime_path)
    _check_name(name, DOCKER_NAME, "use letters, digits, '_', '.', '-'")
    wanted = {"path": runtime_path}
    text = _decode(path, old) if old is not None else ""
    if text.strip():
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InstallError(
                f"{path}: not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
            ) from None
    else:
        doc = {}
    if not isinstance(doc, dict):
        raise InstallError(f"{path}: expected a JSON object at the top level, got {_got(doc)}")
    runtimes = doc.get("runtimes")
    if runtimes is not None and not isinstance(runtimes, dict):
        raise InstallError(
            f"{path}: runtimes: expected an object, got {_got(runtimes)}"
        )
    existing = (runtimes or {}).get(name)
    if existing == wanted:
        note = f"{path}: runtimes.{name} already registered: {_json(existing)}"
        return Plan(path, None, notes=[note])
    if existing is not None:
        raise InstallError(
            f"{path}: runtimes.{name}: already registered as {_json(existing)}, not "
            f"{_json(wanted)}; remove that entry or choose another --name"
        )
    if runtimes is None:
        doc["runtimes"] = {name: wanted}
    else:
        runtimes[name] = wanted
    new = json.dumps(doc, indent=_indent(text), ensure_ascii=False) + "\n"
    what = "created with" if old is None else "added"
    return Plan(path, new.encode(), changes=[f"{path}: {what} runtimes.{name} = {_json(wanted)}"])


# --- containerd -------------------------------------------------------------------------------


def installed_containerd_major() -> int | None:
    """The major version of the containerd on PATH, or None."""
    try:
        out = subprocess.run(
            ["containerd", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token in out.split():
        m = re.match(r"v?(\d+)\.\d+", token)
        if m:
            return int(m.group(1))
    return None


def _table(path: str, doc: dict[str, Any], keys: list[str]) -> dict[str, Any] | None:
    """doc[keys[0]][keys[1]]..., None if absent; an error naming the key if one is not a table."""
    node: Any = doc
    for i, key in enumerate(keys):
        node = node.get(key)
        if node is None:
            return None
        if not isinstance(node, dict):
            dotted = ".".join(_toml_key(k) for k in keys[: i + 1])
            raise InstallError(
                f"{path}: {dotted}: expected a table, got {describe_value(node)}"
            )
    return dict(node)


def _toml_key(key: str) -> str:
    return key if re.match(r"[A-Za-z0-9_-]+\Z", key) else json.dumps(key)


def _toml_string(value: str) -> str:
    # A JSON string without \\u escapes for non-ASCII is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=False)


def runtime_class(name: str) -> str:
    """The Kubernetes RuntimeClass that selects the containerd runtime entry `name`."""
    return (
        "apiVersion: node.k8s.io/v1\n"
        "kind: RuntimeClass\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"handler: {name}\n"
    )


def plan_containerd(
    path: str, old: bytes | None, runtime_path: str, name: str, default_version: int = 2
) -> Plan:
    """Append the runtime entry for `name` to config.toml's bytes `old` (None: absent).

    `default_version` is the config version written into a file that has no content yet (2 for
    containerd 1.x, 3 for 2.x); a file with content and no `version` is version 1.
    """
    _check_runtime_path(runtime_path)
    _check_name(name, DNS_LABEL, "a Kubernetes RuntimeClass handler must be a DNS label "
                                 "(lower-case letters, digits, '-'; at most 63)")
    text = _decode(path, old) if old is not None else ""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InstallError(f"{path}: not valid TOML: {e}") from None
    prologue = ""
    version = doc.get("version")
    if version is None:
        if doc:
            version = 1
        else:
            version = default_version
            prologue = f"version = {version}\n"
    if not isinstance(version, int) or isinstance(version, bool):
        raise InstallError(
            f"{path}: version: expected an integer, got {describe_value(version)}"
        )
    if version not in CRI_PLUGIN:
        raise InstallError(f"{path}: version: {version} is not a containerd config version "
                           f"retinue knows (1, 2 or 3)")
    keys = ["plugins", CRI_PLUGIN_KEY[version], "containerd", "runtimes"]
    prefix = f"plugins.{CRI_PLUGIN[version]}.containerd.runtimes"
    runtimes = _table(path, doc, keys) or {}
    entry = runtimes.get(name)
    if entry is not None:
        return _registered(path, text, keys, prefix, name, entry, runtime_path)
    runc_options = _table(path, doc, [*keys, "runc", "options"]) or {}

    snippet = []
    notes = []
    if not runtimes:
        snippet += [
            "# containerd replaces its built-in runtimes with this file's: keep its default one.",
            f"[{prefix}.runc]",
            f"  runtime_type = {_toml_string(RUNC_V2)}",
            "",
        ]
        notes.append(f"{path}: the file had no runtimes, so containerd's default `runc` "
                     f"entry is written out too (containerd would drop it otherwise)")
    snippet += [
        f"# Added by `retinue install containerd`: RuntimeClass handler '{name}' runs containers",
        "# through retinue-runtime, which hands them to runc.",
        f"[{prefix}.{name}]",
        f"  runtime_type = {_toml_string(RUNC_V2)}",
        "  # Pass the pod's choice of services (io.retinue.services, .CONTAINER) to the runtime.",
        f"  pod_annotations = {_toml_list(POD_ANNOTATIONS)}",
        f"[{prefix}.{name}.options]",
        f"  BinaryName = {_toml_string(runtime_path)}",
    ]
    systemd = runc_options.get("SystemdCgroup")
    if isinstance(systemd, bool):
        # The kubelet's cgroup driver must match every runtime's; follow runc's setting.
        snippet.append(f"  SystemdCgroup = {'true' if systemd else 'false'}")
    added = "\n".join(snippet) + "\n"
    # One blank line between the file's last line and what is appended.
    trailing_newlines = len(text) - len(text.rstrip("\n"))
    separator = "\n" * max(0, 2 - trailing_newlines) if text else ""
    new_text = text + separator + prologue + ("\n" if prologue else "") + added
    try:
        new_doc = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as e:
        raise InstallError(
            f"{path}: appending the entry would not be valid TOML ({e}); the file probably "
            f"defines {prefix} inline. Add it there by hand:\n{added}"
        ) from None
    got = _table(path, new_doc, [*keys, name]) or {}
    binary = (got.get("options") or {}).get("BinaryName")
    if (
        got.get("runtime_type") != RUNC_V2
        or binary != runtime_path
        or got.get("pod_annotations") != POD_ANNOTATIONS
    ):
        raise InstallError(f"{path}: the appended entry does not read back as written; "
                           f"add it by hand:\n{added}")
    what = "created with" if old is None else "added"
    changes = [f"{path}: {what} [{prefix}.{name}]: runtime_type = {_toml_string(RUNC_V2)}, "
               f"pod_annotations = {_toml_list(POD_ANNOTATIONS)}, "
               f"options.BinaryName = {_toml_string(runtime_path)}"
               + (f", options.SystemdCgroup = {str(systemd).lower()} (as runc's)"
                  if isinstance(systemd, bool) else "")]
    return Plan(path, new_text.encode(), changes=changes, notes=notes)


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


def _passes_ours(globs: object) -> bool:
    """Whether containerd, matching these pod_annotations globs, passes io.retinue.* through."""
    from fnmatch import fnmatchcase

    if not isinstance(globs, list):
        return False
    return any(isinstance(g, str) and fnmatchcase(PROBE_ANNOTATION, g) for g in globs)


def _header_line(text: str, table: list[str]) -> int | None:
    """The index of the line that opens table `table` (`[a.b.c]`, any quoting), or None."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("[") or stripped.startswith("[["):
            continue
        try:
            node: Any = tomllib.loads(stripped + "\n")
        except tomllib.TOMLDecodeError:
            continue
        path = []
        while isinstance(node, dict) and len(node) == 1:
            key = next(iter(node))
            path.append(key)
            node = node[key]
        if path == table and node == {}:
            return i
    return None


def _registered(
    path: str,
    text: str,
    keys: list[str],
    prefix: str,
    name: str,
    entry: object,
    runtime_path: str,
) -> Plan:
    where = f"{path}: [{prefix}.{name}]"
    if not isinstance(entry, dict):
        raise InstallError(f"{where}: expected a table, got {describe_value(entry)}")
    runtime_type = entry.get("runtime_type")
    options = entry.get("options")
    binary = options.get("BinaryName") if isinstance(options, dict) else None
    if runtime_type != RUNC_V2 or binary != runtime_path:
        raise InstallError(
            f"{where}: already registered with runtime_type = {_json(runtime_type)}, "
            f"options.BinaryName = {_json(binary)}, not {_toml_string(RUNC_V2)} and "
            f"{_toml_string(runtime_path)}; remove that entry or choose another --name"
        )
    registered = (f"{where} already registered: runtime_type = {_toml_string(RUNC_V2)}, "
                  f"options.BinaryName = {_toml_string(runtime_path)}")
    globs = entry.get("pod_annotations")
    if _passes_ours(globs):
        return Plan(path, None, notes=[registered])
    line = f"  pod_annotations = {_toml_list(POD_ANNOTATIONS)}\n"
    if globs is not None:
        raise InstallError(
            f"{where}: pod_annotations = {_json(globs)} does not pass io.retinue.* through "
            f"(pods could not choose their services); add {_toml_string(POD_ANNOTATIONS[0])} "
            "to it by hand"
        )
    at = _header_line(text, [*keys, name])
    if at is None:
        raise InstallError(
            f"{where}: registered without pod_annotations, in a form retinue does not edit "
            f"(inline table?); add this line to the entry by hand:\n{line}"
        )
    lines = text.splitlines(keepends=True)
    if not lines[at].endswith("\n"):
        lines[at] += "\n"
    lines.insert(at + 1, line)
    new_text = "".join(lines)
    try:
        got = _table(path, tomllib.loads(new_text), [*keys, name]) or {}
    except tomllib.TOMLDecodeError:
        got = {}
    if got.get("pod_annotations") != POD_ANNOTATIONS:
        raise InstallError(f"{where}: adding pod_annotations would not read back as written; "
                           f"add this line to the entry by hand:\n{line}")
    return Plan(path, new_text.encode(), changes=[
        f"{where}: added pod_annotations = {_toml_list(POD_ANNOTATIONS)} (pods choose their "
        "services with io.retinue.services annotations)"
    ])


# --- the command ------------------------------------------------------------------------------


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise InstallError(
                f"{path}: directory {directory} does not exist (is the engine installed?)"
            ) from None
        return None
    except IsADirectoryError:
        raise InstallError(f"{path}: is a directory") from None
    except OSError as e:
        raise InstallError(f"{path}: cannot read: {e.strerror}") from None


def _write(path: str, data: bytes, exists: bool) -> None:
    try:
        if exists:
            bundle.write_atomic(path, data)
            return
        # A new file appears whole or not at all, and never replaces one created meanwhile.
        tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                           f".{os.path.basename(path)}.retinue-{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), 0o644)
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
    except FileExistsError:
        raise InstallError(f"{path}: created by someone else meanwhile; run again") from None
    except OSError as e:
        raise InstallError(f"{path}: cannot write: {e.strerror}") from None


def _followup(engine: str, name: str) -> list[str]:
    if engine == "docker":
        return [
            "Then restart Docker: systemctl restart docker",
            "  (or `systemctl reload docker`: dockerd re-reads `runtimes` on SIGHUP)",
            f"Use it: docker run --runtime {name} ...",
        ]
    return [
        "Then restart containerd: systemctl restart containerd",
        f"Kubernetes pods select it with `runtimeClassName: {name}` and this RuntimeClass:",
        "",
        runtime_class(name).rstrip("\n"),
        "",
        "A pod chooses services with the annotation io.retinue.services (every app container) "
        "or io.retinue.services.CONTAINER (one container by name).",
    ]


def plan(engine: str, path: str, old: bytes | None, runtime_path: str, name: str) -> Plan:
    if engine == "docker":
        return plan_docker(path, old, runtime_path, name)
    if engine == "containerd":
        default_version = 2
        if old is None or not old.strip():
            major = installed_containerd_major()
            default_version = 3 if major is not None and major >= 2 else 2
        return plan_containerd(path, old, runtime_path, name, default_version)
    raise InstallError(f"unknown engine {engine!r}: docker or containerd")


def run(engine: str, target: str | None, runtime_path: str, name: str, dry_run: bool) -> None:
    """Register `runtime_path` as runtime `name` in the engine's config file `target`.

    Prints what changed and what to restart; with `dry_run`, prints the new file on stdout (the
    messages go to stderr) and writes nothing.
    """
    path = target or (DOCKER_CONFIG if engine == "docker" else CONTAINERD_CONFIG)
    old = _read(path)
    result = plan(engine, path, old, runtime_path, name)
    if not os.access(runtime_path, os.X_OK):
        click.echo(f"warning: {runtime_path} is not an executable file yet "
                   f"(`make install` puts it there)", err=True)
    if dry_run:
        data = result.new if result.new is not None else (old or b"")
        click.echo(data.decode(), nl=False)
        for line in result.changes:
            click.echo(f"dry run, would write: {line}", err=True)
        for line in result.notes:
            click.echo(f"dry run: {line}", err=True)
        click.echo(f"dry run: {path} not changed", err=True)
        return
    if result.new is not None:
        # A symlinked config (e.g. managed elsewhere) stays a symlink: replace its target.
        _write(os.path.realpath(path), result.new, old is not None)
    for line in result.changes + result.notes:
        click.echo(line)
    if result.new is None:
        click.echo("Nothing to change.")
        if engine == "containerd":
            click.echo(f"RuntimeClass for Kubernetes:\n\n{runtime_class(name)}", nl=False)
        return
    for line in _followup(engine, name):
        click.echo(line)
