"""Partition leases on Redis: `sd:{pN}:lease:<role>` (owner, with a TTL), the fencing epoch
`sd:{pN}:epoch:<role>` and the live members `sd:members:<role>` (a ZSET scored by expiry)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from infra.store import layout
from infra.store.redis.client import RedisClient, as_str
from infra.store.redis.lua import ACQUIRE, RELEASE, RENEW

__all__ = ["RedisLeases"]


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisLeases:
    """See `api.Leases`."""

    def __init__(self, client: RedisClient, partitions: int) -> None:
        self.client = client
        self.partitions = partitions

    async def acquire(self, role: str, partition: int, owner: str, ttl_ms: int) -> int | None:
        epoch = await self.client.run(
            ACQUIRE,
            [layout.lease_key(partition, role), layout.epoch_key(partition, role)],
            [owner, ttl_ms],
        )
        return None if epoch is None else int(epoch)

    async def renew(self, role: str, partition: int, owner: str, epoch: int, ttl_ms: int) -> bool:
        return (await self.renew_many(role, owner, {partition: epoch}, ttl_ms))[partition]

    async def renew_many(
        self, role: str, owner: str, epochs: Mapping[int, int], ttl_ms: int
    ) -> dict[int, bool]:
        if not epochs:
            return {}
        calls = [
            ([layout.lease_key(p, role), layout.epoch_key(p, role)], [owner, ttl_ms, e])
            for p, e in epochs.items()
        ]
        results = await self.client.run_many(RENEW, calls)
        return {p: r == 1 for p, r in zip(epochs, results, strict=True)}

    async def release(self, role: str, partition: int, owner: str) -> bool:
        return bool(await self.client.run(RELEASE, [layout.lease_key(partition, role)], [owner]))

    async def holders(self, role: str) -> dict[int, str]:
        # one GET per key (not MGET): on a cluster each partition's keys live in their own slot
        owners = await self.client.call_many(
            [("GET", layout.lease_key(p, role)) for p in range(self.partitions)]
        )
        return {p: as_str(o) for p, o in enumerate(owners) if o is not None}  # type: ignore[misc]

    async def epoch(self, role: str, partition: int) -> int:
        return int(await self.client.call("GET", layout.epoch_key(partition, role)) or 0)

    async def refused(self, role: str, partition: int) -> int:
        return int(await self.client.call("GET", layout.fenced_key(partition, role)) or 0)

    async def heartbeat(self, role: str, owner: str, ttl_ms: int) -> int:
        key = layout.members_key(role)
        now = _now_ms()
        _, _, live = await self.client.call_many(
            [
                ("ZADD", key, now + ttl_ms, owner),
                ("ZREMRANGEBYSCORE", key, "-inf", now),
                ("ZCARD", key),
            ]
        )
        return max(1, int(live))

    async def members(self, role: str) -> list[str]:
        owners = await self.client.call(
            "ZRANGEBYSCORE", layout.members_key(role), _now_ms(), "+inf"
        )
        return sorted(o.decode() for o in owners)

    async def leave(self, role: str, owner: str) -> None:
        await self.client.call("ZREM", layout.members_key(role), owner)
