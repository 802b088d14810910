"""Sidecar benchmark (issue 11): what placement = "container" costs over "exec".

    .venv/bin/python tests/bench/sidecar_bench.py [--rounds N] [--json FILE]

- start: `create` + `start` through retinue-runtime (the gate waits for the service: ready =
  started) of a container with one service running busybox `sleep`, placed by exec (busybox in
  its files) vs as a sibling container (busybox as its image); interleaved, medians.
- memory, while it runs: what the sibling's cgroup is charged (memory.usage_in_bytes), and the
  RSS of its PID 1 (retinue-init: the process a sibling has beyond the service) and of the
  service. (File pages already cached by another container are charged to that one.)
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

from retinue.cli import launcher, rootfs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagekit

RUNC = shutil.which("runc") or "/usr/sbin/runc"


def setup(work: Path) -> dict[str, Any]:
    rootfs.build(str(work / "rootfs"))
    bin_dir = work / "bin"
    launcher.write(str(bin_dir), os.path.join(sys.prefix, "bin", "python3"),
                   sysconfig.get_paths()["purelib"])
    etc = work / "etc"
    (etc / "services").mkdir(parents=True)
    (etc / "config.toml").write_text(
        f'state_dir = "{work}/state"\nlog_dir = "{work}/log"\nimage_dir = "{work}/images"\n')
    (etc / "policy.toml").write_text("")
    files = work / "files" / "ex"
    files.mkdir(parents=True)
    shutil.copy("/bin/busybox", files / "busybox")
    (etc / "services" / "ex.toml").write_text(
        f'files = "{files}"\ncommand = ["busybox", "sleep", "1000"]\n')
    (etc / "services" / "sc.toml").write_text(
        'placement = "container"\nimage = "bb"\ncommand = ["sleep", "1000"]\n')
    layout = imagekit.oci_layout(imagekit.busybox_rootfs(work / "bb"), work / "bb-layout",
                                 ["sleep", "1000"])
    env = dict(os.environ, RETINUE_CONFIG=str(etc / "config.toml"))
    subprocess.run([os.path.join(sys.prefix, "bin", "retinue"), "image", "import", "bb",
                    str(layout)], env=env, check=True, capture_output=True)
    return {"shim": str(bin_dir / "retinue-runtime"), "env": env}


def bundle(work: Path, name: str, service: str) -> Path:
    b = work / "bundles" / name
    b.mkdir(parents=True)
    spec = rootfs.default_spec(["sleep", "1000"])
    spec["root"] = {"path": str(work / "rootfs"), "readonly": True}
    spec["process"]["env"].append(f"RETINUE_SERVICES={service}")
    (b / "config.json").write_text(json.dumps(spec))
    return b


def rss(pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def one(
    work: Path, ctx: dict[str, Any], cid: str, service: str
) -> tuple[float, tuple[int, int, int] | None]:
    b = bundle(work, cid, service)
    shim = [ctx["shim"], "--root", str(work / "root")]
    t0 = time.perf_counter()
    subprocess.run([*shim, "create", "--bundle", str(b), cid], env=ctx["env"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    subprocess.run([*shim, "start", cid], env=ctx["env"], check=True)
    took = (time.perf_counter() - t0) * 1000
    extra = None
    if service == "sc":
        state = json.loads(subprocess.run(
            [RUNC, "--root", str(work / "state" / "sidecars"), "state", f"{cid}.sc"],
            capture_output=True, text=True, check=True).stdout)
        pid = state["pid"]
        with open(f"/proc/{pid}/cgroup") as f:
            path = next(x for x in f.read().splitlines() if ":memory:" in x).split(":", 2)[2]
        usage = int(Path(f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes").read_text())
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        extra = (usage, rss(pid), rss(children[0]))
    subprocess.run([*shim, "delete", "--force", cid], env=ctx["env"], check=True)
    shutil.rmtree(b)
    return took, extra


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", dest="json_out")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retinue-sidecar-bench-"))
    try:
        ctx = setup(work)
        times: dict[str, list[float]] = {"ex": [], "sc": []}
        extras: list[tuple[int, int, int]] = []
        for i in range(ns.rounds + 1):
            order = ("ex", "sc") if i % 2 == 0 else ("sc", "ex")
            for kind in order:
                took, extra = one(work, ctx, f"b-{os.getpid()}-{i}-{kind}", kind)
                if i:  # the first round warms the caches
                    times[kind].append(took)
                    if extra is not None:
                        extras.append(extra)
        result = {
            "start_exec_ms": statistics.median(times["ex"]),
            "start_container_ms": statistics.median(times["sc"]),
            "sibling_cgroup_bytes": statistics.median(e[0] for e in extras),
            "sibling_init_rss_bytes": statistics.median(e[1] for e in extras),
            "service_rss_bytes": statistics.median(e[2] for e in extras),
        }
        print(f"create+start+ready, exec placement:      {result['start_exec_ms']:.0f} ms")
        print(f"create+start+ready, container placement: {result['start_container_ms']:.0f} ms")
        mib = 1 << 20
        print(f"sibling cgroup charged {result['sibling_cgroup_bytes'] / mib:.2f} MiB; "
              f"its init's RSS {result['sibling_init_rss_bytes'] / mib:.2f} MiB; "
              f"the service's RSS {result['service_rss_bytes'] / mib:.2f} MiB")
        if ns.json_out:
            Path(ns.json_out).write_text(json.dumps(result, indent=2))
    finally:
        subprocess.run(["umount", "-R", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
