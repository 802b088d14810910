"""Per-service log files on the host: size-capped with rotation, within the container's share of
the log filesystem, and never fatal to the supervisor.

`SERVICE.log` grows to `max_bytes`, then becomes `SERVICE.log.1` (older ones shift up to
`keep`). The files stay after the container is gone: they are what `retinue logs` reads.

A log filesystem is shared by every container of the node, and what fills it is the containers'
own output. So a write never raises: what cannot be written (no space, an I/O error, the
container's cap, the node's floor of free space) is dropped and counted, and the first write that
succeeds again says how much was lost, in the service's log and in supervisor.log. `LogSpace` is
one container's directory: the sum of its files is held under `log_max_container_bytes` (a
service over it first gives up its own oldest output, so one chatty service cannot push out the
others' logs), and no service output is written while the filesystem has less than
`log_min_free` free.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

MODE = 0o600  # the logs are the services' output: root's alone, as the state is
# Once below the floor, writes resume only with this much (or an eighth of the floor) above it.
FLOOR_MARGIN = 64 << 10


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f}{unit}"
    return f"{n}B"


class Drops:
    """What one writer could not write since it last could: counted, said once when writes
    succeed again."""

    __slots__ = ("bytes", "since", "total", "why", "writes")

    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0
        self.total = 0  # bytes dropped in all, for `retinue status`
        self.since = ""
        self.why = ""

    def drop(self, n: int, why: str) -> bool:
        """Count `n` bytes; True when this starts a run of drops."""
        first = self.writes == 0
        if first:
            self.since = _now()
        self.bytes += n
        self.writes += 1
        self.total += n
        self.why = why
        return first

    def summary(self, what: str) -> str:
        """The line that says what was lost."""
        return (
            f"dropped {_size(self.bytes)} of {what} in {self.writes} write(s) from {self.since} "
            f"to {_now()}: {self.why}"
        )

    def clear(self) -> None:
        """Once the summary is written."""
        self.bytes = self.writes = 0


class LogSpace:
    """One container's log directory: what its files hold together, its cap (0: none), and the
    node-wide floor of free space (bytes, or a fraction of the filesystem)."""

    def __init__(
        self, directory: str, max_bytes: int = 0, min_free: float = 0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.min_free = min_free
        # How supervisor.log hears of drops (the start of a run, and its end).
        self.say = say or _say
        self.used = _du(directory)
        self.dropped = 0
        self._below = False

    def room(self) -> int | None:
        """Bytes left under the container's cap; None without one."""
        return None if self.max_bytes <= 0 else self.max_bytes - self.used

    def below_floor(self, n: int) -> str:
        """Why `n` more bytes may not be written now (the node's floor), else ""."""
        if self.min_free <= 0:
            return ""
        # Every write: statvfs costs ~1 us, a pipe read's write ~20 us, and any caching of the
        # answer would let containers writing at the same moment go below the floor together.
        try:
            st = os.statvfs(self.dir)
        except OSError as e:
            return f"cannot check the free space of {self.dir}: {e.strerror}"
        free = st.f_bavail * st.f_frsize
        floor = (
            int(self.min_free * st.f_blocks * st.f_frsize) if self.min_free < 1
            else int(self.min_free)
        )
        # Once below, writes resume only with some room above the floor: no flapping of
        # "dropping" and "dropped" lines while the filesystem hovers at it.
        margin = max(FLOOR_MARGIN, floor // 8) if self._below else 0
        self._below = free - n < floor + margin
        if self._below:
            return (
                f"the log filesystem has {_size(free)} free, below log_min_free "
                f"({_size(floor)})"
            )
        return ""

    def wrote(self, n: int) -> None:
        self.used += n

    def freed(self, n: int) -> None:
        self.used = max(0, self.used - n)

    def status(self, logs: list[RotatingLog]) -> dict[str, Any]:
        """What `retinue status` shows: `logs` are the container's service logs."""
        why = next((log.drops.why for log in logs if log.drops.writes), None)
        return {
            "used": self.used,
            "max_bytes": self.max_bytes,
            "dropped": self.dropped,
            "writing": why is None,
            "why": why,
        }


def _say(text: str) -> None:
    print(f"{_now()} {text}", file=sys.stderr, flush=True)


def _du(directory: str) -> int:
    total = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


class RotatingLog:
    def __init__(
        self, path: str, max_bytes: int = 8 << 20, keep: int = 2, space: LogSpace | None = None
    ) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.space = space if space is not None else LogSpace(os.path.dirname(path))
        self.drops = Drops()
        self._fd = -1
        self._closed = False
        self._size = 0
        self._reopen()

    def _reopen(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, MODE)
        except OSError:
            return False
        try:
            os.fchmod(fd, MODE)  # a file an older version left open to all is narrowed
            self._size = os.fstat(fd).st_size
        except OSError:
            pass
        self._fd = fd
        return True

    def write(self, data: bytes) -> None:
        """Append `data`; what cannot be written is dropped and counted, never raised."""
        if self._closed or not data:
            return  # closed while the supervisor exits; a late pipe read has nowhere to go
        why = self.space.below_floor(len(data))
        if not why and self.drops.writes:
            why = self._resume()
        if not why:
            why = self._append_all(data)
        if why:
            self.space.dropped += len(data)
            if self.drops.drop(len(data), why):
                self.space.say(f"{self.space.dir}: {self.name}: dropping output: {why}")

    def _resume(self) -> str:
        """Writes work again: say first what was lost (that line must fit too)."""
        line = self.drops.summary("output")
        why = self._append_all(f"retinue: {_now()} {line}\n".encode())
        if not why:
            self.drops.clear()
            self.space.say(f"{self.space.dir}: {self.name}: {line}")
        return why

    def _append_all(self, data: bytes) -> str:
        """Write all of `data`, rotating as the caps require; "" once written, else why not."""
        if self._fd < 0 and not self._reopen():
            return f"cannot open {self.path}"
        if not self._fit(len(data)):
            return (
                f"the container's logs are at log_max_container_bytes "
                f"({_size(self.space.max_bytes)})"
            )
        # One pipe read can bring 64 KiB: split it so that no file grows past the cap, at a line
        # boundary when there is one.
        try:
            while data:
                # Never below 0: a file a failed rename left in place may be past the cap.
                room = max(0, self.max_bytes - self._size)
                if len(data) <= room:
                    self._append(data)
                    return ""
                cut = data.rfind(b"\n", 0, room) + 1
                if cut == 0 and self._size == 0:
                    cut = room  # a single line longer than the cap
                if cut:
                    self._append(data[:cut])
                    data = data[cut:]
                self._rotate()
                if self._fd < 0:
                    return f"cannot open {self.path} after rotating it"
        except OSError as e:
            return e.strerror or str(e)
        return ""

    def _fit(self, n: int) -> bool:
        """Make room for `n` bytes under the container's cap by giving up this service's own
        oldest output (its rotated files, then its current one); False if that is not enough."""
        while True:
            room = self.space.room()
            if room is None or room >= n:
                return True
            if not self._drop_oldest():
                return False

    def _drop_oldest(self) -> bool:
        for i in range(self.keep, 0, -1):
            older = f"{self.path}.{i}"
            try:
                size = os.stat(older).st_size
                os.unlink(older)
            except OSError:
                continue
            self.space.freed(size)
            return True
        if self._size > 0 and self._fd >= 0:
            self._rotate()  # the current file becomes .1, given up on the next round
            return self._fd >= 0
        return False

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self._size += n
            self.space.wrote(n)
            view = view[n:]

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            # The oldest goes: it no longer counts in the container's share.
            self.space.freed(os.stat(f"{self.path}.{self.keep}").st_size)
        except OSError:
            pass
        for i in range(self.keep, 0, -1):
            older = f"{self.path}.{i}"
            newer = self.path if i == 1 else f"{self.path}.{i - 1}"
            try:
                os.replace(newer, older)
            except FileNotFoundError:
                pass
            except OSError:
                break
        self._size = 0
        self._reopen()

    def tail(self, max_bytes: int = 4096) -> bytes:
        """The last bytes written (from the current file only)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
                return f.read(max_bytes)
        except OSError:
            return b""

    def close(self) -> None:
        self._closed = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class DiagnosticLog:
    """sys.stderr of the supervisor (supervisor.log): a line that cannot be written is dropped
    and counted, and said once writes succeed again. A print must never end a supervisor."""

    def __init__(self, fd: int, space: LogSpace | None = None) -> None:
        self.fd = fd
        self.space = space
        self.drops = Drops()

    def attach(self, space: LogSpace) -> None:
        self.space = space

    def write(self, text: str) -> int:
        try:
            self._line(text)
        except Exception:  # late in the interpreter's exit, anything may be gone
            pass
        return len(text)

    def _line(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        why = ""
        if self.drops.writes:
            why = self._write(f"{_now()} {self.drops.summary('supervisor.log')}\n".encode())
            if not why:
                self.drops.clear()
        why = why or self._write(data)
        if why:
            self.drops.drop(len(data), why)

    def _write(self, data: bytes) -> str:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                if self.space is not None:
                    self.space.wrote(n)
                view = view[n:]
        except OSError as e:
            return e.strerror or str(e)
        return ""

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"

    @property
    def errors(self) -> str:
        return "replace"
