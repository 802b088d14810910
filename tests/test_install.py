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
from retinue.cli.admin import main
from retinue.host import install

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
        ("version = 5\n", ("version: 5 is not a containerd config version", "1, 2, 3 or 4")),
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


# --- containerd 2.x: version 4, imports, conf.d drop-ins ---------------------------------------

# `containerd config default` of containerd 2.3.4 (built from its v2.3.4 tag), unchanged: version
# 4, `imports = ['/etc/containerd/conf.d/*.toml']`, a runc entry whose options are all defaults.
V4_DEFAULT = (Path(__file__).parent / "data" / "containerd-2.3-default.toml").read_text()
V4_PLUGIN = "io.containerd.cri.v1.runtime"
V4_IMPORTS = "imports = ['/etc/containerd/conf.d/*.toml']\n"

# What a node's provisioning puts beside it (kubeadm guides, cloud images): runc's options.
RUNC_DROP_IN = f"""\
version = 3
[{V3_PREFIX}.runc.options]
  SystemdCgroup = true
  Root = '/run/containerd/runc-k8s'
  NoNewKeyring = true
  ShimCgroup = '/system.slice/containerd-shims'
  IoUid = 1000
  IoGid = 1000
  BinaryName = '/usr/local/sbin/runc'
"""
RUNC_OPTIONS = {
    "SystemdCgroup": True, "Root": "/run/containerd/runc-k8s", "NoNewKeyring": True,
    "ShimCgroup": "/system.slice/containerd-shims", "IoUid": 1000, "IoGid": 1000,
}


def node(tmp_path: Path, main: str, drop_ins: dict[str, str]) -> tuple[Path, Path]:
    """/etc/containerd as a node has it, under tmp_path: config.toml and conf.d/."""
    etc = tmp_path / "etc" / "containerd"
    (etc / "conf.d").mkdir(parents=True)
    main = main.replace("/etc/containerd/", f"{etc}/")
    (etc / "config.toml").write_text(main)
    for name, text in drop_ins.items():
        (etc / "conf.d" / name).write_text(text)
    return etc / "config.toml", etc / "conf.d"


def tree(root: Path) -> dict[str, tuple[bytes, int, int, int]]:
    return {str(p.relative_to(root)): snapshot(p) for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused_everywhere(main: Path, *expected: str) -> str:
    """Refused with a message naming each part; not one file of the node written or added."""
    root = main.parent
    before = tree(root)
    result = cli("containerd", "--file", str(main), "--runtime-path", SHIM)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("retinue: "), result.stderr
    for part in expected:
        assert part in result.stderr, result.stderr
    assert tree(root) == before
    return result.stderr


def containerd2_view(main: Path) -> dict[str, Any]:
    """The runtimes as containerd 2 reads config.toml and conf.d (checked by hand against
    `containerd config dump` of 2.3.4): tables merged key by key, later files win."""
    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
                else v
        return out

    merged: dict[str, Any] = {}
    for path in [main, *sorted((main.parent / "conf.d").glob("*.toml"))]:
        doc = tomllib.loads(path.read_text())
        merged = merge(merged, doc.get("plugins", {}).get(V4_PLUGIN, {}))
    result: dict[str, Any] = merged["containerd"]["runtimes"]
    return result


def test_containerd_2_3_default_config_with_runc_options_in_conf_d(tmp_path: Path) -> None:
    """containerd 2.3's own default file (version 4, importing conf.d) and a drop-in keeping
    runc's options: the entry goes to conf.d/retinue.toml with runc's options (not its
    BinaryName); config.toml and the other drop-in stay byte for byte; a second run is a no-op."""
    main, conf_d = node(tmp_path, V4_DEFAULT, {"10-runc.toml": RUNC_DROP_IN})
    before_main = snapshot(main)
    before_drop_in = snapshot(conf_d / "10-runc.toml")
    result = cli("containerd", "--file", str(main), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert snapshot(main) == before_main
    assert snapshot(conf_d / "10-runc.toml") == before_drop_in
    assert sorted(os.listdir(conf_d)) == ["10-runc.toml", "retinue.toml"]
    drop_in = conf_d / "retinue.toml"
    assert stat.S_IMODE(drop_in.stat().st_mode) == 0o644
    text = drop_in.read_text()
    assert text.startswith("version = 4\n")
    entry = runtimes(tomllib.loads(text), V4_PLUGIN)["retinue"]
    assert entry == {
        "runtime_type": "io.containerd.runc.v2",
        "pod_annotations": ["io.retinue.*"],
        "options": {
            "BinaryName": SHIM,
            # the main file's defaults, then the drop-in's values over them
            "CriuImagePath": "", "CriuWorkPath": "", **RUNC_OPTIONS,
        },
    }
    assert list(runtimes(tomllib.loads(text), V4_PLUGIN)) == ["retinue"]  # no second runc
    seen = containerd2_view(main)
    assert seen["retinue"]["options"]["SystemdCgroup"] is True
    assert seen["runc"]["options"]["BinaryName"] == "/usr/local/sbin/runc"
    assert f"{main} imports {drop_in}" in result.stdout
    assert f"{drop_in}: created with" in result.stdout
    assert "options.SystemdCgroup = true" in result.stdout

    everything = tree(main.parent)
    again = cli("containerd", "--file", str(main), "--runtime-path", SHIM)
    assert again.exit_code == 0, again.output
    assert "already registered" in again.stdout and "Nothing to change." in again.stdout
    assert tree(main.parent) == everything


def test_containerd_2_3_dry_run_prints_the_drop_in(tmp_path: Path) -> None:
    main, conf_d = node(tmp_path, V4_DEFAULT, {"10-runc.toml": RUNC_DROP_IN})
    before = tree(main.parent)
    result = cli("containerd", "--dry-run", "--file", str(main), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert runtimes(tomllib.loads(result.stdout), V4_PLUGIN)["retinue"]["options"][
        "SystemdCgroup"] is True
    assert f"{conf_d / 'retinue.toml'} not changed" in result.stderr
    assert tree(main.parent) == before


def test_containerd_without_imports_ignores_conf_d(tmp_path: Path) -> None:
    """containerd reads conf.d only when the main file imports it: then the entry goes into the
    main file, with the main file's runc options, and conf.d's are not copied."""
    original = V4_DEFAULT.replace(V4_IMPORTS, "").replace(
        "SystemdCgroup = false", "SystemdCgroup = true")
    main, conf_d = node(tmp_path, original, {"10-runc.toml": RUNC_DROP_IN.replace(
        "SystemdCgroup = true", "SystemdCgroup = false")})
    result = cli("containerd", "--file", str(main), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    text = main.read_text()
    assert text.startswith(original.replace("/etc/containerd/", f"{main.parent}/")
                           + "\n# Added by")
    assert os.listdir(conf_d) == ["10-runc.toml"]
    entry = runtimes(tomllib.loads(text), V4_PLUGIN)["retinue"]
    assert entry["options"] == {
        "BinaryName": SHIM, "CriuImagePath": "", "CriuWorkPath": "", "IoGid": 0, "IoUid": 0,
        "NoNewKeyring": False, "Root": "", "ShimCgroup": "", "SystemdCgroup": True,
    }


def test_containerd_imports_follow_containerds_rules(tmp_path: Path) -> None:
    """A relative import (from the importing file's directory), a glob in byte order (a later
    file wins key by key, and `*` takes dot-files as Go's does), a file imported twice read once,
    a cycle, and a version-less drop-in with the old plugin's name (containerd 2 migrates it)."""
    etc = tmp_path / "etc"
    (etc / "more").mkdir(parents=True)
    main = etc / "config.toml"
    main.write_text("version = 3\nimports = ['more/*.toml', 'more/b.toml']\n"
                    f"[{V3_PREFIX}.runc]\n  runtime_type = 'io.containerd.runc.v2'\n")
    (etc / "more" / "a.toml").write_text(
        "imports = ['../config.toml', 'b.toml']\n"
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        "  SystemdCgroup = true\n  Root = '/a'\n  NoPivotRoot = true\n")
    (etc / "more" / "b.toml").write_text(
        f"version = 3\n[{V3_PREFIX}.runc.options]\n  Root = '/b'\n")
    (etc / "more" / ".c.toml").write_text(
        f"version = 3\n[{V3_PREFIX}.runc.options]\n  CriuWorkPath = '/c'\n")
    (etc / "more" / "d.conf").write_text("not toml at all [")
    before = snapshot(main)
    result = cli("containerd", "--file", str(main), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert snapshot(main) == before  # it imports a directory by glob: the entry goes there
    entry = runtimes(tomllib.loads((etc / "more" / "retinue.toml").read_text()),
                     V4_PLUGIN)["retinue"]
    assert entry["options"] == {"BinaryName": SHIM, "CriuWorkPath": "/c", "SystemdCgroup": True,
                                "Root": "/b", "NoPivotRoot": True}


def test_containerd_1_takes_the_last_files_cri_table(tmp_path: Path) -> None:
    """containerd 1.x replaces a whole plugin table with a later file's: the entry must go into
    the file whose CRI table wins, or containerd would drop it."""
    etc = tmp_path / "etc"
    etc.mkdir()
    main = etc / "config.toml"
    main.write_text('version = 2\nimports = ["cri.toml"]\n'
                    '[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/usr/lib/cni"\n')
    cri = etc / "cri.toml"
    cri.write_text(f"version = 2\n[{V2_PREFIX}.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
                   f"[{V2_PREFIX}.runc.options]\n  SystemdCgroup = true\n")
    before = snapshot(main)
    plan = install.plan_containerd(str(main), main.read_bytes(), SHIM, "retinue", 2, 1)
    assert plan.path == str(cri)
    assert plan.new is not None
    entry = runtimes(tomllib.loads(plan.new.decode()), "io.containerd.grpc.v1.cri")["retinue"]
    assert entry["options"] == {"BinaryName": SHIM, "SystemdCgroup": True}
    assert snapshot(main) == before
    # containerd 2 reads the same version 2 files merged: the main file takes the entry.
    plan2 = install.plan_containerd(str(main), main.read_bytes(), SHIM, "retinue", 2, 2)
    assert plan2.path == str(main)


@pytest.mark.skipif(CONTAINERD is None, reason="containerd not installed")
def test_containerd_itself_reads_an_entry_in_an_imported_file(tmp_path: Path) -> None:
    """The containerd installed here (1.6 on Debian 12) follows the imports and keeps the entry
    retinue wrote into the file whose CRI table it uses."""
    etc = tmp_path / "etc"
    etc.mkdir()
    main = etc / "config.toml"
    main.write_text('version = 2\nimports = ["cri.toml"]\n')
    (etc / "cri.toml").write_text(
        f'version = 2\n[{V2_PREFIX}.runc]\n  runtime_type = "io.containerd.runc.v2"\n'
        f"[{V2_PREFIX}.runc.options]\n  SystemdCgroup = true\n")
    major = install.installed_containerd_major()
    result = cli("containerd", "--file", str(main), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert CONTAINERD is not None
    dumped = subprocess.run([CONTAINERD, "--config", str(main), "config", "dump"],
                            capture_output=True, text=True, check=True).stdout
    plugin = "io.containerd.grpc.v1.cri" if (major or 1) < 2 else V4_PLUGIN
    found = runtimes(tomllib.loads(dumped), plugin)
    assert found["retinue"]["options"]["BinaryName"] == SHIM
    assert found["retinue"]["options"]["SystemdCgroup"] is True
    assert found["runc"]["options"]["SystemdCgroup"] is True


def test_containerd_entry_already_in_a_drop_in(tmp_path: Path) -> None:
    """An entry a drop-in holds counts as registered; one without pod_annotations gets that line
    in that drop-in, and the main file is not touched."""
    old = (f"version = 3\n[{V3_PREFIX}.retinue]\n  runtime_type = 'io.containerd.runc.v2'\n"
           f"[{V3_PREFIX}.retinue.options]\n  BinaryName = '{SHIM}'\n")
    main, conf_d = node(tmp_path, V4_DEFAULT, {"50-ours.toml": old})
    before = snapshot(main)
    result = cli("containerd", "--file", str(main), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert "added pod_annotations" in result.stdout
    text = (conf_d / "50-ours.toml").read_text()
    assert text.replace('  pod_annotations = ["io.retinue.*"]\n', "", 1) == old
    assert snapshot(main) == before
    assert sorted(os.listdir(conf_d)) == ["50-ours.toml"]


@pytest.mark.parametrize(
    ("drop_ins", "expected"),
    [
        ({"10-runc.toml": "version = 5\n"}, ("10-runc.toml: version: 5 is not a containerd",)),
        ({"10-runc.toml": "version = 3\n[plugins\n"}, ("10-runc.toml: not valid TOML",)),
        ({"10-runc.toml": 'version = "3"\n'},
         ("10-runc.toml: version: expected an integer, got a string: '3'",)),
        ({"10-runc.toml": b"version = 3\n# \xff\n".decode("latin-1")},
         ("10-runc.toml: not UTF-8",)),
        ({"10-runc.toml": "imports = 'x.toml'\n"},
         ("10-runc.toml: imports: expected a list of strings, got a string: 'x.toml'",)),
        ({"10-runc.toml": "imports = ['/nonexistent/retinue-test.toml']\n"},
         ("10-runc.toml: imports /nonexistent/retinue-test.toml, which does not exist",)),
        ({"10-runc.toml": "imports = ['/tmp/[*.toml']\n"},
         ("10-runc.toml: imports: bad pattern '[*.toml'",)),
        ({"10-runc.toml": f"version = 3\n[{V3_PREFIX}.runc]\n  options = 'SystemdCgroup'\n"},
         ("10-runc.toml: runtimes.runc.options: expected a table, got a string",)),
        ({"10-runc.toml": f"version = 3\n[{V3_PREFIX}]\n  runc = 1\n"},
         ("10-runc.toml", "expected a table")),
        ({"10-runc.toml": f"version = 3\n[{V3_PREFIX}.runc.options]\n  Root = ['/a']\n"},
         ("10-runc.toml: runtimes.runc.options.Root: cannot copy a list",)),
        ({"10-runc.toml": f"version = 3\n[{V3_PREFIX}.retinue.options]\n  BinaryName = 'runc'\n"
                          f"[{V3_PREFIX}.retinue]\n  runtime_type = 'io.containerd.runc.v2'\n"},
         ("10-runc.toml: [", "retinue]: already registered", "'runc'".replace("'", '"'))),
    ],
)
def test_containerd_refuses_bad_drop_ins(
    tmp_path: Path, drop_ins: dict[str, str], expected: tuple[str, ...]
) -> None:
    if "\xff" in next(iter(drop_ins.values())):
        main, conf_d = node(tmp_path, V4_DEFAULT, {})
        (conf_d / "10-runc.toml").write_bytes(b"version = 3\n# \xff\n")
    else:
        main, conf_d = node(tmp_path, V4_DEFAULT, drop_ins)
    message = assert_refused_everywhere(main, *expected)
    assert str(conf_d / "10-runc.toml") in message or "10-runc.toml" in message


def test_containerd_version_4_main_file_without_imports(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("version = 4\n")
    result = cli("containerd", "--file", str(path), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    doc = tomllib.loads(path.read_text())
    assert set(runtimes(doc, V4_PLUGIN)) == {"runc", "retinue"}


def test_containerd_registered_entry_that_differs_from_runc_is_reported(tmp_path: Path) -> None:
    """runc moved to the systemd driver after retinue was registered: said, nothing rewritten."""
    main, conf_d = node(tmp_path, V4_DEFAULT, {})
    assert cli("containerd", "--file", str(main), "--runtime-path", SHIM).exit_code == 0
    (conf_d / "10-runc.toml").write_text(RUNC_DROP_IN)
    before = tree(main.parent)
    result = cli("containerd", "--file", str(main), "--runtime-path", SHIM)
    assert result.exit_code == 0, result.output
    assert "warning: runc's options.SystemdCgroup = true, retinue's = false" in result.stdout
    assert "warning: runc's options.BinaryName" not in result.stdout
    assert tree(main.parent) == before


def test_containerd_relative_globs_differ_between_1_and_2(tmp_path: Path) -> None:
    """containerd 2 globs a relative import from the importing file's directory; containerd 1
    globs it as written, from its own working directory (/): the drop-in is not its."""
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    main = etc / "config.toml"
    main.write_text('version = 2\nimports = ["conf.d/*.toml"]\n')
    (etc / "conf.d" / "runc.toml").write_text(
        f"version = 2\n[{V2_PREFIX}.runc.options]\n  SystemdCgroup = true\n")
    for major, systemd in ((2, True), (1, None)):
        plan = install.plan_containerd(str(main), main.read_bytes(), SHIM, "retinue", 2, major)
        assert plan.new is not None
        entry = runtimes(tomllib.loads(plan.new.decode()), "io.containerd.grpc.v1.cri")["retinue"]
        assert entry["options"].get("SystemdCgroup") is systemd, major
        assert plan.path == str(etc / "conf.d" / "retinue.toml" if major == 2 else main)
