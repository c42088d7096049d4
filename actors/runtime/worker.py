"""The worker: owns partitions through fenced leases and runs their actors.

A `Worker` keeps a membership heartbeat, renews its leases, and rebalances: it aims for
ceil(P / live workers) partitions, releases its surplus gracefully and acquires free ones. Each
owned partition has a `PartitionRunner` that re-drives the previous owner's pending commands,
then reads the command stream in batches, decides in memory and appends with one fenced Lua
script per batch (`actors.runtime.scripts.APPEND`).

Use it in-process (`await Worker(redis_url=..., partitions=...).run()` until `stop()`) or as
`sessiond worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from actors import keys
from actors.decider import Decider
from actors.runtime import metrics, scripts
from actors.runtime.batch import (
    Item,
    Round,
    command_field,
    fenced_key,
    parse_entry,
    plan,
    settle,
    timer_envelope,
)
from actors.runtime.cache import ActorCache, CachedActor
from actors.runtime.config import RuntimeConfig, load_runtime_config
from actors.runtime.resp import execute_packed, execute_packed_many, pack
from events.codec import decode_command_envelope
from events.errors import Fenced
from infra.redis_raw import Endpoint, Pipeline

__all__ = ["PartitionRunner", "Worker", "members_key"]

log = logging.getLogger("sessiond.runtime")

GROUP = keys.COMMAND_GROUP


def members_key(role: str = "worker") -> str:
    """ZSET of live processes of a role: member = owner token, score = heartbeat expiry (ms)."""
    return f"sd:members:{role}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Scripts:
    """SHA1s of the runtime scripts, loaded once per server (re-loaded after SCRIPT FLUSH)."""

    def __init__(self, redis: aioredis.Redis, outcome_ttl_ms: int) -> None:
        self.redis = redis
        self.outcome_ttl_ms = outcome_ttl_ms
        self.sha: dict[str, str] = {}

    async def load(self) -> None:
        for name in ("ACQUIRE", "RENEW", "RELEASE", "FIRE_TIMERS", "APPEND"):
            self.sha[name] = await self.redis.script_load(getattr(scripts, name))

    async def call(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        try:
            return await self.redis.evalsha(self.sha[name], len(keys_), *keys_, *args)
        except NoScriptError:
            await self.load()
            return await self.redis.evalsha(self.sha[name], len(keys_), *keys_, *args)

    def packed_append(self, rnd: Round, partition: int, epoch: int) -> bytes:
        """`scripts.APPEND` for a planned round, framed in RESP by the planner."""
        return rnd.packed(self.sha["APPEND"], partition, epoch, GROUP, self.outcome_ttl_ms)

    async def append(self, rnd: Round, partition: int, epoch: int) -> Any:
        """Run `scripts.APPEND` for a planned round on a pooled connection."""
        for attempt in (0, 1):
            try:
                return await execute_packed(self.redis, self.packed_append(rnd, partition, epoch))
            except NoScriptError:
                if attempt:
                    raise
                await self.load()
        raise AssertionError("unreachable")  # pragma: no cover


class PartitionRunner:
    """Processes one owned partition until stopped, fenced or its lease lapses locally."""

    def __init__(self, worker: Worker, partition: int, epoch: int) -> None:
        self.worker = worker
        self.partition = partition
        self.epoch = epoch
        self.valid_until = time.monotonic() + worker.config.lease_ttl_ms / 1000 * 0.9
        self.stream = keys.command_stream(partition)
        self._stopping = False
        self._recheck = False  # read our own pending entries again (unsettled leftovers)
        # Housekeeping is staggered across partitions (a runner's phase follows from its
        # partition number): runners start together, and in step their timer polls, trims
        # and re-drives would all hit Redis in the same instant, a latency spike each time.
        phase = (partition * 0.618034) % 1.0
        now = time.monotonic()
        config = worker.config
        self._next_timer_poll = now + phase * config.timer_poll_ms / 1000
        self._next_trim = now + (1 + phase) * config.trim_interval_ms / 1000
        self._next_redrive = now + (1 + phase) * config.lease_ttl_ms / 1000
        self.task: asyncio.Task[None] | None = None
        # The hot path (read, append, read...) runs on a connection of its own: the next read
        # goes out in the same write as the append (see `_append`), and no pool is involved.
        self._pipe = Pipeline(worker.endpoint, name=f"{worker.consumer}-p{partition}")
        self._next_read: asyncio.Future[Any] | None = None
        self._read_new = pack(
            ["XREADGROUP", "GROUP", GROUP, worker.consumer, "COUNT", worker.config.batch_size,
             "BLOCK", worker.config.block_ms, "STREAMS", self.stream, ">"]
        )  # fmt: skip

    def request_stop(self) -> None:
        """Finish the current batch, then return."""
        self._stopping = True

    def lease_valid(self) -> bool:
        return time.monotonic() < self.valid_until

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._pipe.close()

    async def _run(self) -> None:
        backoff = 0.05
        redrive_done = False
        while not self._stopping:
            try:
                if not redrive_done:
                    await self._ensure_group()
                    await self._redrive()
                    redrive_done = True
                await self._step()
                backoff = 0.05
            except Fenced:
                metrics.FENCED.inc()
                log.warning(
                    "fenced: partition %d epoch %d is no longer ours; writes refused",
                    self.partition,
                    self.epoch,
                )
                return
            except _LeaseLapsed:
                log.warning("lease of partition %d lapsed locally; stopping", self.partition)
                return
            except (RedisError, OSError) as exc:
                # what we had read stays in our pending list: read it again before new entries
                log.warning("partition %d: redis error %s; retrying", self.partition, exc)
                self._recheck = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except Exception:  # a bug: keep the partition (and its lease) but do not spin
                log.exception("partition %d: unexpected error; retrying", self.partition)
                self._recheck = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        await self._finish_read_ahead()

    async def _finish_read_ahead(self) -> None:
        """Stopping with a read sent ahead: process what it delivers (as a read in flight at
        the stop always was); if that fails, the entries wait in our pending list for the next
        owner's re-drive."""
        read, self._next_read = self._next_read, None
        if read is None or self._recheck:
            return
        try:
            entries = _entries(await read)
            if entries:
                await self.process(entries)
        except (Fenced, _LeaseLapsed, RedisError, OSError) as exc:
            log.warning("partition %d: commands read ahead left to the next owner: %r",
                        self.partition, exc)

    async def _ensure_group(self) -> None:
        try:
            await self.worker.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _redrive(self) -> None:
        """Claim and process pending commands of other consumers: the previous owner's at
        takeover, and periodically any that a stale process read after our takeover (its
        blocking read raced our claim); they would otherwise wait for the next takeover."""
        redis = self.worker.redis
        start: Any = "0-0"
        while not self._stopping:
            res = await redis.xautoclaim(
                self.stream,
                GROUP,
                self.worker.consumer,
                min_idle_time=0,
                start_id=start,
                count=self.worker.config.batch_size,
            )
            entries = [e for e in res[1] if e[0] is not None]
            if entries:
                log.info(
                    "partition %d: re-driving %d pending commands", self.partition, len(entries)
                )
                await self.process(entries)
            start = res[0]
            if start in (b"0-0", "0-0") or not entries:
                break

    async def _step(self) -> None:
        worker = self.worker
        config = worker.config
        now = time.monotonic()
        if now >= self._next_timer_poll:
            self._next_timer_poll = now + config.timer_poll_ms / 1000
            await self.fire_timers()
        if now >= self._next_trim:
            self._next_trim = now + config.trim_interval_ms / 1000
            await self._trim()
        if now >= self._next_redrive and self._next_read is None:
            # (XAUTOCLAIM takes our own pending entries too: never while a read sent ahead may
            # still deliver some, or they would be processed twice; `_append` stops reading
            # ahead once the re-drive is due)
            self._next_redrive = now + config.lease_ttl_ms / 1000
            await self._redrive()
        if self._recheck:
            read, self._next_read = self._next_read, None
            if read is not None:  # let it finish: what it delivered is pending, read just below
                with contextlib.suppress(RedisError, OSError):
                    await read
            resp = await worker.redis.xreadgroup(
                GROUP, worker.consumer, {self.stream: "0"}, count=config.batch_size
            )
            entries = _entries(resp)
            if not entries:
                self._recheck = False
                return
        else:
            # raw: redis-py's reply parsing (a dict per entry) costs more than the read itself
            read, self._next_read = self._next_read, None
            resp = await (read if read is not None else self._pipe.submit(self._read_new))
            if not resp:
                return
            entries = _entries(resp)
        if entries:
            await self.process(entries, read_ahead=not self._recheck)

    def _check_lease(self) -> None:
        if self.worker.config.local_lease_check and not self.lease_valid():
            raise _LeaseLapsed()

    async def fire_timers(self, now_ms: int | None = None) -> int:
        """Turn this partition's due timers into commands (fenced). Returns how many fired.

        The command comes from the actor's current `deadlines` (loaded lazily, like for a
        command): a timer whose actor no longer has that deadline is dropped, not fired.
        """
        worker = self.worker
        p = self.partition
        now = _now_ms() if now_ms is None else now_ms
        due = await worker.redis.zrangebyscore(
            keys.timers_key(p), "-inf", now, start=0, num=worker.config.timer_batch,
            withscores=True,
        )  # fmt: skip
        if not due:
            return 0
        self._check_lease()
        wanted: dict[str, Decider[Any]] = {}
        actors: dict[str, CachedActor] = {}
        parsed = []
        for member, score in due:
            actor_id, _, key = member.decode().partition("|")
            parsed.append((member, int(score), actor_id, key))
            if actor_id in actors or actor_id in wanted:
                continue
            cached = worker.cache.get(actor_id)
            if cached is not None:
                actors[actor_id] = cached
                continue
            try:
                wanted[actor_id] = worker.decider_for(actor_id)
            except Exception:
                log.warning("dropping timer %r of an unknown actor kind", member)
        if wanted:
            loaded = await worker.load_actors(p, wanted)
            for actor in loaded.values():
                worker.cache.put(actor)
            actors.update(loaded)
        args: list[Any] = [self.epoch, len(parsed)]
        for member, score, actor_id, key in parsed:
            actor = actors.get(actor_id)
            timer = actor.deadlines().get(key) if actor is not None else None
            body = b""
            if timer is not None and timer.due == score:
                body = timer_envelope(actor_id, p, timer)
            args.extend((member, score, body))
        try:
            fired = await worker.scripts.call(
                "FIRE_TIMERS",
                [keys.epoch_key(p), keys.timers_key(p), self.stream, fenced_key(p)],
                args,
            )
        except ResponseError as exc:
            if "FENCED" in str(exc):
                raise Fenced(f"partition {p} epoch {self.epoch} fenced") from None
            raise
        if fired:
            metrics.TIMERS_FIRED.inc(fired)
        return int(fired)

    async def _trim(self) -> None:
        """Drop acknowledged commands below the oldest one still pending or undelivered."""
        redis = self.worker.redis
        groups = await redis.xinfo_groups(self.stream)
        group = next((g for g in groups if g.get("name") in (GROUP, GROUP.encode())), None)
        if group is None:
            return
        if group.get("pending", 0):
            summary = await redis.xpending(self.stream, GROUP)
            minid = summary.get("min")
        else:
            minid = group.get("last-delivered-id")
        if minid and minid not in (b"0-0", "0-0"):
            await redis.xtrim(self.stream, minid=minid, approximate=False)

    async def process(self, entries: list[Any], *, read_ahead: bool = False) -> None:
        """Decide and append one batch of stream entries `(id, fields)` (in order). With
        `read_ahead`, the next read of new entries is sent together with the first append."""
        worker = self.worker
        p = self.partition
        items = [
            parse_entry(
                entry_id,
                command_field(fields),
                p,
                decode_command_envelope,
                worker.decode_command,
                worker.decider_for,
            )
            for entry_id, fields in entries
        ]
        rounds = 0
        while items:
            actors = await self._actors_for(items)
            rnd = plan(items, actors, p, worker.config.snapshot_every)
            if worker.config.test_append_delay_ms:
                await asyncio.sleep(worker.config.test_append_delay_ms / 1000)
            self._check_lease()
            t0 = time.perf_counter()
            try:
                results = await self._append(rnd, read_ahead=read_ahead and rounds == 0)
            except ResponseError as exc:
                if "FENCED" in str(exc):
                    raise Fenced(f"partition {p} epoch {self.epoch} fenced") from None
                raise
            metrics.APPEND_SECONDS.observe(time.perf_counter() - t0)
            metrics.BATCH_SIZE.observe(len(rnd.items))
            done = settle(rnd, results, worker.cache)
            worker.processed += done.appended + done.duplicates
            metrics.COMMANDS.labels("appended").inc(done.appended)
            if done.duplicates:
                metrics.COMMANDS.labels("duplicate").inc(done.duplicates)
            metrics.EVENTS.inc(done.events)
            if done.stale_actors:
                metrics.CONFLICTS.inc(len(done.stale_actors))
            items = done.retry
            rounds += 1
            if items and rounds > worker.config.max_conflict_retries:
                log.warning(
                    "partition %d: %d commands still conflicting; retrying later", p, len(items)
                )
                self._recheck = True
                return

    async def _append(self, rnd: Round, *, read_ahead: bool) -> Any:
        """Append a round on the runner's own connection; with `read_ahead`, the next blocking
        read of new entries follows in the same write, so the worker is waiting for the next
        batch as soon as Redis has run the append (one write and one wake-up less per batch).

        Retry rounds (conflicts) go through the pool: a read sent ahead may be blocking this
        connection until new entries arrive."""
        scripts = self.worker.scripts
        if not read_ahead:
            return await scripts.append(rnd, self.partition, self.epoch)
        reply = self._pipe.submit(scripts.packed_append(rnd, self.partition, self.epoch))
        if not self._stopping and time.monotonic() < self._next_redrive:
            self._next_read = self._pipe.submit(self._read_new)
        try:
            return await reply
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # the server lost its scripts (restart, SCRIPT FLUSH): what was read ahead is pending
        self._recheck = True
        await scripts.load()
        return await scripts.append(rnd, self.partition, self.epoch)

    async def _actors_for(self, items: list[Item]) -> dict[str, CachedActor]:
        cache = self.worker.cache
        actors: dict[str, CachedActor] = {}
        missing: dict[str, Decider[Any]] = {}
        for item in items:
            if item.error is not None or item.env is None:
                continue
            actor_id = item.env.actor_id
            if actor_id in actors or actor_id in missing:
                continue
            cached = cache.get(actor_id)
            if cached is not None:
                actors[actor_id] = cached
            else:
                missing[actor_id] = item.decider  # type: ignore[assignment]
        if missing:
            actors.update(await self.worker.load_actors(self.partition, missing))
        return actors


class _EventHead(msgspec.Struct):
    """The two fields of an `EventEnvelope` a fold needs (the others are skipped unread)."""

    type: str
    data: msgspec.Raw


_decode_head = msgspec.msgpack.Decoder(_EventHead).decode


def _field(fields: Any, name: bytes) -> Any:
    """A field of a raw stream entry ([name, value, ...]; a dict under RESP3 parsing)."""
    if isinstance(fields, dict):
        return fields[name]
    if fields[0] == name:
        return fields[1]
    return fields[fields.index(name) + 1]


def _entries(resp: Any) -> list[Any]:
    """The entries of a one-stream XREADGROUP reply: RESP3 answers a map {stream: entries},
    RESP2 a list of [stream, entries]."""
    if not resp:
        return []
    if isinstance(resp, dict):
        return next(iter(resp.values()))
    return resp[0][1]


class _LeaseLapsed(Exception):
    """Our lease's local validity ran out before a renewal: stop writing."""


class Worker:
    """A `sessiond worker` process's engine. `run()` until `stop()`.

    `decider_for`, `state_type_for`, `decode_command` and `decode_event` default to the real
    registry and codec; tests inject toy actors through them.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        partitions: int = keys.DEFAULT_PARTITIONS,
        worker_id: str | None = None,
        *,
        redis: aioredis.Redis | None = None,
        decider_for: Callable[[str], Decider[Any]] | None = None,
        state_type_for: Callable[[str], Any] | None = None,
        decode_command: Callable[[Any], Any] | None = None,
        decode_event: Callable[[Any, str], Any] | None = None,
        config: RuntimeConfig | None = None,
        **overrides: int,
    ) -> None:
        if redis is None and redis_url is None:
            raise ValueError("Worker needs redis_url or redis")
        self.partitions = partitions
        self.worker_id = worker_id or f"worker-{os.getpid()}"
        # unique per incarnation: a restarted worker with the same id is a new owner
        self.owner = f"{self.worker_id}:{uuid.uuid4().hex[:8]}"
        self.consumer = self.owner
        self.config = config or load_runtime_config(**overrides)
        if config is not None and overrides:
            self.config = msgspec.structs.replace(config, **overrides)
        self._redis_url = redis_url
        self._own_redis = redis is None
        self.redis: aioredis.Redis = redis if redis is not None else _connect(redis_url or "")
        self.scripts = _Scripts(self.redis, self.config.outcome_ttl_ms)
        self.endpoint = Endpoint.of(self.redis)
        from actors import registry
        from events import codec

        self.decider_for = decider_for or registry.decider_for
        self.state_type_for = state_type_for or (
            registry.state_type if decider_for is None else None
        )
        self.decode_command = decode_command or codec.decode_command
        self.decode_event = decode_event or codec.decode_event
        self.cache = ActorCache(self.config.cache_max_actors)
        self.runners: dict[int, PartitionRunner] = {}
        self.processed = 0
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._snap_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask `run()` to finish current batches, release every lease and return."""
        self._stop.set()

    @property
    def owned(self) -> set[int]:
        return set(self.runners)

    async def run(self) -> None:
        await self.scripts.load()
        log.info("worker %s starting (%d partitions)", self.owner, self.partitions)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    await self._tick(started)
                except (RedisError, OSError) as exc:
                    log.warning("worker %s: lease loop redis error: %s", self.owner, exc)
                self.ready.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.config.renew_every_s)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for runner in self.runners.values():
            runner.request_stop()
        for p in list(self.runners):
            await self._release(p)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.zrem(members_key(), self.owner)
        metrics.OWNED_PARTITIONS.set(0)
        log.info("worker %s stopped; processed %d commands", self.owner, self.processed)
        if self._own_redis:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    # ------------------------------------------------------------------ leases

    async def _tick(self, started: float) -> None:
        config = self.config
        ttl = config.lease_ttl_ms
        now = _now_ms()
        # forget runners that ended by themselves (fenced, lapsed)
        for p, runner in list(self.runners.items()):
            if runner.task is not None and runner.task.done():
                await self._forget(p, release=True)
        owned = list(self.runners)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(members_key(), {self.owner: now + ttl})
        pipe.zremrangebyscore(members_key(), "-inf", now)
        pipe.zcard(members_key())
        for p in owned:
            pipe.evalsha(
                self.scripts.sha["RENEW"],
                2,
                keys.lease_key(p),
                keys.epoch_key(p),
                self.owner,
                ttl,
                self.runners[p].epoch,
            )
        try:
            res = await pipe.execute()
        except NoScriptError:
            await self.scripts.load()
            return
        live = max(1, int(res[2]))
        for p, ok in zip(owned, res[3:], strict=True):
            if ok == 1:
                self.runners[p].valid_until = started + ttl / 1000 * 0.9
            else:
                log.warning("lost lease of partition %d", p)
                await self._forget(p, release=False, cancel=True)
        target = math.ceil(self.partitions / live)
        if len(self.runners) > target:
            surplus = sorted(self.runners)[target - len(self.runners) :]
            for p in surplus:
                log.info("releasing partition %d (rebalance to %d)", p, target)
                self.runners[p].request_stop()
            for p in surplus:
                await self._release(p)
        elif len(self.runners) < target and not self._stop.is_set():
            await self._acquire_up_to(target)
        self.cache.passivate(config.passivate_after_ms / 1000)
        metrics.OWNED_PARTITIONS.set(len(self.runners))

    async def _acquire_up_to(self, target: int) -> None:
        free = [p for p in range(self.partitions) if p not in self.runners]
        pipe = self.redis.pipeline(transaction=False)
        for p in free:
            pipe.exists(keys.lease_key(p))
        held = await pipe.execute()
        free = [p for p, h in zip(free, held, strict=True) if not h]
        if not free:
            return
        shift = zlib.crc32(self.owner.encode()) % len(free)
        for p in free[shift:] + free[:shift]:
            if len(self.runners) >= target:
                break
            epoch = await self.scripts.call(
                "ACQUIRE",
                [keys.lease_key(p), keys.epoch_key(p)],
                [self.owner, self.config.lease_ttl_ms],
            )
            if epoch:
                self._start_runner(p, int(epoch))

    def _start_runner(self, p: int, epoch: int) -> None:
        log.info("acquired partition %d (epoch %d)", p, epoch)
        self.cache.drop_partition(p)  # anything cached from an earlier ownership may be stale
        runner = PartitionRunner(self, p, epoch)
        runner.task = asyncio.create_task(runner.run(), name=f"partition-{p}")
        self.runners[p] = runner

    async def _release(self, p: int) -> None:
        """Let the runner finish its batch, then give the lease back."""
        runner = self.runners.get(p)
        if runner is None:
            return
        runner.request_stop()
        if runner.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(runner.task), timeout=10)
            except TimeoutError:
                runner.task.cancel()
            except Exception:
                log.exception("runner of partition %d failed", p)
        await self._forget(p, release=True)

    async def _forget(self, p: int, *, release: bool, cancel: bool = False) -> None:
        runner = self.runners.pop(p, None)
        if runner is not None and runner.task is not None and not runner.task.done():
            if cancel:
                runner.task.cancel()
                with contextlib.suppress(BaseException):
                    await runner.task
        self.cache.drop_partition(p)
        if release:
            with contextlib.suppress(RedisError, OSError):
                await self.scripts.call("RELEASE", [keys.lease_key(p)], [self.owner])

    # ------------------------------------------------------------------ actors

    def _snapshot_decoder(self, actor_id: str, decider: Decider[Any]) -> Any:
        state_type = (
            self.state_type_for(actor_id) if self.state_type_for else type(decider.initial_state)
        )
        decoder = self._snap_decoders.get(state_type)
        if decoder is None:
            decoder = msgspec.msgpack.Decoder(tuple[int, state_type])  # type: ignore[valid-type]
            self._snap_decoders[state_type] = decoder
        return decoder

    async def load_actors(
        self, partition: int, wanted: dict[str, Decider[Any]]
    ) -> dict[str, CachedActor]:
        """Load actors lazily: snapshot + the events after it (two pipelined round trips)."""
        ids = list(wanted)
        snaps = await execute_packed(
            self.redis, pack(["MGET", *(keys.snapshot_key(partition, a) for a in ids)])
        )
        start: dict[str, tuple[int, Any]] = {}
        for actor_id, raw in zip(ids, snaps, strict=True):
            decider = wanted[actor_id]
            version, state = 0, decider.initial_state
            if raw:
                try:
                    version, state = self._snapshot_decoder(actor_id, decider).decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                    log.warning("ignoring unreadable snapshot of %s: %s", actor_id, exc)
                    version, state = 0, decider.initial_state
            start[actor_id] = (version, state)
        # raw pipeline: redis-py's per-entry dict parsing costs more than the fold
        packed = b"".join(
            pack(["XRANGE", keys.event_stream(partition, a), f"{start[a][0] + 1}-0", "+"])
            for a in ids
        )
        streams = await execute_packed_many(self.redis, packed, len(ids))
        loaded: dict[str, CachedActor] = {}
        for actor_id, entries in zip(ids, streams, strict=True):
            decider = wanted[actor_id]
            snap_version, state = start[actor_id]
            version = snap_version
            evolve = decider.evolve
            if isinstance(entries, Exception):
                raise entries
            for entry_id, fields in entries:
                head = _decode_head(_field(fields, b"e"))
                state = evolve(state, self.decode_event(head.data, head.type))
                version = int(entry_id.split(b"-", 1)[0])  # the stream id is the version
            loaded[actor_id] = CachedActor(
                actor_id, partition, decider, version, state, snap_version
            )
        return loaded


def _connect(url: str) -> aioredis.Redis:
    try:
        from infra.redis import connect  # the shared factory, when present
    except ImportError:
        return aioredis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=5)
    return connect(url)
