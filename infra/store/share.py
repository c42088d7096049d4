"""A process's fair share of a role's partition leases, on any `Leases` (backend-neutral).

Workers and projectors balance the same way: every process heartbeats as a member of its role,
aims for ceil(P / live members) partitions, renews what it holds, takes free partitions up to
that share and gives back its surplus. `LeaseShare.tick` does one such round and reports what
changed; giving back the surplus is left to the caller (`release`), which may first let the
partition's work finish.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from typing import NamedTuple

from infra.store.api import Leases

__all__ = ["LeaseShare", "ShareRound", "fair_share"]


def fair_share(partitions: int, live: int) -> int:
    """How many partitions each of `live` members should hold."""
    return math.ceil(partitions / max(1, live))


class ShareRound(NamedTuple):
    """What one `LeaseShare.tick` found and did."""

    started: float  # time.monotonic() before the renewals were sent: a renewed lease is
    #                 valid for at least its TTL from then
    live: int  # live members of the role, this one included
    target: int  # the fair share
    gained: dict[int, int]  # partitions acquired in this round -> their epoch
    lost: set[int]  # partitions whose renewal failed: no longer ours, stop writing
    surplus: list[int]  # partitions held beyond the share: give them back (`release`)


class LeaseShare:
    """The leases one owner holds for a role (`held`: partition -> epoch)."""

    def __init__(self, leases: Leases, role: str, owner: str, partitions: int, ttl_ms: int) -> None:
        self.leases = leases
        self.role = role
        self.owner = owner
        self.partitions = partitions
        self.ttl_ms = ttl_ms
        self.held: dict[int, int] = {}

    async def tick(self, *, acquire: bool = True) -> ShareRound:
        """Heartbeat and renew (one round trip), then, unless `acquire` is False (stopping),
        take free partitions up to the fair share. Raises `StoreUnavailable`."""
        started = time.monotonic()
        leases, role = self.leases, self.role
        live, renewed = await asyncio.gather(
            leases.heartbeat(role, self.owner, self.ttl_ms),
            leases.renew_many(role, self.owner, dict(self.held), self.ttl_ms),
        )
        lost = {p for p, ok in renewed.items() if not ok}
        for p in lost:
            self.held.pop(p, None)
        target = fair_share(self.partitions, live)
        surplus = sorted(self.held)[target:] if len(self.held) > target else []
        gained: dict[int, int] = {}
        if acquire and len(self.held) < target:
            gained = await self._acquire_up_to(target)
        return ShareRound(started, live, target, gained, lost, surplus)

    async def _acquire_up_to(self, target: int) -> dict[int, int]:
        holders = await self.leases.holders(self.role)
        free = [p for p in range(self.partitions) if p not in holders and p not in self.held]
        gained: dict[int, int] = {}
        if not free:
            return gained
        # owners start at different free partitions, so that they rarely race for the same one
        shift = zlib.crc32(self.owner.encode()) % len(free)
        for p in free[shift:] + free[:shift]:
            if len(self.held) >= target:
                break
            epoch = await self.leases.acquire(self.role, p, self.owner, self.ttl_ms)
            if epoch is not None:
                self.held[p] = gained[p] = epoch
        return gained

    def forget(self, partition: int) -> None:
        """Stop tracking a partition whose lease is no longer ours (lost, or fenced)."""
        self.held.pop(partition, None)

    async def release(self, partition: int) -> None:
        """Give one lease back (the partition's work must have stopped)."""
        self.held.pop(partition, None)
        await self.leases.release(self.role, partition, self.owner)

    async def release_all(self) -> None:
        """Give every lease back and leave the role's members (a graceful stop)."""
        for p in list(self.held):
            await self.release(p)
        await self.leases.leave(self.role, self.owner)
