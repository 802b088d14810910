"""Output from inside the container is held in bounded buffers (issue 15 item 5): a health probe
that prints an endless stream leaves the supervisor's memory where it was, and status shows the
probe's last words, truncated."""

from __future__ import annotations

from conftest import FOREVER, Rig, main_args, wait_for

SLEEP = "exec sleep 1000\n"
# ~300 MB (more than twice the supervisor's memory bound), then a last line longer than status
# keeps, then a failure.
CHATTY_PROBE = (
    'if [ "$1" = probe ]; then\n'
    "  yes 0123456789abcdef0123456789abcdef0123456789abcdef | head -c 300000000\n"
    '  echo; echo "LAST-WORDS $(yes x | head -c 300 | tr -d "\\n")"; exit 1\n'
    "fi\n" + SLEEP
)


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_an_endless_probe_output_keeps_the_supervisor_small(
    rig: Rig, container_id: str
) -> None:
    rig.service(
        "svc", CHATTY_PROBE,
        '[health]\nexec = ["run.sh", "probe"]\ninterval = "100ms"\ntimeout = "30s"\n'
        "failures = 100\n",
    )
    bundle = rig.bundle(main_args(FOREVER), env=["RETINUE_SERVICES=svc"])
    assert rig.create(container_id, bundle).returncode == 0
    assert rig.rt("start", container_id).returncode == 0
    (supervisor,) = rig.supervisor_pids(container_id)
    before = peak_rss_kib(supervisor)
    svc = wait_for(
        lambda: (s := rig.service_status(container_id, "svc"))["probe"] and s, 60, 0.2
    )
    # The supervisor read all of it and lives; its peak memory barely moved.
    assert rig.supervisor_pids(container_id) == [supervisor]
    assert svc["health"] == "unhealthy 1/100", svc
    probe = svc["probe"]
    assert probe.startswith("exited with status 1: LAST-WORDS xxx"), probe
    assert len(probe) < 200, probe
    peak = peak_rss_kib(supervisor)
    print(f"supervisor peak RSS: {before} KiB before, {peak} KiB after the probe")
    assert peak - before < 16 << 10, (before, peak)
    assert rig.rt("delete", "--force", container_id).returncode == 0
