"""The market data relay: ticks from a simulator's stream (`sd:md:<simulator>`) to every local
client of the session."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.market_data import MarketDataRelay
from gateway.protocol import Form, MessageType
from gateway.push import Push
from infra.store import open_store
from infra.store.layout import market_data_stream, session_simulator_key
from tests.integration.simkit import wait_for
from tests.rediskit import connect

pytestmark = pytest.mark.anyio


class Conn:
    def __init__(self, conn_id: str, session_id: str) -> None:
        self.conn_id = conn_id
        self.session_id = session_id
        self.frames: list[dict] = []

    def deliver(self, push: Push) -> None:
        self.frames.append(json.loads(push.frame(Form.NAMES)))

    def ticks(self) -> list[int]:
        return [f["payload"]["seq"] for f in self.frames if f["type"] == "exchange_data"]


class Hub:
    def __init__(self) -> None:
        self.conns: dict[str, list[Conn]] = {}
        self.on_change, self.on_attach, self.on_detach = [], [], []

    def connections_of(self, session_id: str) -> tuple[Conn, ...]:
        return tuple(self.conns.get(session_id, ()))

    def add(self, conn: Conn) -> Conn:
        self.conns.setdefault(conn.session_id, []).append(conn)
        return conn


async def _tick(redis, simulator_id: str, seq: int) -> None:
    body = {
        "simulator_id": simulator_id,
        "seq": seq,
        "ts": 0,
        "quotes": [{"symbol": "AAPL", "bid": 1.0, "ask": 1.1, "last": 1.05}],
    }
    await redis.xadd(market_data_stream(simulator_id), {"d": json.dumps(body)})


def _status(session_id: str, simulator_id: str, status: str) -> Push:
    return Push(
        MessageType.SIMULATOR_STATUS,
        {"simulator_id": simulator_id, "status": status},
        session_id=session_id,
        version=3,
    )


@pytest.fixture
async def setup(redis_url):
    redis = connect(redis_url)
    store = open_store(redis_url)
    hub = Hub()
    relay = MarketDataRelay(store.market_data, hub, block_ms=50)
    await relay.start()
    yield redis, hub, relay
    await relay.close()
    await store.aclose()
    await redis.aclose()


async def test_running_starts_relaying_latest_tick_first_to_every_device(setup):
    redis, hub, _relay = setup
    a, b = hub.add(Conn("a", "s1")), hub.add(Conn("b", "s1"))
    other = hub.add(Conn("c", "s2"))
    for seq in (1, 2):
        await _tick(redis, "sim1", seq)
    for hook in hub.on_change:
        hook(_status("s1", "sim1", "RUNNING"))
    await wait_for(lambda: _async(a.ticks() == [2]), 2, what="latest tick")
    for seq in (3, 4, 5):
        await _tick(redis, "sim1", seq)
    await wait_for(lambda: _async(b.ticks() == [2, 3, 4, 5]), 2, what="live ticks")
    assert a.frames == b.frames  # the same ticks, once each, on both devices
    assert a.frames[0]["payload"]["quotes"][0]["symbol"] == "AAPL"
    assert other.frames == []
    # a third device joins late: the latest tick first, then the live ones
    late = hub.add(Conn("late", "s1"))
    await wait_for(lambda: _async(late.ticks() == [5]), 2, what="late subscriber greeted")
    await _tick(redis, "sim1", 6)
    await wait_for(
        lambda: _async(late.ticks() == [5, 6] and a.ticks()[-1] == 6),
        2,
        what="late subscriber live",
    )
    assert a.ticks() == [2, 3, 4, 5, 6]


async def test_a_stopped_simulator_is_no_longer_relayed(setup):
    redis, hub, relay = setup
    a = hub.add(Conn("a", "s1"))
    for hook in hub.on_change:
        hook(_status("s1", "sim1", "RUNNING"))
    await wait_for(lambda: _async("s1" in relay.watches), 2, what="watch")
    await _tick(redis, "sim1", 1)
    await wait_for(lambda: _async(a.ticks() == [1]), 2, what="tick")
    for hook in hub.on_change:
        hook(_status("s1", "sim1", "STOPPED"))
    await _tick(redis, "sim1", 2)
    await asyncio.sleep(0.2)
    assert a.ticks() == [1] and relay.watches == {}


async def test_first_client_of_a_session_with_a_ticking_simulator_gets_its_ticks(setup):
    redis, hub, relay = setup
    await redis.set(session_simulator_key("s9"), "sim9")
    await _tick(redis, "sim9", 41)
    a = hub.add(Conn("a", "s9"))
    for hook in hub.on_attach:
        await hook("s9")
    await _tick(redis, "sim9", 42)
    await wait_for(lambda: _async(a.ticks() == [41, 42]), 2, what="ticks after attach")
    for hook in hub.on_detach:
        await hook("s9")
    assert relay.watches == {}


async def test_many_sessions_are_read_in_slices(redis_url):
    redis = connect(redis_url)
    store = open_store(redis_url)
    hub = Hub()
    relay = MarketDataRelay(store.market_data, hub, block_ms=50, streams_per_reader=3)
    await relay.start()
    try:
        conns = [hub.add(Conn(f"c{i}", f"s{i}")) for i in range(10)]
        for i in range(10):
            await relay.watch(f"s{i}", f"sim{i}")
        await asyncio.sleep(0.1)
        for i in range(10):
            await _tick(redis, f"sim{i}", i)
        await wait_for(
            lambda: _async(all(c.ticks() == [i] for i, c in enumerate(conns))),
            3,
            what="every session's tick",
        )
    finally:
        await relay.close()
        await store.aclose()
        await redis.aclose()


async def _async(value):
    return value
