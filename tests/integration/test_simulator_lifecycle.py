"""Simulators end to end below the gateway: real worker, reactor, simulators host, real Redis."""

from __future__ import annotations

import asyncio
import json

import pytest

from actors.reactor import command_id_for
from events.ids import session_actor, simulator_actor
from events.session import EndSession
from events.simulator import StopSimulator
from infra.provisioners import SimulatorSettings
from infra.store import layout
from infra.store.routing import partition_of
from tests.integration.simkit import actor_events, now_ms, running_stack, wait_for

pytestmark = pytest.mark.anyio


async def _ticks(redis, simulator_id: str) -> list[dict]:
    entries = await redis.xrange(layout.market_data_stream(simulator_id))
    return [json.loads(fields[b"d"]) for _, fields in entries]


async def test_a_reserved_simulator_walks_creating_starting_running_then_ticks(redis_url):
    async with running_stack(redis_url) as stack:
        session_id = await stack.create_session()
        simulator_id, out = await stack.reserve(session_id, symbols=("AAPL", "MSFT", "GOOG"))
        assert out.ok, out
        statuses = await stack.wait_status(session_id, simulator_id, "RUNNING")
        assert statuses == ["CREATING", "STARTING", "RUNNING"]
        ticks = await wait_for(lambda: _ticks(stack.redis, simulator_id), what="ticks")
        assert {q["symbol"] for q in ticks[0]["quotes"]} == {"AAPL", "MSFT", "GOOG"}
        assert ticks[0]["cash"] == 10_000.0
        # the engine only ticks once its actor is RUNNING
        sim_events = await actor_events(stack.redis, session_id, simulator_actor(simulator_id))
        running_at = next(e.at for e in sim_events if type(e).__name__ == "SimulatorRunning")
        assert ticks[0]["ts"] >= running_at
        provisioned = next(e for e in sim_events if type(e).__name__ == "SimulatorProvisioned")
        assert provisioned.endpoint == f"local://host-test/{simulator_id}"


async def test_a_second_start_while_one_is_active_is_refused(redis_url):
    async with running_stack(redis_url) as stack:
        session_id = await stack.create_session()
        first, out = await stack.reserve(session_id)
        assert out.ok
        second, out = await stack.reserve(session_id)
        assert not out.ok and out.error_code == "SIMULATOR_ALREADY_ACTIVE"
        await stack.wait_status(session_id, first, "RUNNING")
        _, out = await stack.reserve(session_id)
        assert out.error_code == "SIMULATOR_ALREADY_ACTIVE"
        assert await stack.redis.exists(layout.sim_placement_key(second)) == 0


async def test_ending_the_session_stops_and_removes_its_simulator(redis_url):
    async with running_stack(redis_url) as stack:
        session_id = await stack.create_session()
        simulator_id, _ = await stack.reserve(session_id)
        await stack.wait_status(session_id, simulator_id, "RUNNING")
        assert simulator_id in stack.host.engines
        out = await stack.bus.send(
            session_actor(session_id), session_id, EndSession(at=now_ms(), user_id=stack.user)
        )
        assert out.ok
        statuses = await stack.wait_status(session_id, simulator_id, "STOPPED")
        assert statuses[-2:] == ["STOPPING", "STOPPED"]
        assert simulator_id not in stack.host.engines
        assert await stack.redis.exists(layout.sim_placement_key(simulator_id)) == 0
        count = await stack.redis.xlen(layout.market_data_stream(simulator_id))
        await asyncio.sleep(0.3)
        assert await stack.redis.xlen(layout.market_data_stream(simulator_id)) == count


async def test_a_dead_engine_is_marked_error_within_the_heartbeat_timeout(redis_url):
    async with running_stack(redis_url) as stack:
        session_id = await stack.create_session()
        simulator_id, _ = await stack.reserve(session_id, heartbeat_timeout_ms=1000)
        await stack.wait_status(session_id, simulator_id, "RUNNING")
        # the engine dies without a word (as if its process were killed)
        stack.host.engines[simulator_id][1].cancel()
        started = asyncio.get_running_loop().time()
        await stack.wait_status(session_id, simulator_id, "ERROR", timeout=5)
        assert asyncio.get_running_loop().time() - started < 2.5
        events = await actor_events(stack.redis, session_id, session_actor(session_id))
        error = [e for e in events if getattr(e, "status", "") == "ERROR"][-1]
        assert "no heartbeat" in error.reason
        # and its resources are removed
        await wait_for(lambda: _absent(stack.redis, simulator_id), 5, what="placement removed")


async def _absent(redis, simulator_id):
    return await redis.exists(layout.sim_placement_key(simulator_id)) == 0


async def test_an_idle_simulator_is_stopped_and_removed(redis_url):
    async with running_stack(redis_url) as stack:
        session_id = await stack.create_session()
        simulator_id, _ = await stack.reserve(session_id, idle_timeout_ms=1200)
        await stack.wait_status(session_id, simulator_id, "RUNNING")
        await stack.wait_status(session_id, simulator_id, "STOPPED", timeout=6)
        sim_events = await actor_events(stack.redis, session_id, simulator_actor(simulator_id))
        stopping = next(e for e in sim_events if type(e).__name__ == "SimulatorStopping")
        assert stopping.reason == "inactive"
        assert simulator_id not in stack.host.engines


async def test_no_simulators_process_ends_in_error_with_a_clear_reason(redis_url):
    settings = SimulatorSettings(
        retries=1, backoff_base_ms=10, breaker_failures=1, breaker_reset_ms=60_000
    )
    async with running_stack(redis_url, with_host=False, settings=settings) as stack:
        session_id = await stack.create_session()
        simulator_id, _ = await stack.reserve(session_id)
        await stack.wait_status(session_id, simulator_id, "ERROR")
        events = await actor_events(stack.redis, session_id, session_actor(session_id))
        error = [e for e in events if getattr(e, "status", "") == "ERROR"][-1]
        assert "no simulators process is running" in error.reason
        # the breaker is now open: the next start fails fast, saying so
        other = await stack.create_session()
        simulator_id, _ = await stack.reserve(other)
        await stack.wait_status(other, simulator_id, "ERROR")
        events = await actor_events(stack.redis, other, session_actor(other))
        error = [e for e in events if getattr(e, "status", "") == "ERROR"][-1]
        assert "circuit breaker open" in error.reason


async def test_a_redelivered_event_sends_the_same_command_and_changes_nothing(redis_url):
    async with running_stack(redis_url) as stack:
        session_id = await stack.create_session()
        simulator_id, _ = await stack.reserve(session_id)
        await stack.wait_status(session_id, simulator_id, "RUNNING")
        actor = simulator_actor(simulator_id)
        partition = partition_of(session_id, 2)
        from events.codec import decode_event_envelope

        entries = await stack.redis.xrange(layout.event_stream(partition, actor))
        requested = decode_event_envelope(entries[0][1][b"e"])
        before = await stack.redis.xlen(layout.event_stream(partition, actor))
        # handled again (a claim after a crash): the request was answered, nothing is redone
        assert await stack.reactor.handle(partition, requested) is True
        # and a stop handled twice records STOPPED once
        await stack.bus.send(actor, session_id, StopSimulator(at=now_ms()))
        await stack.wait_status(session_id, simulator_id, "STOPPED")
        entries = await stack.redis.xrange(layout.event_stream(partition, actor))
        stopping = next(
            decode_event_envelope(f[b"e"])
            for _, f in entries
            if decode_event_envelope(f[b"e"]).type == "SimulatorStopping"
        )
        n = await stack.redis.xlen(layout.event_stream(partition, actor))
        assert await stack.reactor.handle(partition, stopping) is True
        assert await stack.redis.xlen(layout.event_stream(partition, actor)) == n
        stored = await stack.bus.outcome(session_id, command_id_for(stopping.event_id))
        assert stored is not None and stored.ok
        assert n > before


async def test_a_reactor_dying_mid_provision_is_taken_over_by_another(redis_url):
    from actors.reactor import GROUP, Reactor
    from infra.provisioners import create_provisioner

    class Hangs:
        name = "hangs"
        called = asyncio.Event()

        async def provision(self, spec):
            self.called.set()
            await asyncio.Event().wait()

        async def deprovision(self, simulator_id):
            pass

        async def status(self, simulator_id):
            raise AssertionError

        async def close(self):
            pass

    hangs = Hangs()
    async with running_stack(redis_url, provisioner=hangs) as stack:
        stack.reactor.stop_grace_s = 0.1
        session_id = await stack.create_session()
        simulator_id, _ = await stack.reserve(session_id)
        await asyncio.wait_for(hangs.called.wait(), 5)
        stack.reactor.stop()  # dies with the request unacknowledged
        await stack.tasks.pop("reactor")
        log = layout.partition_log(partition_of(session_id, 2))
        assert (await stack.redis.xpending(log, GROUP))["pending"] == 1
        other = Reactor(
            stack.worker.store,
            stack.bus,
            create_provisioner(SimulatorSettings(retries=0), stack.worker.store.simulator_hosts),
            name="reactor-2",
            block_ms=100,
            claim_idle_ms=300,
        )
        stack.tasks["reactor-2"] = asyncio.create_task(other.run())
        try:
            statuses = await stack.wait_status(session_id, simulator_id, "RUNNING")
            assert statuses == ["CREATING", "STARTING", "RUNNING"]
            await wait_for(lambda: _no_pending(stack.redis, log), 5, what="entry acknowledged")
        finally:
            other.stop()


async def _no_pending(redis, log):
    from actors.reactor import GROUP

    return (await redis.xpending(log, GROUP))["pending"] == 0


async def test_a_gracefully_stopped_simulators_process_stops_its_simulators_at_once(redis_url):
    from infra.exchange.host import SimulatorHost, bus_heartbeat, bus_stop

    async with running_stack(redis_url, with_host=False) as stack:
        host = SimulatorHost(
            stack.worker.store,
            bus_heartbeat(stack.bus),
            host_id="h-graceful",
            tick_hz=20,
            heartbeat_interval_s=0.3,
            on_shutdown=bus_stop(stack.bus),
        )
        task = asyncio.create_task(host.run())
        await wait_for(lambda: stack.redis.zscore("sd:sim:hosts", "h-graceful"), 5, what="host up")
        session_id = await stack.create_session()
        simulator_id, _ = await stack.reserve(session_id)  # 30 s heartbeat timeout
        await stack.wait_status(session_id, simulator_id, "RUNNING")
        host.stop()  # SIGTERM
        await task
        statuses = await stack.wait_status(session_id, simulator_id, "STOPPED", timeout=5)
        assert statuses[-2:] == ["STOPPING", "STOPPED"]
        events = await actor_events(stack.redis, session_id, simulator_actor(simulator_id))
        stopping = next(e for e in events if type(e).__name__ == "SimulatorStopping")
        assert stopping.reason == "simulators process h-graceful shut down"
