"""SSE tickets: how a browser's EventSource (which cannot send an Authorization header)
authenticates. `POST /api/sessions/{id}/events/ticket` with the access token mints a ticket that
opens that session's SSE stream only, within a minute; it is refused anywhere else, and when
expired. The old `?token=<access token>` keeps working, marked deprecated."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets

from gateway.auth import Claims
from tests.integration.gwstack import Stack, connect_ws, recv_until

pytestmark = pytest.mark.anyio


async def _session(stack: Stack, user: str) -> str:
    ws, hello = await connect_ws(stack, user, "phone")
    await ws.close()
    return hello["payload"]["session_id"]


async def _ticket(http: httpx.AsyncClient, stack: Stack, user: str, sid: str) -> dict:
    r = await http.post(f"/api/sessions/{sid}/events/ticket", headers=stack.headers(user))
    assert r.status_code == 200, r.text
    return r.json()


async def _first_events(http: httpx.AsyncClient, url: str, want: int) -> list[dict]:
    got: list[dict] = []
    async with http.stream("GET", url) as resp:
        assert resp.status_code == 200, await resp.aread()
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len(got) >= want:
                    return got
    return got


async def test_a_ticket_opens_its_session_stream_and_the_stream_carries_pushes(
    stack: Stack,
) -> None:
    sid = await _session(stack, "tina")
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        t = await _ticket(http, stack, "tina", sid)
        assert t["session_id"] == sid and 0 < t["expires_in"] <= 60
        assert t["url"] == f"/api/sessions/{sid}/events?ticket={t['ticket']}"
        ws, _ = await connect_ws(stack, "tina", "laptop", session_id=sid)
        try:
            async with http.stream("GET", t["url"] + "&device_id=browser") as resp:
                assert resp.status_code == 200
                assert "deprecation" not in resp.headers
                lines = resp.aiter_lines()
                async for line in lines:
                    if line.startswith("data: ") and json.loads(line[6:])["type"] == "connected":
                        break
                await ws.send(
                    json.dumps({"type": "state_update", "payload": {"key": "via", "value": "t"}})
                )
                async for line in lines:
                    if line.startswith("data: "):
                        msg = json.loads(line[6:])
                        if msg["type"] == "state_update":
                            assert msg["payload"]["changes"] == {"via": "t"}
                            break
        finally:
            await ws.close()


async def test_an_expired_ticket_is_refused(stack: Stack) -> None:
    sid = await _session(stack, "ursula")
    expired = stack.tokens.issue_ticket(Claims("ursula", (), 0), sid, ttl_s=-60)
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        r = await http.get(f"/api/sessions/{sid}/events?ticket={expired}")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "TOKEN_EXPIRED"


async def test_a_ticket_is_refused_for_another_session_and_everywhere_but_sse(
    stack: Stack,
) -> None:
    sid = await _session(stack, "vera")
    other = await _session(stack, "walt")
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        ticket = (await _ticket(http, stack, "vera", sid))["ticket"]
        # another session's stream, even one of the same user
        r = await http.get(f"/api/sessions/{other}/events?ticket={ticket}")
        assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_INVALID")
        # not an access token: not for REST, not as `?token=`, not to mint another ticket
        bearer = {"Authorization": f"Bearer {ticket}"}
        r = await http.get(f"/session/{sid}", headers=bearer)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_INVALID")
        r = await http.get(f"/api/sessions/{sid}/events?token={ticket}")
        assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_INVALID")
        r = await http.post(f"/api/sessions/{sid}/events/ticket", headers=bearer)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_INVALID")
        # nor for the WebSocket
        async with websockets.connect(stack.ws_base) as ws:
            await ws.send(
                json.dumps({"type": "auth", "payload": {"token": ticket, "device_id": "d"}})
            )
            msg = await recv_until(ws, lambda m: m["type"] in ("auth_failure", "error"))
            assert msg["payload"]["code"] == "TOKEN_INVALID"
        # a ticket for another user's session is never minted
        r = await http.post(f"/api/sessions/{other}/events/ticket", headers=stack.headers("vera"))
        assert (r.status_code, r.json()["error"]["code"]) == (403, "SESSION_FORBIDDEN")
        r = await http.post(f"/api/sessions/{sid}/events/ticket")
        assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_MISSING")


async def test_an_access_token_in_the_query_still_works_and_is_marked_deprecated(
    stack: Stack,
) -> None:
    sid = await _session(stack, "xena")
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        async with http.stream(
            "GET", f"/api/sessions/{sid}/events?token={stack.token('xena')}"
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["deprecation"] == "true"
            assert "ticket" in resp.headers["link"]
