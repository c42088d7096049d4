"""The short chaos run inside `make test` (at most 3 minutes on 2 cores): every fault kind once
(12 faults, SIGSTOP pauses up to 2 s) under a scaled-down load, then a 1,000-connection
reconnect storm, and every invariant of the full run (`make chaos`). The seed is random and
printed: rerun a failure with `python -m tests.chaos.run --seed <seed> ...` (the report prints
the whole command line).
"""

from __future__ import annotations

import random

import pytest

from tests.chaos.faults import KINDS
from tests.chaos.run import main


@pytest.mark.timeout(300)  # about 65 s; the margin is for a machine shared with others
def test_short_chaos_run_keeps_every_invariant() -> None:
    seed = random.randrange(1, 1 << 31)
    code = main(
        [
            "--seed",
            str(seed),
            "--faults",
            str(len(KINDS)),
            "--max-pause",
            "2",
            "--sessions",
            "50",
            "--rate",
            "50",
            "--rest-sessions",
            "10",
            "--rest-rate",
            "10",
            "--read-rate",
            "10",
            "--simulators",
            "2",
            "--storm",
            "1000",
            "--storm-procs",
            "1",
        ]
    )
    assert code == 0, f"chaos seed {seed} failed: see the report above"
