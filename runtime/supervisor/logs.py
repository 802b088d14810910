"""Per-service log files on the host, size-capped with rotation.

`SERVICE.log` grows to `max_bytes`, then becomes `SERVICE.log.1` (older ones shift up to
`keep`). The files stay after the container is gone: they are what `retinue logs` reads.
"""

from __future__ import annotations

import os


class RotatingLog:
    def __init__(self, path: str, max_bytes: int = 8 << 20, keep: int = 2) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            return  # closed while the supervisor exits; a late pipe read has nowhere to go
        # One pipe read can bring 64 KiB: split it so that no file grows past the cap, at a line
        # boundary when there is one.
        while data:
            room = self.max_bytes - self._size
            if len(data) <= room:
                self._append(data)
                return
            cut = data.rfind(b"\n", 0, room) + 1
            if cut == 0 and self._size == 0:
                cut = room  # a single line longer than the cap
            if cut:
                self._append(data[:cut])
                data = data[cut:]
            self._rotate()

    def _append(self, data: bytes) -> None:
        os.write(self._fd, data)
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        for i in range(self.keep, 0, -1):
            older = f"{self.path}.{i}"
            newer = self.path if i == 1 else f"{self.path}.{i - 1}"
            if os.path.exists(newer):
                os.replace(newer, older)
        self._fd = self._open()
        self._size = 0

    def tail(self, max_bytes: int = 4096) -> bytes:
        """The last bytes written (from the current file only)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
                return f.read()
        except OSError:
            return b""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
