"""Issue 11, without containers: the image store, the service keys, the sibling's spec, the CLI."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import imagekit
import pytest
from retinue.errors import SpecError
from retinue.host import images
from retinue.spec import sibling as sidecar

ADMIN = os.path.join(sys.prefix, "bin", "retinue")


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("img")
    rootfs = imagekit.busybox_rootfs(base / "rootfs")
    return imagekit.oci_layout(rootfs, base / "layout", ["sleep", "1000"])


def _admin(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ADMIN, *args, "--config", str(cfg)] if args[0] != "image" else
                          [ADMIN, args[0], args[1], "--config", str(cfg), *args[2:]],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    (d / "services").mkdir(parents=True)
    (d / "policy.toml").write_text("")
    (d / "config.toml").write_text(
        f'image_dir = "{tmp_path}/images"\nstate_dir = "{tmp_path}/state"\n'
    )
    return d / "config.toml"


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# -- the image store -------------------------------------------------------------------------


def test_import_every_local_form_shares_one_unpacked_copy(
    layout: Path, tmp_path: Path, etc: Path
) -> None:
    archive = tmp_path / "img-oci.tar"
    docker = tmp_path / "img-docker.tar"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", f"oci:{layout}",
                    f"oci-archive:{archive}"], check=True)
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", f"oci:{layout}",
                    f"docker-archive:{docker}:x:1"], check=True)
    digests = {}
    for name, source in (("layout", layout), ("archive", archive), ("again", layout),
                         ("docker", docker)):
        r = _admin(etc, "image", "import", name, str(source))
        assert r.returncode == 0, r.stderr
        got_name, digest = r.stdout.split()
        assert got_name == name and digest.startswith("sha256:")
        digests[name] = digest
    # The same image by three routes: one digest, one unpacked copy (docker's manifest differs).
    assert digests["layout"] == digests["archive"] == digests["again"]
    store = tmp_path / "images"
    unpacked = sorted(os.listdir(store / "sha256"))
    assert len(unpacked) == len({digests["layout"], digests["docker"]})
    assert os.path.isfile(store / "sha256" / digests["layout"][7:] / "rootfs" / "bin" / "busybox")
    for point in images.MOUNT_POINTS:
        assert (store / "sha256" / digests["layout"][7:] / "rootfs" / point).is_dir()
    assert os.listdir(store / "tmp") == []
    listed = _admin(etc, "image", "ls")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == [
        "again", "archive", "docker", "layout"]
    found = images.resolve(str(store), "layout")
    assert found["config"]["Cmd"] == ["sleep", "1000"]
    assert images.resolve(str(store), f"layout@{digests['layout']}")["digest"] == digests["layout"]
    assert images.resolve(str(store), digests["layout"])["rootfs"] == found["rootfs"]
    # Removing one name keeps the copy the others use; removing the last name removes it.
    for name in ("layout", "archive"):
        r = _admin(etc, "image", "rm", name)
        assert r.returncode == 0 and r.stdout == f"removed {name}\n", r
    r = _admin(etc, "image", "rm", "again")
    assert r.stdout.split() == ["removed", "again", "removed", digests["layout"]]
    assert sorted(os.listdir(store / "sha256")) == [digests["docker"][7:]]


def test_rm_refuses_an_image_in_use(layout: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "images")
    record = images.import_image(store, "bb", str(layout))
    digest = record["digest"]
    with pytest.raises(images.ImageError, match=r"in use by 1 container\(s\): app\.svc"):
        images.remove(store, "bb", {digest: ["app.svc"]})
    assert images.resolve(store, "bb")["digest"] == digest
    assert images.remove(store, "bb", {}) == ["bb", digest]


def test_import_and_rm_narrow_an_open_store_and_refuse_one_root_does_not_own(
    layout: Path, tmp_path: Path
) -> None:
    store = tmp_path / "images"
    for sub in ("sha256", "names"):
        (store / sub).mkdir(parents=True)
    for path in (store, store / "sha256", store / "names"):
        os.chmod(path, 0o755)  # as versions before this one made them
    images.import_image(str(store), "bb", str(layout))
    for path in (store, store / "sha256", store / "names", store / "tmp"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    os.chmod(store, 0o711)
    images.remove(str(store), "bb", {})
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    os.chown(store, 65534, 65534)
    with pytest.raises(images.ImageError, match=f"^image_dir: {store} belongs to uid 65534, not "
                       "to uid 0: whoever owns it can change the images sidecars run"):
        images.import_image(str(store), "bb", str(layout))
    assert _tree(store) == ["names", "sha256", "tmp"]


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        ("x", "docker://debian:12", "never pulls from a registry"),
        ("x", "/nonexistent/img.tar", "/nonexistent/img.tar: no such file or directory"),
        ("Bad Name", "LAYOUT", "image name: expected lowercase"),
        ("x", "NOTAR", "not a tar archive"),
        ("x", "EMPTYDIR", "not an OCI layout"),
    ],
)
def test_import_bad_input_changes_nothing(
    layout: Path, tmp_path: Path, etc: Path, name: str, source: str, message: str
) -> None:
    (tmp_path / "notar").write_text("hello")
    (tmp_path / "emptydir").mkdir()
    source = {"LAYOUT": str(layout), "NOTAR": str(tmp_path / "notar"),
              "EMPTYDIR": str(tmp_path / "emptydir")}.get(source, source)
    r = _admin(etc, "image", "import", name, source)
    assert r.returncode == 1
    assert message in r.stderr and r.stderr.startswith("retinue: "), r.stderr
    assert [p for p in _tree(tmp_path / "images") if p not in ("tmp", "names")] == []


# -- what an import verifies and bounds -----------------------------------------------------


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _put(layout: Path, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob(layout, digest).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _manifest(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    index = json.loads((layout / "index.json").read_text())
    return index, json.loads(_blob(layout, index["manifests"][0]["digest"]).read_bytes())


def _rewrite(layout: Path, edit: Any) -> None:
    """Edit the manifest, then store it under its true digest: only the edit is wrong."""
    index, manifest = _manifest(layout)
    edit(manifest)
    index["manifests"][0].update(_put(layout, json.dumps(manifest).encode()))
    (layout / "index.json").write_text(json.dumps(index))


def _manifest_not_its_digest(layout: Path) -> str:
    index, _ = _manifest(layout)
    blob = _blob(layout, index["manifests"][0]["digest"])
    blob.write_bytes(blob.read_bytes().replace(b'"schemaVersion": 2', b'"schemaVersion":  2'))
    index["manifests"][0]["size"] = blob.stat().st_size  # only the digest is wrong
    (layout / "index.json").write_text(json.dumps(index))
    return f"manifest {index['manifests'][0]['digest']} ({blob}): its content is sha256:"


def _layer_not_its_digest(layout: Path) -> str:
    _, manifest = _manifest(layout)
    layer = manifest["layers"][0]["digest"]
    data = bytearray(_blob(layout, layer).read_bytes())
    data[-1] ^= 1  # the tar's zero padding: same size, another digest
    _blob(layout, layer).write_bytes(bytes(data))
    return f"layer {layer} ({_blob(layout, layer)}): its content is sha256:"


def _layer_larger_than_declared(layout: Path) -> str:
    _, manifest = _manifest(layout)
    layer = manifest["layers"][0]
    actual = layer["size"]
    _rewrite(layout, lambda m: m["layers"][0].update(size=actual - 512))
    return (f"layer {layer['digest']} ({_blob(layout, layer['digest'])}): has more than the "
            f"{actual - 512} bytes its descriptor declares")


def _config_smaller_than_declared(layout: Path) -> str:
    _, manifest = _manifest(layout)
    config = manifest["config"]
    _rewrite(layout, lambda m: m["config"].update(size=config["size"] + 10))
    return (f"config {config['digest']} ({_blob(layout, config['digest'])}): "
            f"{config['size']} bytes, not the {config['size'] + 10} its descriptor declares")


def _layer_declared_huge(layout: Path) -> str:
    _rewrite(layout, lambda m: m["layers"][0].update(size=1 << 40))
    return "declares more than image_max_size (4G) in all: 1099511"


@pytest.mark.parametrize(
    "spoil",
    [_manifest_not_its_digest, _layer_not_its_digest, _layer_larger_than_declared,
     _config_smaller_than_declared, _layer_declared_huge],
)
@pytest.mark.parametrize("form", ["layout", "archive"])
def test_import_verifies_every_digest_and_size_before_unpacking(
    layout: Path, tmp_path: Path, etc: Path, spoil: Any, form: str
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(layout, bad)
    message = spoil(bad)
    source = bad
    if form == "archive":
        source = tmp_path / "bad.tar"
        with tarfile.open(source, "w") as tar:
            for entry in sorted(os.listdir(bad)):
                tar.add(bad / entry, entry)
        # In an archive the blob is named by its path inside it.
        message = message.replace(f"({bad}/", f"({source}:")
    r = _admin(etc, "image", "import", "bad", str(source))
    assert r.returncode == 1, r
    assert r.stderr.startswith(f"retinue: {source}: "), r.stderr
    assert message in r.stderr, r.stderr
    assert [p for p in _tree(tmp_path / "images") if p not in ("tmp", "names")] == []


def test_import_verifies_this_platform_of_a_multi_platform_index(
    layout: Path, tmp_path: Path, etc: Path
) -> None:
    multi = tmp_path / "multi"
    shutil.copytree(layout, multi)
    index = json.loads((multi / "index.json").read_text())
    ours = dict(index["manifests"][0], platform={"os": "linux", "architecture": images.HOST_ARCH})
    ours.pop("annotations", None)
    absent = {**ours, "digest": "sha256:" + "0" * 64,
              "platform": {"os": "linux", "architecture": "s390x"}}  # only its descriptor
    nested = _put(multi, json.dumps({
        "schemaVersion": 2, "mediaType": images.INDEX_TYPES[0], "manifests": [absent, ours],
    }).encode())
    index["manifests"] = [{"mediaType": images.INDEX_TYPES[0], **nested}]
    (multi / "index.json").write_text(json.dumps(index))
    r = _admin(etc, "image", "import", "multi", str(multi))
    assert r.returncode == 0, r.stderr
    assert images.resolve(str(tmp_path / "images"), "multi")["config"]["Cmd"] == ["sleep", "1000"]
    # The platform skopeo would pick is verified like any other manifest.
    _put(multi, b"{}")
    ours["digest"], ours["size"] = "sha256:" + hashlib.sha256(b"{}").hexdigest(), 3
    spoiled = _put(multi, json.dumps({
        "schemaVersion": 2, "mediaType": images.INDEX_TYPES[0], "manifests": [absent, ours],
    }).encode())
    index["manifests"] = [{"mediaType": images.INDEX_TYPES[0], **spoiled}]
    (multi / "index.json").write_text(json.dumps(index))
    r = _admin(etc, "image", "import", "other", str(multi))
    assert r.returncode == 1
    assert f"manifest {ours['digest']} ({multi}/blobs/sha256/" in r.stderr, r.stderr
    assert "2 bytes, not the 3 its descriptor declares" in r.stderr, r.stderr


def test_import_refuses_an_image_past_image_max_size(
    layout: Path, tmp_path: Path, etc: Path
) -> None:
    _, manifest = _manifest(layout)
    declared = manifest["config"]["size"] + sum(d["size"] for d in manifest["layers"])
    with open(etc, "a") as f:
        f.write('image_max_size = "1M"\n')
    r = _admin(etc, "image", "import", "bb", str(layout))
    assert r.returncode == 1
    assert (f"retinue: {layout}: declares more than image_max_size (1M) in all: {declared} bytes"
            in r.stderr), r.stderr
    # An archive is bounded by its own size before skopeo unpacks it.
    for transport in ("docker-archive", "oci-archive"):
        archive = tmp_path / f"img-{transport}.tar"
        subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", f"oci:{layout}",
                        f"{transport}:{archive}:x:1"], check=True)
        source = str(archive)
        r = _admin(etc, "image", "import", "bb", source)
        assert r.returncode == 1
        assert (f"retinue: {source}: {archive.stat().st_size} bytes, more than image_max_size "
                "(1M)" in r.stderr), r.stderr
    assert [p for p in _tree(tmp_path / "images") if p not in ("tmp", "names")] == []


@pytest.mark.parametrize("form", ["layout", "archive"])
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_import_refuses_a_layer_that_unpacks_past_image_max_size(
    tmp_path: Path, etc: Path, compression: str, form: str
) -> None:
    # 64M of zeros compress to almost nothing: what is copied is small, what is unpacked is not.
    rootfs = imagekit.busybox_rootfs(tmp_path / "bomb")
    with open(rootfs / "zeros", "wb") as f:
        f.truncate(64 << 20)
    plain = imagekit.oci_layout(rootfs, tmp_path / "bomb-layout", ["sh"])
    gzipped = tmp_path / "bomb-gzip"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-compress",
                    "--dest-compress-format", compression, f"oci:{plain}", f"oci:{gzipped}:x"],
                   check=True)
    _, manifest = _manifest(gzipped)
    assert manifest["layers"][0]["mediaType"].endswith(compression)
    assert sum(d["size"] for d in manifest["layers"]) < 4 << 20
    with open(etc, "a") as f:
        f.write('image_max_size = "32M"\n')
    if form == "archive":
        archive = tmp_path / "bomb.tar"
        subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", f"oci:{gzipped}:x",
                        f"oci-archive:{archive}"], check=True)
        gzipped = archive
    r = _admin(etc, "image", "import", "bomb", str(gzipped))
    assert r.returncode == 1
    assert (f"retinue: {gzipped}: layer {manifest['layers'][0]['digest']} unpacks to more than "
            "image_max_size (32M)") in r.stderr, r.stderr
    assert [p for p in _tree(tmp_path / "images") if p not in ("tmp", "names")] == []


def test_no_file_the_import_tools_write_outgrows_image_max_size(tmp_path: Path) -> None:
    with pytest.raises(images.ImageError, match=r"^copying: dd wrote a file past image_max_size "
                       r"\(1048576 bytes\)$"):
        images._run(["dd", "if=/dev/zero", f"of={tmp_path}/big", "bs=1M", "count=2"], "copying",
                    1 << 20)
    assert (tmp_path / "big").stat().st_size == 1 << 20


@pytest.mark.parametrize("value", ['"lots"', '"0"', '"100K"', "12"])
def test_check_rejects_a_bad_image_max_size(etc: Path, value: str) -> None:
    with open(etc, "a") as f:
        f.write(f"image_max_size = {value}\n")
    r = _admin(etc, "check")
    assert r.returncode == 1
    assert f"{etc}: image_max_size: expected a size like \"4G\"" in r.stderr, r.stderr


# -- the service keys ------------------------------------------------------------------------


def _service(etc: Path, name: str, text: str) -> None:
    (etc.parent / "services" / f"{name}.toml").write_text(text)


def test_check_accepts_a_sidecar_and_names_its_digest(layout: Path, etc: Path) -> None:
    assert _admin(etc, "image", "import", "bb", str(layout)).returncode == 0
    _service(etc, "agent", 'placement = "container"\nimage = "bb"\n'
             '[resources]\nmemory = "32M"\ncpu = 0.5\npids = 64\n')
    r = _admin(etc, "check")
    assert r.returncode == 0, r.stderr
    assert "agent: required; container from image bb (sha256:" in r.stdout


def test_check_names_a_missing_image(etc: Path) -> None:
    _service(etc, "agent", 'placement = "container"\nimage = "nope"\n')
    r = _admin(etc, "check")
    assert r.returncode == 1
    assert f"{etc.parent}/services/agent.toml: image: image 'nope': not imported" in r.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('placement = "pod"\nfiles = "x"\ncommand = ["x"]\n',
         "placement: expected one of exec, container, got 'pod'"),
        ('placement = "container"\n', 'image: required with placement = "container"'),
        ('placement = "container"\nimage = "Bad:Name"\n', "image: expected an image name"),
        ('placement = "container"\nimage = "bb"\nfiles = "/opt"\n', "files: not used"),
        ('placement = "container"\nimage = "bb"\nshare = ["var/log"]\n',
         "share[0]: expected an absolute path, got 'var/log'"),
        ('placement = "container"\nimage = "bb"\nshare = ["/"]\n', "share[0]: sharing the app"),
        ('placement = "container"\nimage = "bb"\nshare = ["/a/../etc"]\n',
         "share[0]: expected a normalized absolute path"),
        ('placement = "container"\nimage = "bb"\n[resources]\nmemory = "lots"\n',
         "resources.memory: expected a size like 64M or 1G, at least 4M, got 'lots'"),
        ('placement = "container"\nimage = "bb"\n[resources]\nmemory = "1K"\n',
         "resources.memory: expected a size"),
        ('placement = "container"\nimage = "bb"\n[resources]\ncpu = -1\n',
         "resources.cpu: expected a number of CPUs"),
        ('placement = "container"\nimage = "bb"\n[resources]\npids = -3\n',
         "resources.pids: expected a number of processes"),
        ('placement = "container"\nimage = "bb"\n[resources]\nswap = "1G"\n',
         "resources.swap: unknown key"),
        ('placement = "container"\nimage = "bb"\n[ready]\nfile = "/x"\n',
         'ready.file: not available with placement = "container"'),
        ('placement = "container"\nimage = "bb"\nconfinement = "off"\n',
         "confinement: expected one of app, none, got 'off'"),
        ('files = "/tmp"\ncommand = ["x"]\nimage = "bb"\n',
         "image: only with placement = \"container\""),
        ('files = "/tmp"\ncommand = ["x"]\n[resources]\nmemory = "2M"\n',
         "resources.memory: expected a size like 64M or 1G, at least 4M, got '2M'"),
        ('command = ["x"]\n', 'files: missing (required with placement = "exec"'),
    ],
)
def test_check_rejects_bad_sidecar_keys(etc: Path, text: str, message: str) -> None:
    _service(etc, "agent", text)
    r = _admin(etc, "check")
    assert r.returncode == 1
    assert f"{etc.parent}/services/agent.toml: {message}" in r.stderr, r.stderr


# -- the sibling's spec: a pure function -----------------------------------------------------


def _svc(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "proxy", "command": [], "uid": 65534, "gid": 65534,
        "capabilities": ["CAP_NET_BIND_SERVICE"], "env": [("LEVEL", "info")], "cwd": "/",
        "share": ["/var/log/app"], "confinement": "app",
        "resources": {"memory": 32 << 20, "cpu": 0.5, "pids": 64},
    }
    return base | over


IMAGE = {"digest": "sha256:" + "a" * 64, "rootfs": "/var/lib/retinue/images/sha256/aa/rootfs",
         "config": {"Entrypoint": ["/usr/sbin/nginx"], "Cmd": ["-g", "daemon off;"],
                    "Env": ["PATH=/usr/sbin:/usr/bin", "TZ=UTC"], "WorkingDir": "/srv"}}

APP = {
    "ociVersion": "1.0.2",
    "process": {"args": ["/app"], "env": ["SECRET=app-only"], "apparmorProfile": "app-prof",
                "selinuxLabel": "system_u:system_r:container_t:s0",
                "capabilities": {"bounding": ["CAP_SYS_ADMIN"]}},
    "root": {"path": "/app/rootfs"},
    "mounts": [{"destination": "/host", "type": "bind", "source": "/", "options": ["rbind"]}],
    "linux": {
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "user"}],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/retinue/x.sock",
                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                                 {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
        "mountLabel": "system_u:object_r:container_file_t:s0",
    },
}


def _spec(app: dict[str, Any] = APP, **over: Any) -> dict[str, Any]:
    return sidecar.sibling_spec(app, _svc(**over), IMAGE, app_id="app1", app_proc="/proc/42",
                                app_cgroup="/default/app1", container_dir="/run/retinue/r/app1")


def test_sibling_spec_joins_the_app_and_owns_the_rest() -> None:
    before = copy.deepcopy(APP)
    spec = _spec()
    assert before == APP  # pure: the app's spec is not touched
    assert spec["root"] == {"path": IMAGE["rootfs"], "readonly": True}
    ns = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert ns == {"pid": None, "mount": None, "cgroup": None, "network": "/proc/42/ns/net",
                  "ipc": "/proc/42/ns/ipc", "uts": "/proc/42/ns/uts", "user": "/proc/42/ns/user"}
    assert spec["linux"]["uidMappings"] == APP["linux"]["uidMappings"]
    assert spec["linux"]["cgroupsPath"] == "/default/app1.retinue-proxy"
    assert spec["linux"]["resources"] == {"memory": {"limit": 32 << 20},
                                          "cpu": {"quota": 50000, "period": 100000},
                                          "pids": {"limit": 64}}
    proc = spec["process"]
    assert proc["args"] == ["/usr/sbin/nginx", "-g", "daemon off;"]
    assert proc["user"] == {"uid": 65534, "gid": 65534}
    assert proc["cwd"] == "/srv"
    assert "SECRET=app-only" not in proc["env"]
    assert {"PATH=/usr/sbin:/usr/bin", "TZ=UTC", "LEVEL=info", "RETINUE_SERVICE=proxy",
            "RETINUE_CONTAINER_ID=app1"} <= set(proc["env"])
    # The service's capabilities, not the app's.
    assert proc["capabilities"]["bounding"] == ["CAP_NET_BIND_SERVICE"]
    assert proc["capabilities"]["ambient"] == ["CAP_NET_BIND_SERVICE"]
    assert proc["noNewPrivileges"] is True
    assert proc["apparmorProfile"] == "app-prof"
    assert proc["selinuxLabel"] == APP["process"]["selinuxLabel"]
    assert spec["linux"]["mountLabel"] == APP["linux"]["mountLabel"]
    seccomp = spec["linux"]["seccomp"]
    assert "listenerPath" not in seccomp
    assert seccomp["syscalls"] == [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
    dests = {m["destination"]: m for m in spec["mounts"]}
    assert "/host" not in dests  # nothing of the app's own mounts
    assert dests["/var/log/app"] == {"destination": "/var/log/app", "type": "bind",
                                     "source": "/proc/42/root/var/log/app",
                                     "options": ["rbind", "ro", "nosuid", "nodev"]}
    assert dests["/tmp"]["type"] == dests["/run"]["type"] == "tmpfs"
    assert spec["annotations"] == {
        sidecar.SIDECAR_OF: "app1", sidecar.SIDECAR_SERVICE: "proxy",
        sidecar.SIDECAR_DIR: "/run/retinue/r/app1", sidecar.SIDECAR_IMAGE: IMAGE["digest"]}
    assert "hostname" not in spec  # the app's UTS namespace is joined, not set


def test_sibling_spec_with_retinue_init_as_pid_1() -> None:
    spec = sidecar.sibling_spec(APP, _svc(), IMAGE, app_id="a", app_proc="/proc/1",
                                app_cgroup="/a", container_dir="/d", init="/usr/lib/init")
    assert spec["process"]["args"] == ["/.retinue/init", "--", "/usr/sbin/nginx", "-g",
                                       "daemon off;"]
    assert {"destination": "/.retinue/init", "type": "bind", "source": "/usr/lib/init",
            "options": ["rbind", "ro", "nosuid", "nodev"]} in spec["mounts"]


def test_sibling_spec_service_overrides() -> None:
    spec = _spec(command=["/bin/agent", "-v"], uid=0, gid=0, cwd="/work", confinement="none",
                 resources={"memory": 0, "cpu": 0.0, "pids": 0}, share=[])
    assert spec["process"]["args"] == ["/bin/agent", "-v"]
    assert spec["process"]["cwd"] == "/work"
    assert "ambient" not in spec["process"]["capabilities"]
    assert spec["linux"]["resources"] == {}
    for key in ("seccomp", "mountLabel"):
        assert key not in spec["linux"]
    assert "apparmorProfile" not in spec["process"]
    no_userns = {**APP, "linux": {**APP["linux"], "namespaces": [{"type": "network"}]}}
    spec = _spec(no_userns)
    assert "user" not in {n["type"] for n in spec["linux"]["namespaces"]}
    assert "uidMappings" not in spec["linux"]


def test_sibling_spec_without_a_command_is_an_error() -> None:
    bare = {**IMAGE, "config": {}}
    with pytest.raises(SpecError, match=r"service proxy: no command, and image sha256:a+ has"):
        sidecar.sibling_spec(APP, _svc(), bare, app_id="a", app_proc="/proc/1",
                             app_cgroup="/a", container_dir="/d")
    with pytest.raises(SpecError, match="root cgroup"):
        sidecar.sibling_spec(APP, _svc(), IMAGE, app_id="a", app_proc="/proc/1",
                             app_cgroup="/", container_dir="/d")
    assert sidecar.sidecar_cgroup("/kubepods/pod1/cri-containerd-x.scope", "p") == (
        "/kubepods/pod1/cri-containerd-x.retinue-p")


def test_plan_shows_the_sibling_spec(layout: Path, etc: Path, tmp_path: Path) -> None:
    assert _admin(etc, "image", "import", "bb", str(layout)).returncode == 0
    _service(etc, "agent", 'placement = "container"\nimage = "bb"\ncommand = ["sleep", "9"]\n')
    (etc.parent / "policy.toml").write_text(
        '[[attach]]\nname = "all"\nwhen.always = true\nservices = ["agent"]\n')
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(
        {"ociVersion": "1.0.2", "process": {"args": ["/bin/app"], "cwd": "/"},
         "root": {"path": "rootfs"}, "linux": {"cgroupsPath": "/default/c1",
                                               "namespaces": [{"type": "network"}]}}))
    r = subprocess.run([ADMIN, "plan", "--config", str(etc), "--id", "c1", str(bundle)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition("# sidecar agent: container c1.agent from sha256:")
    assert "/retinue/agent" not in head  # no files of a sidecar are mounted into the app
    spec = json.loads(body.split("\n", 1)[1])
    assert spec["process"]["args"] == ["/.retinue/init", "--", "sleep", "9"]
    assert spec["linux"]["cgroupsPath"] == "/default/c1.retinue-agent"
    assert {"type": "network", "path": "/proc/<app init pid>/ns/net"} in spec["linux"][
        "namespaces"]


def test_a_shared_path_maps_to_the_host_copy_the_app_sees() -> None:
    app = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind"]},
        {"destination": "/data/logs", "type": "none", "source": "/var/log/app",
         "options": ["bind", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
    ]}
    assert sidecar.host_path(app, "/b", "/etc/app") == "/b/rootfs/etc/app"
    assert sidecar.host_path(app, "/b", "/data") == "/srv/data"
    assert sidecar.host_path(app, "/b", "/data/x/y") == "/srv/data/x/y"
    assert sidecar.host_path(app, "/b", "/data/logs/today") == "/var/log/app/today"
    assert sidecar.host_path(app, "/b", "/datax") == "/b/rootfs/datax"
    assert sidecar.host_path({"root": {"path": "/abs/root"}}, "/b", "/x") == "/abs/root/x"
    with pytest.raises(SpecError, match="share: /tmp/a is on the app's tmpfs mount at /tmp"):
        sidecar.host_path(app, "/b", "/tmp/a")
