"""Service log files: rotation within a container's cap, drops counted and said once, modes."""

from __future__ import annotations

import os
from pathlib import Path

from retinue.supervisor.logs import DiagnosticLog, LogSpace, RotatingLog


def sizes(d: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(d.iterdir())}


def test_a_service_over_the_container_cap_gives_up_its_own_oldest_output(tmp_path: Path) -> None:
    said: list[str] = []
    space = LogSpace(str(tmp_path), max_bytes=10_000, say=said.append)
    quiet = RotatingLog(str(tmp_path / "quiet.log"), 4096, 2, space)
    chatty = RotatingLog(str(tmp_path / "chatty.log"), 4096, 2, space)
    quiet.write(b"q" * 999 + b"\n")
    for i in range(100):
        chatty.write(f"{i:04d}".encode() + b"c" * 95 + b"\n")
    assert sum(sizes(tmp_path).values()) == space.used <= 10_000
    assert (tmp_path / "quiet.log").stat().st_size == 1000
    assert (tmp_path / "chatty.log").read_bytes().endswith(b"0099" + b"c" * 95 + b"\n")
    assert chatty.drops.total == 0 and said == []
    for f in tmp_path.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600


def test_what_cannot_be_written_is_counted_and_said_once(tmp_path: Path) -> None:
    said: list[str] = []
    space = LogSpace(str(tmp_path), max_bytes=1 << 20, say=said.append)
    log = RotatingLog(str(tmp_path / "svc.log"), 4096, 1, space)
    # Another container's files take the whole share: nothing of ours is left to give up.
    space.used = 1 << 20
    log.write(b"lost 1\n")
    log.write(b"lost 2\n")
    assert log.drops.total == 14 and space.dropped == 14
    assert len(said) == 1 and "dropping output: the container's logs are at" in said[0]
    space.used = 0
    log.write(b"back\n")
    text = (tmp_path / "svc.log").read_text()
    assert text.startswith("retinue: ") and "dropped 14B of output in 2 write(s)" in text
    assert text.endswith("back\n")
    assert len(said) == 2 and "svc.log: dropped 14B of output" in said[1]
    log.write(b"more\n")
    assert len(said) == 2


def test_an_open_file_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    RotatingLog(str(path)).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_supervisor_log_never_raises(tmp_path: Path) -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        log = DiagnosticLog(fd)
        print("a line that cannot be written", file=log, flush=True)
        assert log.drops.writes == 2 and log.drops.why == "No space left on device"
    finally:
        os.close(fd)
    good = os.open(tmp_path / "supervisor.log", os.O_WRONLY | os.O_CREAT, 0o600)
    log.fd = good
    print("next", file=log, flush=True)
    os.close(good)
    text = (tmp_path / "supervisor.log").read_text()
    assert "dropped 30B of supervisor.log in 2 write(s)" in text and text.endswith("next\n")
