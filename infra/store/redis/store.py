"""The Redis store: every protocol of `infra.store.api` on one Redis (or Valkey) server, or on a
Redis / Valkey Cluster (found out on first use: see `infra.store.redis.router`)."""

from __future__ import annotations

import os
import uuid

from infra.store.api import Archive, Durability, Placement
from infra.store.redis.actors import RedisActorReader
from infra.store.redis.client import RedisClient
from infra.store.redis.connection import Endpoint, ReplyError
from infra.store.redis.feed import RedisChangeFeed
from infra.store.redis.leases import RedisLeases
from infra.store.redis.log import RedisPartitionLog
from infra.store.redis.registries import (
    RedisConnectionRegistry,
    RedisDeviceIndex,
    RedisMarketData,
    RedisSimulatorHosts,
    RedisStatusBoard,
)
from infra.store.redis.sender import RedisCommandSender
from infra.store.redis.writer import RedisPartitionWriter
from infra.store.routing import DEFAULT_PARTITIONS, partition_of, partition_slot

__all__ = ["DEFAULT_OUTCOME_TTL_MS", "RedisStore", "open_store"]

#: How long a command id deduplicates unless the writer is told otherwise (24 h).
DEFAULT_OUTCOME_TTL_MS = 24 * 3600 * 1000


class RedisStore:
    """See `api.Store`. Connections open lazily; `aclose` closes every one the store made
    (writers, readers and extra senders are closed by whoever asked for them)."""

    def __init__(
        self,
        endpoint: Endpoint,
        partitions: int = DEFAULT_PARTITIONS,
        *,
        archive: Archive | None = None,
        name: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.partitions = partitions
        self.name = name or f"sd-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.client = RedisClient(endpoint, self.name)
        self.actors = RedisActorReader(self.client, partitions, archive)
        self.log = RedisPartitionLog(self.client, partitions)
        self.leases = RedisLeases(self.client, partitions)
        self.feed = RedisChangeFeed(self.client, partitions)
        self.connections = RedisConnectionRegistry(self.client)
        self.devices = RedisDeviceIndex(self.client)
        self.market_data = RedisMarketData(self.client)
        self.simulator_hosts = RedisSimulatorHosts(self.client)
        self.statuses = RedisStatusBoard(self.client)
        self._commands: RedisCommandSender | None = None
        self._keys: dict[int, dict[str, bytes]] = {}

    @property
    def archive(self) -> Archive | None:
        return self.actors.archive

    @archive.setter
    def archive(self, archive: Archive | None) -> None:
        """Where events trimmed from Redis are read from (set once PostgreSQL is reachable)."""
        self.actors.archive = archive

    @property
    def commands(self) -> RedisCommandSender:
        if self._commands is None:
            self._commands = RedisCommandSender(self.client, self.partitions, self.name)
        return self._commands

    def command_sender(self, name: str | None = None) -> RedisCommandSender:
        return RedisCommandSender(self.client, self.partitions, name)

    def partition_of(self, session_id: str) -> int:
        return partition_of(session_id, self.partitions)

    def open_partition(
        self,
        partition: int,
        epoch: int,
        consumer: str,
        *,
        outcome_ttl_ms: int = DEFAULT_OUTCOME_TTL_MS,
    ) -> RedisPartitionWriter:
        return RedisPartitionWriter(
            self.client,
            partition,
            epoch,
            consumer,
            outcome_ttl_ms=outcome_ttl_ms,
            key_cache=self._keys.setdefault(partition, {}),
        )

    async def connect(self) -> str:
        await self.client.ready()
        return self.client.router.describe()

    async def placements(self) -> dict[int, Placement]:
        await self.client.ready()
        router = self.client.router
        out = {}
        for p in range(self.partitions):
            slot = partition_slot(p)
            host, port = router.owner(slot) if router.slots is not None else router.seed.address
            out[p] = Placement(slot, f"{host}:{port}" if port else host)
        return out

    async def ping(self) -> None:
        await self.client.ping()

    async def durability(self) -> Durability:
        info: dict[str, str] = {}
        for section in ("server", "memory", "persistence"):
            raw = await self.client.call("INFO", section)
            for line in bytes(raw).decode().splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    info[key] = value.strip()
        try:  # managed services may rename or refuse CONFIG
            reply = await self.client.call("CONFIG", "GET", "save")
            rdb: bool | None = bool(reply) and bool(bytes(reply[1]).strip())
        except ReplyError:
            rdb = None
        name = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version", "?")
        return Durability(
            server=f"{name} {version}",
            maxmemory_policy=info.get("maxmemory_policy", "?"),
            aof=info.get("aof_enabled") == "1",
            rdb=rdb,
        )

    async def aclose(self) -> None:
        if self._commands is not None:
            await self._commands.close()
            self._commands = None
        self.client.close()


def open_store(
    url: str,
    partitions: int = DEFAULT_PARTITIONS,
    *,
    archive: Archive | None = None,
    name: str = "",
) -> RedisStore:
    """The Redis store at `url` (``redis://``, ``rediss://`` or ``unix://``: a single node, or
    any node of a cluster); nothing connects before the first use (or `connect`). Raises
    `StoreUnavailable` for a URL it cannot read."""
    return RedisStore(Endpoint.from_url(url), partitions, archive=archive, name=name)
