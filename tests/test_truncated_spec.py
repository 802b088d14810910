"""A config.json cut off anywhere is a clear error naming the file, never an internal error.

Docker's own config.json (tests/data) is cut at every byte offset and parsed in-process; a sample
of the offsets goes through the real shim in a fresh interpreter each time (where the JSON parser
runs before the json module was ever imported: that is where `{bad` once gave a SystemError),
with a rule in the policy and without one (then runc itself reads the file and answers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from retinue.errors import SpecError
from retinue.spec import bundle

RUNC = shutil.which("runc") or "/usr/sbin/runc"
DOCKER_CONFIG = Path(__file__).resolve().parent / "data" / "docker-config.json"
ConfigFactory = Callable[..., Path]
TIMEOUT = 60
RAW = DOCKER_CONFIG.read_bytes()
SAMPLE = sorted({1, 2, 3, *range(5, len(RAW) - 1, len(RAW) // 27), len(RAW) - 1})
CASES = [(end, "rule") for end in SAMPLE] + [(end, "none") for end in SAMPLE[::3]]


def test_every_truncation_is_a_clear_error() -> None:
    path = "/bundle/config.json"
    assert bundle.parse(path, RAW)["ociVersion"]
    for end in range(len(RAW)):
        cut = RAW[:end]
        try:
            bundle.parse(path, cut)
        except SpecError as e:
            message = str(e)
        else:
            pytest.fail(f"a config.json cut at byte {end} was accepted")
        assert message.startswith(f"{path}: not valid JSON: "), (end, message)
        assert "\n" not in message


@pytest.mark.parametrize(("end", "policy"), CASES)
def test_truncated_through_the_shim(
    end: int, policy: str, shim: str, make_config: ConfigFactory, runc_root: str,
    container_id: str, tmp_path: Path,
) -> None:
    make_config('[[attach]]\nname = "a"\nwhen.always = true\n' if policy == "rule" else "")
    b = tmp_path / "bundle"
    b.mkdir()
    config = b / "config.json"
    config.write_bytes(RAW[:end])
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    results = []
    for exe in (shim, RUNC) if policy == "none" else (shim,):
        log = tmp_path / f"{Path(exe).name}.log"
        proc = subprocess.run(
            [exe, "--root", runc_root, "--log", str(log), "--log-format", "json", "create",
             "--bundle", str(b), container_id],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT,
        )
        msgs = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
        results.append((proc.returncode, proc.stdout, proc.stderr, msgs))
        assert proc.returncode != 0 and proc.stdout == ""
        assert "internal error" not in proc.stderr
    if policy == "rule":
        _, _, stderr, msgs = results[0]
        assert stderr.startswith(f"retinue: {config}: not valid JSON: "), stderr
        assert stderr.count("\n") == 1 and msgs == [stderr[:-1]]
    else:
        assert results[0] == results[1]  # runc's own answer, exactly
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before
    assert os.listdir(b) == ["config.json"]
    assert os.listdir(runc_root) == []
