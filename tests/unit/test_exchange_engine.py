"""The engine's I/O loop, with a fake publisher and heartbeat (no Redis)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from infra.exchange.control import EngineSpec
from infra.exchange.engine import TICK_PHASES, Engine

pytestmark = pytest.mark.anyio


class Publisher:
    def __init__(self) -> None:
        self.ticks: list[tuple[str, bytes, float]] = []
        self.redis = None

    def publish(self, simulator_id: str, payload: bytes) -> None:
        self.ticks.append((simulator_id, payload, asyncio.get_running_loop().time()))


def _engine(n: int, publisher: Publisher, heartbeat, hz: float = 20.0) -> Engine:
    spec = EngineSpec(simulator_id=f"sim-{n}", session_id="s", initial_symbols=["AAPL"])
    return Engine(
        spec, publisher=publisher, heartbeat=heartbeat, tick_hz=hz, heartbeat_interval_s=0.05
    )


async def _ok(spec) -> bool:
    return True


async def test_engines_tick_exactly_at_their_rate_on_a_few_shared_phases():
    pub = Publisher()
    engines = [_engine(n, pub, _ok) for n in range(40)]
    tasks = [asyncio.create_task(e._ticks()) for e in engines]
    await asyncio.sleep(1.0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    per_engine = {f"sim-{n}": 0 for n in range(40)}
    for sim, _, _ in pub.ticks:
        per_engine[sim] += 1
    assert set(per_engine.values()) <= {19, 20, 21}  # 20 Hz for 1 s, never doubled
    # the ticks come in bursts, one per phase (6.25 ms apart at 20 Hz), not one per engine
    times = sorted(t for _, _, t in pub.ticks)
    bursts = 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 0.003)
    assert bursts <= 21 * TICK_PHASES < len(times)


async def test_no_tick_before_the_first_heartbeat_is_recorded():
    pub = Publisher()
    accepted = asyncio.Event()
    calls = 0

    async def heartbeat(spec) -> bool:
        nonlocal calls
        calls += 1
        return accepted.is_set()

    engine = _engine(1, pub, heartbeat)
    task = asyncio.create_task(engine.run())
    await asyncio.sleep(0.3)
    assert pub.ticks == [] and calls >= 2 and not engine.running
    accepted.set()
    await asyncio.sleep(0.3)
    assert engine.running and len(pub.ticks) >= 3
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_failing_heartbeat_is_retried_not_fatal():
    pub = Publisher()
    attempts = 0

    async def flaky(spec) -> bool:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("redis down")
        return True

    engine = _engine(2, pub, flaky)
    task = asyncio.create_task(engine.run())
    await asyncio.sleep(0.5)
    assert engine.running and pub.ticks
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
