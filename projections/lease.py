"""Partition leases for projectors (role "projector"), with fencing epochs.

`sd:{pN}:lease:projector` holds the owner's id with a TTL; every acquisition bumps
`sd:{pN}:epoch:projector`, the fencing token the projector writes with its checkpoint. A lease
only says who *should* write; the checkpoint's `WHERE epoch <= $epoch` is what refuses a stale
owner (paused past its TTL) at the sink.

Balance: live projectors announce themselves in `sd:projectors` (a ZSET scored by expiry);
each one aims for ceil(P / live) partitions, takes free ones up to that and gives back extras.
"""

from __future__ import annotations

import math

from redis.asyncio import Redis

from infra.store.layout import epoch_key, lease_key

__all__ = ["MEMBERS_KEY", "ROLE", "LeaseKeeper"]

ROLE = "projector"
MEMBERS_KEY = "sd:projectors"

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseKeeper:
    """Acquires, renews and releases this projector's partition leases."""

    def __init__(self, redis: Redis, owner: str, partitions: int, ttl_ms: int) -> None:
        self.redis = redis
        self.owner = owner
        self.partitions = partitions
        self.ttl_ms = ttl_ms
        self.held: dict[int, int] = {}  # partition -> epoch
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def _target(self, now_ms: int) -> int:
        await self.redis.zadd(MEMBERS_KEY, {self.owner: now_ms + self.ttl_ms})
        await self.redis.zremrangebyscore(MEMBERS_KEY, "-inf", now_ms)
        live = max(1, await self.redis.zcard(MEMBERS_KEY))
        return math.ceil(self.partitions / live)

    async def tick(self, now_ms: int) -> tuple[dict[int, int], set[int]]:
        """Renew held leases, take free ones up to the fair share, give back extras.

        Returns (newly acquired partition -> epoch, lost partitions).
        """
        lost: set[int] = set()
        for p in list(self.held):
            epoch = await self._renew(keys=[lease_key(p, ROLE), epoch_key(p, ROLE)],
                                      args=[self.owner, self.ttl_ms])
            if not epoch or int(epoch) != self.held[p]:
                lost.add(p)
                del self.held[p]
        target = await self._target(now_ms)
        while len(self.held) > target:
            p = max(self.held)
            await self.release(p)
            lost.add(p)
        gained: dict[int, int] = {}
        if len(self.held) < target:
            start = hash(self.owner) % self.partitions
            for i in range(self.partitions):
                p = (start + i) % self.partitions
                if p in self.held:
                    continue
                epoch = await self._acquire(keys=[lease_key(p, ROLE), epoch_key(p, ROLE)],
                                            args=[self.owner, self.ttl_ms])
                if epoch:
                    self.held[p] = int(epoch)
                    gained[p] = int(epoch)
                    if len(self.held) >= target:
                        break
        return gained, lost

    async def release(self, partition: int) -> None:
        self.held.pop(partition, None)
        await self._release(keys=[lease_key(partition, ROLE)], args=[self.owner])

    async def release_all(self) -> None:
        for p in list(self.held):
            await self.release(p)
        await self.redis.zrem(MEMBERS_KEY, self.owner)
