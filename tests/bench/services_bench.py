"""Services benchmark (issue 3): the gate's own latency, parallel start, supervisor memory.

    .venv/bin/python tests/bench/services_bench.py [--rounds N] [--json FILE]

- gate latency: a required service with `started` readiness; from the moment the supervisor saw
  it ready (its `ready_since`) to the main process's first byte on its stdout pipe. This is the
  gate's own cost: the supervisor's reply, the shim's execve of the lower start, runc start.
- parallel start: `start` of a container with three independent services that each become ready
  ~0.5 s after they start (a file readiness check) vs a container with none; parallel means close
  to the slowest one (0.5 s), not the sum (1.5 s).
- supervisor RSS: VmRSS of the supervisor while the three services run.
- supervisor cost (issue 16, what a RuntimeClass `overhead` should reserve): read from the
  supervisor's own cgroup (`<container cgroup>.retinue`: cpuacct/memory on v1, cpu.stat and
  memory.current/peak on v2), which holds the supervisor and the `runc exec` it runs per service
  start: CPU ms to come up (create), CPU ms to start three services (start), CPU while idle
  with them running (millicores over IDLE_SECONDS), and its memory (peak, and once idle).
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

from retinue.cli import launcher, rootfs  # noqa: E402

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


IDLE_SECONDS = 3.0


def supervisor_cgroup(pid: int) -> dict[str, str]:
    """'cpu' and 'memory' -> the directory of the supervisor's cgroup (v1, else v2)."""
    paths: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    if os.path.exists("/sys/fs/cgroup/cpuacct/cpuacct.usage"):
        return {"cpu": f"/sys/fs/cgroup/cpuacct{paths['cpuacct']}",
                "memory": f"/sys/fs/cgroup/memory{paths['memory']}"}
    if os.path.exists("/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage"):
        return {"cpu": f"/sys/fs/cgroup/cpu,cpuacct{paths['cpuacct']}",
                "memory": f"/sys/fs/cgroup/memory{paths['memory']}"}
    return {"cpu": f"/sys/fs/cgroup{paths['']}", "memory": f"/sys/fs/cgroup{paths['']}"}


def cpu_ms(cg: dict[str, str]) -> float:
    usage = Path(cg["cpu"]) / "cpuacct.usage"
    if usage.exists():
        return int(usage.read_text()) / 1e6
    for line in (Path(cg["cpu"]) / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e3
    raise RuntimeError(f"no CPU usage in {cg['cpu']}")


def memory_mb(cg: dict[str, str], peak: bool) -> float:
    d = Path(cg["memory"])
    names = (["memory.max_usage_in_bytes", "memory.peak"] if peak
             else ["memory.usage_in_bytes", "memory.current"])
    for name in names:
        if (d / name).exists():
            return int((d / name).read_text()) / (1 << 20)
    return float("nan")


def supervisor_cost(ctx: dict[str, Any], i: int) -> dict[str, float]:
    """One container with three services: what its supervisor's cgroup was charged."""
    cid = f"cost-{os.getpid()}-{i}"
    b = bundle(ctx, cid, "a,b,c", ["sleep", "1000"])
    runtime(ctx, "create", "--bundle", str(b), cid)
    try:
        cg = supervisor_cgroup(status(ctx, cid)["supervisor_pid"])
        created = cpu_ms(cg)
        runtime(ctx, "start", cid)
        started = cpu_ms(cg)
        peak = memory_mb(cg, peak=True)
        time.sleep(0.5)  # the services' last `runc exec` children are reaped
        before = cpu_ms(cg)
        time.sleep(IDLE_SECONDS)
        idle = (cpu_ms(cg) - before) / IDLE_SECONDS  # ms per s = millicores
        return {"create_cpu_ms": created, "start_cpu_ms": started - created,
                "idle_millicores": idle, "peak_mb": peak, "idle_mb": memory_mb(cg, peak=False)}
    finally:
        runtime(ctx, "delete", "--force", cid)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--cost-rounds", type=int, default=5)
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
        costs = [supervisor_cost(ctx, i) for i in range(ns.cost_rounds)]
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
        **{f"supervisor_{k}": med([c[k] for c in costs]) for k in costs[0]},
        "supervisor_peak_mb_max": max(c["peak_mb"] for c in costs),
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
    print(f"supervisor cost, from its own cgroup ({ns.cost_rounds} containers with three "
          "services, medians)")
    print(f"  CPU to come up (create):            {results['supervisor_create_cpu_ms']:7.1f} ms")
    print(f"  CPU to start three services:        {results['supervisor_start_cpu_ms']:7.1f} ms")
    print(f"  CPU while idle, services running:   "
          f"{results['supervisor_idle_millicores']:7.2f} millicores")
    print(f"  memory: peak {results['supervisor_peak_mb']:.1f} MiB "
          f"(max {results['supervisor_peak_mb_max']:.1f}), idle "
          f"{results['supervisor_idle_mb']:.1f} MiB")
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
