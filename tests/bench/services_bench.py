"""Services benchmark (issue 3): the gate's own latency, parallel start, supervisor memory.

    .venv/bin/python tests/bench/services_bench.py [--rounds N] [--json FILE]

- gate latency: a required service with `started` readiness; from the moment the supervisor saw
  it ready (its `ready_since`) to the main process's first byte on its stdout pipe. This is the
  gate's own cost: the supervisor's reply, the shim's execve of the lower start, runc start.
- parallel start: `start` of a container with three independent services that each become ready
  ~0.5 s after they start (a file readiness check) vs a container with none; parallel means close
  to the slowest one (0.5 s), not the sum (1.5 s).
- supervisor RSS: VmRSS of the supervisor while the three services run.
Targets: gate ≤ 10 ms beyond readiness; three services ≈ the slowest, not the sum; RSS < 25 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from retinue import launcher, rootfs  # noqa: E402

SLOW = "#!/bin/sh\nsleep 0.5\ntouch /tmp/ready-$RETINUE_SERVICE\nexec sleep 1000\n"
IDLE = "#!/bin/sh\nexec sleep 1000\n"


def setup(work: Path) -> dict[str, Any]:
    bin_dir = work / "bin"
    launcher.write(str(bin_dir), os.path.join(sys.prefix, "bin", "python3"),
                   sysconfig.get_paths()["purelib"])
    etc = work / "etc"
    (etc / "services").mkdir(parents=True)
    (etc / "config.toml").write_text(
        f'state_dir = "{work}/state"\nlog_dir = "{work}/log"\n'
    )
    (etc / "policy.toml").write_text("")
    for name, script, ready in (
        ("idle", IDLE, ""),
        ("a", SLOW, '[ready]\nfile = "/tmp/ready-a"\ninterval = "10ms"\n'),
        ("b", SLOW, '[ready]\nfile = "/tmp/ready-b"\ninterval = "10ms"\n'),
        ("c", SLOW, '[ready]\nfile = "/tmp/ready-c"\ninterval = "10ms"\n'),
    ):
        files = work / "files" / name
        files.mkdir(parents=True)
        (files / "run.sh").write_text(script)
        (files / "run.sh").chmod(0o755)
        (etc / "services" / f"{name}.toml").write_text(
            f'files = "{files}"\ncommand = ["run.sh"]\n[stop]\ntimeout = "1s"\n{ready}'
        )
    rootfs.build(str(work / "rootfs"))
    env = dict(os.environ, RETINUE_CONFIG=str(etc / "config.toml"))
    return {"shim": str(bin_dir / "retinue-runtime"), "env": env, "work": work}


def bundle(ctx: dict[str, Any], name: str, services: str, args: list[str]) -> Path:
    b = ctx["work"] / "bundles" / name
    b.mkdir(parents=True)
    spec = rootfs.default_spec(args)
    spec["root"] = {"path": str(ctx["work"] / "rootfs"), "readonly": True}
    spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                           "options": ["mode=1777"]})
    if services:
        spec["process"]["env"].append(f"RETINUE_SERVICES={services}")
    (b / "config.json").write_text(json.dumps(spec))
    return b


def runtime(ctx: dict[str, Any], *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([ctx["shim"], "--root", str(ctx["work"] / "root"), *args],
                          env=ctx["env"], check=True, **kw)


def status(ctx: dict[str, Any], cid: str) -> dict[str, Any]:
    out = subprocess.run([str(Path(sys.prefix) / "bin" / "retinue"), "status", "--json", cid],
                         env=ctx["env"], capture_output=True, text=True, check=True).stdout
    found: list[dict[str, Any]] = json.loads(out)
    return found[0]


def gate_latency(ctx: dict[str, Any], i: int) -> float:
    cid = f"gate-{os.getpid()}-{i}"
    b = bundle(ctx, cid, "idle", ["sh", "-c", "echo x; exec sleep 1000"])
    r, w = os.pipe()
    runtime(ctx, "create", "--bundle", str(b), cid, stdout=w, stderr=subprocess.DEVNULL)
    os.close(w)
    runtime(ctx, "start", cid)
    os.read(r, 1)
    seen = time.time()
    os.close(r)
    ready = status(ctx, cid)["services"][0]["ready_since"]
    runtime(ctx, "delete", "--force", cid)
    return (seen - ready) * 1000


def start_time(ctx: dict[str, Any], i: int, services: str) -> tuple[float, float | None]:
    cid = f"par-{os.getpid()}-{services.replace(',', '') or 'none'}-{i}"
    b = bundle(ctx, cid, services, ["sleep", "1000"])
    runtime(ctx, "create", "--bundle", str(b), cid)
    t0 = time.perf_counter()
    runtime(ctx, "start", cid)
    elapsed = (time.perf_counter() - t0) * 1000
    rss = None
    if services:
        pid = status(ctx, cid)["supervisor_pid"]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    runtime(ctx, "delete", "--force", cid)
    return elapsed, rss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", dest="json_out")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retinue-svc-bench-"))
    try:
        ctx = setup(work)
        gates, none, three, rss = [], [], [], []
        for i in range(ns.rounds):
            gates.append(gate_latency(ctx, i))
            none.append(start_time(ctx, i, "")[0])
            t, r = start_time(ctx, i, "a,b,c")
            three.append(t)
            if r is not None:
                rss.append(r)
    finally:
        subprocess.run(["runc", "--root", str(work / "root"), "list", "-q"], capture_output=True)
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    results = {
        "gate_latency_ms": med(gates),
        "start_no_services_ms": med(none),
        "start_three_services_ms": med(three),
        "supervisor_rss_mb": max(rss),
    }
    print(f"services ({ns.rounds} rounds, medians)")
    print(f"  gate latency (service ready -> main's first output): {med(gates):7.1f} ms   "
          f"target <= 10 ms: {'PASS' if med(gates) <= 10 else 'MISS'}")
    print(f"  start, no services:                 {med(none):7.1f} ms")
    print(f"  start, three independent 0.5 s services: {med(three):7.1f} ms   "
          f"(sum would be >= 1500 ms; slowest is 500 ms): "
          f"{'PASS' if med(three) < 1000 else 'MISS'}")
    print(f"  supervisor RSS with three services: {max(rss):7.1f} MB (max)  "
          f"target < 25 MB: {'PASS' if max(rss) < 25 else 'MISS'}")
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
