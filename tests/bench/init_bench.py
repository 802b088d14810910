"""retinue-init benchmark (issue 9): what the container's own init costs, and how fast a stop is.

    .venv/bin/python tests/bench/init_bench.py [--rounds N] [--json FILE]

- init's cost: `runc run` (create + start + exit) of a container running `true`, plain vs the
  same container with retinue-init bind-mounted and wrapped around it (exactly the edit retinue
  makes); interleaved, median of the paired differences. Measured on runc itself so that the
  figure is init's own (exec, fork, reap, exit), not the supervisor's. Target: <= 2 ms.
- stop latency, for a container with two services (one after the other) whose main process
  exits on its own: main exit -> last service stopped -> container stopped (runc state), from
  the timestamps the main process and the services write (/proc/uptime, one clock inside and
  outside the container) and the host's polling of `runc state` (10 ms steps).
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

import retinue
from retinue import launcher, rootfs

RUNC = shutil.which("runc") or "/usr/sbin/runc"
INIT = os.path.join(os.path.dirname(retinue.__file__), "libexec", "retinue-init")
EV = 'ev() { read -r up _ < /proc/uptime; echo "$up $*" >> /shared/events; }\n'
SERVICE = (
    "#!/bin/sh\n" + EV
    + "trap 'ev \"stopped $RETINUE_SERVICE\"; exit 0' TERM\nsleep 1000 & wait\n"
)


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def bundle(work: Path, name: str, args: list[str], init: bool = False,
           env: list[str] | None = None) -> Path:
    b = work / "bundles" / name
    b.mkdir(parents=True)
    spec = rootfs.default_spec(args)
    spec["root"] = {"path": str(work / "rootfs"), "readonly": True}
    spec["mounts"].append({"destination": "/shared", "type": "bind",
                           "source": str(work / "shared"), "options": ["rbind", "rw"]})
    spec["process"]["env"] += env or []
    if init:
        spec["mounts"].append({"destination": "/.retinue/init", "type": "bind", "source": INIT,
                               "options": ["rbind", "ro", "nosuid", "nodev"]})
        spec["process"]["args"] = ["/.retinue/init", "--", *args]
    (b / "config.json").write_text(json.dumps(spec))
    return b


def run_once(work: Path, name: str, init: bool) -> float:
    b = bundle(work, name, ["true"], init=init)
    t0 = time.perf_counter()
    subprocess.run([RUNC, "--root", str(work / "root"), "run", "--bundle", str(b), name],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    took = (time.perf_counter() - t0) * 1000
    subprocess.run([RUNC, "--root", str(work / "root"), "delete", "-f", name],
                   capture_output=True)
    shutil.rmtree(b)
    return took


def stop_latency(work: Path, ctx: dict[str, Any], i: int) -> tuple[float, float]:
    cid = f"stop-{os.getpid()}-{i}"
    events = work / "shared" / "events"
    events.write_text("")
    os.chmod(events, 0o666)
    b = bundle(work, cid, ["sh", "-c", EV + "sleep 0.3; ev main-exit; exit 0"],
               env=["RETINUE_SERVICES=b"])
    shim = [ctx["shim"], "--root", str(work / "root")]
    subprocess.run([*shim, "create", "--bundle", str(b), cid], env=ctx["env"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    subprocess.run([*shim, "start", cid], env=ctx["env"], check=True)
    while True:
        out = subprocess.run([RUNC, "--root", str(work / "root"), "state", cid],
                             capture_output=True, text=True).stdout
        if '"status": "stopped"' in out:
            gone = uptime()
            break
        time.sleep(0.01)
    subprocess.run([*shim, "delete", cid], env=ctx["env"], check=True)
    times = {w: float(t) for t, _, w in
             (line.partition(" ") for line in events.read_text().splitlines())}
    main_exit = times["main-exit"]
    last = max(times["stopped a"], times["stopped b"])
    return (last - main_exit) * 1000, (gone - last) * 1000


def setup(work: Path) -> dict[str, Any]:
    rootfs.build(str(work / "rootfs"))
    (work / "shared").mkdir()
    os.chmod(work / "shared", 0o777)
    bin_dir = work / "bin"
    launcher.write(str(bin_dir), os.path.join(sys.prefix, "bin", "python3"),
                   sysconfig.get_paths()["purelib"])
    etc = work / "etc"
    (etc / "services").mkdir(parents=True)
    (etc / "config.toml").write_text(f'state_dir = "{work}/state"\nlog_dir = "{work}/log"\n')
    (etc / "policy.toml").write_text("")
    for name, extra in (("a", ""), ("b", 'requires = ["a"]\n')):
        files = work / "files" / name
        files.mkdir(parents=True)
        (files / "run.sh").write_text(SERVICE)
        (files / "run.sh").chmod(0o755)
        (etc / "services" / f"{name}.toml").write_text(
            f'files = "{files}"\ncommand = ["run.sh"]\n{extra}'
        )
    env = dict(os.environ, RETINUE_CONFIG=str(etc / "config.toml"))
    return {"shim": str(bin_dir / "retinue-runtime"), "env": env}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", dest="json_out")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retinue-init-bench-"))
    try:
        ctx = setup(work)
        plain, wrapped, deltas = [], [], []
        for i in range(ns.rounds):
            # Alternate which goes first: a shared machine's drift hits both alike.
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {init: run_once(work, f"run-{i}-{int(init)}", init) for init in order}
            plain.append(got[False])
            wrapped.append(got[True])
            deltas.append(got[True] - got[False])
        stops = [stop_latency(work, ctx, i) for i in range(max(3, ns.rounds // 4))]
    finally:
        listed = subprocess.run([RUNC, "--root", str(work / "root"), "list", "-q"],
                                capture_output=True, text=True).stdout.split()
        for cid in listed:
            subprocess.run([RUNC, "--root", str(work / "root"), "delete", "-f", cid],
                           capture_output=True)
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    added = med(deltas)
    to_last = med(s[0] for s in stops)
    to_gone = med(s[1] for s in stops)
    results = {
        "runc_run_true_ms": med(plain),
        "runc_run_true_with_init_ms": med(wrapped),
        "init_added_ms": added,
        "stop_main_exit_to_last_service_ms": to_last,
        "stop_last_service_to_container_gone_ms": to_gone,
    }
    print(f"retinue-init ({ns.rounds} rounds, medians)")
    print(f"  runc run true, plain:          {med(plain):7.1f} ms")
    print(f"  runc run true, with init:      {med(wrapped):7.1f} ms")
    print(f"  init adds (paired):            {added:7.1f} ms   target <= 2 ms: "
          f"{'PASS' if added <= 2 else 'MISS'}")
    print(f"  stop, two services in order ({len(stops)} rounds):")
    print(f"    main exit -> last service stopped: {to_last:7.1f} ms")
    print(f"    last service stopped -> container stopped: {to_gone:7.1f} ms")
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
