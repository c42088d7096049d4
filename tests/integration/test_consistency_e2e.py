"""Consistency a client can rely on (issue 14), end to end on real processes: one worker, one
projector and TWO gateway processes on real Redis and PostgreSQL.

- Read-your-writes: a write acknowledged by one gateway is in every read of the other, at once,
  100 times in a row; the same holds with the projector frozen (reads fold the events the read
  model lacks), and `min_version` beyond the session's version is refused, not answered stale.
- The live push comes from the append: WS and SSE clients of the other gateway get each
  acknowledged change, and the versions a client sees never go backwards across REST, WS, SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.integration.gwstack import Stack, free_port, recv_until, running_stack

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]


class TwoGateways:
    """A stack whose second gateway (`b`) shares the worker, projector, Redis and PostgreSQL."""

    def __init__(self, stack: Stack, port_b: int) -> None:
        self.stack = stack
        self.a = stack.base
        self.b = f"http://127.0.0.1:{port_b}"
        self.ws_b = f"ws://127.0.0.1:{port_b}/ws"


@pytest.fixture(scope="module")
def gateways(redis_server_url: str, postgres_server_url: str, tmp_path_factory) -> Iterator[Any]:
    logs = tmp_path_factory.mktemp("consistency-logs")
    with running_stack(redis_server_url, postgres_server_url, logs) as s:
        port_b = free_port()
        shared_env = s.env
        s.env = {**shared_env, "GRPC_ADDR": f"127.0.0.1:{free_port()}"}  # its own gRPC port
        try:
            s.start("gateway-b", "gateway", "--port", str(port_b), "--drain-timeout", "2")
        finally:
            s.env = shared_env
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port_b}/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, s.log("gateway-b")
            time.sleep(0.2)
        yield TwoGateways(s, port_b)


async def _save(http: httpx.AsyncClient, h: dict, sid: str, state: dict) -> dict:
    r = await http.post(
        "/session/snapshot",
        headers=h,
        json={"session_id": sid, "state_data": state, "device_id": "writer"},
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_write_on_one_gateway_is_read_on_the_other_100_times_in_a_row(
    gateways: TwoGateways,
) -> None:
    stack, sid = gateways.stack, str(uuid.uuid4())
    h = stack.headers("ryw")
    async with (
        httpx.AsyncClient(base_url=gateways.a, timeout=10) as a,
        httpx.AsyncClient(base_url=gateways.b, timeout=10) as b,
    ):
        first = await _save(a, h, sid, {"n": -1})  # seed 004: the snapshot creates the session
        ws = await websockets.connect(
            f"{gateways.ws_b}?token={stack.token('ryw')}&device_id=watcher&session_id={sid}",
            compression=None,
        )
        sse_seen: list[int] = []
        sse_ready = asyncio.Event()

        async def follow_sse() -> None:
            url = f"/api/sessions/{sid}/events?token={stack.token('ryw')}"
            async with b.stream("GET", url, headers={"Last-Event-ID": "0"}) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    if line.startswith("id: "):
                        sse_seen.append(int(line[4:]))
                        sse_ready.set()

        sse = asyncio.create_task(follow_sse())
        try:
            hello = await recv_until(ws, lambda m: m.get("type") == "connected")
            seen = {"ws": hello["payload"]["version"], "rest": first["session_version"]}
            await asyncio.wait_for(sse_ready.wait(), 10)
            for i in range(100):
                written = await _save(a, h, sid, {"n": i})
                acked = written["session_version"]
                # REST on the other gateway, no parameter: the write is there
                r = await b.get(f"/session/{sid}", headers=h)
                assert r.status_code == 200, r.text
                snap = r.json()
                assert snap["state_data"] == {"n": i}, (i, snap)
                assert snap["session_version"] >= acked >= seen["rest"]
                seen["rest"] = snap["session_version"]
                # the WS client of the other gateway gets the change, versions only forward
                push = await recv_until(ws, lambda m, v=acked: m.get("version", 0) >= v, timeout=10)
                assert push["version"] >= seen["ws"]
                seen["ws"] = push["version"]
            deadline = time.monotonic() + 10
            while (not sse_seen or sse_seen[-1] < seen["rest"]) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert sse_seen == sorted(set(sse_seen)), "SSE ids go forward, without repeats"
            assert sse_seen[-1] >= seen["rest"]
        finally:
            sse.cancel()
            with contextlib.suppress(BaseException):
                await sse
            await ws.close()


async def test_reads_include_the_writes_the_frozen_projector_has_not_applied(
    gateways: TwoGateways,
) -> None:
    stack, sid = gateways.stack, str(uuid.uuid4())
    h = stack.headers("frozen")
    projector = stack.procs["projector"]
    async with (
        httpx.AsyncClient(base_url=gateways.a, timeout=10) as a,
        httpx.AsyncClient(base_url=gateways.b, timeout=10) as b,
    ):
        await _save(a, h, sid, {"step": 0})
        projector.send_signal(signal.SIGSTOP)
        try:
            written = await _save(a, h, sid, {"step": 1})
            r = await a.post(
                "/session/conflict/resolve",
                headers=h,
                json={
                    "session_id": sid,
                    "client_version": 1,
                    "client_state": {"extra": True},
                    "resolution_strategy": "merge",
                },
            )
            assert r.status_code == 200, r.text
            r = await b.get(f"/session/{sid}", headers=h)
            assert r.status_code == 200, r.text
            assert r.json()["state_data"] == {"step": 1, "extra": True}
            assert r.json()["session_version"] > written["session_version"]
            ws = await websockets.connect(
                f"{stack.ws_base}?token={stack.token('frozen')}&device_id=phone&session_id={sid}",
                compression=None,
            )
            try:
                await recv_until(ws, lambda m: m.get("type") == "connected")
                r = await b.get(f"/session/{sid}/devices", headers=h)
                assert r.status_code == 200, r.text
                devices = {d["device_id"]: d for d in r.json()["devices"]}
                assert devices["phone"]["online"] and devices["phone"]["ws_connections"] == 1
            finally:
                await ws.close()
            # a version the session does not reach: a clear refusal, not 200 with old state
            beyond = written["session_version"] + 50
            t0 = time.monotonic()
            r = await b.get(f"/session/{sid}?min_version={beyond}", headers=h)
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "VERSION_NOT_REACHED"
            assert time.monotonic() - t0 < 5
        finally:
            projector.send_signal(signal.SIGCONT)


async def test_a_refused_write_pushes_nothing(gateways: TwoGateways) -> None:
    stack, sid = gateways.stack, str(uuid.uuid4())
    h = stack.headers("refused")
    async with httpx.AsyncClient(base_url=gateways.a, timeout=10) as a:
        await _save(a, h, sid, {"v": 1})
        ws = await websockets.connect(
            f"{gateways.ws_b}?token={stack.token('refused')}&device_id=w&session_id={sid}",
            compression=None,
        )
        try:
            hello = await recv_until(ws, lambda m: m.get("type") == "connected")
            r = await a.post(
                "/session/snapshot",
                headers=h,
                json={"session_id": sid, "state_data": {"v": 99}, "version": 99},
            )
            assert r.status_code == 409, r.text
            ok = await _save(a, h, sid, {"v": 2})
            push = await recv_until(ws, lambda m: "version" in m and m["version"] > 0)
            # the first change pushed after the refusal is the accepted write's
            assert push["version"] == ok["session_version"] > hello["payload"]["version"]
            assert json.dumps(push).find('"v": 99') == -1
        finally:
            await ws.close()


async def test_a_large_state_is_stored_compressed_and_read_back_whole(
    gateways: TwoGateways,
) -> None:
    import asyncpg
    import redis.asyncio as aioredis

    from infra.store import layout
    from infra.store.routing import partition_of
    from tests.unit.test_codec_compression import state_of

    stack, sid = gateways.stack, str(uuid.uuid4())
    h, state = stack.headers("big"), state_of(200)
    raw = len(json.dumps(state))
    redis = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    db = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        async with (
            httpx.AsyncClient(base_url=gateways.a, timeout=10) as a,
            httpx.AsyncClient(base_url=gateways.b, timeout=10) as b,
        ):
            written = await _save(a, h, sid, state)
            stream = layout.event_stream(partition_of(sid, 4), f"session:{sid}")
            (entry,) = await redis.xrevrange(stream, count=1)
            assert len(entry[1][b"e"]) < raw / 2  # Redis holds it compressed
            r = await b.get(f"/session/{sid}", headers=h)
            assert r.status_code == 200 and r.json()["state_data"] == state
            deadline = time.monotonic() + 15
            while True:  # the projection's row: TOAST-compressed by PostgreSQL
                row = await db.fetchrow(
                    "SELECT pg_column_size(state) AS stored, octet_length(state::text) AS raw"
                    " FROM session.state_snapshots WHERE session_id = $1",
                    sid,
                )
                if row is not None:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            assert row["stored"] < row["raw"] / 2, dict(row)
            assert written["session_version"] >= 1
    finally:
        await db.close()
        await redis.aclose()
