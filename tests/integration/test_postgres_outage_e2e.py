"""End to end: PostgreSQL killed under load and restarted (issue 15, items 2 and 4).

A real worker, projector and gateway run on this test's own PostgreSQL (never the session-wide
server other tests share) while clients write over WebSocket and REST. The server gets SIGKILL
and, a few lease periods later, is started again on the same data directory. Meanwhile:

- reads answer 503 DATABASE_UNAVAILABLE with a Retry-After, new connections that need
  PostgreSQL are refused with that code (WS close 1013, SSE 503), writes to existing sessions go
  on (they need Redis only), and the gateway logs the outage once, not once per request;
- `/ready` says the gateway cannot serve, `/health` says degraded and that the projector cannot
  reach PostgreSQL since when.

After the restart the gateway and the projector recover by themselves within a bound, and the
tables equal the fold of the log (`sessiond projections verify`): nothing lost, nothing doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets

from infra.embedded import start_postgres
from infra.store import open_store
from projections.verify import log_length
from tests.integration.gwstack import ROOT, SESSIOND, Stack, connect_ws, running_stack
from tests.integration.pgkill import kill_postgres, restart_postgres

pytestmark = pytest.mark.anyio

P = 4  # the stack's SESSIOND_PARTITIONS
RECOVERY_BOUND_S = 20.0


@pytest.fixture
def pg_stack(redis_server_url, server_data_dir, tmp_path_factory) -> Iterator[tuple]:
    """A stack on a PostgreSQL of this test's own; `servers[0]` is the one running now."""
    pg_dir = server_data_dir / "pg"
    servers = [start_postgres(pg_dir, fsync=False)]
    logs = tmp_path_factory.mktemp("pg-outage-logs")
    try:
        with running_stack(redis_server_url, servers[0].url, logs) as stack:
            yield stack, servers, pg_dir
    finally:
        servers[0].stop()


async def _drain(ws) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


async def _ws_load(ws, stop: asyncio.Event, sent: list[int]) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        await ws.send(json.dumps({"type": "state_update", "payload": {"key": "n", "value": i}}))
        sent[0] += 1
        await asyncio.sleep(0.05)


async def _rest_load(
    stack: Stack, user: str, sid: str, stop: asyncio.Event, statuses: list[int]
) -> None:
    async with httpx.AsyncClient(base_url=stack.base, timeout=15) as http:
        i = 0
        while not stop.is_set():
            i += 1
            r = await http.post(
                "/session/snapshot",
                headers=stack.headers(user),
                json={"session_id": sid, "state_data": {"rest": i}},
            )
            statuses.append(r.status_code)
            await asyncio.sleep(0.1)


def _log(stack: Stack, name: str) -> str:
    return (Path(stack.env["SESSIOND_TEST_LOGS"]) / f"{name}.log").read_text(errors="replace")


async def _archived(stack: Stack) -> tuple[int, int]:
    """(events archived, distinct (actor, version) among them), in one query."""
    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        row = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (actor_id, version)) FROM events.archive"
        )
    finally:
        await conn.close()
    return row[0], row[1]


def _verify(stack: Stack) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SESSIOND, "projections", "verify"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _until(what: str, check, bound: float) -> float:
    """Poll `check()` (async) until true; returns the seconds it took, fails past `bound`."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < bound, f"{what}: not within {bound} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_postgresql_killed_under_load_then_restarted(pg_stack) -> None:
    stack, servers, pg_dir = pg_stack
    users = [f"user{i}" for i in range(4)]
    conns = [await connect_ws(stack, u, "dev-a") for u in users]
    sids = [hello["payload"]["session_id"] for _, hello in conns]
    readers = [asyncio.create_task(_drain(ws)) for ws, _ in conns]
    stop = asyncio.Event()
    sent = [0]
    statuses: list[int] = []
    load = [asyncio.create_task(_ws_load(ws, stop, sent)) for ws, _ in conns]
    load += [
        asyncio.create_task(_rest_load(stack, u, s, stop, statuses))
        for u, s in zip(users, sids, strict=True)
    ]
    http = httpx.AsyncClient(base_url=stack.base, timeout=10)
    try:
        await asyncio.sleep(2.0)
        kill_postgres(servers[0])
        killed = time.monotonic()

        # the gateway cannot serve reads: /ready says so, /health says degraded and why
        async def not_ready() -> bool:
            return (await http.get("/ready")).status_code == 503

        await _until("/ready reports the outage", not_ready, 5)
        ready = (await http.get("/ready")).json()
        assert ready["ready"] is False and ready["checks"]["postgres"] == "unreachable"

        async def projector_says_so() -> bool:
            body = (await http.get("/health")).json()
            return any(
                "cannot reach PostgreSQL since" in p
                for p in body["checks"]["projector"].get("problems", [])
            )

        await _until("/health shows the projector's outage", projector_says_so, 10)
        health = await http.get("/health")
        body = health.json()
        assert health.status_code == 200 and body["status"] == "degraded", body
        assert body["checks"]["postgres"]["status"] == "unreachable"
        assert body["checks"]["redis"]["status"] == "ok"
        # reads: 503 with a code and a Retry-After, many times, logged once
        for _ in range(50):
            for path in (f"/session/{sids[0]}", f"/session/{sids[0]}/devices"):
                r = await http.get(path, headers=stack.headers(users[0]))
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
                assert int(r.headers["retry-after"]) > 0
        # a new SSE stream of a session Redis does not know: 503, not 404, not 500
        r = await http.get(f"/api/sessions/{uuid.uuid4()}/events", headers=stack.headers(users[0]))
        assert r.status_code == 503 and r.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
        assert int(r.headers["retry-after"]) > 0
        # a new WS connection that needs PostgreSQL (a device with no session yet): refused
        # with the code and close code 1013 (try again later)
        ws, hello = await connect_ws(stack, "newcomer", "dev-z")
        try:
            assert hello["type"] == "error", hello
            assert hello["payload"]["code"] == "DATABASE_UNAVAILABLE"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1013
        finally:
            await ws.close()
        # down for a few lease periods, writes going on meanwhile
        await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - killed)))
        store = open_store(stack.env["REDIS_URL"], P)
        try:
            servers[0] = restart_postgres(pg_dir, fsync=False)
            restarted = time.monotonic()
            written = await log_length(store)  # every event up to the restart
        finally:
            await store.aclose()

        async def ready_again() -> bool:
            return (await http.get("/ready")).status_code == 200

        await _until("/ready again", ready_again, RECOVERY_BOUND_S)
        gateway_s = time.monotonic() - restarted

        async def projector_ok() -> bool:
            return (await http.get("/health")).json()["checks"]["projector"]["status"] == "ok"

        await _until("projector ok again", projector_ok, RECOVERY_BOUND_S)
        projector_s = time.monotonic() - restarted

        async def backlog_projected() -> bool:
            return (await _archived(stack))[0] >= written

        await _until("the outage's backlog projected", backlog_projected, RECOVERY_BOUND_S)
        backlog_s = time.monotonic() - restarted
        await asyncio.sleep(1.0)  # load goes on after the restart
    finally:
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)
        for ws, _ in conns:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    try:
        # every write was accepted, during the outage too (writes need Redis only)
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        store = open_store(stack.env["REDIS_URL"], P)
        try:

            async def caught_up() -> bool:
                archived, distinct = await _archived(stack)
                assert archived == distinct  # nothing doubled
                return archived == await log_length(store)

            drain_s = await _until("projector caught up", caught_up, RECOVERY_BOUND_S)
        finally:
            await store.aclose()
        verify = await asyncio.to_thread(_verify, stack)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert json.loads(verify.stdout)["ok"] is True
        # the outage in the gateway's log: once, then its end; no traceback per request
        log = _log(stack, "gateway")
        assert log.count("gateway: PostgreSQL unreachable") == 1, log[-3000:]
        assert "gateway: PostgreSQL reachable again" in log
        assert "Traceback" not in log
        assert _log(stack, "projector").count("projector: PostgreSQL unreachable") == 1
        final = (await http.get("/health")).json()
        assert final["status"] == "healthy", final["checks"]["projector"].get("problems")
        print(
            f"\nPostgreSQL ready again (killed {restarted - killed:.1f} s before) -> gateway"
            f" ready: {gateway_s:.2f} s, projector ok: {projector_s:.2f} s, the {written} events"
            f" written until then projected: {backlog_s:.2f} s; load stopped -> caught up:"
            f" {drain_s:.2f} s ({sent[0]} WS and {len(statuses)} REST writes)"
        )
    finally:
        await http.aclose()
