"""The event store: the one layer that owns Redis (key layout, Lua scripts, RESP framing,
leases), behind small protocols (`infra.store.api`).

- `open_store(url, partitions)`: the Redis (or Valkey) store, on a single node or a cluster
  (found out on first use); `MemoryStore(partitions)`: the same contracts in one process, for
  tests and tools.
- `partition_of`, `partition_slot`, `build_envelope`, `new_command_id`: routing (a session's
  partition, a partition's Redis Cluster slot) and command envelopes, pure.
- `LeaseShare`: a process's fair share of a role's partition leases, on any store.

Everything the store raises is `StoreUnavailable` or `Fenced` (`events.errors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra.store.api import (
    APPENDED,
    START,
    UNSETTLED,
    ActorHistory,
    ActorReader,
    AppendBatch,
    AppendResult,
    Archive,
    ChangeFeed,
    CommandEntry,
    CommandSender,
    ConnectionRegistry,
    DeviceIndex,
    DueTimer,
    Durability,
    FeedSubscription,
    Leases,
    LogConsumer,
    LogEntry,
    LogReader,
    MarketData,
    PartitionLog,
    PartitionWriter,
    Placement,
    SimulatorHosts,
    Snapshot,
    StatusBoard,
    Store,
    TimerFire,
    conflict_version,
    position_key,
)
from infra.store.envelopes import build_envelope, new_command_id
from infra.store.routing import DEFAULT_PARTITIONS, partition_of, partition_slot
from infra.store.share import LeaseShare, ShareRound, fair_share

if TYPE_CHECKING:
    from infra.store.memory import MemoryStore
    from infra.store.redis import RedisStore

__all__ = [
    "APPENDED",
    "DEFAULT_PARTITIONS",
    "START",
    "UNSETTLED",
    "ActorHistory",
    "ActorReader",
    "AppendBatch",
    "AppendResult",
    "Archive",
    "ChangeFeed",
    "CommandEntry",
    "CommandSender",
    "ConnectionRegistry",
    "DeviceIndex",
    "DueTimer",
    "Durability",
    "FeedSubscription",
    "LeaseShare",
    "Leases",
    "LogConsumer",
    "LogEntry",
    "LogReader",
    "MarketData",
    "MemoryStore",
    "PartitionLog",
    "PartitionWriter",
    "Placement",
    "ShareRound",
    "SimulatorHosts",
    "Snapshot",
    "StatusBoard",
    "Store",
    "TimerFire",
    "build_envelope",
    "conflict_version",
    "fair_share",
    "new_command_id",
    "open_store",
    "partition_of",
    "partition_slot",
    "position_key",
]


def open_store(
    url: str,
    partitions: int = DEFAULT_PARTITIONS,
    *,
    archive: Archive | None = None,
    name: str = "",
) -> RedisStore:
    """The Redis store at `url` (see `infra.store.redis.open_store`)."""
    from infra.store.redis import open_store as _open

    return _open(url, partitions, archive=archive, name=name)


def __getattr__(name: str) -> Any:
    # The implementations are imported on first use: the batch planner imports this package's
    # protocols and must not pull in connections and asyncio machinery with them.
    if name == "MemoryStore":
        from infra.store.memory import MemoryStore

        return MemoryStore
    raise AttributeError(name)
