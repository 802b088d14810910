"""Each built-in handler in a real runc container, served by the standalone agent."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conftest import DATA, DOCKER_CAPS, PYTHON, ContainerFactory, StandaloneAgent, docker_profile

NO_CAPS = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]


def probe(*args: str) -> str:
    return shlex.join([PYTHON, "-I", "-S", "/probe/probe.py", *args])


def sh(*commands: str) -> list[str]:
    return ["sh", "-c", "; ".join(commands)]


def results(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


StartAgent = Callable[[str], StandaloneAgent]


def test_deny_answers_the_chosen_errno_and_records_it(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent(
        '[[rule]]\nsyscalls = ["mkdir", "mkdirat"]\nhandler = "deny"\n'
        'settings = { errno = "EACCES" }\n'
    )
    c = make_container(sh(probe("mkdir", "/tmp/x"), "ls -a /tmp"), agent.rules, agent.listener)
    out = c.run()
    assert out.returncode == 0, out.stderr
    assert results(out.stdout)[0] == {"ret": -1, "errno": "EACCES"}
    assert "x" not in out.stdout.split()
    assert f"seccomp deny: container={c.id}" in agent.log
    assert "syscall=mkdir errno=EACCES" in agent.log


def test_audit_records_the_path_and_lets_the_syscall_run(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent('[[rule]]\nsyscalls = ["mkdir", "mkdirat"]\nhandler = "audit"\n')
    c = make_container(sh("mkdir /tmp/audited", "ls /tmp"), agent.rules, agent.listener)
    out = c.run()
    assert out.returncode == 0, out.stderr
    assert "audited" in out.stdout
    line = next(ln for ln in agent.log.splitlines() if "seccomp audit:" in ln)
    assert f"container={c.id}" in line
    assert "arg0=b'/tmp/audited'" in line or "arg1=b'/tmp/audited'" in line


MKNOD_RULES = """
[[rule]]
syscalls = ["mknod"]
handler = "mknod"
errno = "EPERM"
args = [{ index = 1, op = "masked_eq", mask = 0o170000, value = 0o020000 }]
settings = { allow = [{ path = "/dev/fuse", type = "c", major = 10, minor = 229 },
                      { path = "/dev/net/tun", type = "c", major = 10, minor = 200 }] }
[[rule]]
syscalls = ["mknodat"]
handler = "mknod"
errno = "EPERM"
args = [{ index = 2, op = "masked_eq", mask = 0o170000, value = 0o020000 }]
settings = { allow = [{ path = "/dev/fuse", type = "c", major = 10, minor = 229 },
                      { path = "/dev/net/tun", type = "c", major = 10, minor = 200 }] }
"""


def test_mknod_creates_allowlisted_devices_only(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent(MKNOD_RULES)
    c = make_container(
        sh(
            probe("mknod", "/dev/fuse", "c", "10", "229"),
            probe("mknod", "/dev/zero2", "c", "1", "5"),  # not in the allowlist
            probe("mknod", "/tmp/fuse", "c", "10", "229"),  # allowed device, other path
            probe("mknod", "/tmp/fifo", "p"),  # needs no capability: not notified
            "mkdir /dev/net",
            probe("mknod", "/dev/net/tun", "c", "10", "200"),
            "ls -ln /dev/fuse /dev/net/tun /tmp",
        ),
        agent.rules,
        agent.listener,
        seccomp=docker_profile(),
        caps=NO_CAPS,
    )
    out = c.run()
    assert out.returncode == 0, out.stderr
    fuse, zero2, tmpfuse, fifo, tun = results(out.stdout)
    assert fuse == {"ret": 0, "errno": ""}
    assert zero2["errno"] == "EPERM"
    assert tmpfuse["errno"] == "EPERM"
    assert fifo == {"ret": 0, "errno": ""}
    assert tun == {"ret": 0, "errno": ""}
    assert "10, 229" in out.stdout and "10, 200" in out.stdout
    # The caller's umask (022) applies, as for a real mknod.
    assert "crw-r--r--" in out.stdout
    assert "created c 10:229 at '/dev/fuse'" in agent.log
    assert "refused c 1:5 at '/dev/zero2'" in agent.log


def test_mknod_symlink_cannot_reach_host_files(
    standalone_agent: StartAgent, make_container: ContainerFactory, tmp_path: Path
) -> None:
    host_dir = tmp_path / "host-net"
    host_dir.mkdir()
    agent = standalone_agent(MKNOD_RULES)
    c = make_container(
        sh(
            f"ln -s {host_dir} /dev/net",
            probe("mknod", "/dev/net/tun", "c", "10", "200"),
            "ln -s ../../../../../../../ /dev/up",
            probe("mknod", "/dev/up/dev/fuse", "c", "10", "229"),
            "ls -ln /dev/fuse",
        ),
        agent.rules,
        agent.listener,
        caps=NO_CAPS,
    )
    out = c.run()
    assert out.returncode == 0, out.stderr
    escape, dotdot = results(out.stdout)
    # The symlink resolves inside the container, where that directory does not exist.
    assert escape["errno"] == "ENOENT"
    assert list(host_dir.iterdir()) == []
    # `..` stops at the container's root: /dev/up/dev/fuse is /dev/fuse, which is allowed.
    assert dotdot == {"ret": 0, "errno": ""}
    assert "10, 229" in out.stdout


MOUNT_RULES = """
[[rule]]
syscalls = ["mount"]
handler = "mount"
errno = "EPERM"
settings = { filesystems = ["tmpfs"], targets = ["/mnt"], defaults = { size = "4m" } }
"""


def test_mount_performs_allowlisted_mounts_in_the_container(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent(MOUNT_RULES)
    c = make_container(
        sh(
            "mkdir -p /mnt/a /mnt/b /tmp/c",
            probe("mount", "tmpfs", "/mnt/a", "tmpfs", "0", "size=2m,mode=700"),
            probe("mount", "tmpfs", "/mnt/b", "tmpfs", "0", ""),
            probe("mount", "tmpfs", "/tmp/c", "tmpfs", "0", ""),  # target not allowed
            probe("mount", "proc", "/mnt/b", "proc", "0", ""),  # type not allowed
            probe("mount", "none", "/mnt/a", "tmpfs", "0x20", ""),  # MS_REMOUNT
            probe("mount", "tmpfs", "/mnt/b", "tmpfs", "0", "huge=always"),  # option
            "grep ' /mnt/' /proc/mounts",
            "grep CapEff /proc/self/status",
        ),
        agent.rules,
        agent.listener,
        seccomp=docker_profile(),
        caps=NO_CAPS,
    )
    out = c.run()
    assert out.returncode == 0, out.stderr
    a, b, c_, proc, remount, option = results(out.stdout)
    assert a == {"ret": 0, "errno": ""}
    assert b == {"ret": 0, "errno": ""}
    for refused in (c_, proc, remount, option):
        assert refused["errno"] == "EPERM"
    mounts = [ln.split() for ln in out.stdout.splitlines() if " /mnt/" in ln]
    by_target = {m[1]: m for m in mounts}
    assert set(by_target) == {"/mnt/a", "/mnt/b"}
    assert "nosuid" in by_target["/mnt/a"][3] and "nodev" in by_target["/mnt/a"][3]
    assert "size=2048k" in by_target["/mnt/a"][3] and "mode=700" in by_target["/mnt/a"][3]
    assert "size=4096k" in by_target["/mnt/b"][3]  # the configured default
    assert "CapEff:\t00000000" in out.stdout.replace("0000000000000000", "00000000")  # no SYS_ADMIN
    # The host's mount table is untouched.
    with open("/proc/self/mountinfo") as f:
        assert " /mnt/a " not in f.read()


def test_mount_symlink_target_resolves_inside_the_container(
    standalone_agent: StartAgent, make_container: ContainerFactory, tmp_path: Path
) -> None:
    host_dir = tmp_path / "host-target"
    host_dir.mkdir()
    agent = standalone_agent(MOUNT_RULES)
    c = make_container(
        sh(
            f"ln -s {host_dir} /mnt/host",
            "ln -s /etc /mnt/etc",
            probe("mount", "tmpfs", "/mnt/host", "tmpfs", "0", ""),
            probe("mount", "tmpfs", "/mnt/etc", "tmpfs", "0", ""),
        ),
        agent.rules,
        agent.listener,
        caps=NO_CAPS,
    )
    out = c.run()
    assert out.returncode == 0, out.stderr
    host, etc = results(out.stdout)
    assert host["errno"] == "ENOENT"  # that path does not exist inside the container
    assert etc["errno"] == "EPERM"  # /mnt/etc is /etc: not under an allowed target
    with open("/proc/self/mountinfo") as f:
        assert str(host_dir) not in f.read()
    assert "resolves" in agent.log or "target not allowed" in agent.log


def test_sysinfo_reports_the_container_memory_limit(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent('[[rule]]\nsyscalls = ["sysinfo"]\nhandler = "sysinfo"\n')
    limit = 96 * 1024 * 1024
    c = make_container(
        sh(probe("sysinfo"), "busybox free"), agent.rules, agent.listener, memory=limit
    )
    out = c.run()
    assert out.returncode == 0, out.stderr
    info = results(out.stdout)[0]
    assert info["ret"] == 0 and info["mem_unit"] == 1
    assert info["totalram"] == limit
    assert 0 < info["freeram"] < limit
    assert 1 <= info["procs"] < 50
    assert 0 <= info["uptime"] < 60
    # busybox free reads sysinfo too.
    assert str(limit // 1024) in out.stdout
    host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert host > limit


def test_sysinfo_without_limit_reports_host_memory(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    agent = standalone_agent('[[rule]]\nsyscalls = ["sysinfo"]\nhandler = "sysinfo"\n')
    c = make_container(sh(probe("sysinfo")), agent.rules, agent.listener)
    out = c.run()
    assert out.returncode == 0, out.stderr
    info = results(out.stdout)[0]
    host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert abs(info["totalram"] - host) < host // 100


def test_sched_getaffinity_follows_the_cpu_quota(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    host_cpus = len(os.sched_getaffinity(0))
    agent = standalone_agent(
        '[[rule]]\nsyscalls = ["sysinfo", "sched_getaffinity"]\nhandler = "sysinfo"\n'
    )

    def quota(spec: dict[str, Any]) -> None:
        spec["linux"].setdefault("resources", {})["cpu"] = {"quota": 50000, "period": 100000}

    limited = make_container(sh("busybox nproc", "nproc"), agent.rules, agent.listener, edit=quota)
    out = limited.run()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]
    free = make_container(sh("nproc"), agent.rules, agent.listener)
    out = free.run()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(host_cpus)]


def test_docker_shaped_container(
    standalone_agent: StartAgent, make_container: ContainerFactory
) -> None:
    """Docker's profile, capabilities and noNewPrivileges false (runc-init then runs ~190
    syscalls under the filter before exec): create must not depend on the agent, and the
    handlers serve the container."""
    captured = (
        json.loads((DATA / "docker-config.json").read_text())
        if (DATA / "docker-config.json").exists()
        else {}
    )
    caps = ((captured.get("process") or {}).get("capabilities") or {}).get(
        "effective"
    ) or DOCKER_CAPS
    agent = standalone_agent(
        MOUNT_RULES
        + '[[rule]]\nsyscalls = ["sysinfo", "sched_getaffinity"]\nhandler = "sysinfo"\n'
        + '[[rule]]\nsyscalls = ["mkdir", "mkdirat"]\nhandler = "audit"\n'
    )
    c = make_container(
        sh(
            "mkdir -p /mnt/a",
            probe("mount", "tmpfs", "/mnt/a", "tmpfs", "0", ""),
            probe("sysinfo"),
            "grep -c ' /mnt/a ' /proc/mounts",
        ),
        agent.rules,
        agent.listener,
        seccomp=docker_profile(),
        caps=caps,
        memory=128 * 1024 * 1024,
        no_new_privileges=False,
    )
    out = c.run()
    assert out.returncode == 0, out.stderr
    mounted, info = results(out.stdout)
    assert mounted == {"ret": 0, "errno": ""}
    assert info["totalram"] == 128 * 1024 * 1024
    assert out.stdout.split()[-1] == "1"
    assert "seccomp audit:" in agent.log and "/mnt/a" in agent.log
