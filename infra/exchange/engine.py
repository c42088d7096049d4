"""The I/O shell around `prices.Market`: one asyncio task per simulator.

An engine first heartbeats its simulator actor until the actor has recorded one (the actor is
then RUNNING), and only then starts ticking, so a client sees RUNNING before the first tick.
Ticks are handed to a shared `TickPublisher`, which publishes everything pending in one round
trip to the simulators' capped tick streams (the store's `MarketData`); heartbeats follow every
`heartbeat_interval_s`, and the engine keeps its session's active-simulator mark alive.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

import msgspec

from infra.exchange.control import EngineSpec
from infra.exchange.prices import Market, PathParams, seed_for
from infra.metrics import counter
from infra.store import MarketData

__all__ = ["Engine", "HeartbeatFn", "TickPublisher"]

log = logging.getLogger(__name__)

#: Tick phases per interval (see `Engine._ticks`).
TICK_PHASES = 8

#: Sends one heartbeat for a simulator; True when the actor recorded it (it is RUNNING).
HeartbeatFn = Callable[[EngineSpec], Awaitable[bool]]

_json = msgspec.json.Encoder()

TICKS_PUBLISHED = counter(
    "sessiond_engine_ticks_published_total", "ticks written to the simulators' tick streams"
)
TICKS_DROPPED = counter(
    "sessiond_engine_ticks_dropped_total", "ticks dropped because the store could not keep up"
)


class TickPublisher:
    """Batches the ticks of every engine of a process into one publish per wake-up.

    The buffer is bounded: when the store cannot keep up, the oldest pending ticks are dropped
    (a newer tick supersedes them anyway) and counted in `dropped`.
    """

    def __init__(
        self, market_data: MarketData, *, maxlen: int = 1000, max_pending: int = 20_000
    ) -> None:
        self.market_data = market_data
        self.maxlen = maxlen
        self.max_pending = max_pending
        self._pending: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self.published = 0
        self.dropped = 0

    def publish(self, simulator_id: str, payload: bytes) -> None:
        if len(self._pending) >= self.max_pending:
            self._pending.pop(0)
            self.dropped += 1
            TICKS_DROPPED.inc()
        self._pending.append((simulator_id, payload))
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                await self.market_data.publish(batch, self.maxlen)
                self.published += len(batch)
                TICKS_PUBLISHED.inc(len(batch))
            except Exception as exc:  # a store hiccup: these ticks are lost, later ones follow
                log.warning("tick publish failed (%d ticks): %s", len(batch), exc)
                await asyncio.sleep(0.2)


class Engine:
    """One simulator: heartbeat until RUNNING, then tick at `tick_hz` and heartbeat periodically."""

    def __init__(
        self,
        spec: EngineSpec,
        *,
        publisher: TickPublisher,
        heartbeat: HeartbeatFn,
        tick_hz: float = 10.0,
        heartbeat_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.publisher = publisher
        self.heartbeat = heartbeat
        self.tick_hz = tick_hz
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock
        self.market = Market(
            spec.simulator_id,
            spec.initial_symbols,
            initial_cash=spec.initial_cash,
            params=PathParams(tick_interval_s=1.0 / tick_hz),
        )
        self.running = False

    async def run(self) -> None:
        await self._until_running()
        self.running = True
        await self._mark_active()
        beats = asyncio.create_task(self._heartbeats(), name=f"hb:{self.spec.simulator_id}")
        try:
            await self._ticks()
        finally:
            beats.cancel()
            await asyncio.shield(self._unmark_active())

    async def _mark_active(self) -> None:
        """Tell gateways which simulator ticks for the session (expires if we die)."""
        ttl_ms = max(10_000, int(self.heartbeat_interval_s * 3000))
        try:
            await self.publisher.market_data.mark_active(
                self.spec.session_id, self.spec.simulator_id, ttl_ms
            )
        except Exception as exc:
            log.warning("could not mark %s active: %s", self.spec.simulator_id, exc)

    async def _unmark_active(self) -> None:
        try:
            await self.publisher.market_data.unmark_active(
                self.spec.session_id, self.spec.simulator_id
            )
        except Exception as exc:
            log.warning("could not unmark %s: %s", self.spec.simulator_id, exc)

    async def _beat(self) -> bool:
        try:
            return await self.heartbeat(self.spec)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("heartbeat of %s failed: %s", self.spec.simulator_id, exc)
            return False

    async def _until_running(self) -> None:
        delay = 0.05
        while not await self._beat():
            await asyncio.sleep(delay)
            # capped at 1 s: RUNNING should follow the provisioner's report promptly
            delay = min(delay * 2, self.heartbeat_interval_s, 1.0)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            await self._beat()
            await self._mark_active()

    async def _ticks(self) -> None:
        # Engines tick on a grid shared by the process, split into `TICK_PHASES` phases (by
        # simulator id): the timers of one phase fire in the same loop iteration and the
        # publisher sends that phase's ticks in one pipeline. One grid for all would make
        # bursts of every simulator at once; one timer each, a wake-up and XADD per tick.
        interval = 1.0 / self.tick_hz
        phase = (seed_for(self.spec.simulator_id) % TICK_PHASES) * interval / TICK_PHASES
        loop = asyncio.get_running_loop()
        sim_id = self.spec.simulator_id
        slot = -1
        while True:
            now = loop.time()
            # asyncio may wake a timer a hair early: never tick twice in one slot
            slot = max(slot + 1, math.floor((now - phase) / interval) + 1)
            next_at = slot * interval + phase
            await asyncio.sleep(max(0.0, next_at - now))
            tick = self.market.step(int(self.clock() * 1000))
            self.publisher.publish(sim_id, _json.encode(tick))
