"""A config.json the size and shape of the one dockerd 20.10 writes for `docker run busybox true`.

Preferred source: tests/data/docker-config.json, captured from a real dockerd; it is adapted so
runc can create it here (our rootfs, files for its bind mounts, no hooks that talk to a dockerd
that is gone, no netns path). Without it, the spec is built the way dockerd builds it: `runc spec`,
then Docker's default mounts, masked and read-only paths, device rules, capabilities, and its
default seccomp profile (tests/data/docker-default-seccomp.json, moby v20.10.24's
profiles/seccomp/default.json) filtered for this architecture, kernel and those capabilities.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from retinue.cli import rootfs

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTURED = DATA / "docker-config.json"
SECCOMP_PROFILE = DATA / "docker-default-seccomp.json"

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
# Go's GOARCH for the architectures this bench may meet, and libseccomp's name for each.
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "s390x": "s390x", "riscv64": "riscv64"}
SECCOMP_ARCH = {
    "amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
}
CONTAINER_ID = "0123456789ab" * 5 + "cdef"  # 64 hex digits, like dockerd's


def _kernel_at_least(version: str) -> bool:
    want = [int(x) for x in version.split(".")]
    have = [int(x) for x in platform.release().split("-")[0].split(".")[: len(want)]]
    return have >= want


def _rule_applies(rule: dict[str, Any], arch: str, caps: list[str]) -> bool:
    inc = rule.get("includes") or {}
    exc = rule.get("excludes") or {}
    if arch in (exc.get("arches") or []):
        return False
    if any(c in caps for c in exc.get("caps") or []):
        return False
    if exc.get("minKernel") and _kernel_at_least(exc["minKernel"]):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if inc.get("caps") and not all(c in caps for c in inc["caps"]):
        return False
    return not (inc.get("minKernel") and not _kernel_at_least(inc["minKernel"]))


def docker_seccomp(caps: list[str]) -> dict[str, Any]:
    """Docker's default profile in the OCI form dockerd hands to runc, for this host."""
    profile = json.loads(SECCOMP_PROFILE.read_text())
    arch = GOARCH.get(platform.machine(), platform.machine())
    native = SECCOMP_ARCH.get(arch)
    architectures: list[str] = []
    for entry in profile.get("archMap") or []:
        if native and entry["architecture"] == native:
            architectures = [native, *(entry.get("subArchitectures") or [])]
    syscalls = []
    for rule in profile["syscalls"]:
        if not _rule_applies(rule, arch, caps):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        out: dict[str, Any] = {
            "names": names, "action": rule["action"], "args": rule.get("args") or [],
        }
        if "errnoRet" in rule:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    seccomp: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        seccomp["defaultErrnoRet"] = profile["defaultErrnoRet"]
    seccomp["architectures"] = architectures
    seccomp["syscalls"] = syscalls
    return seccomp


def _dev_rule(
    allow: bool, kind: str | None, major: int | None, minor: int | None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"allow": allow}
    if kind:
        rule["type"] = kind
    if major is not None:
        rule["major"] = major
        rule["minor"] = minor
    rule["access"] = "rwm"
    return rule


def build(args: list[str]) -> dict[str, Any]:
    """Docker 20.10's spec for a non-privileged, non-tty container on a host without AppArmor."""
    spec = rootfs.default_spec(args)
    short = CONTAINER_ID[:12]
    caps = list(DEFAULT_CAPS)
    spec["process"] = {
        "user": {"uid": 0, "gid": 0, "additionalGids": [0, 1, 2, 3, 4, 6, 10, 11, 20, 26, 27]},
        "args": args,
        "env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"HOSTNAME={short}",
        ],
        "cwd": "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "oomScoreAdj": 0,
    }
    spec["hostname"] = short
    spec["root"] = {"path": "rootfs"}
    spec["mounts"] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]},
        {"destination": "/etc/resolv.conf", "type": "bind",
         "source": f"/var/lib/docker/containers/{CONTAINER_ID}/resolv.conf",
         "options": ["rbind", "rprivate"]},
        {"destination": "/etc/hostname", "type": "bind",
         "source": f"/var/lib/docker/containers/{CONTAINER_ID}/hostname",
         "options": ["rbind", "rprivate"]},
        {"destination": "/etc/hosts", "type": "bind",
         "source": f"/var/lib/docker/containers/{CONTAINER_ID}/hosts",
         "options": ["rbind", "rprivate"]},
    ]
    devices = [_dev_rule(False, None, None, None)]
    for kind, major, minor, allow in (
        ("c", 1, 5, True), ("c", 1, 3, True), ("c", 1, 9, True), ("c", 1, 8, True),
        ("c", 5, 0, True), ("c", 5, 1, True), ("c", 10, 229, False),
    ):
        devices.append(_dev_rule(allow, kind, major, minor))
    spec["linux"] = {
        "resources": {
            "devices": devices,
            "memory": {"disableOOMKiller": False},
            "cpu": {"shares": 0},
            "pids": {"limit": 0},
            "blockIO": {"weight": 0},
        },
        "cgroupsPath": f"/docker/{CONTAINER_ID}",
        "namespaces": [{"type": t} for t in ("mount", "network", "uts", "pid", "ipc")],
        "seccomp": docker_seccomp(caps),
        "maskedPaths": [
            "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
            "/sys/firmware",
        ],
        "readonlyPaths": [
            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
        ],
    }
    return spec


def load() -> tuple[dict[str, Any], str]:
    """The Docker-like spec and where it came from."""
    if CAPTURED.exists():
        spec: dict[str, Any] = json.loads(CAPTURED.read_text())
        return spec, f"captured from dockerd ({CAPTURED.name})"
    return build(["true"]), f"built like dockerd 20.10 (seccomp: {SECCOMP_PROFILE.name})"


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def adapt(spec: dict[str, Any], rootfs_dir: str, files_dir: str) -> dict[str, Any]:
    """Make a Docker spec creatable by runc here, changing nothing the shim or runc's cost depends
    on: our rootfs, bind sources that exist, no hooks into a dockerd, no fixed netns or cgroup.

    The cgroup path would be shared by every container the bench creates from this one spec;
    without it runc uses one per container id, as dockerd does.
    """
    spec = json.loads(json.dumps(spec))
    spec["root"] = {"path": rootfs_dir, "readonly": False}
    os.makedirs(files_dir, exist_ok=True)
    for mount in spec.get("mounts") or []:
        if mount.get("type") == "bind" and not os.path.exists(mount.get("source", "")):
            name = os.path.basename(mount["destination"]) or "mnt"
            local = os.path.join(files_dir, name)
            if not os.path.exists(local):
                if mount["destination"].startswith("/etc/"):
                    Path(local).write_text("")
                else:
                    os.makedirs(local, exist_ok=True)
            mount["source"] = local
    spec.pop("hooks", None)
    linux = spec.setdefault("linux", {})
    linux.pop("cgroupsPath", None)
    for ns in linux.get("namespaces") or []:
        ns.pop("path", None)
    if not _apparmor_enabled():
        (spec.get("process") or {}).pop("apparmorProfile", None)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    return spec
