"""Visiting every member of a changing collection once per period, a small share at a time.

The gateway's maintenance (server heartbeats, idle checks, presence touches) must reach every
connection or session once per interval. Doing them all in one loop turn stalls every client
(measured: ~80 ms every 15 s), and even one slice a second is a burst the latency tail feels
(a second's share of touches is a burst of commands, events and pushes). A `Rotation` hands
out equal shares at a fine tick, and a tick costs only its share, not a pass over all members
(a gateway holds 10,000 connections).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["Rotation"]

K = TypeVar("K")


class Rotation(Generic[K]):
    """Each period of `ticks` ticks starts from a snapshot of `members()`; tick t of the period
    gets the t-th of `ticks` equal shares of it (sizes differ by at most one).

    A member present at the start of a period is visited exactly once in it. One that joins
    meanwhile waits for the next period (so at most two periods pass before its first visit);
    one that leaves is still in the snapshot, and the caller skips it.
    """

    def __init__(self, ticks: int, members: Callable[[], Iterable[K]]) -> None:
        self.ticks = max(1, ticks)
        self._members = members
        self._snapshot: list[K] = []
        self._tick = 0

    @property
    def period_starts(self) -> bool:
        """The next `share()` is the first of a period."""
        return self._tick == 0

    def share(self) -> list[K]:
        """This tick's members; advances to the next tick."""
        if self._tick == 0:
            self._snapshot = list(self._members())
        n, t = len(self._snapshot), self._tick
        share = self._snapshot[t * n // self.ticks:(t + 1) * n // self.ticks]
        self._tick = (t + 1) % self.ticks
        return share
