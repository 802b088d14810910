"""Timing one command at a time, interleaved across variants, and the statistics we report.

Commands are started with posix_spawn (vfork in glibc), which costs the same for every variant, so
differences between variants are the variants' own. Rounds run the variants in a rotating order
(ABC, BCA, CAB, ...): a burst of noise from the other work on this host lands on all of them, and
none of them always runs right after another one.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

DEVNULL_FD = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
# Every timed command's stderr, appended here, so a failure can say why without a re-run.
_ERR_FD_PATH = tempfile.mkstemp(prefix="retinue-bench-stderr-")
ERR_FD = _ERR_FD_PATH[0]
os.unlink(_ERR_FD_PATH[1])


class CommandFailed(RuntimeError):
    pass


def spawn_wait(
    argv: Sequence[str], env: dict[str, str], stderr_fd: int = DEVNULL_FD
) -> tuple[int, float]:
    """Run argv with stdin and stdout on /dev/null: its exit code (negative: a signal) and the CPU
    time (user + system, ms) of the process and of every child it waited for."""
    actions = [
        (os.POSIX_SPAWN_DUP2, DEVNULL_FD, 0),
        (os.POSIX_SPAWN_DUP2, DEVNULL_FD, 1),
        (os.POSIX_SPAWN_DUP2, stderr_fd, 2),
    ]
    pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), (usage.ru_utime + usage.ru_stime) * 1e3


class Sample(NamedTuple):
    wall: float  # ms
    cpu: float | None  # ms; None where it would not mean anything (a client of a daemon)


def timed(argv: Sequence[str], env: dict[str, str]) -> Sample:
    """One run; raises CommandFailed with its stderr on failure."""
    start = os.lseek(ERR_FD, 0, os.SEEK_END)
    t0 = time.perf_counter_ns()
    code, cpu = spawn_wait(argv, env, ERR_FD)
    elapsed = (time.perf_counter_ns() - t0) / 1e6
    if code != 0:
        end = os.lseek(ERR_FD, 0, os.SEEK_END)
        err = os.pread(ERR_FD, min(end - start, 4096), start).decode(errors="replace").strip()
        raise CommandFailed(f"exit {code}: {' '.join(argv)}: {err}")
    return Sample(elapsed, cpu)


def run_checked(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    """An untimed helper call; its stdout, or an error with its stderr."""
    p = subprocess.run(list(argv), env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise CommandFailed(f"exit {p.returncode}: {' '.join(argv)}: {p.stderr.strip()}")
    return p.stdout


def run_detached(argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    """An untimed `create`: the container's init keeps runc's stdio open, so no pipes."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=err)
        if p.returncode != 0:
            err.seek(0)
            msg = err.read().decode(errors="replace").strip()
            raise CommandFailed(f"exit {p.returncode}: {' '.join(argv)}: {msg}")


MAX_FAILURES = 5


def rotation(names: Sequence[str], round_no: int) -> list[str]:
    k = round_no % len(names)
    return [*names[k:], *names[:k]]


@dataclass
class Series:
    """The samples of one variant of one measurement, in milliseconds, in round order."""

    name: str
    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def p90(self) -> float:
        return percentile(self.samples, 90)

    @property
    def minimum(self) -> float:
        return min(self.samples) if self.samples else math.nan

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else math.nan


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: a value that was actually measured."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def paired_delta(a: Series, base: Series) -> float:
    """Median of the per-round differences: robust to noise that hits a whole round."""
    diffs = [x - y for x, y in zip(a.samples, base.samples, strict=False)]
    return statistics.median(diffs) if diffs else math.nan


@dataclass
class Table:
    """One measurement: its variants' series, the baseline they are compared with."""

    title: str
    baseline: str
    series: dict[str, Series] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, name: str, sample: Sample) -> None:
        series = self.series.setdefault(name, Series(name))
        series.samples.append(sample.wall)
        if sample.cpu is not None:
            series.cpu.append(sample.cpu)

    def failed(self, name: str, error: CommandFailed) -> None:
        """Drop one failed call (another engineer reinstalling the package, say), up to a point."""
        self.errors.append(f"{name}: {error}")
        if len(self.errors) > MAX_FAILURES:
            raise CommandFailed(f"{self.title}: too many failed calls:\n" + "\n".join(self.errors))

    def get(self, name: str) -> Series:
        return self.series[name]

    def delta(self, name: str, base: str | None = None) -> float:
        return self.get(name).median - self.get(base or self.baseline).median

    def render(self) -> str:
        base = self.series.get(self.baseline)
        width = max([len(n) for n in self.series] + [7])
        n = max((len(s.samples) for s in self.series.values()), default=0)
        cpu = any(s.cpu for s in self.series.values())
        lines = [
            f"{self.title}  (n={n} each, interleaved; ms)",
            f"  {'variant':<{width}}  {'median':>7}  {'p90':>7}  {'min':>7}"
            f"  {'Δ median':>8}  {'Δ paired':>8}  {'ratio':>5}"
            + (f"  {'cpu med':>7}  {'Δ cpu':>6}" if cpu else ""),
        ]
        for s in self.series.values():
            row = f"  {s.name:<{width}}  {s.median:>7.2f}  {s.p90:>7.2f}  {s.minimum:>7.2f}"
            if base is not None and s is not base:
                row += (
                    f"  {s.median - base.median:>+8.2f}  {paired_delta(s, base):>+8.2f}"
                    f"  {s.median / base.median:>5.2f}"
                )
            elif cpu:
                row += " " * 29
            if cpu:
                row += f"  {s.cpu_median:>7.2f}"
                if base is not None and s is not base:
                    row += f"  {s.cpu_median - base.cpu_median:>+6.2f}"
            lines.append(row)
        lines.extend(f"  {note}" for note in self.notes)
        if self.errors:
            lines.append(f"  {len(self.errors)} failed call(s) dropped; first: {self.errors[0]}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "title": self.title,
            "baseline": self.baseline,
            "notes": self.notes,
            "failed_calls": self.errors,
            "series": {
                name: {
                    "median_ms": s.median,
                    "p90_ms": s.p90,
                    "min_ms": s.minimum,
                    "n": len(s.samples),
                    "cpu_median_ms": s.cpu_median if s.cpu else None,
                    "samples_ms": [round(x, 3) for x in s.samples],
                    "cpu_samples_ms": [round(x, 3) for x in s.cpu],
                }
                for name, s in self.series.items()
            },
        }


def interleave(
    table: Table,
    rounds: int,
    variants: dict[str, Callable[[], Sample]],
    warmup: int = 2,
) -> Table:
    """Run every variant once per round in rotating order; each callable returns its Sample."""
    names = list(variants)
    for w in range(warmup):
        for name in rotation(names, w):
            variants[name]()
    for r in range(rounds):
        for name in rotation(names, r):
            try:
                table.add(name, variants[name]())
            except CommandFailed as e:
                table.failed(name, e)
    return table


def smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup in kB: Rss, Pss, and Uss (Private_Clean + Private_Dirty), the
    memory that goes away with the process; RSS also counts pages shared with every other
    Python process."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields = rest.split()
            if len(fields) == 2 and fields[1] == "kB":
                out[key] = int(fields[0])
    out["Uss"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def pids_with_arg(arg: str) -> list[int]:
    """Processes one of whose argv words is exactly `arg`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
        except OSError:
            continue
        if arg.encode() in words:
            found.append(int(name))
    return found
