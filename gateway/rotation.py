"""Visiting every member of a changing collection once per period, a small share at a time.

The gateway's maintenance (server heartbeats, idle checks, presence touches) must reach every
connection or session once per interval. Doing them all in one loop turn stalls every client
(measured: ~80 ms every 15 s), and even one slice a second is a burst the latency tail feels
(a second's share of touches is a burst of commands, events and pushes). A `Rotation` hands
out small shares at a fine tick, and a tick costs only its share, not a pass over all members
(a gateway holds 10,000 connections).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

__all__ = ["Rotation"]


class Rotation:
    """Each period of `ticks` ticks starts from a snapshot of `members()`, split into `ticks`
    buckets by a stable hash of each member; tick t of every period visits bucket t.

    So a member is visited once per period, at the same tick of every period: one period apart,
    whoever else comes and goes. One that joins mid-period is first visited in the next period
    (within two); one that leaves is still in the snapshot, and the caller skips it. Buckets are
    equal in expectation (members are ids: their hashes spread evenly).
    """

    def __init__(self, ticks: int, members: Callable[[], Iterable[str]]) -> None:
        self.ticks = max(1, ticks)
        self._members = members
        self._buckets: list[list[str]] = []
        self._tick = 0

    @property
    def period_starts(self) -> bool:
        """The next `share()` is the first of a period."""
        return self._tick == 0

    def share(self) -> list[str]:
        """This tick's members; advances to the next tick."""
        if self._tick == 0:
            self._buckets = [[] for _ in range(self.ticks)]
            for member in self._members():
                self._buckets[bucket_of(member, self.ticks)].append(member)
        share = self._buckets[self._tick]
        self._tick = (self._tick + 1) % self.ticks
        return share


def bucket_of(member: str, buckets: int) -> int:
    """The member's bucket: the same in every period (crc32, not the salted `hash`)."""
    return zlib.crc32(member.encode()) % buckets
