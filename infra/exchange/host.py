"""The `simulators` process: runs one `Engine` task per simulator the reactor placed here.

It registers itself among the store's simulators hosts (`SimulatorHosts`) with a short TTL
(renewed every `ttl / 3`), consumes its own control stream and acknowledges every request.
Start and stop are idempotent, so a retried request is harmless.
Killing the process stops the heartbeats; the simulator actors then time out to ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

import msgspec

from events.errors import StoreUnavailable
from events.ids import simulator_actor
from events.simulator import RecordHeartbeat, StopSimulator
from infra.backoff import Backoff
from infra.exchange.control import ACK_TTL_S, ControlReply, ControlRequest, EngineSpec
from infra.exchange.engine import Engine, HeartbeatFn, TickPublisher
from infra.store import START, Store

__all__ = ["SimulatorHost", "bus_heartbeat", "bus_stop", "default_host_id", "local_endpoint"]

#: Tells a simulator's actor that its engine is going away (graceful shutdown of the host).
StopFn = Callable[[EngineSpec, str], Awaitable[None]]

log = logging.getLogger(__name__)

_req_decoder = msgspec.msgpack.Decoder(ControlRequest)
_encoder = msgspec.msgpack.Encoder()


def default_host_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def local_endpoint(host_id: str, simulator_id: str) -> str:
    return f"local://{host_id}/{simulator_id}"


def bus_heartbeat(bus, *, timeout: float = 5.0) -> HeartbeatFn:
    """A heartbeat function sending `RecordHeartbeat` through a `CommandBus`."""

    async def heartbeat(spec: EngineSpec) -> bool:
        outcome = await bus.send(
            simulator_actor(spec.simulator_id),
            spec.session_id,
            RecordHeartbeat(at=int(time.time() * 1000)),
            wait=True,
            timeout=timeout,
        )
        return outcome is not None and outcome.ok and outcome.events > 0

    return heartbeat


def bus_stop(bus, *, timeout: float = 2.0) -> StopFn:
    """A stop function sending `StopSimulator` through a `CommandBus`."""

    async def stop(spec: EngineSpec, reason: str) -> None:
        await bus.send(
            simulator_actor(spec.simulator_id),
            spec.session_id,
            StopSimulator(at=int(time.time() * 1000), reason=reason),
            command_id=f"host-stop:{spec.simulator_id}",
            wait=True,
            timeout=timeout,
        )

    return stop


class SimulatorHost:
    """One `simulators` process: its engines, its registration and its control stream (the
    store's `SimulatorHosts`), and the tick publisher its engines share (`MarketData`)."""

    def __init__(
        self,
        store: Store,
        heartbeat: HeartbeatFn,
        *,
        host_id: str | None = None,
        tick_hz: float = 10.0,
        heartbeat_interval_s: float = 5.0,
        register_ttl_s: float = 6.0,
        md_maxlen: int = 1000,
        on_shutdown: StopFn | None = None,
    ) -> None:
        self.hosts = store.simulator_hosts
        self.heartbeat = heartbeat
        self.on_shutdown = on_shutdown
        self.host_id = host_id or default_host_id()
        self.tick_hz = tick_hz
        self.heartbeat_interval_s = heartbeat_interval_s
        self.register_ttl_s = register_ttl_s
        self.publisher = TickPublisher(store.market_data, maxlen=md_maxlen)
        self.engines: dict[str, tuple[Engine, asyncio.Task]] = {}
        self.registered_at = 0.0  # monotonic: when the host record was last written
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------ engines

    def start_engine(self, spec: EngineSpec) -> str:
        current = self.engines.get(spec.simulator_id)
        if current is None or current[1].done():
            engine = Engine(
                spec,
                publisher=self.publisher,
                heartbeat=self.heartbeat,
                tick_hz=self.tick_hz,
                heartbeat_interval_s=self.heartbeat_interval_s,
            )
            task = asyncio.create_task(engine.run(), name=f"engine:{spec.simulator_id}")
            task.add_done_callback(lambda t, sid=spec.simulator_id: self._engine_done(sid, t))
            self.engines[spec.simulator_id] = (engine, task)
        return local_endpoint(self.host_id, spec.simulator_id)

    def _engine_done(self, simulator_id: str, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("engine %s crashed: %r", simulator_id, task.exception())
        current = self.engines.get(simulator_id)
        if current is not None and current[1] is task:
            del self.engines[simulator_id]

    async def stop_engine(self, simulator_id: str) -> None:
        current = self.engines.pop(simulator_id, None)
        if current is not None:
            current[1].cancel()
            await asyncio.gather(current[1], return_exceptions=True)

    # ------------------------------------------------------------------ loops

    async def run(self) -> None:
        """Serve until `stop()`; deregisters and cancels every engine on the way out."""
        tasks = [
            asyncio.create_task(self.publisher.run(), name="tick-publisher"),
            asyncio.create_task(self._register_loop(), name="host-register"),
            asyncio.create_task(self._control_loop(), name="host-control"),
        ]
        stop = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()
        finally:
            for t in [*tasks, stop]:
                t.cancel()
            if self.on_shutdown is not None and self.engines:
                # a graceful stop: say so now rather than let the heartbeats time out
                specs = [engine.spec for engine, _ in self.engines.values()]
                await asyncio.gather(*(self._say_stopping(spec) for spec in specs))
            for sid in list(self.engines):
                await self.stop_engine(sid)
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self.hosts.deregister(self.host_id)
            except Exception as exc:
                log.warning("could not deregister host %s: %s", self.host_id, exc)

    def stop(self) -> None:
        self._stopping.set()

    async def _say_stopping(self, spec: EngineSpec) -> None:
        try:
            await self.on_shutdown(spec, f"simulators process {self.host_id} shut down")
        except Exception as exc:  # the heartbeat timeout will tell instead
            log.warning("could not stop %s on shutdown: %s", spec.simulator_id, exc)

    async def register(self) -> None:
        await self.hosts.register(self.host_id, int(self.register_ttl_s * 1000), len(self.engines))
        self.registered_at = time.monotonic()

    async def health_check(self) -> str | None:
        """For `/healthz`: None while the host record is fresh (written within its TTL), else
        how stale it is: the reactor places no simulator on a host it cannot see."""
        age = time.monotonic() - self.registered_at
        if age > self.register_ttl_s:
            if not self.registered_at:
                return "the host record has not been written yet"
            ttl = self.register_ttl_s
            return f"the host record was last written {age:.0f} s ago (TTL {ttl:g} s)"
        return None

    async def _register_loop(self) -> None:
        while True:
            try:
                await self.register()
            except Exception as exc:
                log.warning("host registration failed: %s", exc)
            await asyncio.sleep(self.register_ttl_s / 3)

    async def _control_loop(self) -> None:
        """Read the host's control stream; a Redis outage is waited out (the engines keep
        running meanwhile), never the end of the host."""
        last = START
        delays = Backoff()
        failing = False
        while True:
            reader = self.hosts.control_reader(self.host_id)
            try:
                while True:
                    for position, payload in await reader.read(last, 100, 1000):
                        last = position
                        await self._handle(payload or None)
                        await reader.remove(position)
                    if failing:
                        log.warning("control stream readable again")
                        failing = False
                        delays.reset()
            except StoreUnavailable as exc:
                if not failing:
                    log.warning("control stream unreadable (%s); retrying with backoff", exc)
                    failing = True
                await asyncio.sleep(delays.next())
            finally:
                await reader.close()

    async def _handle(self, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            req = _req_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            log.error("bad control request: %s", exc)
            return
        if req.op == "start" and req.spec is not None:
            reply = ControlReply(ok=True, endpoint=self.start_engine(req.spec))
        elif req.op == "stop":
            await self.stop_engine(req.simulator_id)
            reply = ControlReply(ok=True)
        else:
            reply = ControlReply(ok=False, reason=f"unknown control op {req.op!r}")
        await self.hosts.acknowledge(
            req.request_id, _encoder.encode(reply), self.host_id, len(self.engines), ACK_TTL_S
        )
