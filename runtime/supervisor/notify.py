"""The sd_notify sockets of the units whose readiness is "notify", one datagram socket each.

Bound before the lower create (the shim waits for the supervisor): the container's spec
bind-mounts each socket, read-only, at its service's NOTIFY_SOCKET.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from .. import control, layout, ratelimit
from . import readiness
from .unit import Unit

NOTIFY_RATE = layout.NOTIFY_RATE  # datagrams a second per socket, when the plan does not say
NOTIFY_BATCH = 64  # datagrams read per wake-up: a full queue never starves the loop
NOTIFY_PAUSE = 0.1  # at least this long without reading a socket that went over its limit


class NotifySockets:
    def __init__(self, container_dir: str, rate: float | None, done: Callable[[], bool]) -> None:
        self.dir = container_dir
        self.rate = float(rate or NOTIFY_RATE)
        self.done = done  # once true, a paused socket is not read again
        self.socks: list[socket.socket] = []
        self._limits: dict[str, tuple[ratelimit.TokenBucket, ratelimit.DropLog]] = {}

    def open(self, units: list[Unit]) -> None:
        loop = asyncio.get_running_loop()
        for unit in units:
            if unit.spec["ready"] != "notify":
                continue
            path = os.path.join(self.dir, layout.notify_socket_file(unit.name))
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            control.via_fd(path, sock.bind)
            # The service may run as any user; the directory itself stays root-only.
            os.chmod(path, 0o666)
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self.readable, sock, unit)
            self.socks.append(sock)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.socks:
            loop.remove_reader(sock.fileno())
            sock.close()

    def readable(self, sock: socket.socket, unit: Unit) -> None:
        """Read what is queued, within the unit's token bucket. Past it, datagrams are dropped
        (counted, said in the unit's log once per window) and the socket is not read again until
        a token is due: the kernel's queue fills and the sender's sends fail or block, on the
        container's time, not ours."""
        limit = self._limits.get(unit.name)
        now = time.monotonic()
        if limit is None:
            rate = self.rate
            limit = (ratelimit.TokenBucket(rate, max(rate, 10.0), now), ratelimit.DropLog(10, now))
            self._limits[unit.name] = limit
        bucket, drops = limit
        for _ in range(NOTIFY_BATCH):
            try:
                data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            if bucket.take(now):
                self.datagram(data, ancdata, unit)
                continue
            said = drops.drop(now)
            if said is not None:
                unit.note(
                    f"notify socket: dropped {said} datagram(s) over the limit of "
                    f"{bucket.rate:g}/s ({drops.total} in all)"
                )
            loop = asyncio.get_running_loop()
            loop.remove_reader(sock.fileno())
            loop.call_later(max(bucket.wait_time(now), NOTIFY_PAUSE), self.resume, sock, unit)
            return

    def resume(self, sock: socket.socket, unit: Unit) -> None:
        if sock.fileno() != -1 and not self.done():
            asyncio.get_running_loop().add_reader(sock.fileno(), self.readable, sock, unit)

    def datagram(self, data: bytes, ancdata: list[Any], unit: Unit) -> None:
        sender = 0
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= 4:
                sender = int.from_bytes(payload[:4], "little")
        # Only the service (or its children) may say it is ready, not the container's app.
        if unit.pid is None or not readiness.is_descendant(sender, unit.pid):
            return
        if b"READY=1" in data.split(b"\n"):
            unit.notified.set()
