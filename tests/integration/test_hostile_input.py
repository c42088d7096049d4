"""Hostile input against a real stack (issue 15, items 1, 5 and 6): what the stores cannot hold is
refused at the edge before anything is written, numbers come back exactly as sent through every
read path, and malformed input gets a 4xx or a WS error, never a 500, a dropped connection or a
traceback in the log.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import websockets

from events.ids import session_actor
from infra.store.layout import event_stream
from infra.store.routing import partition_of
from tests.integration.gwstack import ROOT, SESSIOND, Stack, connect_ws, of_type, recv_until
from tests.integration.jsonkit import nested_text, same_json

pytestmark = pytest.mark.anyio

P = 4  # gwstack's SESSIOND_PARTITIONS
JSON = {"content-type": "application/json"}
#: Numbers that PostgreSQL jsonb would change (1e20 -> 100000000000000000000, -0.0 -> 0) and
#: the edges of msgpack's integers: all must come back exactly, types included.
NUMBERS = {
    "f": 1e20,
    "g": 1e23,
    "neg_zero": -0.0,
    "one": 1.0,
    "tiny": 5e-324,
    "max": 1.7976931348623157e308,
    "u64": 2**64 - 1,
    "i64": -(2**63),
    "nested": [1e16, {"x": 1.5e300, "y": [-2.5e-300, 0]}],
}


def _log(stack: Stack, name: str) -> str:
    path = Path(stack.env["SESSIOND_TEST_LOGS"]) / f"{name}.log"
    return path.read_text() if path.exists() else ""


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SESSIOND, *args], env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _session_in(partition: int) -> str:
    while True:
        sid = str(uuid.uuid4())
        if partition_of(sid, P) == partition:
            return sid


async def _stream_len(stack: Stack, sid: str) -> int:
    r = aioredis.from_url(stack.env["REDIS_URL"])
    try:
        return await r.xlen(event_stream(partition_of(sid, P), session_actor(sid)))
    finally:
        await r.aclose()


async def _sse_refusal(http: httpx.AsyncClient, url: str, **kw: object) -> httpx.Response:
    """Open an SSE stream that should be refused: the answer, read at once (an accepted stream
    fails the test at once rather than hanging)."""
    async with http.stream("GET", url, **kw) as r:
        assert r.status_code != 200, f"{url[:120]}: the stream was accepted"
        await r.aread()
        return r


async def _verified(stack: Stack) -> None:
    """`sessiond projections verify` passes once the projector took the last events."""
    for _ in range(20):
        done = _cli(stack, "projections", "verify")
        if done.returncode == 0:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(done.stdout + done.stderr)


async def _refused(ws, code: str, correlation_id: str | None = None) -> dict:
    err = await recv_until(ws, of_type("error", "auth_failure", 6, 9))
    assert err["payload"]["code"] == code, err
    if correlation_id is not None:
        assert err["correlation_id"] == correlation_id, err
    return err


async def _alive(ws) -> None:
    """The connection still answers: a heartbeat gets its ack."""
    await ws.send(json.dumps({"type": "heartbeat", "payload": {"client_time": 7}}))
    ack = await recv_until(ws, of_type("heartbeat_ack"))
    assert ack["payload"]["client_time"] == 7


async def _handshake_refused(stack: Stack, query: str, code: str) -> None:
    ws = await websockets.connect(f"{stack.ws_base}?{query}", compression=None)
    try:
        await _refused(ws, code)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4400
    finally:
        await ws.close()


# ------------------------------------------------------------------ item 1: NUL and other text
async def test_nul_in_any_rest_field_is_refused_before_anything_is_written(stack: Stack) -> None:
    user = "nul-rest"
    h = {**stack.headers(user), **JSON}
    admin = {**stack.headers("nul-admin", "admin"), **JSON}
    sid = str(uuid.uuid4())
    fresh = str(uuid.uuid4())  # refused writes must not create it
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        r = await http.post(
            "/session/snapshot", headers=h, json={"session_id": sid, "state_data": {"ok": 1}}
        )
        assert r.status_code == 200, r.text
        before = await _stream_len(stack, sid)
        bodies = [
            ("/session/snapshot", f'{{"session_id":"{fresh}","state_data":{{"a\\u0000b":1}}}}'),
            (
                "/session/snapshot",
                f'{{"session_id":"{fresh}","state_data":{{"a":[1,{{"b":"x\\u0000"}}]}}}}',
            ),
            (
                "/session/snapshot",
                f'{{"session_id":"{fresh}","state_data":{{}},"device_id":"x\\u0000y"}}',
            ),
            (
                "/session/snapshot",
                f'{{"session_id":"{fresh}","state_data":{{}},"app_version":"1\\u0000"}}',
            ),
            ("/session/incremental", f'{{"session_id":"{sid}","changes":{{"\\u0000":1}}}}'),
            (
                "/session/incremental",
                f'{{"session_id":"{sid}","changes":{{"k":1}},"deleted_keys":["\\u0000"]}}',
            ),
            (
                "/session/incremental",
                f'{{"session_id":"{sid}","changes":{{"k":1}},"device_id":"\\u0000"}}',
            ),
            (
                "/session/conflict/resolve",
                f'{{"session_id":"{sid}","resolution_strategy":'
                f'"client_wins","client_state":{{"a":{{"\\u0000":1}}}}}}',
            ),
            (f"/session/{sid}/handoff", '{"source_device":"a\\u0000","target_device":"b"}'),
            (f"/session/{sid}/handoff", '{"source_device":"a","target_device":"b\\u0000"}'),
            ("/api/sessions", '{"device_id":"laptop\\u0000"}'),
            (f"/api/sessions/{sid}/simulator", '{"initial_symbols":["AAPL","MS\\u0000FT"]}'),
            ("/api/session/start", f'{{"sessionId":"{fresh}","routerId":"\\u0000"}}'),
        ]
        for path, text in bodies:
            r = await http.post(path, content=text.encode(), headers=h)
            assert r.status_code == 400, (path, text, r.text)
            err = r.json()["error"]
            assert err["code"] == "INVALID_ARGUMENT", (path, text, err)
            assert (
                "NUL" in err["message"]
                or "control character" in err["message"]
                or "UUID" in err["message"]
            ), err
        r = await http.post("/admin/broadcast", content=b'{"message":"hi\\u0000"}', headers=admin)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT", r.text
        r = await http.get(f"/session/{sid}/handoff/tok?device_id=x%00y", headers=h)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT", r.text
        r = await http.delete(f"/session/{sid}/device/x%00y", headers=h)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT", r.text
        # nothing was written: no event, no new session
        assert await _stream_len(stack, sid) == before
        assert await _stream_len(stack, fresh) == 0
        # and every partition still projects: a new session in each is readable at once
        for p in range(P):
            other = _session_in(p)
            r = await http.post(
                "/session/snapshot", headers=h, json={"session_id": other, "state_data": {"p": p}}
            )
            assert r.status_code == 200, r.text
            v = r.json()["session_version"]
            r = await http.get(f"/session/{other}?min_version={v}", headers=h)
            assert r.status_code == 200 and r.json()["state_data"] == {"p": p}, (p, r.text)
    assert "projector round failed" not in _log(stack, "projector")


async def test_nul_in_ws_and_sse_handshakes_is_refused(stack: Stack) -> None:
    user = "nul-handshake"
    token = stack.token(user)
    sid = str(uuid.uuid4())
    for query in (
        f"token={token}&session_id={sid}&device_id=x%00y",
        f"token={token}&session_id={sid}&device_id=d&device_type=%00",
        f"token={token}&session_id={sid}&device_id=d&device_name=a%00b",
    ):
        await _handshake_refused(stack, query, "INVALID_ARGUMENT")
    # seed 004's AUTH message: the refusal is an error frame, then close 4400
    for extra in ('"device_id":"x\\u0000y"', '"device_id":"d","os":"\\u0000"'):
        ws = await websockets.connect(stack.ws_base, compression=None)
        try:
            await ws.send(f'{{"type":7,"payload":{{"token":"{token}",{extra}}}}}')
            await _refused(ws, "INVALID_ARGUMENT")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 4400
        finally:
            await ws.close()
    assert await _stream_len(stack, sid) == 0
    # SSE: the session exists, the device id is refused before joining
    ws, hello = await connect_ws(stack, user, "phone")
    sid = hello["payload"]["session_id"]
    try:
        before = await _stream_len(stack, sid)
        async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
            r = await _sse_refusal(
                http, f"/api/sessions/{sid}/events?token={token}&device_id=x%00y"
            )
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "INVALID_ARGUMENT"
        assert await _stream_len(stack, sid) == before
    finally:
        await ws.close()


async def test_nul_in_ws_messages_is_refused_and_the_connection_kept(stack: Stack) -> None:
    user = "nul-ws"
    ws_a, hello = await connect_ws(stack, user, "device-a")
    sid = hello["payload"]["session_id"]
    ws_b, _ = await connect_ws(stack, user, "device-b", sid)
    try:
        before = await _stream_len(stack, sid)
        frames = [
            (
                '{"type":"state_update","correlation_id":"c1","payload":{"changes":{"a\\u0000":1}}}',
                "c1",
            ),
            (
                '{"type":"state_update","correlation_id":"c2","payload":{"changes":{"a":'
                '{"b":["\\u0000"]}}}}',
                "c2",
            ),
            (
                '{"type":"state_update","correlation_id":"c3","payload":{"key":"k\\u0000",'
                '"value":1}}',
                "c3",
            ),
            (
                '{"type":5,"correlation_id":"c4","payload":{"state":{"k":1},'
                '"app_version":"\\u0000"}}',
                "c4",
            ),
            (
                '{"type":"state_update","correlation_id":"c5\\u0000","payload":{"key":"k",'
                '"value":1}}',
                "c5\x00",
            ),
            (
                '{"type":"state_update","correlation_id":"c6","payload":{"key":"k",'
                '"value":"\\ud800"}}',
                None,
            ),
            (
                '{"type":"start_simulator","correlation_id":"c7","payload":{"initial_symbols":'
                '["A\\u0000"]}}',
                "c7",
            ),
            (
                '{"type":"state_update","correlation_id":"c8","payload":{"key":"k","value":1},'
                '"device_id":"\\u0000"}',
                "c8",
            ),
        ]
        for frame, cid in frames:
            await ws_a.send(frame)
            await _refused(ws_a, "INVALID_ARGUMENT", cid)
        await _alive(ws_a)
        assert await _stream_len(stack, sid) == before
        # the first change device B sees is the valid one sent after the refused ones
        await ws_a.send(json.dumps({"type": "state_update", "payload": {"key": "k", "value": 2}}))
        got = await recv_until(ws_b, of_type("state_update"))
        assert got["payload"]["changes"] == {"k": 2}, got
    finally:
        await ws_a.close()
        await ws_b.close()


async def test_identifiers_share_one_length_limit(stack: Stack) -> None:
    """200 characters (GATEWAY_MAX_ID_LENGTH) for a device id on WS, SSE and REST alike."""
    user = "long-ids"
    token = stack.token(user)
    h = {**stack.headers(user), **JSON}
    ok, long = "d" * 200, "d" * 201
    ws, hello = await connect_ws(stack, user, ok)
    assert hello["type"] == "connected", hello
    sid = hello["payload"]["session_id"]
    try:
        await _handshake_refused(
            stack, f"token={token}&session_id={sid}&device_id={long}", "INVALID_ARGUMENT"
        )
        async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
            r = await _sse_refusal(
                http, f"/api/sessions/{sid}/events?token={token}&device_id={long}"
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT", r.text
            assert "200 characters" in r.json()["error"]["message"]
            r = await _sse_refusal(
                http, f"/api/sessions/{sid}/events?token={token}&device_id={'x' * 60_000}"
            )
            assert r.status_code == 400, r.status_code
            async with http.stream(
                "GET", f"/api/sessions/{sid}/events?token={token}&device_id={ok}"
            ) as resp:
                assert resp.status_code == 200
            for body in (
                {"session_id": sid, "state_data": {}, "device_id": long},
                {"session_id": sid, "state_data": {}, "app_version": long},
            ):
                r = await http.post("/session/snapshot", headers=h, json=body)
                assert r.status_code == 400, r.text
                assert r.json()["error"]["code"] == "INVALID_ARGUMENT"
            r = await http.post(
                f"/session/{sid}/handoff",
                headers=h,
                json={"source_device": ok, "target_device": long},
            )
            assert r.status_code == 400, r.text
            r = await http.post(
                "/session/snapshot",
                headers=h,
                json={"session_id": sid, "state_data": {}, "device_id": ok},
            )
            assert r.status_code == 200, r.text
            # control characters have no place in an identifier either
            r = await http.post(
                "/session/snapshot",
                headers=h,
                json={"session_id": sid, "state_data": {}, "device_id": "a\tb"},
            )
            assert r.status_code == 400, r.text
    finally:
        await ws.close()


async def test_lone_surrogates_are_refused_with_a_code(stack: Stack) -> None:
    user = "surrogates"
    h = {**stack.headers(user), **JSON}
    sid = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        for state in (
            '{"a":"\\ud800"}',
            '{"a":"\\udc00x"}',
            '{"\\udfff":1}',
            '{"a":"\\ud800\\u0041"}',
        ):
            r = await http.post(
                "/session/snapshot",
                headers=h,
                content=f'{{"session_id":"{sid}","state_data":{state}}}',
            )
            assert r.status_code == 400, (state, r.text)
            err = r.json()["error"]
            assert err["code"] == "INVALID_ARGUMENT" and "surrogate" in err["message"], err
        # a proper pair is one character, stored and returned as such
        r = await http.post(
            "/session/snapshot",
            headers=h,
            content=f'{{"session_id":"{sid}","state_data":{{"a":"\\ud83d\\ude00"}}}}',
        )
        assert r.status_code == 200, r.text
        v = r.json()["session_version"]
        r = await http.get(f"/session/{sid}?min_version={v}", headers=h)
        assert r.json()["state_data"] == {"a": "\U0001f600"}
    ws, _ = await connect_ws(stack, user, "d", sid)
    try:
        await ws.send(
            '{"type":"state_update","correlation_id":"s1","payload":{"changes":{"a":"\\udc00"}}}'
        )
        await _refused(ws, "INVALID_ARGUMENT")  # unparsed: no correlation id to echo
        await _alive(ws)
    finally:
        await ws.close()


# ------------------------------------------------------------------ item 6: malformed input
async def test_malformed_rest_input_gets_a_4xx_and_no_traceback(stack: Stack) -> None:
    user = "malformed-rest"
    h = {**stack.headers(user), **JSON}
    admin = stack.headers("malformed-admin", "admin")
    sid = str(uuid.uuid4())
    tracebacks = _log(stack, "gateway").count("Traceback")
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        r = await http.post(
            "/session/snapshot", headers=h, json={"session_id": sid, "state_data": {}}
        )
        assert r.status_code == 200, r.text
        # nesting: the body counts as the first level; 64 are allowed, 65 are not
        for depth, status in ((63, 200), (64, 400), (1000, 400), (1200, 400), (50_000, 400)):
            body = f'{{"session_id":"{sid}","state_data":{nested_text(depth)}}}'
            r = await http.post("/session/snapshot", headers=h, content=body)
            assert r.status_code == status, (depth, r.text[:200])
            if status == 400:
                assert r.json()["error"]["code"] == "NESTING_TOO_DEEP", r.text
        r = await http.post(
            "/session/snapshot",
            headers=h,
            content=f'{{"session_id":"{sid}","state_data":{{"a":"\xff\xfe"}}}}'.encode("latin-1"),
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "MALFORMED_JSON", r.text
        assert "UTF-8" in r.json()["error"]["message"]
        r = await http.post(
            "/session/snapshot",
            headers=h,
            content=f'{{"session_id":"{sid}","state_data":{{"a":1e400}}}}',
        )
        assert r.status_code == 400, r.text
        # numbers in query strings and headers: ASCII digits only
        for query in (
            "min_version=%C2%B2",
            "min_version=%D9%A1",
            "min_version=-1",
            "min_version=99999999999999999999",
        ):
            r = await http.get(f"/session/{sid}?{query}", headers=h)
            assert r.status_code == 400, (query, r.text)
            assert r.json()["error"]["code"] == "INVALID_ARGUMENT"
        r = await http.get("/admin/sessions?limit=%C2%B2", headers=admin)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT", r.text
        r = await http.get("/admin/sessions?limit=5", headers=admin)
        assert r.status_code == 200, r.text
        token = stack.token(user)
        for query in ("since=%C2%B2", "since=%D9%A1", "since=1e3", "since=99999999999999999999999"):
            r = await _sse_refusal(http, f"/api/sessions/{sid}/events?token={token}&{query}")
            assert r.status_code == 400, (query, r.text)
            assert r.json()["error"]["code"] == "INVALID_ARGUMENT"
        r = await _sse_refusal(
            http, f"/api/sessions/{sid}/events?token={token}", headers=[(b"last-event-id", b"\xb2")]
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT", r.text
    await _handshake_refused(
        stack,
        f"token={stack.token(user)}&session_id={sid}&device_id=d&since=%C2%B2",
        "INVALID_ARGUMENT",
    )
    assert _log(stack, "gateway").count("Traceback") == tracebacks, _log(stack, "gateway")[-3000:]


async def test_malformed_ws_input_gets_an_error_and_keeps_the_connection(stack: Stack) -> None:
    tracebacks = _log(stack, "gateway").count("Traceback")
    ws, _ = await connect_ws(stack, "malformed-ws", "d")
    try:
        deep = '{"type":"state_update","payload":{"changes":{"a":' + "[" * 1000 + "]" * 1000 + "}}}"
        assert len(deep) < 2100
        await ws.send(deep)
        await _refused(ws, "NESTING_TOO_DEEP")
        await ws.send(
            '{"type":"state_update","correlation_id":"d65","payload":{"changes":'
            + nested_text(63)
            + "}}"
        )  # 65 levels with the message and payload
        await _refused(ws, "NESTING_TOO_DEEP", "d65")
        await ws.send(b'{"type":"heartbeat","payload":{"x":"\xff"}}')  # a binary frame
        await _refused(ws, "MALFORMED_JSON")
        await ws.send(b'{"type":"state_update","payload":{"key":"k","value":1e400}}')
        await _refused(ws, "INVALID_ARGUMENT")
        await _alive(ws)
        await ws.send(b'{"type":"heartbeat","payload":{"client_time":8}}')  # binary, valid
        ack = await recv_until(ws, of_type("heartbeat_ack"))
        assert ack["payload"]["client_time"] == 8
    finally:
        await ws.close()
    # seed 004's AUTH message nested too deep: refused, closed with 4400, no traceback
    ws = await websockets.connect(stack.ws_base, compression=None)
    try:
        await ws.send('{"type":7,"payload":' + "[" * 1000 + "]" * 1000 + "}")
        await _refused(ws, "NESTING_TOO_DEEP")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4400
    finally:
        await ws.close()
    assert _log(stack, "gateway").count("Traceback") == tracebacks, _log(stack, "gateway")[-3000:]


# ------------------------------------------------------------------ item 5: numbers
async def _sse_state(http: httpx.AsyncClient, url: str, ready: asyncio.Event) -> dict:
    async with http.stream("GET", url) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                msg = json.loads(line[6:])
                if msg["type"] == "connected":
                    ready.set()
                elif msg["type"] == "state_update":
                    return msg
    raise AssertionError("the SSE stream ended")


async def test_numbers_round_trip_exactly_through_every_live_path(stack: Stack) -> None:
    user = "numbers"
    h = {**stack.headers(user), **JSON}
    ws_b, hello = await connect_ws(stack, user, "device-b")
    sid = hello["payload"]["session_id"]
    token = stack.token(user)
    try:
        async with httpx.AsyncClient(base_url=stack.base, timeout=15) as http:
            ready = asyncio.Event()
            sse = asyncio.ensure_future(
                _sse_state(
                    http, f"/api/sessions/{sid}/events?token={token}&device_id=device-c", ready
                )
            )
            await asyncio.wait_for(ready.wait(), 10)
            # spelled as clients spell them: the parsed value is what must come back
            text = json.dumps(NUMBERS).replace("1e+20", "1E+20")
            assert "1E+20" in text
            r = await http.post(
                "/session/snapshot",
                headers=h,
                content=f'{{"session_id":"{sid}","state_data":{text}}}',
            )
            assert r.status_code == 200, r.text
            v = r.json()["session_version"]
            push = await recv_until(ws_b, of_type("state_update"))
            assert same_json(push["payload"]["state"], NUMBERS), push  # WS push
            assert same_json((await asyncio.wait_for(sse, 10))["payload"]["state"], NUMBERS)
            r = await http.get(f"/session/{sid}?min_version={v}", headers=h)
            assert same_json(r.json()["state_data"], NUMBERS), r.text  # REST read
            await ws_b.send(json.dumps({"type": "snapshot_request", "correlation_id": "s"}))
            snap = await recv_until(ws_b, of_type("snapshot_response"))
            assert same_json(snap["payload"]["state_data"], NUMBERS), snap  # WS snapshot
            # a patch over REST and over WS, a conflict resolved by the client's state
            r = await http.post(
                "/session/incremental", headers=h, json={"session_id": sid, "changes": {"h": 1e21}}
            )
            assert r.status_code == 200, r.text
            await ws_b.send(
                json.dumps(
                    {"type": "state_update", "payload": {"changes": {"k": 2.5e25, "z": -0.0}}}
                )
            )
            m = await recv_until(
                ws_b,
                lambda m: m["type"] == "state_update" and "k" in m["payload"].get("changes", {}),
            )
            expected = {**NUMBERS, "h": 1e21, "k": 2.5e25, "z": -0.0}
            r = await http.get(f"/session/{sid}?min_version={m['version']}", headers=h)
            assert same_json(r.json()["state_data"], expected), r.text
            r = await http.post(
                "/session/conflict/resolve",
                headers=h,
                json={
                    "session_id": sid,
                    "resolution_strategy": "client_wins",
                    "client_state": expected,
                },
            )
            assert r.status_code == 200 and same_json(r.json()["resolved_state"], expected)
            v = r.json()["session_version"]
            r = await http.post(
                f"/session/{sid}/handoff",
                headers=h,
                json={"source_device": "device-b", "target_device": "device-d"},
            )
            assert r.status_code == 201, r.text
            r = await http.get(
                f"/session/{sid}/handoff/{r.json()['token']}?device_id=device-d", headers=h
            )
            assert r.status_code == 200 and same_json(r.json()["state_data"], expected), r.text
            r = await http.get(f"/session/{sid}?min_version={v}", headers=h)
            assert same_json(r.json()["state_data"], expected), r.text
            # integers beyond 64 bits are refused, as before
            r = await http.post(
                "/session/incremental",
                headers=h,
                json={"session_id": sid, "changes": {"big": 2**64}},
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT"
            # the tables agree with a fold of the logs, and a rebuild from the archive too
            await _verified(stack)
            done = _cli(stack, "projections", "rebuild", "--quiet")
            assert done.returncode == 0, done.stdout + done.stderr
            r = await http.get(f"/session/{sid}", headers=h)
            assert same_json(r.json()["state_data"], expected), r.text
    finally:
        await ws_b.close()


async def test_numbers_round_trip_exactly_from_the_archive(stack: Stack) -> None:
    """Once Redis is trimmed, a resume, a handoff validation and replay read the archive."""
    user = "archived-numbers"
    h = {**stack.headers(user), **JSON}
    sid = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=stack.base, timeout=15) as http:
        r = await http.post(
            "/session/snapshot", headers=h, json={"session_id": sid, "state_data": NUMBERS}
        )
        assert r.status_code == 200, r.text
        written = r.json()["session_version"]
        r = await http.post(
            f"/session/{sid}/handoff", headers=h, json={"source_device": "a", "target_device": "b"}
        )
        assert r.status_code == 201, r.text
        handoff = r.json()["token"]
        # enough events for the worker's actor snapshot (every 100), so Redis may be trimmed
        for i in range(105):
            r = await http.post(
                "/session/incremental", headers=h, json={"session_id": sid, "changes": {"n": i}}
            )
            assert r.status_code == 200, r.text
        last = r.json()["session_version"]
        r = await http.get(f"/session/{sid}?min_version={last}", headers=h)
        assert r.status_code == 200
        done = _cli(stack, "projections", "trim", "--keep", "0")
        assert done.returncode == 0, done.stdout + done.stderr
        redis = aioredis.from_url(stack.env["REDIS_URL"])
        try:
            first = await redis.xrange(
                event_stream(partition_of(sid, P), session_actor(sid)), count=1
            )
        finally:
            await redis.aclose()
        assert int(first[0][0].split(b"-")[0]) > written + 1, first  # the writes are trimmed
        # a resume from before the write: the catch-up comes from the archive
        ws, _ = await connect_ws(stack, user, "late", sid, since=written - 1)
        try:
            m = await recv_until(ws, of_type("state_update", "reset"))
            assert m["type"] == "state_update" and m["version"] == written, m
            assert same_json(m["payload"]["state"], NUMBERS), m
        finally:
            await ws.close()
        r = await http.get(f"/session/{sid}/handoff/{handoff}?device_id=b", headers=h)
        assert r.status_code == 200 and same_json(r.json()["state_data"], NUMBERS), r.text
    done = _cli(stack, "replay", f"session:{sid}", "--to-version", str(written), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert same_json(json.loads(done.stdout.strip().splitlines()[-1])["state"]["state"], NUMBERS)
