"""Simulators end to end through the gateway: real processes, real WebSocket clients.

worker, projector, reactor, simulators and gateway run as `sessiond` subprocesses against the
test Redis and a fresh PostgreSQL database; clients speak the named WS protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid

import httpx
import pytest

from actors.reactor import Reactor
from events.ids import session_actor, simulator_actor
from events.session import ReserveSimulator
from infra.provisioners import SimulatorSettings, create_provisioner
from infra.provisioners.kubernetes import api_client_from_env
from infra.store import layout, open_store
from tests.conftest import _create_database, _drop_database, _run_sync, _with_database
from tests.integration.k8s_fake_api import FakeKubernetesAPI, write_kubeconfig
from tests.integration.simkit import actor_events, now_ms, wait_for
from tests.integration.simstack import Client, ProcessStack
from tests.rediskit import connect

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SYMBOLS = ["AAPL", "MSFT", "GOOG"]


@pytest.fixture(scope="module")
def stack(redis_server_url, postgres_server_url, tmp_path_factory):
    import redis

    redis.Redis.from_url(redis_server_url).flushall()
    name = f"sim_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _run_sync(_create_database, postgres_server_url, name)
    stack = ProcessStack(
        redis_server_url,
        _with_database(postgres_server_url, name),
        tmp_path_factory.mktemp("simstack"),
    )
    try:
        stack.migrate()
        for role in ProcessStack.ROLES:
            stack.start(role)
        stack.wait_healthy(redis_server_url)
        yield stack
    finally:
        stack.stop_all()
        _run_sync(_drop_database, postgres_server_url, name)


@pytest.fixture(scope="module")
def token(stack):
    from gateway.auth import TokenService
    from infra.config import load_settings

    return TokenService(load_settings(stack.env).gateway).issue("alice", (), "access")


async def _new_session(stack, token) -> str:
    """Seed 000: POST /api/sessions with a device id and the bearer token."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        r = await http.post("/api/sessions", json={"device_id": f"d-{uuid.uuid4().hex[:8]}"})
        assert r.status_code in (200, 201), r.text
        return r.json()["session_id"]


@pytest.fixture
async def session(stack, token):
    async def make() -> str:
        return await _new_session(stack, token)

    return make


@pytest.fixture
async def clients(stack, token):
    opened: list[Client] = []
    counter = itertools.count()

    async def open_(session_id: str, device: str | None = None) -> Client:
        client = await Client.connect(
            stack.ws_url, session_id, device or f"dev{next(counter)}", token
        )
        opened.append(client)
        await client.until(lambda c: c.of("connected"), what="connected")
        return client

    yield open_
    for c in opened:
        await c.close()


def _in_order(statuses: list[str]) -> list[str]:
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


def _error_reason(client: Client) -> str:
    frames = [
        f
        for f in client.of("simulator_status")
        if isinstance(f.get("payload"), dict) and f["payload"].get("status") == "ERROR"
    ]
    return frames[-1]["payload"].get("reason", "") if frames else ""


async def test_ws_start_shows_creating_starting_running_then_ticks_on_every_device(
    stack, clients, token, session
):
    sid = await session()
    phone = await clients(sid, "phone")
    laptop = await clients(sid, "laptop")
    await phone.send("start_simulator", {"initial_symbols": SYMBOLS, "initial_cash": 5000.0})
    await phone.until(lambda c: len(c.ticks()) >= 3, 20, what="ticks")
    assert _in_order(phone.statuses())[:3] == ["CREATING", "STARTING", "RUNNING"]
    first_tick = next(i for i, f in enumerate(phone.frames) if f["type"] == "exchange_data")
    running = next(
        i
        for i, f in enumerate(phone.frames)
        if f["type"] == "simulator_status"
        and "version" in f
        and f["payload"]["status"] == "RUNNING"
    )
    assert running < first_tick
    for tick in phone.ticks():
        assert {q["symbol"] for q in tick["quotes"]} == set(SYMBOLS)
        assert tick["cash"] == 5000.0
    # the second device sees the same ticks
    await laptop.until(lambda c: len(c.ticks()) >= 3, 10, what="ticks on the second device")
    assert _in_order(laptop.statuses())[:3] == ["CREATING", "STARTING", "RUNNING"]
    by_seq = {t["seq"]: t for t in phone.ticks()}
    common = [t for t in laptop.ticks() if t["seq"] in by_seq]
    assert len(common) >= 2 and all(by_seq[t["seq"]] == t for t in common)
    # a device that connects late gets the latest tick first, then the live ones
    late = await clients(sid, "tablet")
    await late.until(lambda c: len(c.ticks()) >= 2, 5, what="ticks on the late device")
    seqs = [t["seq"] for t in late.ticks()]
    assert seqs == sorted(seqs) and seqs[0] >= phone.ticks()[0]["seq"]

    # a second start while one is active is refused
    await laptop.send("start_simulator", {"initial_symbols": ["TSLA"]}, correlation_id="again")
    err = await laptop.until(
        lambda c: [f for f in c.of("error") if f.get("correlation_id") == "again"],
        10,
        what="the refusal",
    )
    assert err[0]["payload"]["code"] == "SIMULATOR_ALREADY_ACTIVE"

    # REST: status from simulator.instances, and the latest quotes
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def running_row():
            r = await http.get(f"/api/sessions/{sid}/simulator")
            return r.json() if r.status_code == 200 and r.json()["status"] == "RUNNING" else None

        row = await wait_for(running_row, 5, what="projected RUNNING")
        assert row["endpoint"].startswith("local://")
        quotes = (await http.get(f"/api/sessions/{sid}/simulator/quotes")).json()
        assert quotes["simulator_id"] == row["simulator_id"]
        assert {q["symbol"] for q in quotes["tick"]["quotes"]} == set(SYMBOLS)

        # ending the session stops the simulator and removes its resources
        r = await http.post("/api/session/end", json={"sessionId": sid, "routerId": sid})
        assert r.status_code == 200, r.text

        async def stopped_row():
            r = await http.get(f"/api/sessions/{sid}/simulator")
            return r.status_code != 200 or r.json()["status"] == "STOPPED"

        await wait_for(stopped_row, 10, what="simulator STOPPED")
    redis = connect(stack.env["REDIS_URL"])
    try:
        sim_id = row["simulator_id"]
        await wait_for(lambda: _absent(redis, sim_id), 10, what="resources removed")
        n = await redis.xlen(layout.market_data_stream(sim_id))
        await asyncio.sleep(0.4)
        assert await redis.xlen(layout.market_data_stream(sim_id)) == n  # no more ticks
    finally:
        await redis.aclose()


async def _async(value):
    return value


async def _absent(redis, simulator_id: str) -> bool:
    return (await redis.exists(layout.sim_placement_key(simulator_id))) == 0


async def test_killing_the_simulators_process_marks_error_and_tells_the_clients(
    stack, clients, session
):
    sid = await session()
    a = await clients(sid)
    b = await clients(sid)
    redis = connect(stack.env["REDIS_URL"])
    store = open_store(stack.env["REDIS_URL"], 4)
    bus = store.commands
    try:
        sim_id = str(uuid.uuid4())
        out = await bus.send(
            session_actor(sid),
            sid,
            ReserveSimulator(
                at=now_ms(),
                user_id="alice",
                simulator_id=sim_id,
                initial_symbols=["AAPL"],
                heartbeat_timeout_ms=1500,
            ),
        )
        assert out.ok, out
        await a.until(lambda c: c.ticks(), 20, what="ticks")
        stack.kill("simulators")  # SIGKILL: no goodbye, heartbeats just stop
        started = asyncio.get_running_loop().time()
        for client in (a, b):
            await client.until(lambda c: "ERROR" in c.statuses(), 10, what="ERROR pushed")
        assert asyncio.get_running_loop().time() - started < 5
        assert "no heartbeat" in _error_reason(a) and _error_reason(a) == _error_reason(b)
        # the slot is free again once a simulators process is back
        stack.start("simulators")
        stack.wait_healthy(stack.env["REDIS_URL"])
        await a.send("start_simulator", {"initial_symbols": ["MSFT"]})
        await a.until(lambda c: c.statuses()[-1:] == ["RUNNING"], 20, what="a new simulator")
    finally:
        await store.aclose()
        await redis.aclose()


async def test_kubernetes_failures_reach_the_client_with_the_api_reason(
    stack, clients, session, tmp_path
):
    """The reactor runs the kubernetes provisioner against the test API server."""
    stack.kill("reactor", sig=15)
    api = FakeKubernetesAPI(ready_after_s=0.1).start()
    api.fail_deployments["*"] = 'Back-off pulling image "sessiond:latest": ImagePullBackOff'
    redis = connect(stack.env["REDIS_URL"])
    store = open_store(stack.env["REDIS_URL"], 4)
    bus = store.commands
    await bus.start()
    settings = SimulatorSettings(
        provisioner="kubernetes",
        retries=1,
        backoff_base_ms=10,
        breaker_failures=1,
        breaker_reset_ms=60_000,
        k8s_poll_ms=50,
        k8s_ready_timeout_ms=5000,
    )
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
    prov = create_provisioner(settings, api_client=api_client_from_env(str(kubeconfig)))
    reactor = Reactor(store, bus, prov, name="reactor-k8s-test", block_ms=100, stop_grace_s=0.5)
    task = asyncio.create_task(reactor.run())
    try:
        # a deployment that fails: ERROR with the API's reason, pushed to the client
        a = await clients(await session())
        await a.send("start_simulator", {"initial_symbols": ["AAPL"]})
        await a.until(lambda c: "ERROR" in c.statuses(), 15, what="ERROR")
        assert _in_order(a.statuses()) == ["CREATING", "ERROR"]
        assert "ProgressDeadlineExceeded" in _error_reason(a)
        assert "ImagePullBackOff" in _error_reason(a)
        # the failed simulator's resources are removed
        await wait_for(
            lambda: _async(not api.deployments and not api.services),
            5,
            what="failed deployment deleted",
        )
        # the API goes away: retried, then the breaker opens; both say so plainly
        api.stop()
        b = await clients(await session())
        await b.send("start_simulator", {"initial_symbols": ["AAPL"]})
        await b.until(lambda c: "ERROR" in c.statuses(), 15, what="ERROR")
        assert "kubernetes provisioner unavailable after 2 attempt(s)" in _error_reason(b)
        assert "unreachable" in _error_reason(b)
        c = await clients(await session())
        await c.send("start_simulator", {"initial_symbols": ["AAPL"]})
        await c.until(lambda c: "ERROR" in c.statuses(), 15, what="ERROR")
        assert "circuit breaker open" in _error_reason(c)
    finally:
        reactor.stop()
        await asyncio.wait_for(task, 10)
        await reactor.close()
        await store.aclose()
        await redis.aclose()
        api.stop()
        stack.start("reactor")


async def test_an_sse_client_of_the_session_gets_the_statuses_and_the_ticks(
    stack, clients, session, token
):
    sid = await session()
    ws = await clients(sid)
    events: list[tuple[str, str]] = []

    async def read_sse() -> None:
        async with (
            httpx.AsyncClient(base_url=stack.base_url, timeout=None) as http,
            http.stream(
                "GET", f"/api/sessions/{sid}/events", headers={"Authorization": f"Bearer {token}"}
            ) as r,
        ):
            assert r.status_code == 200
            name = ""
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, line[6:]))

    reader = asyncio.create_task(read_sse())
    try:
        await asyncio.sleep(0.5)
        await ws.send("start_simulator", {"initial_symbols": ["AAPL", "MSFT"]})

        async def ticks_seen():
            return sum(1 for n, _ in events if n == "exchange_data") >= 2

        await wait_for(ticks_seen, 20, what="ticks over SSE")
        names = [n for n, _ in events]
        assert "simulator_status" in names
        assert names.index("simulator_status") < names.index("exchange_data")
        tick = json.loads(next(d for n, d in events if n == "exchange_data"))
        assert {q["symbol"] for q in tick["payload"]["quotes"]} == {"AAPL", "MSFT"}
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_a_simulator_watched_by_a_client_stays_and_an_unwatched_one_is_stopped(
    stack, clients, session
):
    """Inactivity (seed 002): connected clients report activity; alone, it is stopped."""
    sid = await session()
    a = await clients(sid)
    redis = connect(stack.env["REDIS_URL"])
    store = open_store(stack.env["REDIS_URL"], 4)
    bus = store.commands
    try:
        sim_id = str(uuid.uuid4())
        out = await bus.send(
            session_actor(sid),
            sid,
            ReserveSimulator(
                at=now_ms(),
                user_id="alice",
                simulator_id=sim_id,
                initial_symbols=["AAPL"],
                idle_timeout_ms=3000,
            ),
        )
        assert out.ok, out
        await a.until(lambda c: c.ticks(), 20, what="ticks")
        await asyncio.sleep(6)  # twice the idle timeout, with a client watching
        assert a.statuses()[-1] == "RUNNING"
        await a.close()  # nobody watches any more

        async def stopped():
            events = await actor_events(redis, sid, simulator_actor(sim_id), partitions=4)
            return [type(e).__name__ for e in events][-1] == "SimulatorStopped"

        await wait_for(stopped, 10, what="the idle simulator stopped")
        events = await actor_events(redis, sid, simulator_actor(sim_id), partitions=4)
        assert (
            next(e for e in events if type(e).__name__ == "SimulatorStopping").reason == "inactive"
        )
        await wait_for(lambda: _absent(redis, sim_id), 5, what="resources removed")
    finally:
        await store.aclose()
        await redis.aclose()


async def test_rest_start_stop_status_and_ws_stop(stack, clients, session, token):
    """Seed 000 over REST (the gateway's routes) and `stop_simulator` over WS."""
    sid = await session()
    ws = await clients(sid)
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def row_status(status: str):
            r = await http.get(f"/api/sessions/{sid}/simulator")
            return r.json() if r.status_code == 200 and r.json()["status"] == status else None

        r = await http.post(f"/api/sessions/{sid}/simulator", json={"initial_symbols": ["IBM"]})
        assert r.status_code == 202 and r.json()["status"] == "CREATING", r.text
        first = r.json()["simulator_id"]
        await wait_for(lambda: row_status("RUNNING"), 15, what="REST status RUNNING")
        r = await http.post(f"/api/sessions/{sid}/simulator", json={"initial_symbols": ["IBM"]})
        assert r.status_code == 409 and r.json()["error"]["code"] == "SIMULATOR_ALREADY_ACTIVE"
        r = await http.delete(f"/api/sessions/{sid}/simulator")
        assert r.status_code == 202, r.text
        row = await wait_for(lambda: row_status("STOPPED"), 15, what="REST status STOPPED")
        assert row["simulator_id"] == first
        await ws.until(lambda c: "STOPPED" in c.statuses(), 10, what="STOPPED pushed")
        # the slot is free again; this time stopped from the WebSocket
        await ws.send("start_simulator", {"initial_symbols": ["IBM"]})
        await ws.until(lambda c: c.statuses()[-1:] == ["RUNNING"], 15, what="second RUNNING")
        await ws.send("stop_simulator", {})
        await ws.until(lambda c: c.statuses()[-1:] == ["STOPPED"], 15, what="second STOPPED")
        second = (await wait_for(lambda: row_status("STOPPED"), 15, what="row"))["simulator_id"]
        assert second != first
