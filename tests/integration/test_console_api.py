"""The console's API (issue 18) on a real stack: session search with keyset pages, one session's
page, an actor's events and its state at any version, events by correlation id (from the
archive), the live counters, replays of an export, the OpenAPI document and the page's files."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from tests.integration.gwstack import Stack, connect_ws, recv_until

pytestmark = pytest.mark.anyio


async def _wait(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


async def _session_with_changes(stack: Stack, user: str, n: int, cid: str) -> str:
    sid = str(uuid.uuid4())
    ws, hello = await connect_ws(stack, user, "laptop", sid)
    try:
        assert hello["type"] == "connected", hello
        for i in range(n):
            await ws.send(
                json.dumps(
                    {
                        "type": "state_update",
                        "correlation_id": f"{cid}-{i}",
                        "payload": {"key": "step", "value": i},
                    }
                )
            )
            await recv_until(
                ws,
                lambda m, i=i: (
                    m["type"] == "state_update" and m["payload"].get("changes") == {"step": i}
                ),
            )
    finally:
        await ws.close()
    return sid


async def test_the_console_reads_sessions_histories_and_states(stack: Stack) -> None:
    user = f"console-{uuid.uuid4().hex[:8]}"
    cid = f"corr-{uuid.uuid4().hex}"
    first = await _session_with_changes(stack, user, 3, cid)
    second = await _session_with_changes(stack, user, 1, cid + "x")
    admin = stack.headers("root", "admin")
    async with httpx.AsyncClient(base_url=stack.base, headers=admin, timeout=20) as http:
        # --- search: by user prefix, newest first, one session a page, then the next page
        async def listed():
            r = await http.get("/admin/sessions", params={"user": user[:-2], "status": "any"})
            return r.json()["sessions"] if len(r.json()["sessions"]) == 2 else None

        assert await _wait(listed)
        r = await http.get("/admin/sessions", params={"user": user, "status": "ANY", "limit": 1})
        page1 = r.json()
        assert page1["count"] == 1 and page1["next_cursor"], page1
        r = await http.get(
            "/admin/sessions",
            params={"user": user, "status": "ANY", "limit": 1, "cursor": page1["next_cursor"]},
        )
        page2 = r.json()
        assert page2["count"] == 1 and page2["next_cursor"] is None
        assert {page1["sessions"][0]["session_id"], page2["sessions"][0]["session_id"]} == {
            first,
            second,
        }
        r = await http.get("/admin/sessions", params={"device": "laptop", "user": user})
        assert r.status_code == 200
        r = await http.get("/admin/sessions", params={"cursor": "not-a-cursor"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT"
        r = await http.get("/admin/sessions", params={"status": "sleepy"})
        assert r.status_code == 400
        r = await http.get("/admin/sessions", headers=stack.headers(user))
        assert r.status_code == 403

        # --- the actor's events: created, joined, opened..., the three changes
        actor = f"session:{first}"
        r = await http.get(f"/admin/actors/{actor}/events")
        assert r.status_code == 200, r.text
        events = r.json()["events"]
        versions = [e["version"] for e in events]
        assert versions == list(range(1, len(events) + 1))
        assert events[0]["type"] == "SessionCreated" and "token" not in events[0]["payload"]
        changed = [e for e in events if e["type"] == "StateChanged"]
        assert len(changed) == 3 and all(e["correlation_id"] for e in changed)
        cid = changed[1]["correlation_id"]  # the WS message's id became its command's
        assert all(e["time"].endswith("Z") and e["command_id"] for e in events)
        r = await http.get(f"/admin/actors/{actor}/events", params={"after": 1, "limit": 2})
        page = r.json()
        assert [e["version"] for e in page["events"]] == [2, 3] and page["next_after"] == 3

        # --- the state after each change, and what it changed
        v = changed[1]["version"]
        r = await http.get(f"/admin/actors/{actor}/state", params={"version": v})
        body = r.json()
        assert r.status_code == 200, body
        assert body["state"]["state"]["state"] == {"step": 1}
        assert body["diff"]["state.state.step"] == [0, 1]
        assert body["event"]["version"] == v and body["last_version"] >= versions[-1]
        r = await http.get(f"/admin/actors/{actor}/state")
        assert r.json()["state"]["state"]["state"] == {"step": 2}
        r = await http.get(f"/admin/actors/{actor}/state", params={"version": 0})
        assert r.json()["state"] is None and r.json()["event"] is None
        r = await http.get(f"/admin/actors/{actor}/state", params={"version": 10_000})
        assert r.status_code == 404 and r.json()["error"]["code"] == "VERSION_NOT_FOUND"
        for bad in ("session:nope", "robot:" + first, "session"):
            r = await http.get(f"/admin/actors/{bad}/state")
            assert r.status_code == 400, bad
        r = await http.get(f"/admin/actors/{actor}/state", headers=stack.headers(user))
        assert r.status_code == 403

        # --- by correlation id, once the projector archived it
        async def correlated():
            r = await http.get("/admin/events", params={"correlation_id": cid})
            return r.json()["events"]

        found = await _wait(correlated)
        assert [(e["actor_id"], e["type"]) for e in found] == [(actor, "StateChanged")]
        r = await http.get("/admin/events")
        assert r.status_code == 400

        # --- one session's page
        r = await http.get(f"/admin/sessions/{first}")
        over = r.json()
        assert r.status_code == 200, over
        assert over["state"]["state"] == {"step": 2} and over["session"]["user_id"] == user
        assert [d["device_id"] for d in over["devices"]] == ["laptop"]
        r = await http.get(f"/admin/sessions/{uuid.uuid4()}")
        assert r.status_code == 404

        # --- live counters
        r = await http.get("/admin/stats")
        stats = r.json()
        assert r.status_code == 200, stats
        assert stats["messages_in_total"] >= 4 and stats["pushes_total"] >= 4
        assert stats["push_latency_ms"]["count"] >= 1

        # --- an export loaded back and stepped through
        export = "\n".join(
            json.dumps({**e, "data": {"type": e["type"], **e["payload"]}}) for e in events
        )
        r = await http.post("/admin/replays", content=export.encode())
        loaded = r.json()
        assert r.status_code == 200, loaded
        assert loaded["actors"] == {actor: len(events)}
        r = await http.get(
            f"/admin/replays/{loaded['replay_id']}/actors/{actor}/state", params={"version": v}
        )
        assert r.json()["state"]["state"]["state"] == {"step": 1}
        r = await http.post("/admin/replays", content=b'{"nope": 1}')
        assert r.status_code == 400
        r = await http.get(f"/admin/replays/{'0' * 24}/actors/{actor}/state")
        assert r.status_code == 404


async def test_the_console_page_and_its_api_are_served_and_documented(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base) as http:
        page = await http.get("/admin")
        assert page.status_code == 200 and "<script" in page.text
        assert "/admin/ui/app.js" in page.text and "://" not in page.text
        ui = Path(__file__).resolve().parents[2] / "gateway" / "admin" / "ui"
        for asset in sorted(ui.iterdir()):
            r = await http.get(f"/admin/ui/{asset.name}")
            assert r.status_code == 200, asset.name
            assert "://" not in r.text, f"{asset.name} names another origin"
        for bad in ("../routes.py", "%2e%2e/routes.py", "nothing.js"):
            assert (await http.get(f"/admin/ui/{bad}")).status_code == 404
        doc = (await http.get("/openapi.json")).json()
        validate(doc)  # the console's routes keep the served document valid OpenAPI 3.1
        for path in (
            "/admin/sessions/{session_id}",
            "/admin/actors/{actor}/events",
            "/admin/actors/{actor}/state",
            "/admin/events",
            "/admin/stats",
            "/admin/replays",
        ):
            assert path in doc["paths"], path
        names = [p["name"] for p in doc["paths"]["/admin/sessions"]["get"]["parameters"]]
        assert names == ["user", "device", "status", "cursor", "limit"]
        r = await http.get("/admin/stats")
        assert r.status_code == 401


async def test_the_archive_has_an_index_by_correlation_id(stack: Stack) -> None:
    import asyncpg

    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        found = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_archive_correlation'"
        )
        assert found and "correlation_id" in found
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT * FROM events.archive WHERE correlation_id = 'x' ORDER BY seq"
            )
        )
        assert "idx_archive_correlation" in plan, plan
    finally:
        await conn.close()
