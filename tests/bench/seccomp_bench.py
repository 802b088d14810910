"""What a notified syscall costs: the seccomp agent against the same syscall not notified.

    .venv/bin/python tests/bench/seccomp_bench.py [--calls N] [--runs R] [--json FILE]

Real runc containers (busybox-static rootfs; the host's Python, bind-mounted read-only, runs a
loop of raw syscalls through ctypes and times each call), served by the agent through the same
`retinue.seccomp.agent.serve()` the supervisor runs, in this process:

  emulate      getpgrp answered by the agent with a value (nothing else happens)
  continue     getppid answered CONTINUE: the kernel then runs it
  memory read  mkdir("/tmp"): the agent reads the path from /proc/PID/mem (ID_VALID before and
               after), then answers EEXIST
  sysinfo      the built-in `sysinfo` handler (cgroup files, struct written into the target)

each beside the same syscall in a container without a filter. Placements: the agent pinned to
CPU 0 and the container's cpuset on CPU 0 ("same CPU", the target: at most 50 us median for
emulate) or on CPU 1 ("other CPU": the cost of waking an idle vCPU dominates). Then two
containers at once, unpinned: notifications per second. Medians are the median over runs of
each run's median per call; the loop's own overhead is in the "not notified" column.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from retinue.cli import rootfs
from retinue.seccomp import agent, profile
from retinue.seccomp.api import CONTINUE, Handler, Reply, Request, value
from retinue.seccomp.handlers.sysinfo import Sysinfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "seccomp"))
from agent_thread import AgentThread

HERE = Path(__file__).resolve().parent
PROBE = HERE.parent / "seccomp" / "probe.py"
PYTHON = "/usr/bin/python3.11"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
TARGET_US = 50.0


class Emulate(Handler):
    name = "emulate"

    def handle(self, req: Request) -> Reply:
        return value(4242)


class Continue(Handler):
    name = "continue"

    def handle(self, req: Request) -> Reply:
        return CONTINUE


class ReadPath(Handler):
    name = "readpath"
    _eexist = Reply(0, -errno.EEXIST, 0)

    def handle(self, req: Request) -> Reply:
        req.read_path(0)
        return self._eexist


REGISTRY: dict[str, type[Handler]] = {
    "emulate": Emulate,
    "continue": Continue,
    "readpath": ReadPath,
    "sysinfo": Sysinfo,
}
RULES = [
    {"name": h, "syscalls": [s], "handler": h, "args": [], "settings": {}, "errno": errno.ENOSYS}
    for s, h in (
        ("getpgrp", "emulate"),
        ("getppid", "continue"),
        ("mkdir", "readpath"),
        ("sysinfo", "sysinfo"),
    )
]
CASES = [  # label, probe syscall, argument
    ("emulate (getpgrp)", "getpgrp", None),
    ("continue (getppid)", "getppid", None),
    ("memory read (mkdir)", "mkdir", "/tmp"),
    ("sysinfo (built-in)", "sysinfo", None),
]


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.root = work / "runc-root"
        self.root.mkdir()
        self.rootfs = Path(rootfs.build(str(work / "rootfs")))
        for name, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
            os.symlink(target, self.rootfs / name)
        (self.rootfs / "usr").mkdir()
        shutil.copy(PROBE, work / "probe.py")
        self.listener = str(work / "seccomp.sock")
        self.log = logging.getLogger("seccomp-bench")
        self.log.addHandler(logging.NullHandler())
        self.log.propagate = False
        self.routes = agent.Routes.from_rules(RULES, self.log, REGISTRY)
        self.agent = agent.Agent(self.routes, self.log)
        self.runner = AgentThread(self.listener, self.routes, self.log, self.agent)

    def close(self) -> None:
        self.runner.stop()

    def bundle(self, script: str, notified: bool, cpus: str | None) -> Path:
        b = self.work / f"b-{uuid.uuid4().hex[:8]}"
        b.mkdir()
        spec = rootfs.default_spec(["sh", "-c", script])
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        spec["mounts"] += [
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            },
            {
                "destination": "/usr",
                "type": "bind",
                "source": "/usr",
                "options": ["rbind", "ro", "nosuid", "nodev"],
            },
            {
                "destination": "/probe",
                "type": "bind",
                "source": str(self.work),
                "options": ["rbind", "ro", "nosuid", "nodev"],
            },
        ]
        if cpus is not None:
            spec["linux"].setdefault("resources", {})["cpu"] = {"cpus": cpus}
        if notified:
            spec = profile.apply(spec, RULES, self.listener, profile.metadata(RULES))
        (b / "config.json").write_text(json.dumps(spec))
        return b

    def start(self, script: str, notified: bool, cpus: str | None) -> subprocess.Popen[str]:
        b = self.bundle(script, notified, cpus)
        return subprocess.Popen(
            [RUNC, "--root", str(self.root), "run", "--bundle", str(b), f"bench-{b.name}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def probe_script(self, calls: int, cases: list[tuple[str, str, str | None]]) -> str:
        lines = []
        for _, syscall, arg in cases:
            n = calls // 10 if syscall == "sysinfo" else calls
            args = [syscall, str(n), *([arg] if arg else [])]
            lines.append(f"{PYTHON} -I -S /probe/probe.py loop {' '.join(args)}")
        return "; ".join(lines)

    def run(self, calls: int, notified: bool, cpus: str | None) -> list[dict[str, Any]]:
        proc = self.start(self.probe_script(calls, CASES), notified, cpus)
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"container failed: {err}")
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def concurrent(self, calls: int) -> dict[str, float]:
        script = f"{PYTHON} -I -S /probe/probe.py loop getpgrp {calls}"
        before = self.agent.stats.answered
        t0 = time.perf_counter()
        procs = [self.start(script, True, None) for _ in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        wall = time.perf_counter() - t0
        results = [json.loads(o.splitlines()[-1]) for o, _ in outs]
        busy = max(r["total_ns"] for r in results) / 1e9
        return {
            "containers": 2,
            "calls_each": calls,
            "answered": self.agent.stats.answered - before,
            "loop_seconds": busy,
            "wall_seconds": wall,
            "per_second": 2 * calls / busy,
            "median_us_each": [r["median_ns"] / 1000 for r in results],
        }


def summarize(runs: list[list[dict[str, Any]]]) -> list[dict[str, float]]:
    out = []
    for i in range(len(CASES)):
        out.append(
            {
                "median_us": statistics.median(r[i]["median_ns"] for r in runs) / 1000,
                "p90_us": statistics.median(r[i]["p90_ns"] for r in runs) / 1000,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000, help="syscalls per loop")
    parser.add_argument("--runs", type=int, default=3, help="containers per placement")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (runc)")
    cpus = sorted(os.sched_getaffinity(0))
    # The agent's threads inherit this: the notification thread runs on CPU 0.
    os.sched_setaffinity(0, {cpus[0]})
    work = Path(tempfile.mkdtemp(prefix="retinue-seccomp-bench-"))
    bench = Bench(work)
    report: dict[str, Any] = {"calls": args.calls, "runs": args.runs, "placements": {}}
    try:
        placements = [("same CPU", str(cpus[0]))]
        if len(cpus) > 1:
            placements.append(("other CPU", str(cpus[1])))
        for label, cpu in placements:
            plain = summarize([bench.run(args.calls, False, cpu) for _ in range(args.runs)])
            notified = summarize([bench.run(args.calls, True, cpu) for _ in range(args.runs)])
            report["placements"][label] = [
                {"case": c[0], "notified": n, "not_notified": p}
                for c, n, p in zip(CASES, notified, plain, strict=True)
            ]
        os.sched_setaffinity(0, set(cpus))
        report["concurrent"] = bench.concurrent(args.calls * 2)
    finally:
        bench.close()
        subprocess.run([RUNC, "--root", str(bench.root), "list", "-q"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"seccomp notification cost, µs per syscall (median of {args.runs} runs x "
        f"{args.calls} calls; p90 in brackets)"
    )
    for label, rows in report["placements"].items():
        agent_cpu = cpus[0]
        print(f"\n  agent on CPU {agent_cpu}, container {label}:")
        print(f"    {'case':<22} {'notified':>18} {'not notified':>18} {'added':>9}")
        for row in rows:
            n, p = row["notified"], row["not_notified"]
            print(
                f"    {row['case']:<22} {n['median_us']:>9.1f} [{n['p90_us']:>6.1f}]"
                f" {p['median_us']:>9.2f} [{p['p90_us']:>6.2f}]"
                f" {n['median_us'] - p['median_us']:>9.1f}"
            )
    same = report["placements"]["same CPU"][0]["notified"]["median_us"]
    verdict = "met" if same <= TARGET_US else "MISSED"
    print(
        f"\n  target: emulated syscall ≤ {TARGET_US:.0f} µs median on the same CPU: "
        f"{same:.1f} µs, {verdict}"
    )
    c = report["concurrent"]
    print(
        f"\n  two containers at once (unpinned), {c['calls_each']} emulated calls each: "
        f"{c['per_second']:,.0f} notifications/s "
        f"(medians {c['median_us_each'][0]:.1f} and {c['median_us_each'][1]:.1f} µs)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    sys.exit(main())
