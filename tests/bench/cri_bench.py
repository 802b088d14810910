"""CRI benchmark (issue 8): what the `retinue` runtime handler costs a pod next to `runc`.

    .venv/bin/python tests/bench/cri_bench.py [--rounds N] [--quick] [--json FILE]

A private containerd 1.6 with its CRI plugin (tests/engines.py) and handlers `runc` and
`retinue` (retinue-runtime, its policy has a rule that selects nothing here: the installed,
nothing-attached case). Our own CRI client (tests/cri) drives it as the kubelet does; per round
and per handler, in rotating order:
  RunPodSandbox                      the pause container's create + start through the handler
  CreateContainer + StartContainer   one app container (`sleep`) in that pod
then, untimed, StopPodSandbox + RemovePodSandbox. Wall-time medians, p90, min, and the ratio
of the medians to runc's. Pods run on the node's network (no CNI), so the times are the
runtime's and containerd's, not a network plugin's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import engines  # noqa: E402
from cri.client import CRI  # noqa: E402
from measure import Sample, Table, rotation  # noqa: E402
from retinue.cli import launcher, rootfs  # noqa: E402
from retinue.config import cache as confcache  # noqa: E402

HANDLERS = ("runc", "retinue")
POLICY = (
    '[[attach]]\nname = "unused"\nwhen.env = { RETINUE_BENCH_NEVER = "1" }\nenv = { X = "1" }\n'
)


def _trace(script: Path, trace: str) -> None:
    """Log each call and, when it starts Python, that too (the launcher's `slow`)."""
    text = script.read_text()
    log = f'printf "%s %s\\n" "$1" "$*" >> {shlex.quote(trace)}'
    text = text.replace("slow() {\n", "slow() {\n\t" + log.replace('"$1"', "python") + "\n", 1)
    text = text.replace("\nexec \"$lower\" \"$@\"\n", "\n" + log.replace('"$1"', "sh") +
                        '\nexec "$lower" "$@"\n')
    text = text.replace('\texec "$lower" "$@"\n}', "\t" + log.replace('"$1"', "sh-record") +
                        '\n\texec "$lower" "$@"\n}')
    text = text.replace('create_passes "$bundle/config.json" && exec', 'create_passes '
                        '"$bundle/config.json" && ' + log.replace('"$1"', "sh-create") + ' && exec')
    script.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    ap.add_argument("--json", metavar="FILE", help="write the tables here")
    ap.add_argument("--trace", metavar="FILE",
                    help="append every runtime call containerd makes through retinue to FILE, "
                         "`sh` or `python` first: which path each took (costs a printf each)")
    ns = ap.parse_args(argv)
    rounds = 3 if ns.quick else ns.rounds
    reason = engines.available(engines.CONTAINERD, engines.CTR, engines.RUNC)
    if os.geteuid() != 0 or reason:
        print(f"cri_bench.py: skipped: {reason or 'needs root'}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="rt-cri-", dir="/tmp"))
    etc = work / "etc"
    (etc / "services").mkdir(parents=True)
    (etc / "policy.toml").write_text(POLICY)
    config = etc / "config.toml"
    config.write_text(f'state_dir = "{work}/state"\nlog_dir = "{work}/log"\n')
    bin_dir = work / "bin"
    launcher.write(str(bin_dir), os.path.join(sys.prefix, "bin", "python3"),
                   sysconfig.get_paths()["purelib"])
    if ns.trace:
        _trace(bin_dir / "retinue-runtime", ns.trace)
    tree = Path(rootfs.build(str(work / "rootfs")))
    pods = Table("CRI RunPodSandbox (pause container, node network)", "runc")
    starts = Table("CRI CreateContainer + StartContainer (one app container)", "runc")
    started = time.monotonic()
    try:
        with engines.cri_containerd(
            work / "n", tree, {"runc": None, "retinue": str(bin_dir / "retinue-runtime")},
            env={"RETINUE_CONFIG": str(config)},
        ) as ctd:
            cri = CRI(ctd.address)
            try:
                cri.wait_ready()
                count = 0

                def one(handler: str, record: bool) -> None:
                    nonlocal count
                    count += 1
                    name = f"b{count}"
                    cfg = cri.pod_config(name, cgroup_parent=f"{ctd.cgroup_parent}/{name}",
                                         log_dir=work / "pods" / name)
                    t0 = time.perf_counter()
                    pod = cri.run_pod(cfg, handler)
                    t1 = time.perf_counter()
                    cid = cri.create(pod, cri.container_config(
                        "app", engines.APP_IMAGE, ["sleep", "1000"]), cfg)
                    cri.start(cid)
                    t2 = time.perf_counter()
                    cri.stop_pod(pod)
                    cri.remove_pod(pod)
                    if record:
                        pods.add(handler, Sample((t1 - t0) * 1000, None))
                        starts.add(handler, Sample((t2 - t1) * 1000, None))

                for w in range(2):  # warm-up: images unpacked, caches filled
                    for handler in rotation(HANDLERS, w):
                        one(handler, False)
                for r in range(rounds):
                    for handler in rotation(HANDLERS, r):
                        one(handler, True)
            finally:
                cri.close()
    finally:
        for cached in confcache.cache_files(str(config)):
            try:
                os.unlink(cached)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
    for table in (pods, starts):
        print(table.render())
        print()
    ratios = [f"{t.title.split(' (')[0]} {t.get('retinue').median / t.get('runc').median:.2f}"
              for t in (pods, starts)]
    print(f"retinue/runc, ratio of the medians: {'; '.join(ratios)}")
    print(f"total {time.monotonic() - started:.0f} s")
    if ns.json:
        Path(ns.json).write_text(json.dumps(
            {"pods": pods.to_json(), "starts": starts.to_json()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
