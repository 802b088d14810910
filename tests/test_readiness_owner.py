"""tcp readiness counts a listening socket only when the service's process tree holds it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from retinue.supervisor import readiness


def test_only_the_tree_that_holds_the_listener_owns_it() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    # A child (and its grandchild) without the socket, and one holding it through a grandchild.
    bystander = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    holder = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -c "import time; time.sleep(60)" & wait'],
        pass_fds=(listener.fileno(),), start_new_session=True,
    )
    try:
        assert readiness.listening_inodes(bystander.pid, port)  # same netns: it sees the port
        assert not readiness.tcp_listening_owned(bystander.pid, port)
        assert readiness.tcp_listening_owned(os.getpid(), port)
        # The holder's shell and its child both inherited the fd.
        assert readiness.tcp_listening_owned(holder.pid, port)
        assert len(readiness.tree(holder.pid)) >= 1
        listener.close()
        assert readiness.tcp_listening_owned(holder.pid, port)  # the child still holds it
    finally:
        for p in (bystander, holder):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
