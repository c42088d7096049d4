"""The worker: owns partitions through fenced leases and runs their actors.

A `Worker` holds its fair share of the "worker" leases (`infra.store.LeaseShare`: a membership
heartbeat, renewals, ceil(P / live workers) partitions each, the surplus given back gracefully).
Each owned partition has a `PartitionRunner` that re-drives the previous owner's pending
commands, then reads the command stream in batches, decides in memory (`batch.plan`) and appends
each batch in one fenced step through the store's `PartitionWriter`.

Use it in-process (`await Worker(store).run()` until `stop()`; the caller opens and closes the
store) or as `sessiond worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from opentelemetry.trace import Span, SpanKind

from actors.decider import Decider
from actors.runtime import metrics
from actors.runtime.batch import Item, LiveView, parse_entry, plan, settle, timer_envelope
from actors.runtime.cache import ActorCache, CachedActor
from events.codec import decode_command_envelope, inflate
from events.errors import Fenced, StoreUnavailable
from infra import tracing
from infra.logging import bind_log_fields
from infra.sections import RuntimeConfig
from infra.store import START, CommandEntry, LeaseShare, Store, TimerFire

__all__ = ["ROLE", "PartitionRunner", "Worker"]

log = logging.getLogger("sessiond.runtime")

#: The lease role of workers.
ROLE = "worker"


def _now_ms() -> int:
    return int(time.time() * 1000)


class _LeaseLapsed(Exception):
    """Our lease's local validity ran out before a renewal: stop writing."""


class PartitionRunner:
    """Processes one owned partition until stopped, fenced or its lease lapses locally."""

    def __init__(self, worker: Worker, partition: int, epoch: int) -> None:
        self.worker = worker
        self.partition = partition
        config = worker.config
        self.writer = worker.store.open_partition(
            partition, epoch, worker.consumer, outcome_ttl_ms=config.outcome_ttl_ms
        )
        self.valid_until = time.monotonic() + config.lease_ttl_ms / 1000 * 0.9
        self._stopping = False
        self._recheck = False  # read our own pending entries again (unsettled leftovers)
        # Housekeeping is staggered across partitions (a runner's phase follows from its
        # partition number): runners start together, and in step their timer polls, trims
        # and re-drives would all hit Redis in the same instant, a latency spike each time.
        phase = (partition * 0.618034) % 1.0
        now = time.monotonic()
        self._next_timer_poll = now + phase * config.timer_poll_ms / 1000
        self._next_trim = now + (1 + phase) * config.trim_interval_ms / 1000
        self._next_redrive = now + (1 + phase) * config.lease_ttl_ms / 1000
        self.task: asyncio.Task[None] | None = None

    @property
    def epoch(self) -> int:
        return self.writer.epoch

    def request_stop(self) -> None:
        """Finish the current batch, then return."""
        self._stopping = True

    def lease_valid(self) -> bool:
        return time.monotonic() < self.valid_until

    async def run(self) -> None:
        bind_log_fields(partition=self.partition)  # this task's lines (its context is its own)
        try:
            await self._run()
        finally:
            await self.writer.close()

    async def _run(self) -> None:
        backoff = 0.05
        redrive_done = False
        while not self._stopping:
            try:
                if not redrive_done:
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
            except StoreUnavailable as exc:
                # what we had read stays in our pending list: read it again before new entries
                log.warning("partition %d: store error %s; retrying", self.partition, exc)
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
        if not self.writer.reading_ahead or self._recheck:
            return
        config = self.worker.config
        try:
            entries = await self.writer.read_commands(config.batch_size, config.block_ms)
            if entries:
                await self.process(entries)
        except (Fenced, _LeaseLapsed, StoreUnavailable) as exc:
            log.warning(
                "partition %d: commands read ahead left to the next owner: %r", self.partition, exc
            )

    async def _redrive(self) -> None:
        """Claim and process pending commands of other consumers: the previous owner's at
        takeover, and periodically any that a stale process read after our takeover (its
        blocking read raced our claim); they would otherwise wait for the next takeover."""
        start = START
        while not self._stopping:
            start, entries = await self.writer.claim_pending(start, self.worker.config.batch_size)
            if entries:
                log.info(
                    "partition %d: re-driving %d pending commands", self.partition, len(entries)
                )
                await self.process(entries)
            if start == START or not entries:
                break

    async def _step(self) -> None:
        config = self.worker.config
        writer = self.writer
        now = time.monotonic()
        if now >= self._next_timer_poll:
            self._next_timer_poll = now + config.timer_poll_ms / 1000
            await self.fire_timers()
        if now >= self._next_trim:
            self._next_trim = now + config.trim_interval_ms / 1000
            await writer.trim_commands()
        if now >= self._next_redrive and not writer.reading_ahead:
            # (a claim takes our own pending entries too: never while a read sent ahead may
            # still deliver some; `process` stops reading ahead once the re-drive is due)
            self._next_redrive = now + config.lease_ttl_ms / 1000
            await self._redrive()
        if self._recheck:
            entries = await writer.read_own_pending(config.batch_size)
            if not entries:
                self._recheck = False
                return
        else:
            entries = await writer.read_commands(config.batch_size, config.block_ms)
            if not entries:
                return
        await self.process(entries, read_ahead=not self._recheck)

    def _check_lease(self) -> None:
        if not self.lease_valid():
            raise _LeaseLapsed()

    async def fire_timers(self, now_ms: int | None = None) -> int:
        """Turn this partition's due timers into commands (fenced). Returns how many fired.

        The command comes from the actor's current `deadlines` (loaded lazily, like for a
        command): a timer whose actor no longer has that deadline is dropped, not fired.
        """
        worker = self.worker
        p = self.partition
        now = _now_ms() if now_ms is None else now_ms
        due = await self.writer.due_timers(now, worker.config.timer_batch)
        if not due:
            return 0
        self._check_lease()
        wanted: dict[str, Decider[Any]] = {}
        actors: dict[str, CachedActor] = {}
        for timer in due:
            actor_id = timer.actor_id
            if actor_id in actors or actor_id in wanted:
                continue
            cached = worker.cache.get(actor_id)
            if cached is not None:
                actors[actor_id] = cached
                continue
            try:
                wanted[actor_id] = worker.decider_for(actor_id)
            except Exception:
                log.warning("dropping timer %s|%s of an unknown actor kind", actor_id, timer.key)
        if wanted:
            loaded = await worker.load_actors(p, wanted)
            for actor in loaded.values():
                worker.cache.put(actor)
            actors.update(loaded)
        fires = []
        for timer in due:
            actor = actors.get(timer.actor_id)
            current = actor.deadlines().get(timer.key) if actor is not None else None
            command = None
            if current is not None and current.due == timer.due:
                command = timer_envelope(timer.actor_id, p, current)
            fires.append(TimerFire(timer.actor_id, timer.key, timer.due, command))
        fired = await self.writer.fire_timers(fires)
        if fired:
            metrics.TIMERS_FIRED.inc(fired)
        return fired

    async def process(self, entries: list[CommandEntry], *, read_ahead: bool = False) -> None:
        """Decide and append one batch of command entries `(id, payload)` (in order). With
        `read_ahead`, the next read of new commands may go out together with the append."""
        worker = self.worker
        p = self.partition
        items = [
            parse_entry(
                entry_id,
                payload,
                p,
                decode_command_envelope,
                worker.decode_command,
                worker.decider_for,
            )
            for entry_id, payload in entries
        ]
        spans = _command_spans(items, p) if tracing.enabled() else []
        try:
            await self._process(items, read_ahead=read_ahead)
        finally:
            for span in spans:
                span.end()

    async def _process(self, items: list[Item], *, read_ahead: bool = False) -> None:
        """Plan and append `items`, deciding again those whose actor conflicted."""
        worker = self.worker
        p = self.partition
        rounds = 0
        while items:
            actors = await self._actors_for(items)
            rnd = plan(
                items,
                actors,
                p,
                worker.config.snapshot_every,
                self.writer.new_batch(),
                worker.live,
            )
            self._check_lease()
            ahead = read_ahead and rounds == 0 and self._may_read_ahead()
            t0 = time.perf_counter()
            results = await self.writer.append(rnd.batch, read_ahead=ahead)
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

    def _may_read_ahead(self) -> bool:
        """Not while stopping, nor once the re-drive is due (it must not race a read)."""
        return not self._stopping and time.monotonic() < self._next_redrive

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


def _command_spans(items: list[Item], partition: int) -> list[Span]:
    """A ``sessiond.worker.command`` span for each traced command, child of its sender's; the
    command's envelope then carries the span's context on to its events (and the commands its
    policy routes)."""
    spans = []
    for item in items:
        env = item.env
        parent = tracing.context_of(env.traceparent) if env is not None else None
        if parent is None or env is None:
            continue
        span = tracing.tracer().start_span(
            "sessiond.worker.command",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=tracing.attributes(
                actor=env.actor_id, command=env.type, command_id=env.command_id,
                partition=partition,
            ),
        )  # fmt: skip
        item.env = msgspec.structs.replace(env, traceparent=tracing.traceparent_of(span))
        spans.append(span)
    return spans


class _EventHead(msgspec.Struct):
    """The two fields of an `EventEnvelope` a fold needs (the others are skipped unread)."""

    type: str
    data: msgspec.Raw


_decode_head = msgspec.msgpack.Decoder(_EventHead).decode


class Worker:
    """A `sessiond worker` process's engine on `store`. `run()` until `stop()`.

    `decider_for`, `state_type_for`, `decode_command` and `decode_event` default to the real
    registry and codec; tests inject toy actors through them. `config` is the runtime's section
    of the settings (`infra.config`; its defaults when None), `live` the live view its appends
    publish (the session's change feed: `sessiond worker` passes
    `projections.changes.live_change`; None publishes nothing), `overrides` replace some of its
    fields (tests).
    """

    def __init__(
        self,
        store: Store,
        worker_id: str | None = None,
        *,
        decider_for: Callable[[str], Decider[Any]] | None = None,
        state_type_for: Callable[[str], Any] | None = None,
        decode_command: Callable[[Any], Any] | None = None,
        decode_event: Callable[[Any, str], Any] | None = None,
        config: RuntimeConfig | None = None,
        live: LiveView | None = None,
        **overrides: int,
    ) -> None:
        self.store = store
        self.live = live
        self.partitions = store.partitions
        self.worker_id = worker_id or f"worker-{os.getpid()}"
        # unique per incarnation: a restarted worker with the same id is a new owner
        self.owner = f"{self.worker_id}:{uuid.uuid4().hex[:8]}"
        self.consumer = self.owner
        self.config = msgspec.structs.replace(config or RuntimeConfig(), **overrides)
        self.share = LeaseShare(
            store.leases, ROLE, self.owner, self.partitions, self.config.lease_ttl_ms
        )
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
        self.lease_round_at = 0.0  # monotonic: when the lease loop last completed a round
        self._stop = asyncio.Event()
        self._state_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask `run()` to finish current batches, release every lease and return."""
        self._stop.set()

    @property
    def owned(self) -> set[int]:
        return set(self.runners)

    async def lease_loop_check(self) -> str | None:
        """For `/healthz`: None while the lease loop completes its rounds (owning nothing is
        fine), else since when it has not."""
        late = time.monotonic() - self.lease_round_at
        if late > max(5.0, 3 * self.config.renew_every_s):
            if not self.lease_round_at:
                return "the lease loop has not completed a round yet"
            return f"the lease loop has not completed a round for {late:.0f} s"
        return None

    async def run(self) -> None:
        log.info("worker %s starting (%d partitions)", self.owner, self.partitions)
        try:
            while not self._stop.is_set():
                try:
                    await self._tick()
                    self.lease_round_at = time.monotonic()
                except StoreUnavailable as exc:
                    log.warning("worker %s: lease loop store error: %s", self.owner, exc)
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
        with contextlib.suppress(StoreUnavailable):
            await self.share.release_all()
        metrics.OWNED_PARTITIONS.set(0)
        log.info("worker %s stopped; processed %d commands", self.owner, self.processed)

    # ------------------------------------------------------------------ leases

    async def _tick(self) -> None:
        # forget runners that ended by themselves (fenced, lapsed): their leases go back
        for p, runner in list(self.runners.items()):
            if runner.task is not None and runner.task.done():
                await self._forget(p, release=True)
        ttl_s = self.config.lease_ttl_ms / 1000
        rnd = await self.share.tick(acquire=not self._stop.is_set())
        for p, runner in self.runners.items():
            if p not in rnd.lost:
                runner.valid_until = rnd.started + ttl_s * 0.9
        for p in sorted(rnd.lost):
            log.warning("lost lease of partition %d", p)
            await self._forget(p, release=False, cancel=True)
        for p in rnd.surplus:
            log.info("releasing partition %d (rebalance to %d)", p, rnd.target)
            self.runners[p].request_stop()
        for p in rnd.surplus:
            await self._release(p)
        for p, epoch in sorted(rnd.gained.items()):
            self._start_runner(p, epoch)
        self.cache.passivate(self.config.passivate_after_ms / 1000)
        metrics.OWNED_PARTITIONS.set(len(self.runners))

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
            with contextlib.suppress(StoreUnavailable):
                await self.share.release(p)
        else:
            self.share.forget(p)

    # ------------------------------------------------------------------ actors

    def _state_decoder(self, actor_id: str, decider: Decider[Any]) -> Any:
        state_type = (
            self.state_type_for(actor_id) if self.state_type_for else type(decider.initial_state)
        )
        decoder = self._state_decoders.get(state_type)
        if decoder is None:
            decoder = msgspec.msgpack.Decoder(state_type)
            self._state_decoders[state_type] = decoder
        return decoder

    async def load_actors(
        self, partition: int, wanted: dict[str, Decider[Any]]
    ) -> dict[str, CachedActor]:
        """Load actors lazily: snapshot + the events after it (two round trips); an actor
        whose snapshot cannot be read is folded from its first event instead."""
        histories = await self.store.actors.load(partition, list(wanted))
        start: dict[str, tuple[int, Any]] = {}
        unreadable: list[str] = []
        for actor_id, history in histories.items():
            decider = wanted[actor_id]
            start[actor_id] = (0, decider.initial_state)
            snap = history.snapshot
            if snap is None:
                continue
            try:
                start[actor_id] = (
                    snap.version,
                    self._state_decoder(actor_id, decider).decode(inflate(snap.state)),
                )
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                log.warning("ignoring unreadable snapshot of %s: %s", actor_id, exc)
                unreadable.append(actor_id)
        if unreadable:
            histories.update(
                await self.store.actors.load(partition, unreadable, from_snapshot=False)
            )
        loaded: dict[str, CachedActor] = {}
        decode_event = self.decode_event
        for actor_id, history in histories.items():
            decider = wanted[actor_id]
            snap_version, state = start[actor_id]
            evolve = decider.evolve
            for _, payload in history.events:
                head = _decode_head(payload)
                state = evolve(state, decode_event(head.data, head.type))
            # the stream id is the version: the last event's, or the snapshot's without events
            version = history.events[-1][0] if history.events else snap_version
            loaded[actor_id] = CachedActor(
                actor_id, partition, decider, version, state, snap_version
            )
        return loaded
