"""The projector: partition logs -> PostgreSQL read models + archive, exactly once.

For every partition it holds a lease on (role "projector"), it reads `sd:{pN}:log` after its
checkpoint and applies each batch in ONE transaction that (1) advances the checkpoint, fenced by
the lease epoch and by the position it read from, (2) appends every event to `events.archive`,
(3) writes the coalesced row changes of `projections.model` set-based, (4) records each actor's
last archived version. Only after COMMIT does it publish, per affected session, the batch's
`Change`s on `sd:chg:<session_id>`. A crash anywhere before COMMIT leaves nothing behind; a crash
after it leaves the checkpoint past the batch; the next owner resumes from the checkpoint. A
stale owner (paused past its lease) finds the checkpoint's epoch raised by the new owner and its
transaction aborted.

It keeps the aggregates of the sessions it projects in memory (bounded per partition), loading
missing ones from the tables in one query per batch, so projecting is pure computation plus a
handful of set-based statements per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from actors.keys import change_channel, partition_log
from events import simulator as si
from events.codec import UPCASTERS, AnyEvent, decode_event, decode_event_envelope
from events.errors import Fenced
from projections.changes import encode_changes, raw_change
from projections.lease import LeaseKeeper
from projections.model import (
    SessionAggregate,
    diff,
    project_session,
    project_simulator,
)
from projections.store import (
    load_sessions,
    simulator_sessions,
    write_actor_versions,
    write_archive,
    write_changes,
)

__all__ = [
    "CHECKPOINT_NAME",
    "Batch",
    "Projector",
    "ProjectorConfig",
    "claim_partition",
    "commit_batch",
    "pool_settings",
    "prepare_batch",
]

log = logging.getLogger("sessiond.projector")
_json = msgspec.json.Encoder()

CHECKPOINT_NAME = "live"

#: PUBLISH each (channel, message) pair of ARGV: a batch's change messages in one round trip.
_PUBLISH_MANY = """
for i = 1, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""


class ProjectorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Projector knobs (env: SESSIOND_PROJECTOR_*)."""

    redis_url: str
    database_url: str
    partitions: int = 16
    lease_ttl_ms: int = 10_000
    batch_size: int = 2000
    block_ms: int = 100
    cache_sessions: int = 200_000  # aggregates kept in memory, over all partitions
    pool_size: int = 8
    commit_delay_ms: int = 0  # testing aid: sleep inside the transaction (crash windows)

    @classmethod
    def from_env(cls, redis_url: str, database_url: str, partitions: int,
                 lease_ttl_ms: int = 10_000, env: dict[str, str] | None = None
                 ) -> ProjectorConfig:
        env = dict(os.environ if env is None else env)

        def num(name: str, default: int) -> int:
            raw = env.get(f"SESSIOND_PROJECTOR_{name}")
            return int(raw) if raw else default

        return cls(redis_url=redis_url, database_url=database_url, partitions=partitions,
                   lease_ttl_ms=num("LEASE_TTL_MS", lease_ttl_ms),
                   batch_size=num("BATCH", 2000), block_ms=num("BLOCK_MS", 100),
                   cache_sessions=num("CACHE_SESSIONS", 200_000),
                   pool_size=num("POOL", 8), commit_delay_ms=num("COMMIT_DELAY_MS", 0))


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
    feed: dict[str, list[Any]]  # session id -> its changes in this batch

    @property
    def size(self) -> int:
        return len(self.archive)


async def claim_partition(conn: asyncpg.Connection, partition: int, epoch: int,
                          name: str = CHECKPOINT_NAME, lock_timeout_ms: int = 2000
                          ) -> tuple[str, int]:
    """Raise the checkpoint's epoch to ours (fencing every older owner out) and return the
    position to resume from. Raises `Fenced` if a newer owner already claimed it."""
    await conn.execute(
        "INSERT INTO projection.checkpoints (name, partition) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING", name, partition)
    try:
        async with conn.transaction():
            # an old owner frozen inside its transaction holds the row: do not wait forever
            # (its server session ends by idle_in_transaction_session_timeout; retry then)
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            row = await conn.fetchrow(
                "UPDATE projection.checkpoints SET epoch = $3, updated_at = now()"
                " WHERE name = $1 AND partition = $2 AND epoch <= $3"
                " RETURNING last_id, generation", name, partition, epoch)
    except asyncpg.LockNotAvailableError:
        raise Fenced(f"partition {partition}: the previous owner still holds the checkpoint"
                     " row; retrying later") from None
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


_one_pass = msgspec.msgpack.Decoder(_DecodedEnvelope)


def decode_entries(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[tuple[str, Any, Any]]:
    """Log entries -> (log id, envelope, event). Envelope and body in one pass, unless an old
    event shape must be upcast (then the codec's two-step path)."""
    out = []
    for entry_id, fields in entries:
        log_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        if not UPCASTERS:
            env = _one_pass.decode(fields[b"e"])
            out.append((log_id, env, env.data))
        else:
            env = decode_event_envelope(fields[b"e"])
            out.append((log_id, env, decode_event(env.data, env.type)))
    return out


async def prepare_batch(conn: asyncpg.Connection, partition: int, state: PartitionState,
                        items: list[tuple[str, Any, Any]]) -> Batch:
    """Project `items` (log id, envelope, event) on top of what the tables hold; no writes."""
    # which session each event belongs to: unknown simulators are looked up once per batch
    routed: list[tuple[str, str, str | None]] = []  # (kind, actor uuid, session id)
    unknown: set[str] = set()
    sims = state.simulators
    new_sims: dict[str, str] = {}
    for _, env, ev in items:
        kind, _, uid = env.actor_id.partition(":")
        if kind == "simulator" and type(ev) is not si.SimulatorRequested \
                and uid not in sims and uid not in new_sims:
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
        sid: (cache[sid] if sid in cache else loaded.get(sid)) for sid in wanted}
    after = dict(before)
    actors: dict[str, tuple[str, int, int, int]] = {}
    feed: dict[str, list[Any]] = defaultdict(list)
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
        archive.append((env.event_id, env.actor_id, env.version, env.partition, env.ts,
                        env.type, event_json.decode(), env.command_id, env.correlation_id,
                        env.causation_id, log_id))
        if kind == "session":
            feed[uid].append(raw_change(env, ev, event_json))
    return Batch(
        partition=partition, from_id=state.last_id, generation=state.generation,
        to_id=items[-1][0],
        archive=archive, changes=diff((before[s], after[s]) for s in wanted),
        actors=[(a, *t) for a, t in actors.items()],
        after=after, simulators=new_sims, feed=dict(feed))


async def commit_batch(conn: asyncpg.Connection, batch: Batch, epoch: int,
                       name: str = CHECKPOINT_NAME,
                       before_commit: Callable[[], Awaitable[None]] | None = None) -> None:
    """Write the batch and advance the checkpoint in one transaction, or raise `Fenced`."""
    async with conn.transaction():
        status = await conn.execute(
            "UPDATE projection.checkpoints SET last_id = $3, epoch = $4,"
            " events = events + $5, updated_at = now()"
            " WHERE name = $1 AND partition = $2 AND epoch <= $4 AND last_id = $6"
            " AND generation = $7",
            name, batch.partition, batch.to_id, epoch, batch.size, batch.from_id,
            batch.generation)
        if status != "UPDATE 1":
            raise Fenced(f"partition {batch.partition}: checkpoint moved, a newer projector"
                         f" (epoch > {epoch}) took over, or the tables were rebuilt; batch"
                         " dropped")
        await write_archive(conn, batch.archive)
        await write_changes(conn, batch.changes)
        await write_actor_versions(conn, batch.actors)
        if before_commit is not None:
            await before_commit()



def pool_settings(config: ProjectorConfig) -> dict[str, str]:
    """Server settings for the projector's connections: a projector frozen (SIGSTOP) inside a
    transaction loses it after two lease periods, so its row locks cannot block the new owner."""
    return {"idle_in_transaction_session_timeout": str(2 * config.lease_ttl_ms),
            "application_name": "sessiond-projector"}


class Projector:
    """`sessiond projector`: lease partitions, project their logs, publish changes."""

    def __init__(self, config: ProjectorConfig, redis: Redis, pool: asyncpg.Pool,
                 owner: str | None = None) -> None:
        self.config = config
        self.redis = redis
        self.pool = pool
        self.owner = owner or (
            f"projector-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self.leases = LeaseKeeper(redis, self.owner, config.partitions, config.lease_ttl_ms)
        self._publish_many = redis.register_script(_PUBLISH_MANY)
        self.parts: dict[int, PartitionState] = {}
        self.events_projected = 0
        self._stop = asyncio.Event()
        self._cache_per_partition = max(1000, config.cache_sessions // max(1, config.partitions))

    def stop(self) -> None:
        self._stop.set()

    async def _rebalance(self) -> None:
        gained, lost = await self.leases.tick(int(time.time() * 1000))
        for p in lost:
            self.parts.pop(p, None)
            log.info("partition lease lost", extra={"partition": p})
        for p, epoch in gained.items():
            try:
                async with self.pool.acquire() as conn:
                    last, generation = await claim_partition(
                        conn, p, epoch, lock_timeout_ms=self.config.lease_ttl_ms / 2)
            except Fenced:
                await self.leases.release(p)
                continue
            self.parts[p] = PartitionState(epoch=epoch, last_id=last, generation=generation)
            log.info("partition acquired", extra={"partition": p, "epoch": epoch,
                                                  "checkpoint": last})

    async def _lease_loop(self) -> None:
        period = self.config.lease_ttl_ms / 3000
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), period)
            if self._stop.is_set():
                break
            try:
                await self._rebalance()
            except Exception:  # Redis or Postgres hiccup: keep what we have, try again
                log.exception("lease round failed")

    async def _project_partition(self, p: int, entries: list[Any]) -> None:
        state = self.parts.get(p)
        if state is None:
            return
        items = decode_entries(entries)
        delay = self.config.commit_delay_ms
        hook = (lambda: asyncio.sleep(delay / 1000)) if delay else None
        async with self.pool.acquire() as conn:
            batch = await prepare_batch(conn, p, state, items)
            try:
                await commit_batch(conn, batch, state.epoch, before_commit=hook)
            except Fenced:
                log.warning("fenced", extra={"partition": p})
                self.parts.pop(p, None)
                await self.leases.release(p)
                return
            except BaseException:
                # uncertain outcome: forget the partition's cache and re-read the checkpoint
                self.parts.pop(p, None)
                await self.leases.release(p)
                raise
        # committed: remember what the tables now hold, then tell the clients
        state.last_id = batch.to_id
        for sid, agg in batch.after.items():
            state.cache[sid] = agg
            state.cache.move_to_end(sid)
        while len(state.cache) > self._cache_per_partition:
            state.cache.popitem(last=False)
        state.simulators.update(batch.simulators)
        if len(state.simulators) > self._cache_per_partition:
            state.simulators.clear()
        self.events_projected += batch.size
        if batch.feed:
            args: list[Any] = []
            for sid, changes in batch.feed.items():
                args.append(change_channel(sid))
                args.append(encode_changes(changes))
            await self._publish_many(keys=[], args=args)  # one round trip per batch

    async def step(self) -> int:
        """Read and project one round of every owned partition; returns events projected."""
        if not self.parts:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.block_ms / 1000)
            return 0
        streams = {partition_log(p): s.last_id for p, s in self.parts.items()}
        reply = await self.redis.xread(streams, count=self.config.batch_size,
                                       block=self.config.block_ms)
        if not reply:
            return 0
        by_partition = {}
        for key, entries in reply:
            name = key.decode() if isinstance(key, bytes) else key
            p = int(name.split("{p", 1)[1].split("}", 1)[0])
            by_partition[p] = entries
        before = self.events_projected
        results = await asyncio.gather(
            *(self._project_partition(p, e) for p, e in by_partition.items()),
            return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.error("batch failed", exc_info=r)
        return self.events_projected - before

    async def run(self) -> None:
        """Until `stop()`: keep leases, project, publish. Releases the leases on the way out."""
        try:
            await self._rebalance()
        except Exception:
            log.exception("first lease round failed")
        lease_task = asyncio.create_task(self._lease_loop())
        try:
            while not self._stop.is_set():
                try:
                    await self.step()
                except (OSError, RedisError, asyncpg.PostgresError,
                        asyncpg.InterfaceError) as e:
                    # a store is down or restarting: keep trying (the leases lapse meanwhile,
                    # and whoever owns a partition next resumes from its checkpoint)
                    log.warning("projector round failed: %s", e)
                    await asyncio.sleep(0.5)
        finally:
            self._stop.set()
            lease_task.cancel()
            with contextlib.suppress(BaseException):
                await lease_task
            with contextlib.suppress(Exception):
                await self.leases.release_all()
