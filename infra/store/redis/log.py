"""The partition logs on Redis (`sd:{pN}:log`): ranges, trims, the projector's multi-partition
reader and consumer groups (the reactor). Every command names one partition's log (one slot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from infra.store import layout
from infra.store.api import START, LogEntry, position_key
from infra.store.redis.client import RedisClient, flat_pairs
from infra.store.redis.connection import ReplyError
from infra.store.redis.lua import COUNT_AFTER
from infra.store.redis.reads import StreamReader
from infra.store.redis.resp import pack
from infra.store.redis.router import Link

__all__ = ["RedisLogConsumer", "RedisLogReader", "RedisPartitionLog", "log_entries"]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def log_entries(entries: Any) -> list[LogEntry]:
    """(position, `e` field) of raw stream entries; entries deleted meanwhile are left out."""
    out: list[LogEntry] = []
    for entry in entries or ():
        if not entry or entry[0] is None or not entry[1]:
            continue
        fields = entry[1]
        payload = fields[1] if fields[0] == b"e" else flat_pairs(fields).get(b"e", b"")
        out.append((entry[0].decode(), payload))
    return out


def _after(position: str) -> str:
    """The smallest position after `position` (XRANGE's start is inclusive)."""
    ms, seq = position_key(position)
    return f"{ms}-{seq + 1}"


class RedisPartitionLog:
    """See `api.PartitionLog`."""

    def __init__(self, client: RedisClient, partitions: int) -> None:
        self.client = client
        self.partitions = partitions

    async def range(
        self,
        partition: int,
        *,
        after: str = START,
        upto: str | None = None,
        count: int | None = None,
    ) -> list[LogEntry]:
        args: list[Any] = [
            "XRANGE",
            layout.partition_log(partition),
            _after(after),
            "+" if upto is None else upto,
        ]
        if count is not None:
            args += ["COUNT", count]
        return log_entries(await self.client.call(*args))

    async def length(self, partition: int) -> int:
        return int(await self.client.call("XLEN", layout.partition_log(partition)))

    async def count(self, partition: int, after: str, limit: int) -> int:
        key = layout.partition_log(partition)
        return int(await self.client.run(COUNT_AFTER, [key], [_after(after), limit]))

    async def trim(self, partition: int, below: str, *, dry_run: bool = False) -> int:
        if below == START:
            return 0
        key = layout.partition_log(partition)
        if dry_run:
            return len(await self.client.call("XRANGE", key, "-", "(" + below))
        return int(await self.client.call("XTRIM", key, "MINID", below))

    async def group_floor(self, partition: int) -> str | None:
        key = layout.partition_log(partition)
        try:
            groups = [flat_pairs(g) for g in await self.client.call("XINFO", "GROUPS", key)]
        except ReplyError:  # no such stream
            return None
        floor: str | None = None
        for g in groups:
            last = _text(g.get(b"last-delivered-id") or b"0-0")
            need = _after(last) if last != START else START
            pending = await self.client.call("XPENDING", key, g[b"name"])
            if pending and pending[1]:
                need = min(need, _text(pending[1]), key=position_key)
            floor = need if floor is None else min(floor, need, key=position_key)
        return floor

    def reader(self, name: str) -> RedisLogReader:
        return RedisLogReader(self.client, self.partitions, name)

    def consumer(self, group: str, consumer: str) -> RedisLogConsumer:
        return RedisLogConsumer(self.client, group, consumer)


class RedisLogReader:
    """See `api.LogReader`: XREADs on connections of its own (`StreamReader`: one XREAD on a
    single node, one standing read per partition slot on a cluster)."""

    def __init__(self, client: RedisClient, partitions: int, name: str) -> None:
        self._partitions = partitions
        self._reads = StreamReader(client, name)
        self._keys: dict[bytes, int] = {}

    async def read(
        self, positions: Mapping[int, str], count: int, block_ms: int
    ) -> dict[int, list[LogEntry]]:
        wanted: dict[bytes, str] = {}
        for p, position in positions.items():
            key = layout.partition_log(p).encode()
            self._keys.setdefault(key, p)
            wanted[key] = position
        reply = await self._reads.read(wanted, count, block_ms)
        out: dict[int, list[LogEntry]] = {}
        for key, entries in reply:
            got = log_entries(entries)
            if got:
                out[self._keys[key]] = got
        return out

    async def close(self) -> None:
        self._reads.close()


class RedisLogConsumer:
    """See `api.LogConsumer`."""

    def __init__(self, client: RedisClient, group: str, consumer: str) -> None:
        self.client = client
        self.group = group
        self.consumer = consumer
        self._pipes: dict[int, Link] = {}

    async def ensure(self, partition: int) -> None:
        try:
            await self.client.call(
                "XGROUP", "CREATE", layout.partition_log(partition), self.group, "0", "MKSTREAM"
            )
        except ReplyError as exc:
            if not exc.reply.startswith("BUSYGROUP"):
                raise

    async def read_pending(self, partition: int, after: str, count: int) -> list[LogEntry]:
        reply = await self.client.call(
            "XREADGROUP",
            "GROUP",
            self.group,
            self.consumer,
            "COUNT",
            count,
            "STREAMS",
            layout.partition_log(partition),
            after,
        )
        return log_entries(reply[0][1]) if reply else []

    async def read_new(self, partition: int, count: int, block_ms: int) -> list[LogEntry]:
        pipe = self._pipes.get(partition)
        if pipe is None:
            pipe = self._pipes[partition] = self.client.dedicated(
                f"{self.consumer}-p{partition}", layout.partition_log(partition)
            )
        reply = await pipe.submit(
            pack(
                (
                    "XREADGROUP",
                    "GROUP",
                    self.group,
                    self.consumer,
                    "COUNT",
                    count,
                    "BLOCK",
                    block_ms,
                    "STREAMS",
                    layout.partition_log(partition),
                    ">",
                )
            )
        )
        return log_entries(reply[0][1]) if reply else []

    async def claim(
        self, partition: int, min_idle_ms: int, start: str, count: int
    ) -> tuple[str, list[LogEntry]]:
        key = layout.partition_log(partition)
        reply = await self.client.call(
            "XAUTOCLAIM", key, self.group, self.consumer, min_idle_ms, start, "COUNT", count
        )
        entries = reply[1] or []
        # trimmed away while pending: Redis 6.2 still lists them (without fields)
        gone = [e[0] for e in entries if e and e[0] is not None and not e[1]]
        if gone:
            await self.client.call("XACK", key, self.group, *gone)
        return reply[0].decode(), log_entries(entries)

    async def ack(self, partition: int, positions: Sequence[str]) -> None:
        if positions:
            await self.client.call("XACK", layout.partition_log(partition), self.group, *positions)

    async def close(self) -> None:
        pipes, self._pipes = self._pipes, {}
        for pipe in pipes.values():
            pipe.close()
