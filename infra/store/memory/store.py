"""The memory store: every protocol of `infra.store.api` in one process, no server.

It keeps the same contracts as the Redis store (`tests/contract/test_store_contract.py` runs
against both), so the runtime, the projector or the gateway can run on it in tests and tools
that need no Redis. All state lives in this object; nothing is persisted. Pub/sub messages are
delivered from the event loop (`call_soon`), in publish order, like a server would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from events.codec import decode_event_envelope
from events.envelope import EventEnvelope
from events.errors import StoreUnavailable
from events.ids import actor_kind, actor_uuid
from infra.store.api import START, ActorHistory, Archive, Durability, LogEntry, Placement, Snapshot
from infra.store.memory.streams import Expiring, MemoryStream, now_ms, position, wait_any
from infra.store.memory.writer import MemoryPartitionWriter
from infra.store.routing import DEFAULT_PARTITIONS, partition_of, partition_slot
from infra.store.sending import SenderBase

__all__ = ["DEFAULT_OUTCOME_TTL_MS", "MemoryStore"]

DEFAULT_OUTCOME_TTL_MS = 24 * 3600 * 1000
ADMIN = "admin"


class _Subscriber:
    """A connection receiving pub/sub messages (channel, data)."""

    def __init__(
        self,
        on_message: Callable[[str, bytes], None],
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.channels: set[str] = set()
        self.up = True
        self.reconnects = 0


class MemoryStore:
    """See `api.Store` (and the module)."""

    def __init__(
        self, partitions: int = DEFAULT_PARTITIONS, *, archive: Archive | None = None
    ) -> None:
        self.partitions = partitions
        self.archive = archive
        # the data
        self.events: dict[tuple[int, str], MemoryStream] = {}
        self.logs: dict[int, MemoryStream] = {}
        self.commands_: dict[int, MemoryStream] = {}
        self.snapshots: dict[tuple[int, str], Snapshot] = {}
        self.timers: dict[int, dict[tuple[str, str], int]] = {}
        self.outcomes = Expiring()
        self.epochs: dict[tuple[str, int], int] = {}
        self.fenced: dict[tuple[str, int], int] = {}
        self.lease_owners = Expiring()
        self.members: dict[str, Expiring] = {}
        self.kv = Expiring()  # registries' plain values
        self.streams: dict[str, MemoryStream] = {}  # market data and control streams
        self._subscribers: list[_Subscriber] = []
        self._closed = False
        # the protocols
        self.actors = MemoryActorReader(self)
        self.log = MemoryPartitionLog(self)
        self.leases = MemoryLeases(self)
        self.feed = MemoryChangeFeed(self)
        self.connections = MemoryConnectionRegistry(self)
        self.devices = MemoryDeviceIndex(self)
        self.market_data = MemoryMarketData(self)
        self.simulator_hosts = MemorySimulatorHosts(self)
        self.statuses = MemoryStatusBoard(self)
        self._commands: MemoryCommandSender | None = None

    # ------------------------------------------------------------------ the data
    def event_stream(self, partition: int, actor_id: str) -> MemoryStream:
        key = (partition, actor_id)
        stream = self.events.get(key)
        if stream is None:
            stream = self.events[key] = MemoryStream()
        return stream

    def log_stream(self, partition: int) -> MemoryStream:
        stream = self.logs.get(partition)
        if stream is None:
            stream = self.logs[partition] = MemoryStream()
        return stream

    def command_stream(self, partition: int) -> MemoryStream:
        stream = self.commands_.get(partition)
        if stream is None:
            stream = self.commands_[partition] = MemoryStream()
        return stream

    def named_stream(self, name: str) -> MemoryStream:
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = MemoryStream()
        return stream

    def last_version(self, partition: int, actor_id: str) -> int:
        stream = self.events.get((partition, actor_id))
        return 0 if stream is None else stream.last[0]

    def check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the memory store is closed")

    # ------------------------------------------------------------------ pub/sub
    def subscribe(self, sub: _Subscriber) -> None:
        if sub not in self._subscribers:
            self._subscribers.append(sub)

    def unsubscribe(self, sub: _Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def publish(self, channel: str, data: bytes) -> int:
        """Deliver to every live subscriber of `channel` (from the loop, in order)."""
        receivers = [s for s in self._subscribers if s.up and channel in s.channels]
        if receivers:
            loop = asyncio.get_running_loop()
            for sub in receivers:
                loop.call_soon(_deliver, sub, channel, data)
        return len(receivers)

    def publish_change(self, session_id: str, data: bytes) -> int:
        """Publish on a session's change feed."""
        return self.publish(_change(session_id), data)

    def drop_subscribers(self, down_ms: int = 50) -> None:
        """What a lost connection does to every subscriber (on Redis: a restart, CLIENT
        KILL): messages published in the next `down_ms` are lost, then each one is
        re-subscribed and its `on_reconnect` called. For exercising callers' catch-up paths."""
        loop = asyncio.get_running_loop()
        for sub in self._subscribers:
            sub.up = False
        loop.call_later(down_ms / 1000, self._reconnect_subscribers)

    def _reconnect_subscribers(self) -> None:
        for sub in list(self._subscribers):
            if sub.up:
                continue
            sub.up = True
            sub.reconnects += 1
            if sub.on_reconnect is not None:
                sub.on_reconnect()

    # ------------------------------------------------------------------ the store
    @property
    def commands(self) -> MemoryCommandSender:
        if self._commands is None:
            self._commands = MemoryCommandSender(self, None)
        return self._commands

    def command_sender(self, name: str | None = None) -> MemoryCommandSender:
        return MemoryCommandSender(self, name)

    def partition_of(self, session_id: str) -> int:
        return partition_of(session_id, self.partitions)

    def open_partition(
        self,
        partition: int,
        epoch: int,
        consumer: str,
        *,
        outcome_ttl_ms: int = DEFAULT_OUTCOME_TTL_MS,
    ) -> MemoryPartitionWriter:
        return MemoryPartitionWriter(
            self, partition, epoch, consumer, outcome_ttl_ms=outcome_ttl_ms
        )

    async def connect(self) -> str:
        self.check_open()
        return "memory (one process)"

    async def placements(self) -> dict[int, Placement]:
        self.check_open()
        return {p: Placement(partition_slot(p), "memory") for p in range(self.partitions)}

    async def ping(self) -> None:
        self.check_open()

    async def durability(self) -> Durability:
        """Nothing survives the process: no persistence."""
        self.check_open()
        return Durability("memory", "noeviction", aof=False, rdb=False)

    async def aclose(self) -> None:
        if self._commands is not None:
            await self._commands.close()
            self._commands = None
        self._closed = True


def _deliver(sub: _Subscriber, channel: str, data: bytes) -> None:
    if sub.up:
        sub.on_message(channel, data)


# --------------------------------------------------------------------------- actors


class MemoryActorReader:
    """See `api.ActorReader`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    @property
    def archive(self) -> Archive | None:
        return self.store.archive

    def _stream(self, partition: int, actor_id: str) -> MemoryStream | None:
        return self.store.events.get((partition, actor_id))

    def _after(
        self,
        partition: int,
        actor_id: str,
        after: int,
        upto: int | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, bytes]]:
        stream = self._stream(partition, actor_id)
        if stream is None:
            return []
        got = stream.after((after, 0), None if upto is None else (upto, 0), limit)
        return [(position(pos)[0], value) for pos, value in got]

    async def load(
        self, partition: int, actor_ids: Sequence[str], *, from_snapshot: bool = True
    ) -> dict[str, ActorHistory]:
        self.store.check_open()
        out = {}
        for actor_id in actor_ids:
            snap = self.store.snapshots.get((partition, actor_id)) if from_snapshot else None
            out[actor_id] = ActorHistory(
                snap, self._after(partition, actor_id, snap.version if snap else 0)
            )
        return out

    async def read(
        self,
        partition: int,
        actor_id: str,
        *,
        after: int = 0,
        upto: int | None = None,
        limit: int | None = None,
    ) -> list[EventEnvelope]:
        self.store.check_open()
        if upto is not None and upto <= after:
            return []
        live = [
            decode_event_envelope(e)
            for _, e in self._after(partition, actor_id, after, upto, limit)
        ]
        first = live[0].version if live else None
        archive = self.store.archive
        if archive is None or (first is not None and first <= after + 1):
            return live
        before = first if first is not None else (None if upto is None else upto + 1)
        merged = await archive.events(actor_id, after, before) + live
        return merged if limit is None else merged[:limit]

    async def read_backwards(
        self, partition: int, actor_id: str, *, before: int | None = None, limit: int = 200
    ) -> list[EventEnvelope]:
        self.store.check_open()
        stream = self._stream(partition, actor_id)
        if stream is None:
            return []
        got = stream.before(None if before is None else (before, 0), limit)
        return [decode_event_envelope(e) for _, e in got]

    async def last_version(self, partition: int, actor_id: str) -> int:
        self.store.check_open()
        version = self.store.last_version(partition, actor_id)
        if version == 0 and self.store.archive is not None:
            return await self.store.archive.last_version(actor_id)
        return version

    async def follow(
        self, partition: int, actor_id: str, *, after: int = 0, block_ms: int = 1000
    ) -> AsyncIterator[EventEnvelope]:
        stream = self.store.event_stream(partition, actor_id)
        last = after
        while True:
            self.store.check_open()
            got = stream.after((last, 0))
            if not got:
                await wait_any([stream], block_ms)
                continue
            for pos, value in got:
                last = position(pos)[0]
                yield decode_event_envelope(value)

    async def find_partition(self, actor_id: str, session_id: str | None = None) -> int | None:
        if session_id is None and actor_kind(actor_id) == "session":
            session_id = actor_uuid(actor_id)
        if session_id:
            return partition_of(session_id, self.store.partitions)
        for p in range(self.store.partitions):
            stream = self._stream(p, actor_id)
            if stream is not None and len(stream):
                return p
        return None

    async def snapshot_versions(
        self, partition: int, actor_ids: Sequence[str]
    ) -> dict[str, int | None]:
        snaps = self.store.snapshots
        return {a: (s.version if (s := snaps.get((partition, a))) else None) for a in actor_ids}

    async def trim(
        self, partition: int, actor_id: str, below: int, *, dry_run: bool = False
    ) -> int:
        stream = self._stream(partition, actor_id)
        if stream is None or below <= 1:
            return 0
        return stream.trim_below((below, 0), dry_run=dry_run)


# --------------------------------------------------------------------------- partition log


class MemoryLogReader:
    """See `api.LogReader`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def read(
        self, positions: Mapping[int, str], count: int, block_ms: int
    ) -> dict[int, list[LogEntry]]:
        self.store.check_open()
        streams = {p: self.store.log_stream(p) for p in positions}

        def collect() -> dict[int, list[LogEntry]]:
            out = {}
            for p, pos in positions.items():
                got = streams[p].after(position(pos), count=count)
                if got:
                    out[p] = got
            return out

        out = collect()
        if not out and block_ms > 0:
            await wait_any(streams.values(), block_ms)
            out = collect()
        return out

    async def close(self) -> None:
        return None


class MemoryLogConsumer:
    """See `api.LogConsumer`."""

    def __init__(self, store: MemoryStore, group: str, consumer: str) -> None:
        self.store = store
        self.group = group
        self.consumer = consumer

    def _log(self, partition: int) -> MemoryStream:
        self.store.check_open()
        return self.store.log_stream(partition)

    async def ensure(self, partition: int) -> None:
        self._log(partition).create_group(self.group)

    async def read_pending(self, partition: int, after: str, count: int) -> list[LogEntry]:
        got = self._log(partition).read_pending(self.group, self.consumer, position(after), count)
        return [(p, v) for p, v in got if v is not None]

    async def read_new(self, partition: int, count: int, block_ms: int) -> list[LogEntry]:
        log = self._log(partition)
        got = log.read_new(self.group, self.consumer, count)
        if not got and block_ms > 0:
            await wait_any([log], block_ms)
            got = log.read_new(self.group, self.consumer, count)
        return got

    async def claim(
        self, partition: int, min_idle_ms: int, start: str, count: int
    ) -> tuple[str, list[LogEntry]]:
        log = self._log(partition)
        after, got = log.claim(self.group, self.consumer, min_idle_ms, position(start), count)
        gone = [position(p) for p, v in got if v is None]
        log.ack(self.group, gone)
        return after, [(p, v) for p, v in got if v is not None]

    async def ack(self, partition: int, positions: Sequence[str]) -> None:
        self._log(partition).ack(self.group, [position(p) for p in positions])

    async def close(self) -> None:
        return None


class MemoryPartitionLog:
    """See `api.PartitionLog`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def range(
        self,
        partition: int,
        *,
        after: str = START,
        upto: str | None = None,
        count: int | None = None,
    ) -> list[LogEntry]:
        self.store.check_open()
        return self.store.log_stream(partition).after(
            position(after), None if upto is None else position(upto), count
        )

    async def length(self, partition: int) -> int:
        return len(self.store.log_stream(partition))

    async def count(self, partition: int, after: str, limit: int) -> int:
        self.store.check_open()
        return len(self.store.log_stream(partition).after(position(after), None, limit))

    async def trim(self, partition: int, below: str, *, dry_run: bool = False) -> int:
        return self.store.log_stream(partition).trim_below(position(below), dry_run=dry_run)

    async def group_floor(self, partition: int) -> str | None:
        return self.store.log_stream(partition).floor()

    def reader(self, name: str) -> MemoryLogReader:
        return MemoryLogReader(self.store)

    def consumer(self, group: str, consumer: str) -> MemoryLogConsumer:
        return MemoryLogConsumer(self.store, group, consumer)


# --------------------------------------------------------------------------- leases


class MemoryLeases:
    """See `api.Leases`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def acquire(self, role: str, partition: int, owner: str, ttl_ms: int) -> int | None:
        self.store.check_open()
        key = (role, partition)
        holder = self.store.lease_owners.get(key)
        if holder is not None and holder != owner:
            return None
        self.store.lease_owners.set(key, owner, ttl_ms)
        epoch = self.store.epochs[key] = self.store.epochs.get(key, 0) + 1
        return epoch

    async def renew(self, role: str, partition: int, owner: str, epoch: int, ttl_ms: int) -> bool:
        self.store.check_open()
        key = (role, partition)
        if self.store.lease_owners.get(key) == owner and self.store.epochs.get(key) == epoch:
            self.store.lease_owners.set(key, owner, ttl_ms)
            return True
        return False

    async def renew_many(
        self, role: str, owner: str, epochs: Mapping[int, int], ttl_ms: int
    ) -> dict[int, bool]:
        return {p: await self.renew(role, p, owner, e, ttl_ms) for p, e in epochs.items()}

    async def release(self, role: str, partition: int, owner: str) -> bool:
        self.store.check_open()
        key = (role, partition)
        if self.store.lease_owners.get(key) == owner:
            self.store.lease_owners.pop(key)
            return True
        return False

    async def holders(self, role: str) -> dict[int, str]:
        self.store.check_open()
        owners = self.store.lease_owners
        return {
            p: o for p in range(self.store.partitions) if (o := owners.get((role, p))) is not None
        }

    async def epoch(self, role: str, partition: int) -> int:
        return self.store.epochs.get((role, partition), 0)

    async def refused(self, role: str, partition: int) -> int:
        return self.store.fenced.get((role, partition), 0)

    def _members(self, role: str) -> Expiring:
        return self.store.members.setdefault(role, Expiring())

    async def heartbeat(self, role: str, owner: str, ttl_ms: int) -> int:
        self.store.check_open()
        members = self._members(role)
        members.set(owner, True, ttl_ms)
        return max(1, len(members.keys()))

    async def members(self, role: str) -> list[str]:
        self.store.check_open()
        return sorted(self._members(role).keys())

    async def leave(self, role: str, owner: str) -> None:
        self._members(role).pop(owner)


# --------------------------------------------------------------------------- commands


class MemoryCommandSender(SenderBase):
    """See `api.CommandSender`."""

    def __init__(self, store: MemoryStore, name: str | None) -> None:
        self.store = store
        super().__init__(store.partitions, name)
        self._sub = _Subscriber(lambda channel, data: self._on_reply(data))
        self._sub.channels.add(self.channel)

    def _channel_name(self) -> str:
        return f"reply:{self.name}"

    async def _queue(self, partition: int, payload: bytes) -> None:
        self.store.check_open()
        self.store.command_stream(partition).add(payload)

    async def _stored(self, partition: int, command_id: str) -> bytes | None:
        self.store.check_open()
        return self.store.outcomes.get((partition, command_id))

    async def _subscribe(self) -> None:
        self.store.check_open()
        self.store.subscribe(self._sub)

    async def _close_transport(self) -> None:
        self.store.unsubscribe(self._sub)


# --------------------------------------------------------------------------- change feed


def _change(session_id: str) -> str:
    return f"chg:{session_id}"


class MemoryFeedSubscription:
    """See `api.FeedSubscription`."""

    def __init__(
        self,
        store: MemoryStore,
        on_change: Callable[[str, bytes], None],
        *,
        on_broadcast: Callable[[bytes], None] | None,
        on_reconnect: Callable[[], None] | None,
    ) -> None:
        self.store = store
        self._on_change = on_change
        self._on_broadcast = on_broadcast
        self._sub = _Subscriber(self._on_message, on_reconnect)

    @property
    def reconnects(self) -> int:
        return self._sub.reconnects

    def _on_message(self, channel: str, data: bytes) -> None:
        if channel.startswith("chg:"):
            self._on_change(channel[4:], data)
        elif self._on_broadcast is not None:
            self._on_broadcast(data)

    async def start(self) -> None:
        self.store.check_open()
        if self._on_broadcast is not None:
            self._sub.channels.add(ADMIN)
        self.store.subscribe(self._sub)

    async def subscribe(self, session_id: str) -> None:
        self.store.check_open()
        self._sub.channels.add(_change(session_id))

    async def unsubscribe(self, session_id: str) -> None:
        self._sub.channels.discard(_change(session_id))

    async def close(self) -> None:
        self.store.unsubscribe(self._sub)


class MemoryChangeFeed:
    """See `api.ChangeFeed`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def publish(self, session_id: str, payload: bytes) -> int:
        self.store.check_open()
        return self.store.publish(_change(session_id), payload)

    async def broadcast(self, payload: bytes) -> int:
        self.store.check_open()
        return self.store.publish(ADMIN, payload)

    def subscriber(
        self,
        on_change: Callable[[str, bytes], None],
        *,
        on_broadcast: Callable[[bytes], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        name: str = "",
    ) -> MemoryFeedSubscription:
        return MemoryFeedSubscription(
            self.store, on_change, on_broadcast=on_broadcast, on_reconnect=on_reconnect
        )


# --------------------------------------------------------------------------- registries


class MemoryConnectionRegistry:
    """See `api.ConnectionRegistry`."""

    def __init__(self, store: MemoryStore) -> None:
        self.kv = store.kv
        self.gateways: dict[str, int] = {}

    def _table(self, gateway_id: str) -> dict[str, bytes]:
        table = self.kv.get(("gw", gateway_id))
        return table if table is not None else {}

    async def register(self, gateway_id: str, connection_id: str, info: bytes, ttl_s: int) -> None:
        table = self._table(gateway_id)
        table[connection_id] = info
        self.kv.set(("gw", gateway_id), table, ttl_s * 1000)

    async def unregister(self, gateway_id: str, connection_id: str) -> None:
        self._table(gateway_id).pop(connection_id, None)

    async def refresh(self, gateway_id: str, ttl_s: int) -> None:
        self.kv.expire(("gw", gateway_id), ttl_s * 1000)
        await self.announce(gateway_id)

    async def announce(self, gateway_id: str) -> None:
        self.gateways[gateway_id] = now_ms()

    async def remove_gateway(self, gateway_id: str) -> None:
        self.kv.pop(("gw", gateway_id))
        self.gateways.pop(gateway_id, None)

    async def connections(self) -> list[tuple[str, str, bytes]]:
        return [
            (g, c, info)
            for g in sorted(self.gateways, key=self.gateways.__getitem__)
            for c, info in self._table(g).items()
        ]


class MemoryDeviceIndex:
    """See `api.DeviceIndex`."""

    def __init__(self, store: MemoryStore) -> None:
        self.kv = store.kv

    async def get(self, user_id: str, device_id: str) -> str | None:
        return self.kv.get(("ud", user_id, device_id))

    async def claim(self, user_id: str, device_id: str, session_id: str, ttl_s: int) -> bool:
        if self.kv.get(("ud", user_id, device_id)) is not None:
            return False
        self.kv.set(("ud", user_id, device_id), session_id, ttl_s * 1000)
        return True

    async def put(self, user_id: str, device_id: str, session_id: str, ttl_s: int) -> None:
        self.kv.set(("ud", user_id, device_id), session_id, ttl_s * 1000)


class MemoryTickReader:
    """See `api.TickReader`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def read(
        self, positions: Mapping[str, str], count: int, block_ms: int
    ) -> dict[str, list[tuple[str, bytes]]]:
        streams = {s: self.store.named_stream(f"md:{s}") for s in positions}

        def collect() -> dict[str, list[tuple[str, bytes]]]:
            out = {}
            for sim, pos in positions.items():
                got = streams[sim].after(position(pos), count=count)
                if got:
                    out[sim] = got
            return out

        out = collect()
        if not out and block_ms > 0:
            await wait_any(streams.values(), block_ms)
            out = collect()
        return out

    async def close(self) -> None:
        return None


class MemoryMarketData:
    """See `api.MarketData`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def publish(self, ticks: Sequence[tuple[str, bytes]], maxlen: int) -> None:
        for sim, data in ticks:
            stream = self.store.named_stream(f"md:{sim}")
            stream.add(data)
            stream.cap(maxlen)

    async def latest(self, simulator_id: str) -> tuple[str, bytes] | None:
        got = self.store.named_stream(f"md:{simulator_id}").before(None, 1)
        return got[0] if got else None

    async def length(self, simulator_id: str) -> int:
        return len(self.store.named_stream(f"md:{simulator_id}"))

    def reader(self, name: str = "") -> MemoryTickReader:
        return MemoryTickReader(self.store)

    async def mark_active(self, session_id: str, simulator_id: str, ttl_ms: int) -> None:
        self.store.kv.set(("active", session_id), simulator_id, ttl_ms)

    async def active_simulator(self, session_id: str) -> str | None:
        return self.store.kv.get(("active", session_id))

    async def unmark_active(self, session_id: str, simulator_id: str) -> None:
        if self.store.kv.get(("active", session_id)) == simulator_id:
            self.store.kv.pop(("active", session_id))


class MemoryControlReader:
    """See `api.ControlReader`."""

    def __init__(self, stream: MemoryStream) -> None:
        self.stream = stream

    async def read(self, after: str, count: int, block_ms: int) -> list[tuple[str, bytes]]:
        got = self.stream.after(position(after), count=count)
        if not got and block_ms > 0:
            await wait_any([self.stream], block_ms)
            got = self.stream.after(position(after), count=count)
        return got

    async def remove(self, at: str) -> None:
        self.stream.delete(position(at))

    async def close(self) -> None:
        return None


class MemorySimulatorHosts:
    """See `api.SimulatorHosts`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.hosts = Expiring()
        self.load: dict[str, int] = {}
        self._acks: dict[str, list[bytes]] = {}
        self._ack_waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def register(self, host_id: str, ttl_ms: int, load: int) -> None:
        self.hosts.set(host_id, True, ttl_ms)
        self.load[host_id] = load

    async def deregister(self, host_id: str) -> None:
        self.hosts.pop(host_id)
        self.load.pop(host_id, None)
        self.store.streams.pop(f"control:{host_id}", None)

    async def live(self) -> list[str]:
        return self.hosts.keys()

    async def loads(self, host_ids: Sequence[str]) -> dict[str, int]:
        return {h: self.load.get(h, 0) for h in host_ids}

    async def placement(self, simulator_id: str) -> str | None:
        return self.store.kv.get(("where", simulator_id))

    async def place(self, simulator_id: str, host_id: str, ttl_s: int) -> None:
        self.store.kv.set(("where", simulator_id), host_id, ttl_s * 1000)

    async def unplace(self, simulator_id: str) -> None:
        self.store.kv.pop(("where", simulator_id))

    async def request(self, host_id: str, payload: bytes) -> None:
        stream = self.store.named_stream(f"control:{host_id}")
        stream.add(payload)
        stream.cap(10_000)

    def control_reader(self, host_id: str) -> MemoryControlReader:
        return MemoryControlReader(self.store.named_stream(f"control:{host_id}"))

    async def acknowledge(
        self, request_id: str, payload: bytes, host_id: str, load: int, ttl_s: int
    ) -> None:
        self._acks.setdefault(request_id, []).append(payload)
        self.load[host_id] = load
        for fut in self._ack_waiters.pop(request_id, []):
            if not fut.done():
                fut.set_result(None)
        asyncio.get_running_loop().call_later(ttl_s, self._acks.pop, request_id, None)

    async def wait_ack(self, request_id: str, timeout_s: float) -> bytes | None:
        if not self._acks.get(request_id):
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ack_waiters.setdefault(request_id, []).append(fut)
            try:
                await asyncio.wait_for(fut, timeout_s)
            except TimeoutError:
                return None
        queue = self._acks.get(request_id)
        return queue.pop(0) if queue else None


class MemoryStatusBoard:
    """See `api.StatusBoard`."""

    def __init__(self, store: MemoryStore) -> None:
        self.kv = store.kv

    async def put(self, role: str, owner: str, payload: bytes, ttl_ms: int) -> None:
        self.kv.set(("status", role, owner), payload, ttl_ms)

    async def get(self, role: str, owners: Sequence[str]) -> dict[str, bytes | None]:
        return {o: self.kv.get(("status", role, o)) for o in owners}

    async def delete(self, role: str, owner: str) -> None:
        self.kv.pop(("status", role, owner))
