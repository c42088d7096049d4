"""What the benchmarks read of the machine: a process's CPU from `/proc/<pid>/stat`, the whole
machine's counters (busy, the host's steal, CPU pressure), and the `RESULT` line that carries a
figure with the machine's pressure beside it.

On these shared 2-core virtual machines the same work costs a different amount from one minute
to the next, so every figure is printed with the steal and pressure of the interval it was
measured in: a ratio against a baseline of the same run, measured under 40% steal, says little.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec

__all__ = ["MachineSample", "Pressure", "proc_cpu_seconds", "result", "tree"]

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of `pids` (all their threads), from `/proc/<pid>/stat`; a
    process gone meanwhile counts as zero."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICK


def tree(pid: int) -> list[int]:
    """`pid` and its direct children (PostgreSQL's postmaster and its backends)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [pid, *kids]


class Pressure(msgspec.Struct, frozen=True):
    """The machine over an interval: % busy (of 100 x cores), % steal, % of the time some task
    waited for a CPU (PSI `some`; None where the kernel has no PSI)."""

    busy: float
    steal: float
    psi: float | None

    def __str__(self) -> str:
        psi = "n/a" if self.psi is None else f"{self.psi:.0f}%"
        return f"steal={self.steal:.0f}% psi={psi} busy={self.busy:.0f}%"


class MachineSample(msgspec.Struct, frozen=True):
    """The whole machine's CPU counters at one moment: what the host charged for a run, beside
    what our processes' own accounting says (the two differ by kernel work on their behalf,
    and on these shared virtual CPUs the same work costs a different amount from one minute
    to the next)."""

    at: float
    ticks: tuple[int, ...]  # /proc/stat "cpu": user nice system idle iowait irq softirq steal
    pressure_us: int | None  # /proc/pressure/cpu "some" total: time some task waited for a CPU

    @classmethod
    def now(cls) -> MachineSample:
        ticks = tuple(int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
        try:
            some = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
            pressure: int | None = int(some.rsplit("total=", 1)[1])
        except (OSError, IndexError, ValueError):
            pressure = None
        return cls(time.monotonic(), ticks, pressure)

    def pressure(self, start: MachineSample) -> Pressure:
        d = [b - a for a, b in zip(start.ticks, self.ticks, strict=True)]
        total = sum(d) or 1
        busy = total - d[3] - d[4]
        psi = None
        if self.pressure_us is not None and start.pressure_us is not None:
            psi = 100 * (self.pressure_us - start.pressure_us) / 1e6 / (self.at - start.at)
        return Pressure(100 * (os.cpu_count() or 1) * busy / total, 100 * d[7] / total, psi)

    def since(self, start: MachineSample) -> str:
        p = self.pressure(start)
        line = (
            f"the whole machine (/proc/stat) {p.busy:.0f}% busy of "
            f"{100 * (os.cpu_count() or 1)}%, steal {p.steal:.0f}%"
        )
        if p.psi is not None:
            line += f"; some task waiting for a CPU {p.psi:.0f}% of the time (PSI)"
        return line


def result(name: str, value: float | int | str, pressure: Pressure | None, note: str = "") -> None:
    """One figure of issue 19 on a line of its own: `RESULT <name> <value>  <pressure>  <note>`
    (`grep ^RESULT` collects a run's figures)."""
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    print(f"RESULT {name} {text}  {pressure or ''}  {note}".rstrip(), flush=True)
