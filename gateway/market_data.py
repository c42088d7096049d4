"""Market data relay: ticks of a session's running simulator to every local client of it.

The engine publishes each tick to its simulator's capped tick stream (the store's `MarketData`,
JSON); this relay reads the streams of the simulators whose sessions have clients on this
gateway process and pushes each tick once per session as an `exchange_data` message (the tick's
JSON is embedded as is, never re-encoded per client). The session change feed decides what is
watched:

- a simulator status change pushed to the session (the hub's `on_change` hook) to RUNNING
  starts relaying, to STOPPING / STOPPED / ERROR stops it, so a client sees RUNNING before the
  first tick and no tick after the stop;
- a session gaining its first local connection (`on_attach`) looks its running simulator up
  (`MarketData.active_simulator`, kept by the engine) and starts relaying;
- a connection that joins a watched session gets the latest tick first, then the live ones.

Reads are batched: one blocking read over up to `streams_per_reader` streams per reader task
(`MarketData.reader`, a connection of its own). While a
session has clients, the relay reports client activity to its simulator (`RecordActivity`, at
most once per `activity_interval_s`, with an id shared by every gateway of the same interval),
so the inactivity stop only hits simulators nobody is watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from events.errors import StoreUnavailable
from events.ids import simulator_actor
from events.simulator import RecordActivity
from gateway.protocol import MessageType
from gateway.push import Push
from infra.metrics import counter, histogram
from infra.store import START, CommandSender, MarketData

__all__ = ["MarketDataRelay", "install"]

log = logging.getLogger("sessiond.gateway.market_data")

_ACTIVE = "RUNNING"
_ENDED = frozenset({"STOPPING", "STOPPED", "ERROR"})


TICKS_RELAYED = counter(
    "sessiond_market_ticks_relayed_total",
    "ticks pushed to the local clients of a session (once per session)",
)
RELAY_LAG = histogram(
    "sessiond_market_tick_relay_lag_seconds",
    "from the engine making a tick to the gateway pushing it to its clients",
    buckets=(0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0),
)


def _tick_ts_ms(data: bytes) -> int | None:
    """The tick's `ts` without decoding the whole tick (it is in every relayed tick)."""
    at = data.find(b'"ts":')
    if at < 0:
        return None
    end = data.find(b",", at)
    try:
        return int(data[at + 5 : end])
    except ValueError:
        return None


class _Watch:
    __slots__ = ("last_id", "latest", "served", "session_id", "simulator_id")

    def __init__(self, session_id: str, simulator_id: str) -> None:
        self.session_id = session_id
        self.simulator_id = simulator_id
        self.last_id: str | None = None  # the position read up to (None: not known yet)
        self.latest: Push | None = None
        self.served: set[str] = set()  # connection ids that have had the latest tick


class MarketDataRelay:
    def __init__(
        self,
        market_data: MarketData,
        hub: Any,
        *,
        bus: CommandSender | None = None,
        block_ms: int = 100,
        batch: int = 50,
        streams_per_reader: int = 64,
        activity_interval_s: float = 60.0,
    ) -> None:
        self.market_data = market_data
        self.hub = hub
        self.bus = bus
        self.block_ms = block_ms
        self.batch = batch
        self.streams_per_reader = streams_per_reader
        self.activity_interval_s = activity_interval_s
        self.watches: dict[str, _Watch] = {}  # session id -> watch
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self.delivered = 0  # ticks pushed (per session, not per connection)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.hub.on_change.append(self.on_change)
        self.hub.on_attach.append(self.on_attach)
        self.hub.on_detach.append(self.on_detach)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="market-data")

    async def close(self) -> None:
        for hooks, fn in (
            (self.hub.on_change, self.on_change),
            (self.hub.on_attach, self.on_attach),
            (self.hub.on_detach, self.on_detach),
        ):
            with contextlib.suppress(ValueError):
                hooks.remove(fn)
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.watches.clear()

    # ------------------------------------------------------------------ hub hooks
    def on_change(self, push: Push) -> None:
        """Every change pushed to a session: simulator status changes start / stop relaying."""
        if push.mtype is not MessageType.SIMULATOR_STATUS or not isinstance(push.payload, dict):
            return
        status = push.payload.get("status")
        simulator_id = push.payload.get("simulator_id") or ""
        if status == _ACTIVE and simulator_id:
            self._spawn(self.watch(push.session_id, simulator_id))
        elif status in _ENDED:
            current = self.watches.get(push.session_id)
            if current is not None and current.simulator_id in (simulator_id, ""):
                self.unwatch(push.session_id)

    async def on_attach(self, session_id: str) -> None:
        """A session got its first client here: relay its simulator if one is ticking."""
        simulator_id = await self.market_data.active_simulator(session_id)
        if simulator_id:
            await self.watch(session_id, simulator_id)

    async def on_detach(self, session_id: str) -> None:
        self.unwatch(session_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # ------------------------------------------------------------------ watching
    async def watch(self, session_id: str, simulator_id: str) -> None:
        current = self.watches.get(session_id)
        if current is not None and current.simulator_id == simulator_id:
            return
        if not self.hub.connections_of(session_id):
            return
        watch = _Watch(session_id, simulator_id)
        self.watches[session_id] = watch
        # the latest tick first, for whoever is connected; then everything after it
        try:
            latest = await self.market_data.latest(simulator_id)
        except StoreUnavailable as exc:
            log.warning("market data: reading the ticks of %s failed: %s", simulator_id, exc)
            latest = None
        if self.watches.get(session_id) is not watch:
            return  # unwatched meanwhile
        if latest is not None:
            watch.last_id = latest[0]
            self._deliver(watch, latest[1])
        else:
            watch.last_id = START
        self._changed.set()
        await self._report_activity([watch])  # a client just started watching

    def unwatch(self, session_id: str) -> None:
        if self.watches.pop(session_id, None) is not None:
            self._changed.set()

    def _deliver(self, watch: _Watch, data: bytes) -> None:
        if not data:
            return
        push = Push(MessageType.EXCHANGE_DATA, msgspec.Raw(data), session_id=watch.session_id)
        conns = self.hub.connections_of(watch.session_id)
        if watch.latest is not None:
            for conn in conns:  # a connection that joined since the last tick: latest first
                if conn.conn_id not in watch.served:
                    watch.served.add(conn.conn_id)
                    conn.deliver(watch.latest)
        for conn in conns:
            conn.deliver(push)
        watch.served = {c.conn_id for c in conns}
        watch.latest = push
        self.delivered += 1
        TICKS_RELAYED.inc()
        ts = _tick_ts_ms(data)
        if ts:
            RELAY_LAG.observe(max(0.0, time.time() - ts / 1000))

    def _greet_new(self) -> None:
        for watch in self.watches.values():
            if watch.latest is None:
                continue
            for conn in self.hub.connections_of(watch.session_id):
                if conn.conn_id not in watch.served:
                    watch.served.add(conn.conn_id)
                    conn.deliver(watch.latest)

    # ------------------------------------------------------------------ reading
    async def _run(self) -> None:
        readers: list[asyncio.Task[None]] = []
        last_activity = time.monotonic()
        try:
            while True:
                # one reader per slice of the watched streams; rebuilt when the set changes
                self._changed.clear()
                sessions = list(self.watches)
                slices = [
                    sessions[i : i + self.streams_per_reader]
                    for i in range(0, len(sessions), self.streams_per_reader)
                ]
                readers = [asyncio.get_running_loop().create_task(self._read(s)) for s in slices]
                changed = asyncio.get_running_loop().create_task(self._changed.wait())
                while not changed.done():
                    await asyncio.wait([changed], timeout=self.block_ms / 1000)
                    self._greet_new()
                    if time.monotonic() - last_activity >= self.activity_interval_s:
                        last_activity = time.monotonic()
                        await self._report_activity()
                for r in readers:
                    r.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
        finally:
            for r in readers:
                r.cancel()

    async def _read(self, sessions: list[str]) -> None:
        if not sessions:
            await asyncio.Event().wait()
        # a reader of its own: cancelling its blocked read must not disturb other reads
        reader = self.market_data.reader("market-data")
        try:
            while True:
                positions: dict[str, str] = {}
                by_simulator: dict[str, _Watch] = {}
                for sid in sessions:
                    watch = self.watches.get(sid)
                    if watch is not None and watch.last_id is not None:
                        positions[watch.simulator_id] = watch.last_id
                        by_simulator[watch.simulator_id] = watch
                if not positions:
                    await asyncio.Event().wait()
                try:
                    got = await reader.read(positions, self.batch, self.block_ms)
                except StoreUnavailable as exc:
                    log.warning("market data read failed: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                for simulator_id, ticks in got.items():
                    watch = by_simulator.get(simulator_id)
                    if watch is None or self.watches.get(watch.session_id) is not watch:
                        continue
                    for position, data in ticks:
                        watch.last_id = position
                        self._deliver(watch, data)
        finally:
            with contextlib.suppress(Exception):
                await reader.close()

    async def _report_activity(self, watches: list[_Watch] | None = None) -> None:
        if self.bus is None:
            return
        bucket = int(time.time() // self.activity_interval_s)
        for watch in list(self.watches.values()) if watches is None else watches:
            if not self.hub.connections_of(watch.session_id):
                continue
            with contextlib.suppress(Exception):
                await self.bus.send(
                    simulator_actor(watch.simulator_id),
                    watch.session_id,
                    RecordActivity(at=int(time.time() * 1000)),
                    command_id=f"activity:{watch.simulator_id}:{bucket}",
                    wait=False,
                )


async def install(
    market_data: MarketData, hub: Any, bus: CommandSender, **kw: Any
) -> MarketDataRelay:
    """Create, hook into `hub` and start the relay (the gateway's start-up calls it). Pass
    `activity_interval_s`: how often client activity is reported (the gateway's
    `simulator_activity_interval_ms`, SIMULATOR_ACTIVITY_INTERVAL_MS)."""
    relay = MarketDataRelay(market_data, hub, bus=bus, **kw)
    await relay.start()
    return relay
