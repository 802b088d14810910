"""`retinue install docker|containerd`: the registration edits, through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from retinue import install
from retinue.cli import main

SHIM = "/usr/local/bin/retinue-runtime"
CONTAINERD = shutil.which("containerd")


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["install", *args], catch_exceptions=False)


def snapshot(path: Path) -> tuple[bytes, int, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino, stat.S_IMODE(st.st_mode)


def assert_refused(path: Path, args: list[str], *expected: str) -> str:
    """The command fails, the message names the file and each `expected` part, file untouched."""
    before = snapshot(path) if path.exists() else None
    result = cli(*args, "--file", str(path))
    assert result.exit_code == 1, result.output
    message = result.stderr
    assert message.startswith("retinue: "), message
    assert str(path) in message, message
    for part in expected:
        assert part in message, message
    after = snapshot(path) if path.exists() else None
    assert after == before
    assert sorted(os.listdir(path.parent)) == ([path.name] if before else [])
    return message


# --- Docker -----------------------------------------------------------------------------------


def test_docker_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    result = cli("docker", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert json.loads(path.read_text()) == {"runtimes": {"retinue": {"path": SHIM}}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert f"{path}: created with runtimes.retinue" in result.stdout
    assert "systemctl restart docker" in result.stdout
    assert "docker run --runtime retinue" in result.stdout
    assert os.listdir(tmp_path) == ["daemon.json"]


def test_docker_keeps_every_other_key_in_order(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    original = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}},
        "default-runtime": "runc",
        "registry-mirrors": ["https://mirror.example"],
        "mtu": 1400,
        "debug": False,
        "labels": ["é=ü"],
        "features": {"buildkit": True},
    }
    path.write_text(json.dumps(original, indent=4, ensure_ascii=False) + "\n")
    path.chmod(0o600)
    inode = path.stat().st_ino
    result = cli("docker", "--file", str(path), "--runtime-path", SHIM, "--name", "svc")
    assert result.exit_code == 0, result.output
    text = path.read_text()
    new = json.loads(text)
    assert list(new) == list(original)
    assert list(new["runtimes"]) == ["nvidia", "svc"]
    assert new["runtimes"]["svc"] == {"path": SHIM}
    del new["runtimes"]["svc"]
    assert new == original
    assert '\n    "log-driver"' in text  # the file's own indentation
    assert "é=ü" in text
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_ino != inode  # replaced by rename, never rewritten in place
    assert os.listdir(tmp_path) == ["daemon.json"]


def test_docker_adds_runtimes_after_the_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"debug": true, "mtu": 1400}')
    assert cli("docker", "--file", str(path), "--runtime-path", SHIM).exit_code == 0
    assert list(json.loads(path.read_text())) == ["debug", "mtu", "runtimes"]


def test_docker_second_run_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{\n\t"debug": true\n}\n')
    assert cli("docker", "--file", str(path), "--runtime-path", SHIM).exit_code == 0
    before = snapshot(path)
    result = cli("docker", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert "already registered" in result.stdout
    assert "Nothing to change." in result.stdout
    assert snapshot(path) == before
    assert '\n\t"debug"' in path.read_text()


def test_a_symlinked_config_stays_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "managed" / "daemon.json"
    target.parent.mkdir()
    target.write_text('{"debug": true}\n')
    link = tmp_path / "daemon.json"
    link.symlink_to(target)
    assert cli("docker", "--file", str(link), "--runtime-path", SHIM).exit_code == 0
    assert link.is_symlink()
    assert json.loads(target.read_text())["runtimes"] == {"retinue": {"path": SHIM}}


def test_docker_empty_file_is_an_empty_object(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text("\n")
    assert cli("docker", "--file", str(path), "--runtime-path", SHIM).exit_code == 0
    assert json.loads(path.read_text()) == {"runtimes": {"retinue": {"path": SHIM}}}


def test_docker_dry_run_prints_the_new_file_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"debug": true}\n')
    before = snapshot(path)
    result = cli("docker", "--dry-run", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"debug": True, "runtimes": {"retinue": {"path": SHIM}}}
    assert "not changed" in result.stderr
    assert snapshot(path) == before
    missing = tmp_path / "absent.json"
    result = cli("docker", "--dry-run", "--file", str(missing), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"runtimes": {"retinue": {"path": SHIM}}}
    assert not missing.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"debug": true,,}', ("not valid JSON", "line 1, column 16")),
        ('{"debug": tru', ("not valid JSON",)),
        ("[1, 2]", ("expected a JSON object at the top level, got a list",)),
        ('{"runtimes": ["retinue"]}', ("runtimes: expected an object, got a list", '["retinue"]')),
        ('{"runtimes": {"retinue": {"path": "/opt/other"}}}',
         ("runtimes.retinue: already registered as", "/opt/other", "--name")),
        (json.dumps({"runtimes": {"retinue": {"path": SHIM, "runtimeArgs": ["-x"]}}}),
         ("runtimes.retinue: already registered as", "runtimeArgs")),
    ],
)
def test_docker_refuses_bad_input(tmp_path: Path, content: str, expected: tuple[str, ...]) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(content)
    assert_refused(path, ["docker", "--runtime-path", SHIM], *expected)


def test_docker_refuses_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_bytes(b'{"x": "\xff"}')
    assert_refused(path, ["docker", "--runtime-path", SHIM], "not UTF-8")


def test_refuses_bad_arguments(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    for args, expected in (
        (["--runtime-path", "retinue-runtime"], "must be absolute"),
        (["--runtime-path", SHIM, "--name", "runc"], "choose another --name"),
        (["--runtime-path", SHIM, "--name", "a b"], "runtime name 'a b'"),
    ):
        result = cli("docker", "--file", str(path), *args)
        assert result.exit_code == 1
        assert expected in result.stderr
    assert not path.exists()
    result = cli("containerd", "--file", str(tmp_path / "c.toml"), "--name", "Retinue")
    assert result.exit_code == 1
    assert "DNS label" in result.stderr


def test_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "daemon.json"
    result = cli("docker", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 1
    assert f"directory {tmp_path / 'nowhere'} does not exist" in result.stderr


# --- containerd -------------------------------------------------------------------------------

V2_PREFIX = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes'
V3_PREFIX = "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes"

# Debian's containerd package ships this file (comments added to check they survive).
DEBIAN_CONFIG = """\
version = 2

# CNI from Debian's package
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"   # not /opt/cni/bin
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""


def runtimes(doc: dict[str, Any], plugin: str) -> dict[str, Any]:
    result: dict[str, Any] = doc["plugins"][plugin]["containerd"]["runtimes"]
    return result


def test_containerd_appends_and_keeps_the_file_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(DEBIAN_CONFIG)
    result = cli("containerd", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert text.startswith(DEBIAN_CONFIG + "\n")
    assert f'[{V2_PREFIX}.retinue]\n  runtime_type = "io.containerd.runc.v2"\n' in text
    assert f'[{V2_PREFIX}.retinue.options]\n  BinaryName = "{SHIM}"\n' in text
    doc = tomllib.loads(text)
    assert runtimes(doc, "io.containerd.grpc.v1.cri") == {
        "runc": {"runtime_type": "io.containerd.runc.v2"},
        "retinue": {"runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": SHIM},
                    "pod_annotations": ["io.retinue.*"]},
    }
    assert doc["plugins"]["io.containerd.grpc.v1.cri"]["cni"]["bin_dir"] == "/usr/lib/cni"
    assert "containerd's default `runc` entry is written out too" in result.stdout
    assert "systemctl restart containerd" in result.stdout
    assert "kind: RuntimeClass\nmetadata:\n  name: retinue\nhandler: retinue" in result.stdout
    assert "io.retinue.services.CONTAINER (one container by name)" in result.stdout
    assert os.listdir(tmp_path) == ["config.toml"]


def test_containerd_follows_runcs_cgroup_driver_and_keeps_other_runtimes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    original = (
        "version = 2\n"
        f"[{V2_PREFIX}.runc]\n"
        '  runtime_type = "io.containerd.runc.v2"\n'
        f"[{V2_PREFIX}.runc.options]\n"
        "  SystemdCgroup = true\n"
        f"[{V2_PREFIX}.kata]\n"
        '  runtime_type = "io.containerd.kata.v2"'  # no final newline
    )
    path.write_text(original)
    path.chmod(0o640)
    result = cli("containerd", "--file", str(path), "--runtime-path", SHIM, "--name", "svc-1")
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert text.startswith(original + "\n\n# Added by")
    def headers(t: str) -> int:
        return sum(line.startswith("[") for line in t.splitlines())

    assert headers(text) == headers(original) + 2  # no second runc entry
    doc = tomllib.loads(text)
    assert runtimes(doc, "io.containerd.grpc.v1.cri")["svc-1"] == {
        "runtime_type": "io.containerd.runc.v2",
        "options": {"BinaryName": SHIM, "SystemdCgroup": True},
        "pod_annotations": ["io.retinue.*"],
    }
    assert "as runc's" in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_containerd_version_3(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    original = (
        "version = 3\n\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'\n"
    )
    path.write_text(original)
    assert cli("containerd", "--file", str(path), "--runtime-path", SHIM).exit_code == 0
    text = path.read_text()
    assert text.startswith(original)
    assert f"[{V3_PREFIX}.retinue]" in text
    assert runtimes(tomllib.loads(text), "io.containerd.cri.v1.runtime")["retinue"] == {
        "runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": SHIM},
        "pod_annotations": ["io.retinue.*"],
    }


def test_containerd_version_1_without_version_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('root = "/var/lib/containerd"\n')
    assert cli("containerd", "--file", str(path), "--runtime-path", SHIM).exit_code == 0
    text = path.read_text()
    assert "version" not in text
    assert "[plugins.cri.containerd.runtimes.retinue]" in text
    assert runtimes(tomllib.loads(text), "cri")["retinue"]["options"] == {"BinaryName": SHIM}


@pytest.mark.parametrize(("default_version", "plugin"), [
    (2, "io.containerd.grpc.v1.cri"), (3, "io.containerd.cri.v1.runtime"),
])
def test_containerd_file_without_content_gets_a_version(default_version: int, plugin: str) -> None:
    for old in (None, b"", b"# nothing yet\n"):
        plan = install.plan_containerd("/x/config.toml", old, SHIM, "retinue", default_version)
        assert plan.new is not None
        text = plan.new.decode()
        assert text.startswith((old or b"").decode())
        doc = tomllib.loads(text)
        assert doc["version"] == default_version
        assert set(runtimes(doc, plugin)) == {"runc", "retinue"}


def test_containerd_missing_file_uses_the_installed_version(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    result = cli("containerd", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    major = install.installed_containerd_major()
    expected = 3 if major is not None and major >= 2 else 2
    assert tomllib.loads(path.read_text())["version"] == expected
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_containerd_second_run_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(DEBIAN_CONFIG)
    assert cli("containerd", "--file", str(path), "--runtime-path", SHIM).exit_code == 0
    before = snapshot(path)
    result = cli("containerd", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert "already registered" in result.stdout
    assert "handler: retinue" in result.stdout
    assert snapshot(path) == before


def test_containerd_dry_run(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(DEBIAN_CONFIG)
    before = snapshot(path)
    result = cli("containerd", "--dry-run", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(DEBIAN_CONFIG)
    assert "retinue" in runtimes(tomllib.loads(result.stdout), "io.containerd.grpc.v1.cri")
    assert snapshot(path) == before


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("version = 2\n[plugins\n", ("not valid TOML", "line 2")),
        ('version = "2"\n', ("version: expected an integer, got a string",)),
        ("version = 4\n", ("version: 4 is not a containerd config version",)),
        ('version = 2\n[plugins]\n"io.containerd.grpc.v1.cri" = 3\n',
         ('plugins."io.containerd.grpc.v1.cri": expected a table, got an integer: 3',)),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\nruntimes = ["runc"]\n',
         ('plugins."io.containerd.grpc.v1.cri".containerd.runtimes: expected a table, got a '
          'list',)),
        (f'version = 2\n[{V2_PREFIX}.retinue]\n  runtime_type = "io.containerd.runc.v2"\n'
         f'[{V2_PREFIX}.retinue.options]\n  BinaryName = "/opt/old/retinue-runtime"\n',
         (f"[{V2_PREFIX}.retinue]: already registered", '"/opt/old/retinue-runtime"', "--name")),
        (f'version = 2\n[{V2_PREFIX}.retinue]\n  runtime_type = "io.containerd.kata.v2"\n',
         ('already registered with runtime_type = "io.containerd.kata.v2"',)),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
         '  runtimes = { runc = { runtime_type = "io.containerd.runc.v2" } }\n',
         ("would not be valid TOML", "by hand", f"[{V2_PREFIX}.retinue.options]")),
    ],
)
def test_containerd_refuses_bad_input(
    tmp_path: Path, content: str, expected: tuple[str, ...]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(content)
    assert_refused(path, ["containerd", "--runtime-path", SHIM], *expected)


def test_containerd_quotes_odd_paths(tmp_path: Path) -> None:
    odd = '/opt/my "tools"/rétinue\\runtime'
    plan = install.plan_containerd("/x/config.toml", b"version = 2\n", odd, "retinue")
    assert plan.new is not None
    doc = tomllib.loads(plan.new.decode())
    assert runtimes(doc, "io.containerd.grpc.v1.cri")["retinue"]["options"] == {"BinaryName": odd}


@pytest.mark.skipif(CONTAINERD is None, reason="containerd not installed")
@pytest.mark.parametrize("original", ["", DEBIAN_CONFIG])
def test_containerd_itself_reads_the_result(tmp_path: Path, original: str) -> None:
    """containerd's own `config dump` sees both runtimes: the entry works, runc was not lost."""
    path = tmp_path / "config.toml"
    if original:
        path.write_text(original)
    assert cli("containerd", "--file", str(path), "--runtime-path", SHIM).exit_code == 0
    assert CONTAINERD is not None
    dumped = subprocess.run([CONTAINERD, "--config", str(path), "config", "dump"],
                            capture_output=True, text=True, check=True).stdout
    doc = tomllib.loads(dumped)
    found = runtimes(doc, "io.containerd.grpc.v1.cri")
    assert found["retinue"]["options"]["BinaryName"] == SHIM
    assert found["retinue"]["runtime_type"] == "io.containerd.runc.v2"
    assert found["runc"]["runtime_type"] == "io.containerd.runc.v2"
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["default_runtime_name"] == "runc"


# --- pod annotations: the pod's choice of services must reach the runtime ---------------------

OLD_ENTRY = {  # what `retinue install containerd` wrote before it passed pod annotations
    2: (f'version = 2\n\n# ours, from last year\n[{V2_PREFIX}.retinue]   # retinue\n'
        f'  runtime_type = "io.containerd.runc.v2"\n'
        f'[{V2_PREFIX}.retinue.options]\n  BinaryName = "{SHIM}"\n'),
    3: (f"version = 3\n[{V3_PREFIX}.retinue]\n  runtime_type = 'io.containerd.runc.v2'\n"
        f"[{V3_PREFIX}.retinue.options]\n  BinaryName = '{SHIM}'\n"
        f"[{V3_PREFIX}.runc]\n  runtime_type = 'io.containerd.runc.v2'\n"),
}
PLUGIN = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}


@pytest.mark.parametrize("version", [2, 3])
def test_containerd_entry_passes_retinue_pod_annotations(tmp_path: Path, version: int) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"version = {version}\n")
    assert cli("containerd", "--file", str(path), "--runtime-path", SHIM).exit_code == 0
    entry = runtimes(tomllib.loads(path.read_text()), PLUGIN[version])["retinue"]
    assert entry["pod_annotations"] == ["io.retinue.*"]
    assert "runc" in runtimes(tomllib.loads(path.read_text()), PLUGIN[version])


@pytest.mark.parametrize("version", [2, 3])
def test_containerd_old_entry_gets_pod_annotations_once(tmp_path: Path, version: int) -> None:
    """An entry registered without pod_annotations gets that one line; the rest stays as it was;
    a second run changes nothing."""
    path = tmp_path / "config.toml"
    old = OLD_ENTRY[version]
    path.write_text(old)
    result = cli("containerd", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert "added pod_annotations" in result.stdout
    text = path.read_text()
    added = '  pod_annotations = ["io.retinue.*"]\n'
    assert text.replace(added, "", 1) == old
    header = old.splitlines()[3 if version == 2 else 1]
    assert f"{header}\n{added}" in text
    doc = tomllib.loads(text)
    assert runtimes(doc, PLUGIN[version])["retinue"] == {
        "runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": SHIM},
        "pod_annotations": ["io.retinue.*"],
    }
    before = snapshot(path)
    again = cli("containerd", "--file", str(path), "--runtime-path", SHIM)
    assert again.exit_code == 0, again.output
    assert "already registered" in again.stdout and "Nothing to change." in again.stdout
    assert snapshot(path) == before


def test_containerd_entry_with_wider_globs_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(OLD_ENTRY[2].replace('  runtime_type', '  pod_annotations = ["*"]\n'
                                         '  runtime_type'))
    before = snapshot(path)
    result = cli("containerd", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert snapshot(path) == before


def test_containerd_entry_with_other_globs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(OLD_ENTRY[2].replace('  runtime_type', '  pod_annotations = ["io.x/*"]\n'
                                         '  runtime_type'))
    assert_refused(path, ["containerd", "--runtime-path", SHIM],
                   f'[{V2_PREFIX}.retinue]: pod_annotations = ["io.x/*"] does not pass '
                   "io.retinue.* through", '"io.retinue.*"', "by hand")


@pytest.mark.skipif(CONTAINERD is None, reason="containerd not installed")
def test_containerd_itself_reads_pod_annotations(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(OLD_ENTRY[2])
    assert cli("containerd", "--file", str(path), "--runtime-path", SHIM).exit_code == 0
    assert CONTAINERD is not None
    dumped = subprocess.run([CONTAINERD, "--config", str(path), "config", "dump"],
                            capture_output=True, text=True, check=True).stdout
    found = runtimes(tomllib.loads(dumped), "io.containerd.grpc.v1.cri")
    assert found["retinue"]["pod_annotations"] == ["io.retinue.*"]
