"""The `local` provisioner and the simulators host, through the store (no worker needed)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest

from infra.exchange.control import EngineSpec
from infra.exchange.host import SimulatorHost
from infra.provisioners import ProvisionerUnavailable, ProvisionState
from infra.provisioners.local import LocalProvisioner
from infra.store import open_store
from infra.store.layout import SIM_HOSTS, market_data_stream, sim_placement_key
from tests.integration.simkit import wait_for
from tests.integration.simstack import free_port
from tests.rediskit import connect

pytestmark = pytest.mark.anyio


async def _never_running(spec) -> bool:
    return False


async def _always_running(spec) -> bool:
    return True


def _spec(n: int = 1) -> EngineSpec:
    return EngineSpec(
        simulator_id=f"sim-{n}", session_id=f"ses-{n}", owner_id="u", initial_symbols=["AAPL"]
    )


async def test_no_live_host_is_a_transient_failure(redis_url):
    store = open_store(redis_url)
    try:
        with pytest.raises(ProvisionerUnavailable, match="no simulators process"):
            await LocalProvisioner(store.simulator_hosts).provision(_spec())
    finally:
        await store.aclose()


async def test_placement_on_the_least_loaded_host_start_stop_and_status(redis_url):
    redis = connect(redis_url)
    store = open_store(redis_url)
    hosts = [SimulatorHost(store, _always_running, host_id=f"h{i}", tick_hz=50) for i in (1, 2)]
    tasks = [asyncio.create_task(h.run()) for h in hosts]
    try:
        await wait_for(lambda: redis.zcard(SIM_HOSTS), 5, what="hosts registered")
        await wait_for(lambda: _eq(redis.zcard(SIM_HOSTS), 2), 5, what="both hosts")
        prov = LocalProvisioner(store.simulator_hosts, ack_timeout_s=2)
        endpoints = [await prov.provision(_spec(n)) for n in (1, 2)]
        placed = {e.split("/")[2] for e in endpoints}
        assert placed == {"h1", "h2"}  # the second went to the other, idle host
        assert await prov.provision(_spec(1)) == endpoints[0]  # idempotent
        assert sum(len(h.engines) for h in hosts) == 2
        status = await prov.status("sim-1")
        assert status.state is ProvisionState.READY and status.endpoint == endpoints[0]
        await wait_for(lambda: redis.xlen(market_data_stream("sim-1")), 3, what="ticks")
        await prov.deprovision("sim-1")
        assert "sim-1" not in hosts[0].engines and "sim-1" not in hosts[1].engines
        assert (await prov.status("sim-1")).state is ProvisionState.ABSENT
        await prov.deprovision("sim-1")  # idempotent
        # a host that dies: its simulators are reported FAILED, removal is a no-op
        dead = next(i for i, h in enumerate(hosts) if "sim-2" in h.engines)
        hosts[dead].stop()
        await tasks[dead]
        assert (await prov.status("sim-2")).state is ProvisionState.FAILED
        await prov.deprovision("sim-2")
        assert await redis.exists(sim_placement_key("sim-2")) == 0
    finally:
        for h in hosts:
            h.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.aclose()
        await redis.aclose()


async def test_an_engine_does_not_tick_before_its_actor_is_running(redis_url):
    redis = connect(redis_url)
    store = open_store(redis_url)
    host = SimulatorHost(store, _never_running, host_id="h", tick_hz=50, heartbeat_interval_s=0.05)
    task = asyncio.create_task(host.run())
    try:
        host.start_engine(_spec())
        await asyncio.sleep(0.3)
        assert await redis.xlen(market_data_stream("sim-1")) == 0
    finally:
        host.stop()
        await task
        await store.aclose()
        await redis.aclose()


async def test_single_mode_serves_health_and_readiness_and_stops_on_sigterm(redis_url):
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SESSIOND_PARTITIONS": "2",
        "SIMULATOR_SPEC": msgspec.json.encode(_spec()).decode(),
    }
    sessiond = str(Path(sys.executable).parent / "sessiond")
    proc = subprocess.Popen(
        [sessiond, "simulators", "--single", "--health-port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready():
                try:
                    return (await http.get("/ready")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, 20, what="/ready")
            assert (await http.get("/health")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_single_mode_refuses_a_bad_spec_with_one_line(redis_url):
    env = {**os.environ, "REDIS_URL": redis_url, "SIMULATOR_SPEC": "{not json"}
    sessiond = str(Path(sys.executable).parent / "sessiond")
    out = subprocess.run(
        [sessiond, "simulators", "--single", "--health-port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "SIMULATOR_SPEC" in out.stderr and "Traceback" not in out.stderr


async def _eq(coro, value):
    return (await coro) == value
