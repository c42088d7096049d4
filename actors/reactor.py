"""The simulator reactor: simulator events in, provisioning side effects, commands back.

It consumes every partition log with its own consumer group (`reactor`, through the store's
`LogConsumer`), so it has its own position per partition and several reactor processes share
the work. For each event:

- `SimulatorRequested` (CREATING): provision the simulator, then send `RecordProvisioned(endpoint)`
  (STARTING) or `RecordProvisionFailed(reason)` (ERROR; the reason is the provisioner's, e.g. an
  open circuit breaker or the Kubernetes API's message).
- `SimulatorStopping` (STOPPING): remove its resources, then send `RecordStopped` (STOPPED).
- `SimulatorFailed` (ERROR): remove whatever resources are left.

Commands back carry the deterministic id `reactor:<event_id>`, so a redelivered event (a crash
between sending and acknowledging, a claim by another reactor) sends the same command again and
the runtime answers it with the first outcome instead of appending twice. An entry is
acknowledged only once its side effect is done; entries left pending by a dead reactor are
claimed after `claim_idle_ms`. Events of one simulator are handled in log order (a per-simulator
lock), events of different simulators concurrently (bounded by `concurrency`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec

from events.codec import decode_event, decode_event_envelope
from events.envelope import EventEnvelope
from events.errors import StoreUnavailable
from events.ids import actor_uuid
from events.simulator import (
    RecordProvisioned,
    RecordProvisionFailed,
    RecordStopped,
    SimulatorFailed,
    SimulatorRequested,
    SimulatorStopping,
)
from infra.logging import bind_log_fields
from infra.metrics import counter, histogram
from infra.provisioners.base import ProvisionerError, SimulatorSpec
from infra.store import START, CommandSender, LogEntry, Store

__all__ = ["GROUP", "HANDLED", "Reactor", "command_id_for"]

log = logging.getLogger("sessiond.reactor")

GROUP = "reactor"
HANDLED = frozenset({"SimulatorRequested", "SimulatorStopping", "SimulatorFailed"})
#: events after a request that mean it is no longer waiting to be provisioned
_SUPERSEDES_REQUEST = frozenset(
    {"SimulatorProvisioned", "SimulatorFailed", "SimulatorStopping", "SimulatorStopped"}
)


HANDLED_EVENTS = counter(
    "sessiond_reactor_events_total",
    "simulator events the reactor acted on, by type and result",
    ("type", "result"),
)
PROVISION_SECONDS = histogram(
    "sessiond_reactor_provision_seconds",
    "time to provision a simulator (until ready or failed)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


def command_id_for(event_id: str) -> str:
    """The id of the command the reactor sends in answer to event `event_id`."""
    return f"reactor:{event_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Reactor:
    """Handles the simulator events of every partition of `store`; `bus` sends the commands
    back (the store's own sender when None)."""

    def __init__(
        self,
        store: Store,
        bus: CommandSender | None,
        provisioner: Any,
        *,
        name: str | None = None,
        concurrency: int = 64,
        batch: int = 100,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        cleanup_attempts: int = 5,
        cleanup_backoff_s: float = 0.5,
        stop_grace_s: float = 5.0,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.store = store
        self.bus = bus if bus is not None else store.commands
        self.provisioner = provisioner
        self.partitions = store.partitions
        self.name = name or f"reactor-{socket.gethostname()}-{os.getpid()}"
        self.group = store.log.consumer(GROUP, self.name)
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.cleanup_attempts = cleanup_attempts
        self.cleanup_backoff_s = cleanup_backoff_s
        self.stop_grace_s = stop_grace_s
        self.clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # per simulator, with users
        self._in_flight: set[tuple[int, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: dict[str, str] = {}  # simulator actor id -> session id
        self._stop = asyncio.Event()
        self.handled = 0

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consume every partition until `stop()`; side effects in flight get `stop_grace_s` to
        finish, the rest stay pending and are re-driven by the next reactor."""
        readers = [
            asyncio.create_task(self._partition_loop(p), name=f"reactor-p{p}")
            for p in range(self.partitions)
        ]
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([*readers, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in [*readers, stop]:
                t.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            if self._tasks:
                # let side effects in flight finish; what does not stays pending (re-driven)
                _, late = await asyncio.wait(self._tasks, timeout=self.stop_grace_s)
                for t in late:
                    t.cancel()
                await asyncio.gather(*late, return_exceptions=True)

    async def _partition_loop(self, partition: int) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                # from the log's first entry: a reactor started late still handles what it
                # missed (handlers skip requests that were already answered)
                await self.group.ensure(partition)
                # our own pending entries first (a restart with the same name), then new ones
                await self._consume_pending(partition)
                last_claim = time.monotonic()
                while not self._stop.is_set():
                    entries = await self.group.read_new(partition, self.batch, self.block_ms)
                    if entries:
                        await self._dispatch(partition, entries)
                    if time.monotonic() - last_claim >= self.claim_idle_ms / 2000:
                        await self._claim(partition)
                        last_claim = time.monotonic()
                    backoff = 0.1
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("reactor partition %d: %s; retrying", partition, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _consume_pending(self, partition: int) -> None:
        after = START
        while True:
            entries = await self.group.read_pending(partition, after, self.batch)
            if not entries:
                return
            await self._dispatch(partition, entries)
            after = entries[-1][0]

    async def _claim(self, partition: int) -> None:
        start = START
        while True:
            start, entries = await self.group.claim(
                partition, self.claim_idle_ms, start, self.batch
            )
            if entries:
                await self._dispatch(partition, entries)
            if start == START:
                return

    async def _dispatch(self, partition: int, entries: list[LogEntry]) -> None:
        skip: list[str] = []
        for entry_id, data in entries:
            if (partition, entry_id) in self._in_flight:
                continue
            try:
                env = decode_event_envelope(data) if data else None
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.error("undecodable entry %s of partition %d: skipped", entry_id, partition)
                env = None
            if env is None or env.type not in HANDLED:
                skip.append(entry_id)
                continue
            self._in_flight.add((partition, entry_id))
            await self._slots.acquire()
            task = asyncio.create_task(self._handle_entry(partition, entry_id, env))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if skip:
            await self.group.ack(partition, skip)

    async def _handle_entry(self, partition: int, entry_id: str, env: EventEnvelope) -> None:
        bind_log_fields(  # this task's lines (its context is its own)
            correlation_id=env.correlation_id,
            actor=env.actor_id,
            partition=partition,
            session_id=self._sessions.get(env.actor_id, ""),
        )
        lock, users = self._locks.get(env.actor_id, (asyncio.Lock(), 0))
        self._locks[env.actor_id] = (lock, users + 1)
        try:
            async with lock:
                done = await self.handle(partition, env)
            if done:
                await self.group.ack(partition, [entry_id])
                self.handled += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "reactor: %s of %s failed; it stays pending and is retried", env.type, env.actor_id
            )
        finally:
            self._in_flight.discard((partition, entry_id))
            self._slots.release()
            lock, users = self._locks[env.actor_id]
            if users <= 1:
                del self._locks[env.actor_id]
            else:
                self._locks[env.actor_id] = (lock, users - 1)

    # ------------------------------------------------------------------ handlers

    async def handle(self, partition: int, env: EventEnvelope) -> bool:
        """Do the side effect of one event; True when it may be acknowledged."""
        event = decode_event(env.data, env.type)
        if isinstance(event, SimulatorRequested):
            self._sessions[env.actor_id] = event.session_id
            return await self._provision(partition, env, event)
        if isinstance(event, SimulatorStopping):
            if not await self._remove(partition, env):
                return False
            session_id = await self._session_of(partition, env.actor_id)
            if session_id is None:
                log.error(
                    "reactor: no session known for %s; cannot record it stopped", env.actor_id
                )
                return True
            await self._send(env, session_id, RecordStopped(at=self.clock()))
            self._sessions.pop(env.actor_id, None)
            return True
        if isinstance(event, SimulatorFailed):
            removed = await self._remove(partition, env)
            if removed:
                self._sessions.pop(env.actor_id, None)
            return removed
        return True

    async def _provision(
        self, partition: int, env: EventEnvelope, event: SimulatorRequested
    ) -> bool:
        if await self._superseded(partition, env):
            log.info("reactor: %s was already answered; not provisioning again", env.actor_id)
            return True
        spec = SimulatorSpec(
            simulator_id=event.simulator_id,
            session_id=event.session_id,
            owner_id=event.owner_id,
            initial_symbols=event.initial_symbols,
            initial_cash=event.initial_cash,
        )
        started = time.monotonic()
        try:
            endpoint = await self.provisioner.provision(spec)
        except ProvisionerError as exc:
            log.warning("reactor: provisioning %s failed: %s", env.actor_id, exc.message)
            command: Any = RecordProvisionFailed(at=self.clock(), reason=exc.message)
            HANDLED_EVENTS.labels(env.type, "failed").inc()
        else:
            command = RecordProvisioned(at=self.clock(), endpoint=endpoint)
            HANDLED_EVENTS.labels(env.type, "ok").inc()
        PROVISION_SECONDS.observe(time.monotonic() - started)
        await self._send(env, event.session_id, command)
        return True

    async def _remove(self, partition: int, env: EventEnvelope) -> bool:
        simulator_id = actor_uuid(env.actor_id)
        for attempt in range(1, self.cleanup_attempts + 1):
            try:
                await self.provisioner.deprovision(simulator_id)
                HANDLED_EVENTS.labels(env.type, "ok").inc()
                return True
            except ProvisionerError as exc:
                HANDLED_EVENTS.labels(env.type, "retry").inc()
                log.warning(
                    "reactor: removing %s failed (attempt %d): %s",
                    env.actor_id,
                    attempt,
                    exc.message,
                )
                if attempt < self.cleanup_attempts:
                    await asyncio.sleep(self.cleanup_backoff_s * 2 ** (attempt - 1))
        return False  # stays pending: claimed and retried after claim_idle_ms

    async def _send(self, env: EventEnvelope, session_id: str, command: Any) -> None:
        delay = 0.1
        while True:
            try:
                outcome = await self.bus.send(
                    env.actor_id,
                    session_id,
                    command,
                    command_id=command_id_for(env.event_id),
                    correlation_id=env.correlation_id,
                    wait=True,
                )
                break
            except StoreUnavailable as exc:
                log.warning(
                    "reactor: sending %s to %s: %s; retrying",
                    type(command).__name__,
                    env.actor_id,
                    exc.message,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if outcome is not None and not outcome.ok:
            log.warning(
                "reactor: %s refused %s: %s %s",
                env.actor_id,
                type(command).__name__,
                outcome.error_code,
                outcome.error_message,
            )

    # ------------------------------------------------------------------ reading the actor

    async def _superseded(self, partition: int, env: EventEnvelope) -> bool:
        """Did the simulator move on after this request (a replayed or claimed old entry)?"""
        later = await self.store.actors.read(partition, env.actor_id, after=env.version)
        return any(e.type in _SUPERSEDES_REQUEST for e in later)

    async def _session_of(self, partition: int, actor_id: str) -> str | None:
        known = self._sessions.get(actor_id)
        if known is not None:
            return known
        for env in await self.store.actors.read(partition, actor_id, limit=1):
            if env.type == "SimulatorRequested":
                session_id = decode_event(env.data, env.type).session_id
                self._sessions[actor_id] = session_id
                return session_id
        return None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.provisioner.close()
        await self.group.close()
