"""The fault schedule: drawn from a seed, so a rerun with the same seed injects the same faults in
the same order on the same targets with the same pauses and gaps.

Every kind appears once per round of `KINDS` (shuffled per round), so 100 faults hit each of the
12 kinds 8 or 9 times: kill -9 and SIGSTOP/SIGCONT of each process kind, kill -9 of Valkey and of
PostgreSQL (restarted by `sessiond dev`). Killing a gateway moves its clients to the other one.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass

from tests.chaos.cluster import PROCESSES, DevCluster

__all__ = ["KINDS", "Fault", "inject", "plan", "resume"]

KINDS: tuple[str, ...] = (
    *(f"kill:{k}" for k in PROCESSES),
    *(f"stop:{k}" for k in PROCESSES),
    "kill:valkey-server",
    "kill:postgres",
)


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str  # "kill:worker", "stop:gateway", "kill:postgres", ...
    target: str  # the Procfile name or the server
    pause_s: float  # SIGSTOP faults: how long the process stays stopped
    gap_s: float  # quiet time after recovery, before the next fault

    def __str__(self) -> str:
        pause = f" for {self.pause_s:.1f} s" if self.kind.startswith("stop:") else ""
        return f"#{self.index} {self.kind} {self.target}{pause}"


def plan(seed: int, count: int, *, max_pause_s: float = 5.0) -> list[Fault]:
    rng = random.Random(seed)
    kinds: list[str] = []
    while len(kinds) < count:
        round_ = list(KINDS)
        rng.shuffle(round_)
        kinds += round_
    faults = []
    for i, kind in enumerate(kinds[:count]):
        what = kind.split(":", 1)[1]
        target = rng.choice(PROCESSES[what]) if what in PROCESSES else what
        faults.append(
            Fault(
                i,
                kind,
                target,
                round(rng.uniform(0.5, max_pause_s), 2),
                round(rng.uniform(0.3, 2.0), 2),
            )
        )
    return faults


def inject(cluster: DevCluster, fault: Fault) -> int:
    """Send the fault's signal to its target's current pid; return that pid."""
    sig = signal.SIGSTOP if fault.kind.startswith("stop:") else signal.SIGKILL
    deadline = time.monotonic() + 30
    while True:  # the recorded pid may have just exited (being restarted): ask again
        pid = cluster.pid(fault.target)
        if pid is not None:
            try:
                os.kill(pid, sig)
                return pid
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{fault.target} is not running: {cluster.info()}")
        time.sleep(0.2)


def resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
