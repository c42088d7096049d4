"""A session's lifetime end to end (issue 14), real worker, projector and gateway processes with
`SESSION_TTL=4s`: activity keeps a session alive with a handful of refresh events, `/health`
shows the configured TTL, and an expired session is refused (WS error, REST 410), never started
again empty; its last state can be restored into a new session, or the session restarted fresh.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.integration.gwstack import Stack, connect_ws, recv_until, running_stack

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

TTL_S = 4


@pytest.fixture(scope="module")
def stack(redis_server_url: str, postgres_server_url: str, tmp_path_factory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("lifetime-logs")
    with running_stack(redis_server_url, postgres_server_url, logs, SESSION_TTL=f"{TTL_S}s") as s:
        yield s


async def test_health_shows_the_configured_session_ttl(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base) as http:
        r = await http.get("/health")
    assert r.json()["metrics"]["snapshot_ttl_hours"] == round(TTL_S / 3600, 4)


async def test_two_devices_in_use_keep_the_session_alive_past_its_ttl(stack: Stack) -> None:
    ws_a, hello = await connect_ws(stack, "busy", "phone")
    sid = hello["payload"]["session_id"]
    ws_b, _ = await connect_ws(stack, "busy", "tablet", session_id=sid)
    refreshed = 0
    try:
        deadline = time.monotonic() + TTL_S * 1.5
        n = 0
        while time.monotonic() < deadline:
            n += 1
            await ws_a.send(
                json.dumps({"type": "state_update", "payload": {"key": "n", "value": n}})
            )
            while True:  # drain what came (and count the session's refreshes)
                try:
                    msg = json.loads(await asyncio.wait_for(ws_b.recv(), 0.2))
                except TimeoutError:
                    break
                if msg.get("payload", {}).get("event") == "SessionRefreshed":
                    refreshed += 1
        async with httpx.AsyncClient(base_url=stack.base) as http:
            r = await http.get(f"/session/{sid}", headers=stack.headers("busy"))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ACTIVE" and r.json()["state_data"]["n"] == n
        # coalesced: at most one refresh per quarter TTL, not one per write (n of them)
        assert 1 <= refreshed <= 1.5 * 4 + 1 < n, (refreshed, n)
    finally:
        await ws_a.close()
        await ws_b.close()


async def test_an_expired_session_is_refused_and_its_state_can_be_restored(stack: Stack) -> None:
    sid, h = str(uuid.uuid4()), stack.headers("idle")
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        r = await http.post(
            "/session/snapshot", headers=h, json={"session_id": sid, "state_data": {"kept": 1}}
        )
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + TTL_S + 10
        while True:  # nothing uses it: the expiry timer fires after the TTL
            r = await http.get(f"/session/{sid}", headers=h)
            if r.json()["status"] == "EXPIRED":
                break
            assert time.monotonic() < deadline, r.text
            await asyncio.sleep(0.5)
        last_state = r.json()["state_data"]
        assert last_state == {"kept": 1}
        # a device coming back over WS: an error, not a new empty session under the same id
        ws = await websockets.connect(
            f"{stack.ws_base}?token={stack.token('idle')}&device_id=d&session_id={sid}"
        )
        msg = await recv_until(ws, lambda m: m.get("type") == "error")
        assert msg["payload"]["code"] == "SESSION_EXPIRED"
        await ws.wait_closed()
        assert ws.close_code == 4410
        r = await http.post(
            "/session/incremental", headers=h, json={"session_id": sid, "changes": {"x": 1}}
        )
        assert r.status_code == 410 and r.json()["error"]["code"] == "SESSION_EXPIRED"
        r = await http.get(f"/session/{sid}", headers=h)
        assert r.json()["status"] == "EXPIRED" and r.json()["state_data"] == {"kept": 1}
        # restore the last state into a new session
        new = str(uuid.uuid4())
        r = await http.post(
            "/session/snapshot", headers=h, json={"session_id": new, "state_data": last_state}
        )
        assert r.status_code == 200, r.text
        assert (await http.get(f"/session/{new}", headers=h)).json()["state_data"] == last_state
        # or start the old one afresh, explicitly
        r = await http.post(
            "/api/session/start", headers=h, json={"sessionId": sid, "routerId": str(uuid.uuid4())}
        )
        assert r.status_code == 200, r.text
        r = await http.get(f"/session/{sid}", headers=h)
        assert r.json()["status"] == "ACTIVE" and r.json()["state_data"] == {}


async def test_seed003_start_answers_from_real_checks_and_end_checks_the_router(
    stack: Stack,
) -> None:
    sid, router, h = str(uuid.uuid4()), str(uuid.uuid4()), stack.headers("s003")
    async with httpx.AsyncClient(base_url=stack.base, timeout=15) as http:
        start = {"sessionId": sid, "routerId": router}
        r = await http.post("/api/session/start", headers=h, json=start)
        assert r.status_code == 200, r.text
        assert r.json()["router_reachable"] and r.json()["infrastructure_ready"]
        r = await http.post(
            "/api/session/end", headers=h, json={"sessionId": sid, "routerId": str(uuid.uuid4())}
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "ROUTER_MISMATCH", r.text
        # no projector: the session starts, the read models would not follow it
        stack.stop("projector")
        try:
            other = {"sessionId": str(uuid.uuid4()), "routerId": router}
            r = await http.post("/api/session/start", headers=h, json=other)
            assert r.status_code == 200, r.text
            assert r.json()["router_reachable"] and not r.json()["infrastructure_ready"]
            # no worker either: the start cannot be applied, seed 003's 500 shape
            stack.stop("worker")
            r = await http.post(
                "/api/session/start", headers=h, json={**other, "sessionId": str(uuid.uuid4())}
            )
            assert r.status_code == 500, r.text
            error = r.json()["error"]
            assert error["code"] == "SESSION_START_FAILED"
            assert error["message"].startswith("Session start failed: ")
        finally:
            stack.start("worker", "worker")
            stack.start("projector", "projector", "--no-migrate")
            stack.wait_ready()
        r = await http.post("/api/session/end", headers=h, json=start)
        assert r.status_code == 200 and r.json() == {"message": "Session ended"}, r.text
