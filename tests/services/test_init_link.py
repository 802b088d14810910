"""The channel between retinue-init and the supervisor, attacked from inside the container: a
process that copies init's connection, and one that floods init.sock. Neither may make the
supervisor stop the services, nor keep init from being heard when the main process ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Rig, main_args, wait_for

# A service that drains on SIGTERM: "drained" in the events says it was stopped gracefully.
DRAINS = 'trap "ev drained; exit 0" TERM; ev "$RETINUE_SERVICE start"; sleep 1000 & wait\n'
# The main process: runs until /shared/stop exists, then exits 0.
MAIN = "ev main; while [ ! -e /shared/stop ]; do sleep 0.05; done; ev main-exit"

# pidfd_getfd(2) on init's socket, then "exit 0" on the copy: what a process of the container
# with init's uid can do when init is dumpable and no seccomp filter forbids the call.
STEAL = r"""
import ctypes, os, socket, sys
pid, fd = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(pid)
copy = libc.syscall(438, pidfd, fd, 0)
if copy < 0:
    print("refused:", os.strerror(ctypes.get_errno()))
    sys.exit(3)
socket.socket(fileno=copy).send(b"exit 0\n")
print("sent")
"""


def init_socket_fd(pid: int) -> int:
    (fd,) = [int(n) for n in os.listdir(f"/proc/{pid}/fd")
             if os.readlink(f"/proc/{pid}/fd/{n}").startswith("socket:")]
    return fd


def steal(pid: int, fd: int, uid: int | None) -> subprocess.CompletedProcess[str]:
    """Run STEAL as `uid` (no capabilities left), or as the host's root when uid is None."""
    argv = [sys.executable, "-I", "-S", "-c", STEAL, str(pid), str(fd)]
    if uid is None:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, user=uid, group=uid,
                          extra_groups=[])


def as_user(uid: int) -> Callable[[dict[str, Any]], None]:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["user"] = {"uid": uid, "gid": uid}
    return edit


def test_a_copied_init_socket_cannot_stop_the_services(rig: Rig, container_id: str) -> None:
    rig.service("svc", DRAINS)
    bundle = rig.bundle(main_args(MAIN), env=["RETINUE_SERVICES=svc"], edit=as_user(1000))
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    wait_for(lambda: {"main", "svc start"} <= {w for _, w in rig.events()})
    state = rig.state(container_id)
    assert state is not None
    init = state["pid"]
    fd = init_socket_fd(init)
    # A process with init's uid and no CAP_SYS_PTRACE cannot copy the descriptor: init is not
    # dumpable.
    r = steal(init, fd, 1000)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "Operation not permitted" in r.stdout
    # One that can (the host's root here) is not listened to: the supervisor checks who sent
    # each message, not only who connected.
    r = steal(init, fd, None)
    assert r.stdout.strip() == "sent", r.stderr
    time.sleep(0.5)
    assert "drained" not in {w for _, w in rig.events()}
    assert rig.service_status(container_id, "svc")["state"] == "ready"
    # init's own word still counts: the main exits, the service drains, then the container ends.
    (rig.shared / "stop").touch()
    wait_for(lambda: rig.runc_status(container_id) == "stopped", 15)
    words = [w for _, w in rig.events()]
    assert words.index("main-exit") < words.index("drained")


@pytest.mark.parametrize("uid", [0, 1000])
def test_init_keeps_proc_1_readable_for_what_needs_it(
    rig: Rig, container_id: str, uid: int
) -> None:
    """A non-dumpable PID 1 has its /proc/1 files owned by root: what the container's processes
    read there (cmdline, status, stat) must still be readable, as the main's uid too."""
    bundle = rig.bundle(
        main_args("cat /proc/1/cmdline | tr '\\0' ' ' > /shared/cmdline; "
                  "grep -c . /proc/1/status > /shared/status; cat /proc/1/stat > /shared/stat; "
                  "ps > /shared/ps; ls /proc/1/fd > /dev/null 2>&1; echo $? > /shared/fd-rc; "
                  "cat /proc/1/environ > /dev/null 2>&1; echo $? > /shared/environ-rc; ev done"),
        env=["RETINUE_SERVICES=svc"], edit=as_user(uid))
    rig.service("svc", DRAINS)
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    wait_for(lambda: rig.runc_status(container_id) == "stopped", 15)
    assert "/.retinue/init" in (rig.shared / "cmdline").read_text()
    assert int((rig.shared / "status").read_text()) > 10
    assert (rig.shared / "stat").read_text().startswith("1 (")
    assert "/.retinue/init" in (rig.shared / "ps").read_text()
    # What a non-dumpable init takes away (README, Security): its environment is for
    # CAP_SYS_PTRACE only, its fd list for root; the main's own /proc/self is unchanged.
    assert (rig.shared / "environ-rc").read_text().strip() != "0"
    assert ((rig.shared / "fd-rc").read_text().strip() == "0") is (uid == 0)



# Connects to init.sock as fast as it can from 4 processes, forever: what an image whose
# /bin/sh (run by the services before the main starts) was replaced could do.
FLOOD_C = r"""
#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, "/.retinue/init.sock");
    for (int i = 0; i < 3; i++)
        if (fork() == 0)
            break;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fd, (struct sockaddr *)&a, sizeof a);
        close(fd);
    }
}
"""


def test_a_flood_on_init_sock_does_not_keep_init_out(rig: Rig, container_id: str) -> None:
    flood = rig.files / "flood"
    flood.mkdir()
    (flood / "flood.c").write_text(FLOOD_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(flood / "flood"), str(flood / "flood.c")],
                   check=True)
    (rig.etc / "services" / "flood.toml").write_text(
        f'files = "{flood}"\ncommand = ["flood"]\n')
    rig.service("svc", DRAINS)
    bundle = rig.bundle(main_args(MAIN), env=["RETINUE_SERVICES=flood,svc"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    wait_for(lambda: {"main", "svc start"} <= {w for _, w in rig.events()})
    time.sleep(0.5)
    (rig.shared / "stop").touch()
    wait_for(lambda: rig.runc_status(container_id) == "stopped", 20)
    words = [w for _, w in rig.events()]
    assert "drained" in words, (rig.base / f"{container_id}.err").read_text()
    assert words.index("main-exit") < words.index("drained")
    assert "cannot reach the supervisor" not in (rig.base / f"{container_id}.err").read_text()
