"""Helpers for the simulator tests: an in-process stack (worker, reactor, simulators host)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from actors.reactor import Reactor
from actors.runtime.worker import Worker
from events.codec import decode_event, decode_event_envelope
from events.ids import session_actor
from events.session import CreateSession, ReserveSimulator
from infra.exchange.host import SimulatorHost, bus_heartbeat
from infra.provisioners import SimulatorSettings, create_provisioner
from infra.store import CommandSender, layout, open_store
from infra.store.routing import partition_of
from projections.changes import live_change
from tests.rediskit import connect

__all__ = ["Stack", "actor_events", "now_ms", "running_stack", "wait_for"]

PARTITIONS = 2


def now_ms() -> int:
    return int(time.time() * 1000)


async def wait_for(
    predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def actor_events(
    redis, session_id: str, actor_id: str, partitions: int = PARTITIONS
) -> list[Any]:
    stream = layout.event_stream(partition_of(session_id, partitions), actor_id)
    out = []
    for _, fields in await redis.xrange(stream):
        env = decode_event_envelope(fields[b"e"])
        out.append(decode_event(env.data, env.type))
    return out


@dataclass
class Stack:
    redis: Any
    bus: CommandSender
    worker: Worker
    reactor: Reactor
    host: SimulatorHost | None
    tasks: dict[str, asyncio.Task] = field(default_factory=dict)
    user: str = "user-1"

    async def create_session(self, session_id: str | None = None) -> str:
        session_id = session_id or str(uuid.uuid4())
        out = await self.bus.send(
            session_actor(session_id),
            session_id,
            CreateSession(at=now_ms(), user_id=self.user, session_id=session_id, device_id="d1"),
        )
        assert out.ok, out
        return session_id

    async def reserve(
        self,
        session_id: str,
        symbols=("AAPL", "MSFT"),
        *,
        heartbeat_timeout_ms: int = 30_000,
        idle_timeout_ms: int = 3_600_000,
        simulator_id: str | None = None,
    ):
        simulator_id = simulator_id or str(uuid.uuid4())
        out = await self.bus.send(
            session_actor(session_id),
            session_id,
            ReserveSimulator(
                at=now_ms(),
                user_id=self.user,
                simulator_id=simulator_id,
                initial_symbols=list(symbols),
                initial_cash=10_000.0,
                heartbeat_timeout_ms=heartbeat_timeout_ms,
                idle_timeout_ms=idle_timeout_ms,
            ),
        )
        return simulator_id, out

    async def statuses(self, session_id: str, simulator_id: str) -> list[str]:
        """The simulator statuses the session mirrored, in its own event order."""
        events = await actor_events(self.redis, session_id, session_actor(session_id))
        out = []
        for e in events:
            if getattr(e, "simulator_id", None) != simulator_id:
                continue
            if type(e).__name__ == "SimulatorReserved":  # the slot is taken: CREATING
                out.append("CREATING")
            elif type(e).__name__ == "SimulatorStatusRecorded" and (not out or out[-1] != e.status):
                out.append(e.status)
        return out

    async def wait_status(
        self, session_id: str, simulator_id: str, status: str, timeout: float = 10.0
    ) -> list[str]:
        async def seen():
            got = await self.statuses(session_id, simulator_id)
            return got if status in got else None

        return await wait_for(seen, timeout, what=f"simulator {status}")


@contextlib.asynccontextmanager
async def running_stack(
    redis_url: str,
    *,
    with_host: bool = True,
    settings: SimulatorSettings | None = None,
    heartbeat_interval_s: float = 0.3,
    tick_hz: float = 20.0,
    provisioner: Any = None,
) -> AsyncIterator[Stack]:
    redis = connect(redis_url)
    store = open_store(redis_url, PARTITIONS)
    bus = store.commands
    await bus.start()
    worker = Worker(
        store,
        worker_id="w-test",
        live=live_change,
        lease_ttl_ms=2000,
        timer_poll_ms=50,
    )
    settings = settings or SimulatorSettings(retries=1, backoff_base_ms=20, ack_timeout_ms=2000)
    prov = provisioner or create_provisioner(settings, store.simulator_hosts)
    reactor = Reactor(
        store,
        bus,
        prov,
        name="reactor-test",
        block_ms=100,
        cleanup_backoff_s=0.05,
    )
    host = None
    if with_host:
        host = SimulatorHost(
            store,
            bus_heartbeat(bus, timeout=2.0),
            host_id="host-test",
            tick_hz=tick_hz,
            heartbeat_interval_s=heartbeat_interval_s,
        )
    stack = Stack(redis, bus, worker, reactor, host)
    stack.tasks["worker"] = asyncio.create_task(worker.run())
    stack.tasks["reactor"] = asyncio.create_task(reactor.run())
    if host is not None:
        stack.tasks["host"] = asyncio.create_task(host.run())
        await wait_for(lambda: redis.zscore("sd:sim:hosts", "host-test"), 5, what="host up")
    await asyncio.wait_for(worker.ready.wait(), 10)
    try:
        yield stack
    finally:
        reactor.stop()
        worker.stop()
        if host is not None:
            host.stop()
        _, pending = await asyncio.wait(stack.tasks.values(), timeout=10)
        for t in pending:
            t.cancel()
        await asyncio.gather(*stack.tasks.values(), return_exceptions=True)
        await reactor.close()
        await store.aclose()
        await redis.aclose()
