"""The event store's API: small protocols, one per capability, and the values they exchange.

Every process reaches Redis through these and nothing below them (`open_store` gives the Redis
implementation, `MemoryStore` the in-memory one; `tests/contract/test_store_contract.py` holds
both to every contract written here). A consumer depends only on the protocol it uses:

- `PartitionWriter`: the lease owner's view of one partition (read commands, append a decided
  batch atomically and fenced, fire timers). Its `AppendBatch` is filled by the pure planner.
- `ActorReader`: one actor's events (the worker's lazy load; history with archive fallback).
- `PartitionLog`: every event of a partition in append order (projector, reactor, retention).
- `Leases`: partition leases with fencing epochs and live members, for every role.
- `CommandSender`: send a command to an actor, wait for its outcome.
- `ChangeFeed`: per-session change messages and the admin broadcast.
- The registries of the gateway and the simulators: `ConnectionRegistry`, `DeviceIndex`,
  `MarketData`, `SimulatorHosts`, `StatusBoard`.

Errors: whatever fails below (connection, server reply) is raised as `StoreUnavailable`; a write
refused because a newer lease owner exists is `Fenced` (both in `events.errors`). Nothing else
leaves the store, except what an injected `Archive` raises itself.

Positions in the partition log and in the other plain streams are opaque strings that sort by
`position_key` (Redis stream ids, "<ms>-<seq>"); "0-0" is before the first entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

from events.base import Command
from events.envelope import EventEnvelope, Outcome

__all__ = [
    "APPENDED",
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
    "ControlReader",
    "DeviceIndex",
    "DueTimer",
    "Durability",
    "FeedSubscription",
    "Leases",
    "LogConsumer",
    "LogEntry",
    "LogReader",
    "MarketData",
    "PartitionLog",
    "PartitionWriter",
    "Placement",
    "SimulatorHosts",
    "Snapshot",
    "StatusBoard",
    "Store",
    "TickReader",
    "TimerFire",
    "conflict_version",
    "position_key",
]

#: The position before the first entry of any stream.
START = "0-0"

#: `PartitionWriter.append` result: the command's events, outcome and ack were written.
APPENDED = 1
#: `PartitionWriter.append` result: a repeat of a command id earlier in the same batch whose
#: original has no stored outcome (its actor conflicted): nothing written, not acknowledged.
UNSETTLED = 0

#: Per command of a batch: `APPENDED`, `UNSETTLED`, the stored outcome (bytes) of an earlier
#: command with the same id (nothing appended; acknowledged), or a version conflict encoded as
#: -(actual version + 1) (nothing appended, not acknowledged; see `conflict_version`).
AppendResult = int | bytes

#: A command stream entry: (entry id, encoded `CommandEnvelope`; None when the entry carries no
#: command field, which the runtime treats as poison and acknowledges).
CommandEntry = tuple[bytes, bytes | None]

#: A partition log entry: (position, encoded `EventEnvelope`; b"" when the entry has none).
LogEntry = tuple[str, bytes]


def conflict_version(result: AppendResult) -> int | None:
    """The actor's actual version when `result` reports a version conflict, else None."""
    if isinstance(result, int) and result < 0:
        return -result - 1
    return None


def position_key(position: str) -> tuple[int, int]:
    """Sort key of a stream position ("<ms>-<seq>")."""
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


class Durability(NamedTuple):
    """What the store's server keeps across a restart, as it reports it (`Store.durability`):
    production refuses to start on a server that may drop acknowledged data."""

    server: str  # "redis 7.2.4", "valkey 9.1.2", "memory"
    maxmemory_policy: str  # "noeviction", "allkeys-lru", ...
    aof: bool  # append-only file on
    rdb: bool | None  # RDB snapshots scheduled (``save`` not empty); None: cannot be read


class Snapshot(NamedTuple):
    """An actor's state as of `version`, encoded by the runtime (msgpack); the store keeps it
    as the msgpack array `[version, state]`."""

    version: int
    state: bytes


class ActorHistory(NamedTuple):
    """What the worker needs to rebuild an actor: its snapshot (None: start from the initial
    state) and the encoded `EventEnvelope`s after it, as (version, bytes), oldest first."""

    snapshot: Snapshot | None
    events: list[tuple[int, bytes]]


class Placement(NamedTuple):
    """Where a partition lives: its Redis Cluster hash slot (every key of the partition is in
    it) and the node serving that slot now."""

    slot: int
    node: str


class DueTimer(NamedTuple):
    """A durable timer of the partition: actor, the deadline's key, due (ms)."""

    actor_id: str
    key: str
    due: int


class TimerFire(NamedTuple):
    """What to do with a due timer: queue `command` (an encoded `CommandEnvelope`), or with
    None only remove the timer (its actor no longer has that deadline)."""

    actor_id: str
    key: str
    due: int
    command: bytes | None


# --------------------------------------------------------------------------- the write path


class AppendBatch(Protocol):
    """One fenced append being built (`PartitionWriter.new_batch`). The planner adds every
    command it read, in order; `PartitionWriter.append` writes them all atomically.

    Per command the append does, in order: if the command id already has a stored outcome,
    republish it to `reply_to`, acknowledge, append nothing; else check the expected version
    (an `actor`'s later commands in the batch conflict once one did); else append the events
    with versions expected+1.. (stream id = version), each also to the partition log, queue the
    routed commands, upsert / remove the actor's timers, write the snapshot, store the outcome
    (with the writer's outcome TTL), publish it to `reply_to` and acknowledge the entry.
    """

    def __len__(self) -> int:
        """Commands added so far."""
        ...

    def actor(self, actor_id: str) -> int:
        """The batch's slot (>= 1) of `actor_id`, added on first use: every command that
        appends to, or is decided on, an actor names it by this slot."""
        ...

    def acknowledge(self, entry_id: bytes) -> None:
        """An entry that carries no readable command: acknowledge it, store nothing."""
        ...

    def repeat(self, entry_id: bytes, command_id: str, reply_to: str) -> None:
        """A second entry with a command id already in this batch: it gets the first one's
        stored outcome (result: those bytes), or `UNSETTLED` when the first was not stored."""
        ...

    def refuse(self, entry_id: bytes, command_id: str, reply_to: str, outcome: bytes) -> None:
        """A command refused before any actor decided it (invalid, misrouted): store and
        publish `outcome`, acknowledge; no version check."""
        ...

    def settle(
        self,
        entry_id: bytes,
        command_id: str,
        actor: int,
        expected: int,
        reply_to: str,
        outcome: bytes,
    ) -> None:
        """A command decided on `actor` at version `expected` with no events (a refusal or
        an idempotent no-op): the version is checked, then the outcome stored and published."""
        ...

    def append(
        self,
        entry_id: bytes,
        command_id: str,
        actor: int,
        expected: int,
        reply_to: str,
        outcome: bytes,
        events: Sequence[bytes],
        routed: Sequence[bytes],
        timers_set: Sequence[tuple[str, int]],
        timers_removed: Sequence[str],
        snapshot: Snapshot | None,
        change: tuple[str, bytes] | None = None,
    ) -> None:
        """A command decided on `actor` at version `expected` with `events` (encoded
        `EventEnvelope`s, versions expected+1..): `routed` (encoded `CommandEnvelope`s) go to
        the partition's command stream, `timers_set` (key, due) and `timers_removed` (keys) are
        the actor's deadline changes, `snapshot` is written when given. `change` (session id,
        message) is published on the session's change feed in the same atomic step, only if
        this command's append is accepted (never for a refused or deduplicated one): the live
        view is an inline projection of the append."""
        ...


class PartitionWriter(Protocol):
    """The lease owner's handle on one partition (`Store.open_partition`), bound to the epoch
    its lease acquisition returned. Every write checks that epoch first: when a newer one
    exists, nothing is written, `Fenced` is raised, and the refusal is counted.

    Commands are read through the partition's consumer group, as `consumer`: an entry read is
    pending for this consumer until an append acknowledges it. Not safe for concurrent use:
    one runner task drives it.
    """

    partition: int
    epoch: int
    consumer: str

    def new_batch(self) -> AppendBatch:
        """An empty batch for this partition."""
        ...

    async def read_commands(self, count: int, block_ms: int) -> list[CommandEntry]:
        """Up to `count` commands never delivered to the group, waiting up to `block_ms`;
        [] when none came. When the last append read ahead, its entries are returned."""
        ...

    @property
    def reading_ahead(self) -> bool:
        """Whether an append sent a read whose entries `read_commands` has not returned."""
        ...

    async def read_own_pending(self, count: int) -> list[CommandEntry]:
        """Up to `count` entries delivered to this consumer and not acknowledged, oldest
        first (after a failed append: what it had read). A read sent ahead is waited for
        first and its entries are among them."""
        ...

    async def claim_pending(self, start: str, count: int) -> tuple[str, list[CommandEntry]]:
        """Take over up to `count` pending entries of any consumer of the group (the previous
        owner's, a stale process's, ours), from position `start`; returns (the position to
        continue from, START when done; the entries). A read sent ahead is waited for first
        (its entries are then pending and claimed like the others)."""
        ...

    async def append(self, batch: AppendBatch, *, read_ahead: bool = False) -> list[AppendResult]:
        """Write `batch` in one atomic, fenced step (see `AppendBatch`); one `AppendResult`
        per command, in order. Raises `Fenced` (nothing written) when the epoch is not the
        partition's current one. With `read_ahead`, the next `read_commands` may be sent
        together with this append (an optimisation a backend may ignore)."""
        ...

    async def due_timers(self, now_ms: int, limit: int) -> list[DueTimer]:
        """Up to `limit` timers due at or before `now_ms`, earliest first."""
        ...

    async def fire_timers(self, fires: Sequence[TimerFire]) -> int:
        """Atomically and fenced: for each fire whose timer still has that due, queue its
        command (if any) on the command stream and remove the timer; a timer whose due moved
        meanwhile is left alone. Returns the commands queued; raises `Fenced`."""
        ...

    async def trim_commands(self) -> int:
        """Drop acknowledged commands below the oldest one still pending or undelivered;
        returns how many went."""
        ...

    async def close(self) -> None:
        """Release the writer's connection; a read in flight is abandoned (its entries stay
        pending for the group)."""
        ...


# --------------------------------------------------------------------------- reading events


class Archive(Protocol):
    """Where events Redis no longer holds are kept (PostgreSQL's `events.archive`, provided by
    `projections/` and injected by whoever opens the store). Its own errors pass through."""

    async def events(self, actor_id: str, after: int, before: int | None) -> list[EventEnvelope]:
        """Archived events of `actor_id` with after < version (< before), oldest first."""
        ...

    async def last_version(self, actor_id: str) -> int:
        """The highest archived version of `actor_id`, 0 when none."""
        ...


class ActorReader(Protocol):
    """One actor's events. The partition of an actor follows from its session id
    (`Store.partition_of`); `find_partition` finds it for an actor whose session is unknown."""

    async def load(
        self, partition: int, actor_ids: Sequence[str], *, from_snapshot: bool = True
    ) -> dict[str, ActorHistory]:
        """For each actor, its snapshot and the events after it (`from_snapshot=False`: no
        snapshot, every event Redis holds). Two round trips whatever the number of actors."""
        ...

    async def read(
        self,
        partition: int,
        actor_id: str,
        *,
        after: int = 0,
        upto: int | None = None,
        limit: int | None = None,
    ) -> list[EventEnvelope]:
        """Events with after < version (<= upto), oldest first, at most `limit`: what Redis
        holds, preceded by what only the archive still has (when the store has one). Gap-free
        where the stores allow: the first event is version after+1 unless neither store holds
        it (callers needing completeness check that)."""
        ...

    async def read_backwards(
        self, partition: int, actor_id: str, *, before: int | None = None, limit: int = 200
    ) -> list[EventEnvelope]:
        """Up to `limit` events with version < before (None: the newest), newest first, from
        Redis only (for looking up a recent event)."""
        ...

    async def last_version(self, partition: int, actor_id: str) -> int:
        """The actor's current version: Redis's newest (also after its entries were trimmed),
        else the archive's; 0 for an actor with no events."""
        ...

    def follow(
        self, partition: int, actor_id: str, *, after: int = 0, block_ms: int = 1000
    ) -> AsyncIterator[EventEnvelope]:
        """Events after version `after` as they are appended, forever (cancel to stop). Uses a
        connection of its own for as long as it is iterated."""
        ...

    async def find_partition(self, actor_id: str, session_id: str | None = None) -> int | None:
        """The actor's partition: from `session_id`, or a session actor's own id, else by
        looking for its events in every partition (None: it has none)."""
        ...

    async def snapshot_versions(
        self, partition: int, actor_ids: Sequence[str]
    ) -> dict[str, int | None]:
        """The version of each actor's snapshot (None: no readable snapshot)."""
        ...

    async def trim(
        self, partition: int, actor_id: str, below: int, *, dry_run: bool = False
    ) -> int:
        """Remove the actor's versions < `below` from Redis (the archive must hold them);
        returns how many went (with `dry_run`, would go). Its last version is kept as known."""
        ...


# --------------------------------------------------------------------------- partition log


class LogReader(Protocol):
    """A reader of several partition logs at once, on a connection of its own (the projector)."""

    async def read(
        self, positions: Mapping[int, str], count: int, block_ms: int
    ) -> dict[int, list[LogEntry]]:
        """Up to `count` entries per partition after each given position, waiting up to
        `block_ms` for the first; only partitions with entries appear."""
        ...

    async def close(self) -> None:
        """Release its connection(s)."""
        ...


class LogConsumer(Protocol):
    """A consumer group on every partition log (the reactor): each entry is delivered to one
    consumer of the group and stays pending until acknowledged."""

    group: str
    consumer: str

    async def ensure(self, partition: int) -> None:
        """Create the group on the partition's log if needed, from the log's first entry."""
        ...

    async def read_pending(self, partition: int, after: str, count: int) -> list[LogEntry]:
        """Up to `count` entries after `after` delivered to this consumer and not
        acknowledged (what it read before a restart)."""
        ...

    async def read_new(self, partition: int, count: int, block_ms: int) -> list[LogEntry]:
        """Up to `count` entries never delivered to the group, waiting up to `block_ms`. Each
        partition blocks on a connection of its own."""
        ...

    async def claim(
        self, partition: int, min_idle_ms: int, start: str, count: int
    ) -> tuple[str, list[LogEntry]]:
        """Take over up to `count` entries pending (with any consumer) for at least
        `min_idle_ms`, from `start`; returns (where to continue, START when done; entries).
        Pending entries trimmed from the log meanwhile are acknowledged and left out."""
        ...

    async def ack(self, partition: int, positions: Sequence[str]) -> None:
        """Mark entries handled: they leave the consumer's pending list."""
        ...

    async def close(self) -> None:
        """Release its connection(s)."""
        ...


class PartitionLog(Protocol):
    """Every event of a partition in append order (`sd:{pN}:log` on Redis)."""

    async def range(
        self,
        partition: int,
        *,
        after: str = START,
        upto: str | None = None,
        count: int | None = None,
    ) -> list[LogEntry]:
        """Entries with after < position (<= upto), oldest first, at most `count`."""
        ...

    async def length(self, partition: int) -> int:
        """Entries the log holds now."""
        ...

    async def count(self, partition: int, after: str, limit: int) -> int:
        """Entries after position `after`, counted up to `limit` (a projector's lag in
        events; the count costs the server time in proportion to it, hence the bound)."""
        ...

    async def trim(self, partition: int, below: str, *, dry_run: bool = False) -> int:
        """Remove the entries before position `below`; returns how many went (would go)."""
        ...

    async def group_floor(self, partition: int) -> str | None:
        """The lowest position a consumer group on the log still needs (its first pending
        entry, else the one after its last delivered); None without groups."""
        ...

    def reader(self, name: str) -> LogReader:
        """A reader for several partitions at once (`name` names its connection); close it."""
        ...

    def consumer(self, group: str, consumer: str) -> LogConsumer:
        """`consumer` of the group `group` on every partition log; close it."""
        ...


# --------------------------------------------------------------------------- leases


class Leases(Protocol):
    """Partition leases per role ("worker", "projector"): one owner at a time, a fencing epoch
    per acquisition, and the live members of the role (for a fair share each)."""

    async def acquire(self, role: str, partition: int, owner: str, ttl_ms: int) -> int | None:
        """Take the lease when it is free (or already `owner`'s) for `ttl_ms`; returns the new
        epoch, higher than any before (every acquisition fences the previous holder, the same
        owner's earlier acquisition too). None when another owner holds it."""
        ...

    async def renew(self, role: str, partition: int, owner: str, epoch: int, ttl_ms: int) -> bool:
        """Extend the lease to `ttl_ms` from now if `owner` holds it and `epoch` is still the
        partition's epoch; False means it is lost (stop writing)."""
        ...

    async def renew_many(
        self, role: str, owner: str, epochs: Mapping[int, int], ttl_ms: int
    ) -> dict[int, bool]:
        """`renew` for several partitions (partition -> epoch) in one round trip."""
        ...

    async def release(self, role: str, partition: int, owner: str) -> bool:
        """Give the lease back if `owner` holds it (True); the epoch stays."""
        ...

    async def holders(self, role: str) -> dict[int, str]:
        """partition -> owner, for every partition whose lease is held."""
        ...

    async def epoch(self, role: str, partition: int) -> int:
        """The partition's current epoch (0 before the first acquisition)."""
        ...

    async def refused(self, role: str, partition: int) -> int:
        """Writes refused so far because they carried an older epoch (`Fenced`)."""
        ...

    async def heartbeat(self, role: str, owner: str, ttl_ms: int) -> int:
        """Say `owner` is alive for `ttl_ms`; returns the number of live members, itself
        included (members whose heartbeat lapsed are dropped)."""
        ...

    async def members(self, role: str) -> list[str]:
        """The live members of the role, sorted."""
        ...

    async def leave(self, role: str, owner: str) -> None:
        """`owner` is no longer a member (a graceful stop)."""
        ...


# --------------------------------------------------------------------------- commands


class CommandSender(Protocol):
    """Sends commands to actors; one reply channel per sender. `close` it when done."""

    name: str

    async def start(self) -> None:
        """Subscribe the reply channel (idempotent; `send` with `wait` does it when needed)."""
        ...

    async def send(
        self,
        actor_id: str,
        session_id: str,
        command: Command,
        *,
        command_id: str | None = None,
        correlation_id: str = "",
        wait: bool = True,
        timeout: float = 5.0,
        fingerprint: str = "",
    ) -> Outcome | None:
        """Queue `command` for `actor_id` (in `session_id`'s partition) under `command_id` (the
        idempotency key; a new one by default). With `wait`, return its `Outcome` (`ok` False:
        a domain error), read from the stored outcome when the reply was missed; raises
        `StoreUnavailable` when the store fails or no outcome comes within `timeout`. Without
        `wait`, return None once it is queued. A command id settled before keeps its first
        outcome (and its first `fingerprint`). Once the sender is started, its sends are queued
        in call order."""
        ...

    async def enqueue(self, partition: int, payload: bytes) -> None:
        """Queue an encoded `CommandEnvelope` (or any bytes: the runtime answers an unreadable
        entry with nothing but an acknowledgement) on a partition's command stream."""
        ...

    async def outcome(self, session_id: str, command_id: str) -> Outcome | None:
        """The stored outcome of an earlier command, if settled and not expired."""
        ...

    async def close(self) -> None:
        """Release its connection(s)."""
        ...


# --------------------------------------------------------------------------- change feed


class FeedSubscription(Protocol):
    """One subscriber connection: `on_change(session_id, payload)` for each message of a
    subscribed session and `on_broadcast(payload)` for each admin broadcast, in publish order,
    called from the connection (they must not block). After a lost connection it reconnects,
    re-subscribes everything and calls `on_reconnect()`: messages published while it was away
    are lost (the caller catches up from the events)."""

    reconnects: int

    async def start(self) -> None:
        """Connect (raises `StoreUnavailable`); subscribes the broadcast when it has a handler."""
        ...

    async def subscribe(self, session_id: str) -> None:
        """Returns once the subscription is confirmed (messages published after are seen)."""
        ...

    async def unsubscribe(self, session_id: str) -> None:
        """No more messages of the session (those already in flight may still arrive)."""
        ...

    async def close(self) -> None:
        """Release its connection(s)."""
        ...


class ChangeFeed(Protocol):
    """Per-session change messages (the live view) and the admin broadcast: fire and forget,
    only live subscribers receive them."""

    async def publish(self, session_id: str, payload: bytes) -> int:
        """Send to the session's subscribers; returns how many connections received it."""
        ...

    async def broadcast(self, payload: bytes) -> int:
        """Send to every subscriber with a broadcast handler; returns how many received it."""
        ...

    def subscriber(
        self,
        on_change: Callable[[str, bytes], None],
        *,
        on_broadcast: Callable[[bytes], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        name: str = "",
    ) -> FeedSubscription:
        """A subscriber connection (not connected before `start`); `name` names it."""
        ...


# --------------------------------------------------------------------------- registries


class ConnectionRegistry(Protocol):
    """Which client connections each gateway holds (admin reads), with a TTL per gateway so a
    crashed gateway's connections go away."""

    async def register(self, gateway_id: str, connection_id: str, info: bytes, ttl_s: int) -> None:
        """Record a connection (`info`: the gateway's JSON) and renew the gateway's TTL."""
        ...

    async def unregister(self, gateway_id: str, connection_id: str) -> None:
        """Forget one connection of the gateway."""
        ...

    async def refresh(self, gateway_id: str, ttl_s: int) -> None:
        """Renew the gateway's registry TTL and announce it."""
        ...

    async def announce(self, gateway_id: str) -> None:
        """List the gateway among the known gateways."""
        ...

    async def remove_gateway(self, gateway_id: str) -> None:
        """Forget the gateway and its connections (a graceful stop)."""
        ...

    async def connections(self) -> list[tuple[str, str, bytes]]:
        """(gateway id, connection id, info) of every live registered connection."""
        ...


class DeviceIndex(Protocol):
    """user + device -> the session that device uses (the REST session-for-device lookup)."""

    async def get(self, user_id: str, device_id: str) -> str | None:
        """The session the device uses, None when there is none (or it expired)."""
        ...

    async def claim(self, user_id: str, device_id: str, session_id: str, ttl_s: int) -> bool:
        """Set the entry only if there is none (True: set)."""
        ...

    async def put(self, user_id: str, device_id: str, session_id: str, ttl_s: int) -> None:
        """Set the entry (replacing any), for `ttl_s`."""
        ...


class TickReader(Protocol):
    """Reads several simulators' tick streams on a connection of its own (blocking)."""

    async def read(
        self, positions: Mapping[str, str], count: int, block_ms: int
    ) -> dict[str, list[tuple[str, bytes]]]:
        """Up to `count` ticks per simulator after each position (simulator id -> position),
        waiting up to `block_ms`; only simulators with ticks appear."""
        ...

    async def close(self) -> None:
        """Release its connection(s)."""
        ...


class MarketData(Protocol):
    """Each simulator's capped tick stream, and which simulator ticks for a session."""

    async def publish(self, ticks: Sequence[tuple[str, bytes]], maxlen: int) -> None:
        """Append (simulator id, tick JSON) pairs in one round trip, each stream capped at
        about `maxlen` ticks."""
        ...

    async def latest(self, simulator_id: str) -> tuple[str, bytes] | None:
        """(position, tick) of the newest tick, None when there is none."""
        ...

    async def length(self, simulator_id: str) -> int:
        """Ticks the simulator's stream holds now."""
        ...

    def reader(self, name: str = "") -> TickReader:
        """A blocking reader of several tick streams; close it."""
        ...

    async def mark_active(self, session_id: str, simulator_id: str, ttl_ms: int) -> None:
        """`simulator_id` ticks for the session (expires unless renewed)."""
        ...

    async def active_simulator(self, session_id: str) -> str | None:
        """The simulator marked as ticking for the session, None when none (or the mark expired)."""
        ...

    async def unmark_active(self, session_id: str, simulator_id: str) -> None:
        """Clear the mark if it still names `simulator_id`."""
        ...


class ControlReader(Protocol):
    """A simulators host reading its control stream (blocking, on a connection of its own)."""

    async def read(self, after: str, count: int, block_ms: int) -> list[tuple[str, bytes]]:
        """Up to `count` requests (position, payload) after position `after`, waiting up to
        `block_ms`."""
        ...

    async def remove(self, position: str) -> None:
        """Delete a handled request from the stream."""
        ...

    async def close(self) -> None:
        """Release its connection(s)."""
        ...


class SimulatorHosts(Protocol):
    """How the `local` provisioner and the `sessiond simulators` hosts find each other: live
    hosts with their load, one control stream per host, acknowledgements per request, and
    where each simulator was placed."""

    async def register(self, host_id: str, ttl_ms: int, load: int) -> None:
        """The host is alive for `ttl_ms` and runs `load` simulators (hosts dead for an hour
        are forgotten)."""
        ...

    async def deregister(self, host_id: str) -> None:
        """Forget the host, its load and its control stream."""
        ...

    async def live(self) -> list[str]:
        """Hosts whose registration has not lapsed."""
        ...

    async def loads(self, host_ids: Sequence[str]) -> dict[str, int]:
        """How many simulators each host runs (0 when unknown)."""
        ...

    async def placement(self, simulator_id: str) -> str | None:
        """The host a simulator was placed on, None when it was not (or the placement expired)."""
        ...

    async def place(self, simulator_id: str, host_id: str, ttl_s: int) -> None:
        """Record the simulator's host, for `ttl_s`."""
        ...

    async def unplace(self, simulator_id: str) -> None:
        """Forget the simulator's placement."""
        ...

    async def request(self, host_id: str, payload: bytes) -> None:
        """Queue a control request on the host's stream (capped)."""
        ...

    def control_reader(self, host_id: str) -> ControlReader:
        """The host's reader of its own control stream; close it."""
        ...

    async def acknowledge(
        self, request_id: str, payload: bytes, host_id: str, load: int, ttl_s: int
    ) -> None:
        """Answer a request (kept `ttl_s`) and update the host's load, in one round trip."""
        ...

    async def wait_ack(self, request_id: str, timeout_s: float) -> bytes | None:
        """The answer to a request, waiting up to `timeout_s` (None: none came)."""
        ...


class StatusBoard(Protocol):
    """Small status records per process of a role (the projector's health), with a TTL so a
    dead process's record goes away."""

    async def put(self, role: str, owner: str, payload: bytes, ttl_ms: int) -> None:
        """Set the owner's record (replacing it) for `ttl_ms`."""
        ...

    async def get(self, role: str, owners: Sequence[str]) -> dict[str, bytes | None]:
        """Each owner's record, None when it has none (or it expired)."""
        ...

    async def delete(self, role: str, owner: str) -> None:
        """Remove the owner's record (a graceful stop)."""
        ...


# --------------------------------------------------------------------------- the store


class Store(Protocol):
    """Everything above for one deployment (`partitions` is fixed per deployment)."""

    partitions: int
    #: where `ActorReader.read` finds what Redis no longer holds (None: nowhere); whoever
    #: opens the store may set it later (e.g. once PostgreSQL is reachable)
    archive: Archive | None
    actors: ActorReader
    log: PartitionLog
    leases: Leases
    feed: ChangeFeed
    connections: ConnectionRegistry
    devices: DeviceIndex
    market_data: MarketData
    simulator_hosts: SimulatorHosts
    statuses: StatusBoard

    @property
    def commands(self) -> CommandSender:
        """The store's own sender (created on first use, closed with the store)."""
        ...

    def command_sender(self, name: str | None = None) -> CommandSender:
        """A new sender with a reply channel of its own (`name` appears in connection names);
        the caller closes it."""
        ...

    def partition_of(self, session_id: str) -> int:
        """The partition of a session (and of every actor of that session)."""
        ...

    def open_partition(
        self, partition: int, epoch: int, consumer: str, *, outcome_ttl_ms: int = ...
    ) -> PartitionWriter:
        """The writer of a partition whose lease `epoch` the caller holds (no I/O here)."""
        ...

    async def connect(self) -> str:
        """Reach the store now (its first use does otherwise) and say what it found: "single
        node (valkey 9.1.2)", "cluster: 3 masters (redis 7.2.4)". Raises `StoreUnavailable`
        when it cannot be reached or is too old (Redis < 7.0, Valkey < 7.2)."""
        ...

    async def placements(self) -> dict[int, Placement]:
        """Each partition's slot and the node serving it now."""
        ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers (every master of a cluster)."""
        ...

    async def durability(self) -> Durability:
        """The server's eviction policy and persistence (`Durability`)."""
        ...

    async def aclose(self) -> None:
        """Close every connection the store opened itself (and its own sender)."""
        ...
