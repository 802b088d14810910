"""`make bench` still runs: a quick pass of its pass-through section prints its tables.

Timings are never asserted: this host is shared and noisy, and the bench reports, it does not
judge. What is checked is that every variant ran against real containers and was reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent / "bench" / "bench.py"


@pytest.mark.skipif(os.geteuid() != 0, reason="the bench creates real containers: needs root")
def test_bench_quick_passthrough(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    p = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "passthrough", "--nice", "0",
         "--json", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    for heading in ("environment", "start-up floor", "state (", "kill ID KILL", "delete ID",
                    "targets"):
        assert heading in out, out
    for variant in ("runc", "sh wrapper", "retinue, rule not matching", "retinue, empty policy"):
        assert variant in out, out
    assert "create of a Docker-sized spec" not in out  # --only passthrough

    data = json.loads(report.read_text())
    assert set(data["tables"]) == {"floor", "state", "kill", "delete"}
    for table in data["tables"].values():
        for series in table["series"].values():
            assert series["n"] > 0
    assert {t["target"].split(" (")[0] for t in data["targets"]} == {
        "pass-through state", "pass-through kill", "pass-through delete",
    }


@pytest.mark.cri
@pytest.mark.skipif(os.geteuid() != 0, reason="the bench starts a private containerd: needs root")
def test_cri_bench_quick(tmp_path: Path) -> None:
    """The CRI section of `make bench`: both handlers measured, ratios printed."""
    report = tmp_path / "cri.json"
    p = subprocess.run(
        [sys.executable, str(BENCH.parent / "cri_bench.py"), "--quick", "--json", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    if "skipped" in p.stdout:
        pytest.skip(p.stdout.strip())
    assert "retinue/runc, ratio of the medians: CRI RunPodSandbox " in p.stdout, p.stdout
    data = json.loads(report.read_text())
    for table in data.values():
        assert set(table["series"]) == {"runc", "retinue"}
        assert all(series["n"] == 3 for series in table["series"].values())


@pytest.mark.skipif(os.geteuid() != 0, reason="the bench creates real containers: needs root")
def test_init_bench_quick(tmp_path: Path) -> None:
    report = tmp_path / "init.json"
    p = subprocess.run(
        [sys.executable, str(BENCH.parent / "init_bench.py"), "--rounds", "2", "--no-docker",
         "--json", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(report.read_text())
    assert {"init_added_ms", "host_init_added_ms", "stop_main_exit_to_last_service_ms",
            "stop_last_service_to_container_gone_ms"} <= set(data)
