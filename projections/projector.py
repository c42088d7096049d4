"""The projector: partition logs -> PostgreSQL read models + archive, exactly once.

For every partition it holds a lease on (role "projector", through the event store's `Leases`),
it reads the partition log after its checkpoint. Each round reads all owned partitions at once
(the store's `LogReader`: one XREAD on Redis), projects each partition's batch in memory, and
commits them all in ONE transaction that (1) advances every checkpoint, each fenced by its
partition's lease epoch, the position it read from and the tables' generation, (2) appends every
event to `events.archive`, (3) writes the coalesced row changes of `projections.model`
set-based, (4) records each actor's last archived version: the same handful of statements
whatever the number of partitions. It publishes nothing: the clients' live view is published by
the worker's append itself (`projections.changes.live_change`, an inline projection), so no push
waits for a SQL commit. A crash anywhere before COMMIT leaves nothing behind; a crash after it
leaves the checkpoints past the batches; the next owner resumes from the checkpoint. A stale
owner (paused past its lease) finds a checkpoint's epoch raised by the new owner: the whole
round rolls back, the fenced partitions are let go and the others are read and committed again
next round.

It keeps the aggregates of the sessions it projects in memory (bounded per partition), loading
missing ones from the tables in one query per batch, so projecting is pure computation plus a
handful of set-based statements per round, on one connection the loop holds.

Nothing stops a partition for long: an event that cannot be projected is found in its batch,
recorded in `projection.dead_letters` with the checkpoint moved past it, and skipped
(`Projector._isolate`); a PostgreSQL outage is waited out with backoff, the leases kept and
their checkpoints claimed again when the server answers, and reported in the projector's status
record (`projections.health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec

from events import simulator as si
from events.codec import UPCASTERS, AnyEvent, decode_event, decode_event_envelope
from events.errors import Fenced, StoreUnavailable
from infra.metrics import counter, gauge, histogram
from infra.postgres import Outage, unreachable
from infra.sections import ProjectorConfig
from infra.store import LeaseShare, LogEntry, Store, position_key
from projections.dead_letters import DeadLetter, dead_letter, write_dead_letters
from projections.health import ROLE, ProjectorStatus, describe, publish_status
from projections.model import (
    RowChanges,
    SessionAggregate,
    diff,
    project_session,
    project_simulator,
)
from projections.store import (
    COPY_THRESHOLD,
    load_sessions,
    simulator_sessions,
    write_actor_versions,
    write_archive,
    write_changes,
    write_round,
)

__all__ = [
    "CHECKPOINT_NAME",
    "ROLE",
    "Batch",
    "PartitionsFenced",
    "Projector",
    "ProjectorConfig",
    "claim_partition",
    "commit_batch",
    "commit_batches",
    "merge_changes",
    "pool_settings",
    "prepare_batch",
]

log = logging.getLogger("sessiond.projector")
_json = msgspec.json.Encoder()

DEAD_LETTERS = counter(
    "sessiond_projector_dead_letters_total",
    "Events the projector could not project, recorded and skipped",
    ("partition",),
)
OWNED = gauge(
    "sessiond_projector_owned_partitions", "Partitions whose projector lease this process holds"
)
EVENTS = counter("sessiond_projector_events_total", "Events projected into PostgreSQL")
ROUND_SECONDS = histogram(
    "sessiond_projector_batch_seconds",
    "Time of one round: projecting its batches and committing them",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG_SECONDS = gauge(
    "sessiond_projector_lag_seconds",
    "Age of the oldest event of the partition log not in PostgreSQL yet (0: caught up)",
    ("partition",),
)
LAG_EVENTS = gauge(
    "sessiond_projector_lag_events",
    "Events of the partition log after the checkpoint (counted up to 10,000)",
    ("partition",),
)

#: Lag in events is counted up to this many per partition, once every `LAG_EVENTS_EVERY`
#: status rounds: counting blocks Redis in proportion (measured on 200-byte entries: 10,000
#: in 6 ms, 100,000 in 90 ms), so 16 partitions far behind cost Redis about 2% of its time;
#: beyond the limit the answer is "far behind" anyway (the backlog alert fires at it). The lag
#: in seconds, one entry read per partition, is measured every round.
LAG_EVENTS_LIMIT = 10_000
LAG_EVENTS_EVERY = 5

CHECKPOINT_NAME = "live"

#: After a round's transaction failed (not fenced), commit each partition on its own for this
#: long, so one batch the database refuses cannot stall every partition.
_SOLO_SECONDS = 30.0

#: From this many events in a round on (a backlog), each partition is prepared and committed on
#: a pooled connection of its own, concurrently: the Python work of one partition then overlaps
#: PostgreSQL's work on another's, which one connection cannot do (measured: about 1.5x the
#: backlog throughput). Smaller rounds (live traffic) go in one statement (`commit_batches`).
CONCURRENT_FROM = 2000


@dataclass
class PartitionState:
    """What the projector knows about one owned partition."""

    epoch: int
    last_id: str
    generation: int = 0  # of the tables the cache was loaded from (bumped by a rebuild)
    cache: OrderedDict[str, SessionAggregate | None] = field(default_factory=OrderedDict)
    simulators: dict[str, str] = field(default_factory=dict)  # simulator uuid -> session id


@dataclass
class Batch:
    """One batch of a partition, projected in memory, ready to commit."""

    partition: int
    from_id: str
    generation: int
    to_id: str
    archive: list[Any]
    changes: Any  # RowChanges
    actors: list[tuple[str, str, int, int, int]]  # (actor, session, partition, version, ts)
    after: dict[str, SessionAggregate | None]
    simulators: dict[str, str]
    dead: list[DeadLetter] = field(default_factory=list)  # entries skipped, recorded instead

    @property
    def size(self) -> int:
        return len(self.archive)


async def claim_partition(
    conn: asyncpg.Connection,
    partition: int,
    epoch: int,
    name: str = CHECKPOINT_NAME,
    lock_timeout_ms: int = 2000,
) -> tuple[str, int]:
    """Raise the checkpoint's epoch to ours (fencing every older owner out) and return the
    position to resume from. Raises `Fenced` if a newer owner already claimed it."""
    await conn.execute(
        "INSERT INTO projection.checkpoints (name, partition) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING",
        name,
        partition,
    )
    try:
        async with conn.transaction():
            # an old owner frozen inside its transaction holds the row: do not wait forever
            # (its server session ends by idle_in_transaction_session_timeout; retry then)
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            row = await conn.fetchrow(
                "UPDATE projection.checkpoints SET epoch = $3, updated_at = now()"
                " WHERE name = $1 AND partition = $2 AND epoch <= $3"
                " RETURNING last_id, generation",
                name,
                partition,
                epoch,
            )
    except asyncpg.LockNotAvailableError:
        raise Fenced(
            f"partition {partition}: the previous owner still holds the checkpoint"
            " row; retrying later"
        ) from None
    if row is None:
        raise Fenced(f"partition {partition}: a newer projector owns the checkpoint")
    return row["last_id"], row["generation"]


class _DecodedEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """`EventEnvelope` with its body decoded in the same pass (one msgpack decode per entry)."""

    event_id: str
    actor_id: str
    version: int
    partition: int
    ts: int
    command_id: str
    correlation_id: str
    causation_id: str
    type: str
    data: AnyEvent
    traceparent: str = ""


_one_pass = msgspec.msgpack.Decoder(_DecodedEnvelope)


def decode_entries(entries: list[LogEntry]) -> list[tuple[str, Any, Any]]:
    """Log entries (position, encoded envelope) -> (position, envelope, event). Envelope and
    body in one pass, unless an old event shape must be upcast (then the codec's two-step
    path). An entry that does not decode comes back as (position, None, the error): the
    projector dead-letters it."""
    out: list[tuple[str, Any, Any]] = []
    for log_id, payload in entries:
        try:
            if not UPCASTERS:
                try:
                    env = _one_pass.decode(payload)
                    out.append((log_id, env, env.data))
                    continue
                except msgspec.ValidationError:  # a compressed body (`events.codec.deflate`)
                    pass
            env = decode_event_envelope(payload)
            out.append((log_id, env, decode_event(env.data, env.type)))
        except Exception as e:  # whatever it is, this entry cannot be read
            out.append((log_id, None, e))
    return out


#: SQLSTATE classes of a refusal caused by the rows themselves, not by the server's state:
#: 22 data exception (e.g. U+0000 in a JSON string: "unsupported Unicode escape sequence"),
#: 23 integrity constraint violation, 54 program limit exceeded (a value too large to index).
_REFUSED_DATA_CLASSES = ("22", "23", "54")


async def prepare_batch(
    conn: asyncpg.Connection,
    partition: int,
    state: PartitionState,
    items: list[tuple[str, Any, Any]],
) -> Batch:
    """Project `items` (log id, envelope, event) on top of what the tables hold; no writes."""
    # which session each event belongs to: unknown simulators are looked up once per batch
    routed: list[tuple[str, str, str | None]] = []  # (kind, actor uuid, session id)
    unknown: set[str] = set()
    sims = state.simulators
    new_sims: dict[str, str] = {}
    for _, env, ev in items:
        kind, _, uid = env.actor_id.partition(":")
        if (
            kind == "simulator"
            and type(ev) is not si.SimulatorRequested
            and uid not in sims
            and uid not in new_sims
        ):
            unknown.add(uid)
        elif type(ev) is si.SimulatorRequested:
            new_sims[uid] = ev.session_id
    if unknown:
        sims.update(await simulator_sessions(conn, list(unknown)))
    seen: dict[str, str] = {}
    for _, env, ev in items:
        kind, _, uid = env.actor_id.partition(":")
        if kind == "session":
            sid: str | None = uid
        elif kind == "simulator":
            if type(ev) is si.SimulatorRequested:
                sid = seen[uid] = ev.session_id
            else:
                sid = seen.get(uid) or sims.get(uid)
        else:
            sid = None
        routed.append((kind, uid, sid))
    cache = state.cache
    wanted = {sid for _, _, sid in routed if sid is not None}
    missing = [sid for sid in wanted if sid not in cache]
    loaded = await load_sessions(conn, missing) if missing else {}
    before: dict[str, SessionAggregate | None] = {
        sid: (cache[sid] if sid in cache else loaded.get(sid)) for sid in wanted
    }
    after = dict(before)
    actors: dict[str, tuple[str, int, int, int]] = {}
    archive = []
    encode_json = _json.encode
    for (log_id, env, ev), (kind, uid, sid) in zip(items, routed, strict=True):
        actors[env.actor_id] = (sid or "", env.partition, env.version, env.ts)
        if sid is not None:
            if kind == "session":
                after[sid] = project_session(after[sid], uid, ev)
            else:
                after[sid] = project_simulator(after[sid], uid, ev)
        event_json = encode_json(ev)
        archive.append(
            (
                env.event_id,
                env.actor_id,
                env.version,
                env.partition,
                env.ts,
                env.type,
                event_json.decode(),
                env.command_id,
                env.correlation_id,
                env.causation_id,
                log_id,
            )
        )
    return Batch(
        partition=partition,
        from_id=state.last_id,
        generation=state.generation,
        to_id=items[-1][0],
        archive=archive,
        changes=diff((before[s], after[s]) for s in wanted),
        actors=[(a, *t) for a, t in actors.items()],
        after=after,
        simulators=new_sims,
    )


class PartitionsFenced(Fenced):
    """Some partitions of a commit are no longer ours (a newer owner, a rebuild): the whole
    transaction was rolled back; `partitions` lists the fenced ones."""

    def __init__(self, message: str, partitions: Iterable[int]) -> None:
        super().__init__(message)
        self.partitions = frozenset(partitions)


def merge_changes(changes: Sequence[RowChanges]) -> RowChanges:
    """Row changes of disjoint batches (different partitions: different sessions, devices,
    handoffs, simulators) as one, each table's rows concatenated in batch order."""
    nonempty = [c for c in changes if c]
    if len(nonempty) <= 1:
        return nonempty[0] if nonempty else RowChanges()
    return RowChanges(
        **{
            f: [row for c in nonempty for row in getattr(c, f)]
            for f in RowChanges.__struct_fields__
        }
    )


#: Advance every partition's checkpoint at once, fenced per partition by its lease epoch, the
#: position the batch was read from and the tables' generation. The rows are locked in partition
#: order first, so two projectors (one of them stale) updating overlapping partitions cannot
#: deadlock. RETURNING names the partitions that passed the fence.
_ADVANCE = (
    "WITH locked AS MATERIALIZED (SELECT partition FROM projection.checkpoints"
    " WHERE name = $1 AND partition = ANY($2::int[]) ORDER BY partition FOR UPDATE)"
    " UPDATE projection.checkpoints c SET last_id = u.to_id, epoch = u.epoch,"
    " events = c.events + u.n, updated_at = now()"
    " FROM unnest($2::int[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])"
    " AS u(partition, from_id, to_id, epoch, n, generation)"
    " WHERE c.name = $1 AND c.partition = u.partition"
    " AND c.partition IN (SELECT partition FROM locked)"
    " AND c.epoch <= u.epoch AND c.last_id = u.from_id AND c.generation = u.generation"
    " RETURNING c.partition"
)


async def commit_batches(
    conn: asyncpg.Connection,
    batches: Sequence[Batch],
    epochs: Mapping[int, int],
    name: str = CHECKPOINT_NAME,
    before_commit: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Write batches of distinct partitions and advance their checkpoints in ONE transaction:
    one statement (`write_round`) when the round is small and no `before_commit` hook is given,
    else as many statements as one batch (checkpoints, archive, one per changed table, actor
    versions) in a transaction block. If any partition is fenced (`epochs[p]` is no longer the
    newest owner's, the checkpoint moved, the tables were rebuilt), nothing is written and
    `PartitionsFenced` names the fenced partitions."""
    if not batches:
        return
    parts = [b.partition for b in batches]
    if len(set(parts)) != len(parts):
        raise ValueError(f"one batch per partition, got partitions {parts}")
    fence = (
        parts,
        [b.from_id for b in batches],
        [b.to_id for b in batches],
        [epochs[p] for p in parts],
        [b.size for b in batches],
        [b.generation for b in batches],
    )
    if len(batches) == 1:
        archive, changes, actors = batches[0].archive, batches[0].changes, batches[0].actors
    else:
        archive = [row for b in batches for row in b.archive]
        changes = merge_changes([b.changes for b in batches])
        actors = [row for b in batches for row in b.actors]
    dead = [row for b in batches for row in b.dead]
    if (
        before_commit is None
        and len(archive) < COPY_THRESHOLD
        and not dead
        and not conn.is_in_transaction()
    ):
        # the common case (a few events per round): everything in ONE statement, one round trip
        passed = await write_round(conn, name, *fence, archive, changes, actors)
        fenced = set(parts) - passed
        if fenced:
            raise PartitionsFenced(
                f"partitions {sorted(fenced)}: checkpoint moved, a newer projector took over,"
                " or the tables were rebuilt; nothing of the round was written",
                fenced,
            )
        return
    # big rounds (the archive goes by COPY), dead letters, or a hook to run before COMMIT:
    # a transaction block
    async with conn.transaction():
        rows = await conn.fetch(_ADVANCE, name, *fence)
        fenced = set(parts).difference(r[0] for r in rows)
        if fenced:
            raise PartitionsFenced(
                f"partitions {sorted(fenced)}: checkpoint moved, a newer projector took over,"
                " or the tables were rebuilt; the round's batches were dropped",
                fenced,
            )
        await write_archive(conn, archive)
        await write_changes(conn, changes)
        await write_actor_versions(conn, actors)
        await write_dead_letters(conn, name, dead)
        if before_commit is not None:
            await before_commit()


async def commit_batch(
    conn: asyncpg.Connection,
    batch: Batch,
    epoch: int,
    name: str = CHECKPOINT_NAME,
    before_commit: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Write the batch and advance the checkpoint in one transaction, or raise `Fenced`."""
    await commit_batches(conn, [batch], {batch.partition: epoch}, name, before_commit)


def pool_settings(config: ProjectorConfig) -> dict[str, str]:
    """Server settings for the projector's connections.

    A projector frozen (SIGSTOP) inside a transaction loses it after two lease periods, so its
    row locks cannot block the new owner.

    Its commits do not wait for the WAL flush (`synchronous_commit=off`): the tables are a read
    model of the Redis event log, and each round's checkpoint is in the same transaction as its
    rows. A database crash can forget the last rounds (well under a second of them), but never
    part of one. It forgets their checkpoints with them, so the next owner projects those events
    again (the upserts are idempotent, the archive tolerates duplicates). A durable server
    (`fsync=on`) thus costs no flush wait per round; measured,
    p99 of a state update at 1,000/s: 26-29 ms against 33-47 ms with `synchronous_commit=on`."""
    return {
        "idle_in_transaction_session_timeout": str(2 * config.lease_ttl_ms),
        "synchronous_commit": "off",
        "application_name": "sessiond-projector",
    }


#: Waits between failed rounds while a store is down or restarting: doubling from the first
#: to the last, so a PostgreSQL restart is noticed within the last one of coming back.
BACKOFF_S = (0.1, 2.0)

#: How often the projector publishes its status record (and, when it has not reached
#: PostgreSQL meanwhile, probes it).
STATUS_PERIOD_S = 1.0


def _outage(exc: BaseException) -> bool:
    """A store down or restarting: the event store gone, PostgreSQL unreachable."""
    return isinstance(exc, StoreUnavailable) or unreachable(exc)


def _refused_rows(exc: BaseException) -> bool:
    """PostgreSQL (or asyncpg, encoding a value) refused the rows of a commit: certainly nothing
    was written, and the rows of one event may be the cause."""
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in _REFUSED_DATA_CLASSES
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


class Projector:
    """`sessiond projector`: lease partitions, project their logs into the read models.

    Each round reads every owned partition's log at once and commits all the batches it
    got in ONE transaction on a connection the loop keeps (no pool acquire/reset per round), or,
    for a backlog, each partition concurrently on a pooled connection.

    No event stops a partition: a batch that cannot be projected is split until the event that
    cannot be projected alone is found; it is recorded as a dead letter and skipped, the rest is
    committed (see `_isolate`). No outage stops the projector: while a store is down it retries
    with a growing wait, keeps its leases, claims the checkpoints of leased partitions as soon
    as PostgreSQL answers again, and says what is wrong in its status record (`status()`)."""

    def __init__(
        self,
        config: ProjectorConfig,
        store: Store,
        pool: asyncpg.Pool,
        owner: str | None = None,
        *,
        status_period_s: float = STATUS_PERIOD_S,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`before_commit` is awaited inside every round's transaction, before COMMIT (tests
        widen the crash window with a sleep); with it, every round goes as a transaction
        block."""
        self.config = config
        self.store = store
        self.pool = pool
        self.owner = owner or (
            f"projector-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.leases = LeaseShare(
            store.leases, ROLE, self.owner, config.partitions, config.lease_ttl_ms
        )
        self._reader = store.log.reader(self.owner)  # the loop's, on a connection of its own
        self._round_at = 0.0  # when the last round's read returned (see round_min_ms)
        self.parts: dict[int, PartitionState] = {}
        self.events_projected = 0
        self.rounds_committed = 0
        self.dead_letters = 0
        self.started_at = int(time.time() * 1000)
        # reachability of the stores, logged once per outage (not once per failed round)
        self.pg = Outage("projector: PostgreSQL", log)
        self.store_outage = Outage("projector: event store", log)
        self._pg_ok_at = 0.0  # monotonic: the last time PostgreSQL answered
        self._unclaimed: set[int] = set()  # leased partitions whose claim failed (retried)
        self._lag_seconds = 0.0
        self._lag_labels: set[int] = set()  # partitions whose lag the metrics report
        self._lag_rounds = 0  # lag measurements so far (events are counted every few)
        self.lease_round_at = 0.0  # monotonic: when the last lease round completed
        self._status_period_s = status_period_s
        self._stop = asyncio.Event()
        self._lease_soon = asyncio.Event()  # a lease was handed back: take partitions again now
        self._retry_now = asyncio.Event()  # PostgreSQL is back: end the main loop's backoff
        self._cache_per_partition = max(1000, config.cache_sessions // max(1, config.partitions))
        self._conn: asyncpg.Connection | None = None  # the loop's own, held across rounds
        self._solo_until = 0.0  # monotonic: commit partition by partition until then
        self._before_commit = before_commit
        # the first housekeeping runs one interval after the start (`projections.housekeeping`)
        self._housekeep_at = time.monotonic() + config.housekeeping_interval_ms / 1000

    def stop(self) -> None:
        self._stop.set()
        self._lease_soon.set()
        self._retry_now.set()

    # ------------------------------------------------------------------ status
    async def health_check(self) -> str | None:
        """For `/healthz`: None while it reaches PostgreSQL, has claimed the checkpoint of every
        partition it leases and its lease loop completes its rounds; else what is wrong."""
        status = self.status()
        if not status.healthy:
            return describe(status)
        late = time.monotonic() - self.lease_round_at
        if late > max(5.0, self.config.lease_ttl_ms / 1000):
            if not self.lease_round_at:
                return "the lease loop has not completed a round yet"
            return f"the lease loop has not completed a round for {late:.0f} s"
        return None

    def status(self) -> ProjectorStatus:
        """This projector's health now (what `_status_loop` publishes)."""
        down = self.pg.down_since
        return ProjectorStatus(
            owner=self.owner,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            updated_at=int(time.time() * 1000),
            postgres="ok" if down is None else "unreachable",
            postgres_down_since=0 if down is None else int(down * 1000),
            last_error="" if down is None else self.pg.last_error,
            leases=sorted(self.leases.held),
            projecting=sorted(self.parts),
            unclaimed=sorted(self._unclaimed & set(self.leases.held)),
            lag_seconds=round(self._lag_seconds, 3),
            events_projected=self.events_projected,
            dead_letters=self.dead_letters,
        )

    def _pg_answered(self) -> None:
        self._pg_ok_at = time.monotonic()
        if not self.pg.up:  # back: claim and project now, not after the current backoff
            self._retry_now.set()
            self._lease_soon.set()
        self.pg.ok()

    async def _probe_postgres(self) -> None:
        """Ask PostgreSQL whether it is there, unless a round or a claim just found out."""
        if time.monotonic() - self._pg_ok_at < self._status_period_s:
            return
        try:
            async with asyncio.timeout(max(1.0, self._status_period_s)):
                await self.pool.fetchval("SELECT 1")
        except Exception as e:
            if not (unreachable(e) or isinstance(e, TimeoutError)):
                raise
            self.pg.failed(e)
            return
        self._pg_answered()

    async def _measure_lag(self) -> float:
        """Age in seconds of the oldest log entry of an owned partition not projected yet; the
        per-partition lag (seconds and events) goes to the metrics."""
        owned = list(self.parts.items())
        for p in self._lag_labels - set(self.parts):
            LAG_SECONDS.remove(str(p))
            LAG_EVENTS.remove(str(p))
        self._lag_labels = set(self.parts)
        if not owned:
            return 0.0
        log_ = self.store.log
        nexts = await asyncio.gather(
            *(log_.range(p, after=state.last_id, count=1) for p, state in owned)
        )
        behind = [(p, state) for (p, state), got in zip(owned, nexts, strict=True) if got]
        self._lag_rounds += 1
        count = self._lag_rounds % LAG_EVENTS_EVERY == 1
        counts = await asyncio.gather(
            *(
                log_.count(p, state.last_id, LAG_EVENTS_LIMIT)
                for p, state in (behind if count else ())
            )
        )
        waiting = dict(zip((p for p, _ in behind), counts, strict=True)) if count else {}
        now = time.time()
        oldest = 0.0
        for (p, _), got in zip(owned, nexts, strict=True):
            age = max(0.0, now - position_key(got[0][0])[0] / 1000) if got else 0.0
            oldest = max(oldest, age)
            LAG_SECONDS.labels(str(p)).set(age)
            if not got:
                LAG_EVENTS.labels(str(p)).set(0)
            elif p in waiting:
                LAG_EVENTS.labels(str(p)).set(waiting[p])
        return oldest

    async def _status_loop(self) -> None:
        """Publish the status record every period; while PostgreSQL is unreachable, probe it
        four times as often, so its return is noticed (and acted on) within a quarter period."""
        ttl_ms = int(self._status_period_s * 5000)
        while not self._stop.is_set():
            period = self._status_period_s if self.pg.up else self._status_period_s / 4
            try:
                await self._probe_postgres()
                self._lag_seconds = await self._measure_lag()
                await publish_status(self.store.statuses, self.status(), ttl_ms)
            except Exception as e:
                if _outage(e):
                    self.store_outage.failed(e)
                else:
                    log.warning("projector status round failed: %r", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), period)

    # ------------------------------------------------------------------ leases
    async def _rebalance(self) -> None:
        """Renew, take and give back leases; claim the checkpoint of every leased partition not
        claimed yet: just acquired, or acquired while PostgreSQL did not answer (a lease alone
        projects nothing: without this retry such a partition would stay leased and idle).
        Partitions held beyond the fair share (another projector started) are let go."""
        share = await self.leases.tick()
        for p in share.lost:
            self.parts.pop(p, None)
            log.info("partition lease lost", extra={"partition": p})
        for p in share.surplus:
            self.parts.pop(p, None)
            await self.leases.release(p)
            log.info("partition handed over", extra={"partition": p})
        OWNED.set(len(self.leases.held))
        for p, epoch in sorted(self.leases.held.items()):
            if p in self.parts:
                continue
            try:
                async with self.pool.acquire() as conn:
                    last, generation = await claim_partition(
                        conn, p, epoch, lock_timeout_ms=self.config.lease_ttl_ms / 2
                    )
            except Fenced:
                await self.leases.release(p)
                continue
            except Exception as e:
                if not unreachable(e):
                    raise
                self.pg.failed(e)
                self._unclaimed.update(p for p in self.leases.held if p not in self.parts)
                return  # the leases stay ours; claimed when PostgreSQL answers again
            self._pg_answered()
            self._unclaimed.discard(p)
            self.parts[p] = PartitionState(epoch=epoch, last_id=last, generation=generation)
            log.info(
                "partition acquired",
                extra={
                    "partition": p,
                    "epoch": epoch,
                    "checkpoint": last,
                    "retried": p not in share.gained,
                },
            )

    async def _lease_loop(self) -> None:
        """Lease rounds every third of the lease TTL; sooner while leased partitions wait for
        their checkpoint (every 0.5 s), or right after one was handed back (`_forget`: a
        fenced or uncertain commit), at most every 0.1 s."""
        period = self.config.lease_ttl_ms / 3000
        while not self._stop.is_set():
            unclaimed = any(p not in self.parts for p in self.leases.held)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._lease_soon.wait(), min(period, 0.5) if unclaimed else period
                )
            if self._stop.is_set():
                break
            if self._lease_soon.is_set():
                self._lease_soon.clear()
                await asyncio.sleep(0.1)
            try:
                await self._rebalance()
                self.lease_round_at = time.monotonic()
            except Exception as e:  # Redis or Postgres hiccup: keep what we have, try again
                if isinstance(e, StoreUnavailable) or (isinstance(e, OSError) and self.pg.up):
                    self.store_outage.failed(e)
                else:
                    log.exception("lease round failed")

    # ------------------------------------------------------------------ the loop's connection
    async def _connection(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is not None:
            try:
                if not conn.is_closed():
                    return conn
            except asyncpg.InterfaceError:
                pass  # lost: asyncpg detached it and gave its slot back to the pool already
            await self._release_connection()
        conn = self._conn = await self.pool.acquire()
        return conn

    async def _release_connection(self, *, discard: bool = False) -> None:
        """Give the loop's connection back to the pool; `discard` closes it first (after an
        error: whatever state it is in, the server rolls its transaction back)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # a lost connection's proxy is detached: no-op
            if discard:
                conn.terminate()
            await self.pool.release(conn)

    async def _forget(self, p: int, state: PartitionState) -> None:
        """Drop a partition we can no longer vouch for and hand its lease back (unless the
        lease loop has meanwhile claimed it afresh)."""
        if self.parts.get(p) is state:
            del self.parts[p]
            await self.leases.release(p)
            self._lease_soon.set()

    # ------------------------------------------------------------------ rounds
    async def _project_round(self, work: list[tuple[int, PartitionState, list[Any]]]) -> int:
        """Project and commit one round (partition, state, decoded items); returns the events
        committed."""
        started = time.perf_counter()
        if len(work) > 1 and sum(len(items) for _, _, items in work) >= CONCURRENT_FROM:
            done, error = await self._commit_concurrently(work)
        else:
            done, error = await self._commit_together(work)
        ROUND_SECONDS.observe(time.perf_counter() - started)
        events = self._announce(done)
        if error is not None:
            raise error
        return events

    async def _commit_concurrently(
        self, work: list[tuple[int, PartitionState, list[Any]]]
    ) -> tuple[list[Batch], Exception | None]:
        """A big round: every partition in its own transaction on its own pooled connection,
        all at once. A partition that fails is let go; the others' commits stand. A partition
        whose events cannot all be projected gets past the ones that cannot (`_isolate`)."""

        async def one(p: int, state: PartitionState, items: list[Any], out: list[Batch]) -> None:
            async with self.pool.acquire() as conn:
                try:
                    batch = await prepare_batch(conn, p, state, items)
                except Exception as e:
                    if _outage(e) or isinstance(e, asyncpg.PostgresError):
                        raise
                    await self._isolate(conn, p, state, items, e, out)
                    return
                try:
                    await commit_batches(
                        conn, [batch], {p: state.epoch}, before_commit=self._before_commit
                    )
                except Exception as e:
                    if not _refused_rows(e):
                        raise
                    await self._isolate(conn, p, state, items, e, out)
                    return
                self._remember(batch, state)
                out.append(batch)

        outs: list[list[Batch]] = [[] for _ in work]
        results = await asyncio.gather(
            *(one(p, s, items, out) for (p, s, items), out in zip(work, outs, strict=True)),
            return_exceptions=True,
        )
        done: list[Batch] = [b for out in outs for b in out]  # committed, even before a failure
        error: Exception | None = None
        for (p, state, _), result in zip(work, results, strict=True):
            if result is None:
                continue
            if isinstance(result, PartitionsFenced):
                log.warning("fenced", extra={"partitions": [p]})
            elif isinstance(result, Exception):
                log.warning("partition %d: batch failed (%r); letting it go", p, result)
                error = error or result
            with contextlib.suppress(Exception):
                await self._forget(p, state)  # uncertain or someone else's: re-claim, re-read
            if not isinstance(result, Exception):
                raise result
        return done, error

    async def _commit_together(
        self, work: list[tuple[int, PartitionState, list[Any]]]
    ) -> tuple[list[Batch], Exception | None]:
        """A round in one transaction on the loop's connection (see `commit_batches`).

        A partition whose batch cannot be projected, or whose rows PostgreSQL refuses, gets past
        the events at fault on its own (`_isolate`); the other partitions of the round commit
        as usual."""
        conn = await self._connection()
        ready: list[tuple[Batch, PartitionState]] = []
        items_of: dict[int, list[Any]] = {}
        suspects: list[tuple[int, PartitionState, Exception]] = []
        for p, state, items in work:
            items_of[p] = items
            try:
                ready.append((await prepare_batch(conn, p, state, items), state))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._release_connection(discard=True)  # nothing written: retry
                raise
            except Exception as e:  # this partition's events cannot be projected: not the others'
                suspects.append((p, state, e))
            except BaseException:
                await self._release_connection(discard=True)
                raise
        # one transaction for the whole round; one per partition for a while after a failed
        # round (a batch the database refuses must not hold up the other partitions)
        solo = len(ready) > 1 and time.monotonic() < self._solo_until
        groups = deque([[r] for r in ready] if solo else [ready])
        done: list[Batch] = []
        error: Exception | None = None
        while groups:
            group = groups.popleft()
            if not group:
                continue
            try:
                await commit_batches(
                    conn,
                    [b for b, _ in group],
                    {b.partition: s.epoch for b, s in group},
                    before_commit=self._before_commit,
                )
            except PartitionsFenced as e:
                # rolled back as a whole: the fenced partitions are someone else's now; the
                # others stay as they were (nothing committed), their entries are read again
                log.warning("fenced", extra={"partitions": sorted(e.partitions)})
                for b, s in group:
                    if b.partition in e.partitions:
                        await self._forget(b.partition, s)
                continue
            except Exception as e:
                if not _refused_rows(e):
                    error = await self._uncertain([(b.partition, s) for b, s in group], e)
                    break  # the rest stand as they were: read again next round
                # refused, so certainly rolled back: whose rows? each partition on its own
                if len(group) > 1:
                    groups.extend([r] for r in group)
                else:
                    suspects.append((group[0][0].partition, group[0][1], e))
                continue
            except BaseException as e:
                await self._uncertain([(b.partition, s) for b, s in group], e)
                raise
            for b, s in group:
                self._remember(b, s)
                done.append(b)
        for p, state, e in suspects if error is None else ():
            try:
                await self._isolate(conn, p, state, items_of[p], e, done)
            except PartitionsFenced:
                await self._forget(p, state)
            except Exception as failure:
                error = await self._uncertain([(p, state)], failure)
                break
            except BaseException as failure:
                await self._uncertain([(p, state)], failure)
                raise
        return done, error

    async def _uncertain(
        self, group: list[tuple[int, PartitionState]], error: BaseException
    ) -> Exception | None:
        """A commit failed without saying whether it landed: forget the partitions' caches and
        re-read their checkpoints when claiming them again; commit partition by partition for
        a while. Returns `error` for the round to raise once its commits are announced."""
        await self._release_connection(discard=True)
        for p, s in group:
            with contextlib.suppress(Exception):
                await self._forget(p, s)
        if len(group) > 1:
            self._solo_until = time.monotonic() + _SOLO_SECONDS
        return error if isinstance(error, Exception) else None

    async def _isolate(
        self,
        conn: asyncpg.Connection,
        p: int,
        state: PartitionState,
        items: list[Any],
        error: Exception,
        committed: list[Batch],
    ) -> None:
        """Partition `p`'s batch `items` could not be projected as a whole (`error`): commit
        the longest prefixes that can be, and dead-letter each event that cannot be projected
        even alone (`_bury`), until the batch is through; each commit is appended to
        `committed` as it lands. Halving the part tried after each refusal finds one bad event
        among n in about log2(n) tries.

        Every commit is an ordinary fenced one, checkpoint included (rows and archive, or the
        dead letter), so every other event is still projected exactly once. An outage, a
        fence or any failure that is not the events' fault is raised as from any round."""
        log.warning(
            "partition %d: %d events cannot be projected together (%s: %s); finding"
            " the event at fault",
            p,
            len(items),
            type(error).__name__,
            error,
        )
        rest = items
        # the whole batch is known to fail: start with half of it (a single event: bury it)
        size = len(rest) // 2 if len(rest) > 1 else 1
        while rest and self.parts.get(p) is state:
            unreadable = next((i for i, it in enumerate(rest) if it[1] is None), len(rest))
            if unreadable == 0:
                committed.append(await self._bury(conn, p, state, rest[0], rest[0][2]))
                rest = rest[1:]
                size = len(rest)
                continue
            size = max(1, min(size, unreadable))
            chunk = rest[:size]
            try:
                batch = await prepare_batch(conn, p, state, chunk)
            except Exception as e:
                if _outage(e) or isinstance(e, asyncpg.PostgresError):
                    raise
                refused: Exception | None = e
            else:
                try:
                    await commit_batches(
                        conn, [batch], {p: state.epoch}, before_commit=self._before_commit
                    )
                    refused = None
                except Exception as e:
                    if not _refused_rows(e):
                        raise
                    refused = e
            if refused is None:
                self._remember(batch, state)
                committed.append(batch)
                rest = rest[size:]
                size = len(rest)
            elif size > 1:
                size //= 2
            else:
                committed.append(await self._bury(conn, p, state, chunk[0], refused))
                rest = rest[1:]
                size = len(rest)

    async def _bury(
        self,
        conn: asyncpg.Connection,
        p: int,
        state: PartitionState,
        item: tuple[str, Any, Any],
        error: BaseException,
    ) -> Batch:
        """Record one log entry as a dead letter and move the checkpoint past it, in one fenced
        transaction; count it and say so at error level. Everything before the entry is
        committed, so it is the one right after the checkpoint: read again for its raw bytes."""
        log_id, env, _ = item
        entries = await self.store.log.range(p, after=state.last_id, count=1)
        raw = entries[0][1] if entries and entries[0][0] == log_id else b""
        letter = dead_letter(p, log_id, env, raw, error)
        batch = Batch(
            partition=p,
            from_id=state.last_id,
            generation=state.generation,
            to_id=log_id,
            archive=[],
            changes=RowChanges(),
            actors=[],
            after={},
            simulators={},
            dead=[letter],
        )
        await commit_batches(conn, [batch], {p: state.epoch})
        self._remember(batch, state)
        self.dead_letters += 1
        DEAD_LETTERS.labels(str(p)).inc()
        log.error(
            "partition %d: log entry %s (%s v%d, %s) cannot be projected: %s;"
            " recorded in projection.dead_letters and skipped",
            p,
            log_id,
            letter.actor_id or "?",
            letter.version,
            letter.type or "?",
            letter.error,
            extra={
                "partition": p,
                "log_id": log_id,
                "actor": letter.actor_id,
                "version": letter.version,
            },
        )
        return batch

    def _remember(self, batch: Batch, state: PartitionState) -> None:
        """After `batch` committed: the partition's position, its aggregates and simulators."""
        limit = self._cache_per_partition
        state.last_id = batch.to_id
        cache = state.cache
        for sid, agg in batch.after.items():
            cache[sid] = agg
            cache.move_to_end(sid)
        while len(cache) > limit:
            cache.popitem(last=False)
        state.simulators.update(batch.simulators)
        if len(state.simulators) > limit:
            state.simulators.clear()

    def _announce(self, done: list[Batch]) -> int:
        """After a round's commits: count them; returns the events."""
        events = sum(batch.size for batch in done)
        if done:
            self.events_projected += events
            self.rounds_committed += 1
            EVENTS.inc(events)
        return events

    async def step(self) -> int:
        """Read and project one round of every owned partition; returns events projected.

        A store outage is recorded (`pg`, `store_outage`) and raised; any other failure of the
        round is logged and the round counts 0 (its partitions are read again)."""
        if not self.parts:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.block_ms / 1000)
            return 0
        if self.config.housekeeping_interval_ms and time.monotonic() >= self._housekeep_at:
            await self._housekeep()
        wait = self._round_at + self.config.round_min_ms / 1000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        positions = {p: state.last_id for p, state in self.parts.items()}
        try:
            got = await self._reader.read(positions, self.config.batch_size, self.config.block_ms)
        except Exception as e:
            if _outage(e):
                self.store_outage.failed(e)
            raise
        self.store_outage.ok()
        self._round_at = time.monotonic()
        work = []
        for p, entries in got.items():
            state = self.parts.get(p)
            if state is not None and entries:
                work.append((p, state, decode_entries(entries)))
        if not work:
            return 0
        try:
            events = await self._project_round(work)
        except (OSError, StoreUnavailable, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            if unreachable(e):  # PostgreSQL (DatabaseUnavailable is a StoreUnavailable too)
                self.pg.failed(e)
            elif isinstance(e, StoreUnavailable):
                self.store_outage.failed(e)
            raise  # a store is down or restarting: the loop waits a little
        except Exception:
            log.exception("round failed")
            return 0
        self._pg_answered()
        return events

    async def _housekeep(self) -> None:
        """Between two rounds: trim the owned partitions and, as partition 0's holder, delete
        the expired sessions' rows; the caches are dropped after a deletion (their sessions'
        rows may be gone). A failure waits for the next interval."""
        from projections.housekeeping import housekeep  # (it imports this module)

        self._housekeep_at = time.monotonic() + self.config.housekeeping_interval_ms / 1000
        cleanup = 0 in self.parts
        with contextlib.suppress(Exception):  # logged and counted by `housekeep`
            done = await housekeep(
                self.store,
                await self._connection(),
                sorted(self.parts),
                cleanup=cleanup,
                keep=self.config.retention_keep,
            )
            if done["sessions_deleted"]:
                for state in self.parts.values():
                    state.cache.clear()

    async def run(self) -> None:
        """Until `stop()`: keep leases, project, publish, keep the status record up to date.
        Releases the leases on the way out."""
        try:
            await self._rebalance()
            self.lease_round_at = time.monotonic()
        except Exception as e:
            if not _outage(e):
                log.exception("first lease round failed")
        tasks = [asyncio.create_task(self._lease_loop()), asyncio.create_task(self._status_loop())]
        backoff = BACKOFF_S[0]
        try:
            while not self._stop.is_set():
                try:
                    await self.step()
                except Exception as e:
                    # a store is down or restarting (logged once per outage by `pg` / `store`),
                    # or PostgreSQL refuses every round (a missing table...): keep trying, less
                    # and less often; the leases are kept meanwhile, nothing is lost
                    if not _outage(e):
                        log.warning("projector round failed: %r", e)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._retry_now.wait(), backoff)
                    self._retry_now.clear()
                    backoff = min(backoff * 2, BACKOFF_S[1])
                else:
                    backoff = BACKOFF_S[0]
        finally:
            self._stop.set()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await self.aclose()

    async def aclose(self) -> None:
        """Give back the loop's connections and every lease (`run` does it on its way out); the
        event store itself stays open (its opener closes it)."""
        with contextlib.suppress(Exception):
            await self._reader.close()
        with contextlib.suppress(Exception):
            await self._release_connection()
        with contextlib.suppress(Exception):
            await self.leases.release_all()
        OWNED.set(0)
        with contextlib.suppress(Exception):
            await self.store.statuses.delete(ROLE, self.owner)
