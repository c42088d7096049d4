"""Idempotency keys, unknown outcomes and the limits a hostile client meets (issue 15, items 3,
7 and 8), end to end: real worker, projector and gateway processes on real Redis and
PostgreSQL, with small limits so that each is reached quickly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from infra.store.routing import partition_of
from tests.integration.gwstack import Stack, connect_ws, of_type, recv_until, running_stack

pytestmark = pytest.mark.anyio

LIMITS = {
    "GATEWAY_COMMAND_TIMEOUT": "2",
    "GATEWAY_REST_RATE_PER_S": "10",
    "GATEWAY_REST_RATE_BURST": "20",
    "GATEWAY_MAX_CONNECTIONS_PER_USER": "5",
    "GATEWAY_MAX_CONNECTIONS_PER_SESSION": "4",
    "GATEWAY_MAX_DEVICES_PER_SESSION": "3",
    "GATEWAY_DEVICE_RETENTION": "3",
    "GATEWAY_TOKEN_GRACE": "0",
    "GATEWAY_MAX_OUTGOING_BYTES": "65536",
}
PARTITIONS = 4  # gwstack's SESSIOND_PARTITIONS


@pytest.fixture(scope="module")
def limited(redis_server_url: str, postgres_server_url: str, tmp_path_factory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("limits-logs")
    with running_stack(redis_server_url, postgres_server_url, logs, **LIMITS) as s:
        yield s


def _session_in_partition_of(sid: str) -> str:
    """Another session id in the same partition as `sid` (where command ids used to collide)."""
    while True:
        other = str(uuid.uuid4())
        if partition_of(other, PARTITIONS) == partition_of(sid, PARTITIONS):
            return other


async def _snapshot(
    http: httpx.AsyncClient, stack: Stack, user: str, sid: str, min_version: int = 0
) -> dict[str, Any]:
    r = await http.get(f"/session/{sid}?min_version={min_version}", headers=stack.headers(user))
    assert r.status_code == 200, r.text
    return r.json()


async def _devices(http: httpx.AsyncClient, stack: Stack, user: str, sid: str) -> list[dict]:
    r = await http.get(f"/session/{sid}/devices", headers=stack.headers(user))
    assert r.status_code == 200, r.text
    return r.json()["devices"]


async def _eventually(check, timeout: float = 10.0, every: float = 0.25) -> Any:
    """Poll `check()` (async) until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {value!r}"
        await asyncio.sleep(every)


# ------------------------------------------------------------------ item 3: idempotency keys


async def test_the_same_key_on_two_sessions_writes_both(limited: Stack) -> None:
    a = str(uuid.uuid4())
    b = _session_in_partition_of(a)
    h = {**limited.headers("ida"), "Idempotency-Key": "same-key"}
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        ra = await http.post(
            "/session/snapshot", headers=h, json={"session_id": a, "state_data": {"v": "a"}}
        )
        rb = await http.post(
            "/session/snapshot", headers=h, json={"session_id": b, "state_data": {"v": "b"}}
        )
        assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
        for sid, value, r in ((a, "a", ra), (b, "b", rb)):
            snap = await _snapshot(http, limited, "ida", sid, r.json()["session_version"])
            assert snap["state_data"] == {"v": value}


async def test_a_retry_with_the_same_key_and_body_gets_the_first_outcome_once(
    limited: Stack,
) -> None:
    sid = str(uuid.uuid4())
    h = limited.headers("jan")
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        r = await http.post(
            "/session/snapshot", headers=h, json={"session_id": sid, "state_data": {"n": 0}}
        )
        assert r.status_code == 200, r.text
        keyed = {**h, "Idempotency-Key": "inc-1", "Content-Type": "application/json"}
        first = await http.post(
            "/session/incremental",
            headers=keyed,
            content=b'{"session_id": "%s", "changes": {"n": 1, "m": 2}}' % sid.encode(),
        )
        # the same request: other key order and spacing
        again = await http.post(
            "/session/incremental",
            headers=keyed,
            content=b'{"changes":{"m":2,"n":1},"session_id":"%s"}' % sid.encode(),
        )
        assert first.status_code == again.status_code == 200, (first.text, again.text)
        assert again.json() == first.json()
        snap = await _snapshot(http, limited, "jan", sid, first.json()["session_version"])
        assert snap["version"] == 2 and snap["state_data"] == {"n": 1, "m": 2}
        assert snap["session_version"] == first.json()["session_version"]  # nothing appended


async def test_a_key_reused_for_another_body_is_refused_and_writes_nothing(limited: Stack) -> None:
    sid = str(uuid.uuid4())
    h = limited.headers("kit")
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        r = await http.post(
            "/session/snapshot", headers=h, json={"session_id": sid, "state_data": {"n": 0}}
        )
        assert r.status_code == 200, r.text
        keyed = {**h, "Idempotency-Key": "inc-2"}
        first = await http.post(
            "/session/incremental", headers=keyed, json={"session_id": sid, "changes": {"n": 1}}
        )
        other = await http.post(
            "/session/incremental", headers=keyed, json={"session_id": sid, "changes": {"n": 2}}
        )
        assert first.status_code == 200, first.text
        assert other.status_code == 422, other.text
        assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        snap = await _snapshot(http, limited, "kit", sid, first.json()["session_version"])
        assert snap["state_data"] == {"n": 1} and snap["version"] == 2
        bad = await http.post(
            "/session/incremental",
            headers={**h, "Idempotency-Key": "a b"},
            json={"session_id": sid, "changes": {"n": 3}},
        )
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_a_ws_correlation_id_reused_by_another_connection_still_writes(
    limited: Stack,
) -> None:
    ws1, hello = await connect_ws(limited, "lea", "phone")
    sid = hello["payload"]["session_id"]
    ws2, _ = await connect_ws(limited, "lea", "tablet", sid)
    try:
        for ws, key in ((ws1, "a"), (ws2, "b")):
            await ws.send(
                json.dumps(
                    {
                        "type": "state_update",
                        "correlation_id": "1",
                        "payload": {"key": key, "value": key},
                    }
                )
            )
            await recv_until(
                ws,
                lambda m, k=key: (
                    m["type"] == "state_update" and m["payload"].get("changes") == {k: k}
                ),
            )
        async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
            snap = await _snapshot(http, limited, "lea", sid)
        assert snap["state_data"] == {"a": "a", "b": "b"}
    finally:
        await ws1.close()
        await ws2.close()


async def test_a_ws_idempotency_key_makes_a_retry_safe_and_refuses_another_payload(
    limited: Stack,
) -> None:
    ws1, hello = await connect_ws(limited, "max", "phone")
    sid = hello["payload"]["session_id"]
    ws2, _ = await connect_ws(limited, "max", "tablet", sid)
    write = {"type": "state_update", "idempotency_key": "w-1", "payload": {"changes": {"x": 1}}}
    try:
        await ws1.send(json.dumps({**write, "correlation_id": "c1"}))
        ack = await recv_until(ws1, lambda m: m.get("correlation_id") == "c1")
        assert ack["type"] == "state_update" and ack["payload"]["accepted"] is True, ack
        # the same write again from another connection (a client that reconnected): the
        # first outcome, nothing appended
        await ws2.send(json.dumps({**write, "correlation_id": "c2"}))
        again = await recv_until(ws2, lambda m: m.get("correlation_id") == "c2")
        assert again["payload"]["version"] == ack["payload"]["version"], again
        await ws2.send(
            json.dumps({**write, "correlation_id": "c3", "payload": {"changes": {"x": 2}}})
        )
        refused = await recv_until(ws2, lambda m: m.get("correlation_id") == "c3")
        assert refused["type"] == "error"
        assert refused["payload"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
            snap = await _snapshot(http, limited, "max", sid, ack["payload"]["version"])
        assert snap["state_data"] == {"x": 1} and snap["version"] == 1
    finally:
        await ws1.close()
        await ws2.close()


# ------------------------------------------------------------------ item 7: outcome unknown


async def test_a_write_during_a_worker_outage_says_outcome_unknown_and_its_retry_applies_once(
    limited: Stack,
) -> None:
    h = limited.headers("ned")
    sid = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=limited.base, timeout=15) as http:
        r = await http.post(
            "/session/snapshot", headers=h, json={"session_id": sid, "state_data": {}}
        )
        assert r.status_code == 200, r.text
        ws, _ = await connect_ws(limited, "ned", "phone", sid)
        limited.stop("worker")
        try:
            r = await http.post(
                "/session/incremental", headers=h, json={"session_id": sid, "changes": {"rest": 1}}
            )
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "OUTCOME_UNKNOWN"
            assert r.headers["Retry-After"] == "2"
            rest_key = err["idempotency_key"]
            assert r.headers["Idempotency-Key"] == rest_key
            await ws.send(
                json.dumps(
                    {
                        "type": "state_update",
                        "correlation_id": "u1",
                        "payload": {"changes": {"ws": 1}},
                    }
                )
            )
            unknown = await recv_until(ws, lambda m: m.get("correlation_id") == "u1")
            assert unknown["type"] == "error", unknown
            assert unknown["payload"]["code"] == "OUTCOME_UNKNOWN"
            ws_key = unknown["payload"]["idempotency_key"]
            assert unknown["payload"]["retry_after"] == 2
        finally:
            limited.start("worker", "worker")
        await asyncio.to_thread(limited.wait_ready)
        r = await http.post(
            "/session/incremental",
            headers={**h, "Idempotency-Key": rest_key},
            json={"session_id": sid, "changes": {"rest": 1}},
        )
        assert r.status_code == 200, r.text
        await ws.send(
            json.dumps(
                {
                    "type": "state_update",
                    "correlation_id": "u2",
                    "idempotency_key": ws_key,
                    "payload": {"changes": {"ws": 1}},
                }
            )
        )
        ack = await recv_until(ws, lambda m: m.get("correlation_id") == "u2")
        assert ack["type"] == "state_update" and ack["payload"]["accepted"], ack
        await ws.close()
        snap = await _snapshot(http, limited, "ned", sid, ack["payload"]["version"])
        # the snapshot, then each write exactly once (both were queued during the outage)
        assert snap["state_data"] == {"rest": 1, "ws": 1} and snap["version"] == 3


# ------------------------------------------------------------------ item 8: limits


async def test_a_ws_write_after_the_token_expired_is_refused_and_the_socket_closed(
    limited: Stack,
) -> None:
    token = limited.token("ola", ttl_s=2)
    ws = await websockets.connect(
        f"{limited.ws_base}?token={token}&device_id=phone", compression=None
    )
    hello = await recv_until(ws, of_type("connected"))
    sid = hello["payload"]["session_id"]
    await asyncio.sleep(max(0.0, limited.tokens.verify(token).expires_at - time.time()) + 0.1)
    codes = []
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send(
            json.dumps(
                {
                    "type": "state_update",
                    "correlation_id": "late",
                    "payload": {"key": "late", "value": 1},
                }
            )
        )
        reply = await recv_until(ws, lambda m: m.get("correlation_id") == "late")
        codes.append(reply["payload"]["code"])
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 4401 and ws.close_reason == "TOKEN_EXPIRED"
    assert codes in ([], ["TOKEN_EXPIRED"])
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        snap = await _snapshot(http, limited, "ola", sid)
    assert "late" not in snap["state_data"]


async def test_an_idle_ws_is_closed_at_token_expiry_unless_it_re_authenticates(
    limited: Stack,
) -> None:
    short = limited.token("pia", ttl_s=2)
    idle = await websockets.connect(
        f"{limited.ws_base}?token={short}&device_id=a", compression=None
    )
    kept = await websockets.connect(
        f"{limited.ws_base}?token={short}&device_id=b", compression=None
    )
    try:
        await recv_until(idle, of_type("connected"))
        await recv_until(kept, of_type("connected"))
        await kept.send(
            json.dumps(
                {
                    "type": "auth",
                    "correlation_id": "re",
                    "payload": {"token": limited.token("pia", ttl_s=60)},
                }
            )
        )
        renewed = await recv_until(kept, lambda m: m.get("correlation_id") == "re")
        assert renewed["type"] == "auth_success", renewed
        await kept.send(
            json.dumps(
                {
                    "type": "auth",
                    "correlation_id": "other",
                    "payload": {"token": limited.token("mallory")},
                }
            )
        )
        other = await recv_until(kept, lambda m: m.get("correlation_id") == "other")
        assert other["payload"]["code"] == "AUTH_USER_MISMATCH"
        # heartbeats every 2 s in the test stack: the maintenance loop closes within one
        await asyncio.wait_for(idle.wait_closed(), 6)
        assert (idle.close_code, idle.close_reason) == (4401, "TOKEN_EXPIRED")
        await kept.send(json.dumps({"type": "heartbeat", "payload": {"client_time": 5}}))
        ack = await recv_until(kept, of_type("heartbeat_ack"))
        assert ack["payload"]["client_time"] == 5
    finally:
        await idle.close()
        await kept.close()


async def test_an_sse_stream_ends_when_its_token_expires(limited: Stack) -> None:
    h = limited.headers("pat")
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        r = await http.post("/api/sessions", json={"device_id": "d"}, headers=h)
        sid = r.json()["session_id"]
        short = limited.token("pat", ttl_s=2)
        started = time.monotonic()
        async with http.stream("GET", f"/api/sessions/{sid}/events?token={short}") as resp:
            assert resp.status_code == 200

            async def to_the_end() -> None:
                async for _ in resp.aiter_lines():
                    pass

            await asyncio.wait_for(to_the_end(), 8)  # the server ended the stream
        assert time.monotonic() - started < 8
        again = await http.get(f"/api/sessions/{sid}/events?token={short}")
        assert again.status_code == 401 and again.json()["error"]["code"] == "TOKEN_EXPIRED"


async def test_connections_per_session_are_capped(limited: Stack) -> None:
    conns = []
    try:
        ws, hello = await connect_ws(limited, "quin", "d0")
        conns.append(ws)
        sid = hello["payload"]["session_id"]
        for device in ("d0", "d1", "d1"):
            ws, hello = await connect_ws(limited, "quin", device, sid)
            conns.append(ws)
            assert hello["type"] == "connected", hello
        ws, refused = await connect_ws(limited, "quin", "d0", sid)
        assert refused["type"] == "error", refused
        assert refused["payload"]["code"] == "TOO_MANY_CONNECTIONS"
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 4429
        async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
            r = await http.get(f"/api/sessions/{sid}/events?token={limited.token('quin')}")
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "TOO_MANY_CONNECTIONS"
            await conns.pop().close()

            async def admitted() -> Any:
                ws, hello = await connect_ws(limited, "quin", "d1", sid)
                if hello["type"] == "connected":
                    return ws
                await ws.close()
                return None

            conns.append(await _eventually(admitted))
    finally:
        for ws in conns:
            await ws.close()


async def test_connections_per_user_are_capped(limited: Stack) -> None:
    conns = []
    try:
        for i in range(5):
            ws, hello = await connect_ws(limited, "rui", f"device-{i}")
            conns.append(ws)
            assert hello["type"] == "connected", hello
        ws, refused = await connect_ws(limited, "rui", "device-5")
        conns.append(ws)
        assert refused["payload"]["code"] == "TOO_MANY_CONNECTIONS", refused
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 4429
        other, hello = await connect_ws(limited, "sam", "device-0")
        conns.append(other)
        assert hello["type"] == "connected"
    finally:
        for ws in conns:
            await ws.close()


async def test_rest_requests_are_rate_limited_per_user(limited: Stack) -> None:
    sid = str(uuid.uuid4())
    h = limited.headers("tom")
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        r = await http.post(
            "/session/snapshot", headers=h, json={"session_id": sid, "state_data": {}}
        )
        assert r.status_code == 200, r.text
        answers = await asyncio.gather(
            *(
                http.post(
                    "/session/incremental",
                    headers=h,
                    json={"session_id": sid, "changes": {f"k{i}": i}},
                )
                for i in range(40)
            )
        )
        ok = [r for r in answers if r.status_code == 200]
        limited_ = [r for r in answers if r.status_code == 429]
        assert len(ok) + len(limited_) == 40, [r.text for r in answers]
        assert len(ok) >= 19 and limited_, len(ok)  # the burst (less the first write), 10/s
        assert limited_[0].json()["error"]["code"] == "RATE_LIMITED"
        retry_after = max(int(r.headers["Retry-After"]) for r in limited_)
        assert retry_after >= 1
        mine = await http.post(
            "/session/snapshot",
            headers=limited.headers("tim"),
            json={"session_id": str(uuid.uuid4()), "state_data": {}},
        )
        assert mine.status_code == 200, mine.text  # another user's budget is their own
        await asyncio.sleep(retry_after + 0.5)
        last = max(r.json()["session_version"] for r in ok)
        snap = await _snapshot(http, limited, "tom", sid, last)
        assert snap["version"] == 1 + len(ok)  # no refused write was applied
        assert len(snap["state_data"]) == len(ok)


async def test_device_rows_per_session_are_bounded_and_forgotten_after_retention(
    limited: Stack,
) -> None:
    sid = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        for i in range(6):
            ws, hello = await connect_ws(limited, "uma", f"dropped-{i}", sid)
            assert hello["type"] == "connected", hello
            await ws.close()

            async def offline() -> bool:
                return not any(d["online"] for d in await _devices(http, limited, "uma", sid))

            await _eventually(offline)
        devices = await _devices(http, limited, "uma", sid)
        assert len(devices) <= 3, devices
        # three online devices fill the session: a fourth is refused
        online = []
        try:
            for i in range(3):
                ws, hello = await connect_ws(limited, "uma", f"online-{i}", sid)
                online.append(ws)
                assert hello["type"] == "connected", hello
            ws, refused = await connect_ws(limited, "uma", "online-3", sid)
            online.append(ws)
            assert refused["payload"]["code"] == "TOO_MANY_DEVICES", refused
        finally:
            for ws in online:
                await ws.close()

        async def forgotten() -> bool:
            return await _devices(http, limited, "uma", sid) == []

        await _eventually(forgotten, timeout=15)


async def test_a_slow_client_is_dropped_and_goes_offline_promptly(limited: Stack) -> None:
    h = limited.headers("val")
    async with httpx.AsyncClient(base_url=limited.base, timeout=15) as http:
        r = await http.post("/api/sessions", json={"device_id": "writer"}, headers=h)
        sid = r.json()["session_id"]
        sock = _raw_ws(limited, f"/ws?token={limited.token('val')}&device_id=slow&session_id={sid}")
        try:

            async def joined() -> bool:
                return any(
                    d["device_id"] == "slow" and d["online"]
                    for d in await _devices(http, limited, "val", sid)
                )

            await _eventually(joined)
            client_port = sock.getsockname()[1]
            assert _server_side_established(limited.port, client_port)
            big = {"blob": "x" * 200_000}

            async def slow_dropped() -> bool:
                m = (await http.get("/metrics")).text
                return any(
                    line.startswith("sessiond_gateway_slow_clients_total ")
                    and float(line.split()[-1]) >= 1
                    for line in m.splitlines()
                )

            for i in range(40):  # the slow client reads nothing: up to 8 MB of pushes for it
                r = await http.post(
                    "/session/snapshot",
                    headers=h,
                    json={"session_id": sid, "state_data": {**big, "i": i}},
                )
                assert r.status_code in (200, 429), r.text
                if await slow_dropped():
                    break
                if r.status_code == 429:
                    await asyncio.sleep(int(r.headers["Retry-After"]))
            await _eventually(slow_dropped, timeout=10)
            dropped_at = time.monotonic()

            async def offline() -> bool:
                return any(
                    d["device_id"] == "slow" and not d["online"]
                    for d in await _devices(http, limited, "val", sid)
                )

            await _eventually(offline, timeout=5)

            async def socket_gone() -> bool:
                return not _server_side_established(limited.port, client_port)

            await _eventually(socket_gone, timeout=5)
            assert time.monotonic() - dropped_at < 5
        finally:
            sock.close()


async def test_an_sse_request_from_a_foreign_origin_is_refused_before_joining(
    limited: Stack,
) -> None:
    h = limited.headers("wes")
    token = limited.token("wes")
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        sid = (await http.post("/api/sessions", json={"device_id": "d"}, headers=h)).json()[
            "session_id"
        ]
        r = await http.get(
            f"/api/sessions/{sid}/events?token={token}&device_id=evil-tab",
            headers={"Origin": "http://evil.example"},
        )
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "ORIGIN_FORBIDDEN"
        async with http.stream(
            "GET",
            f"/api/sessions/{sid}/events?token={token}&device_id=tab",
            headers={"Origin": "http://allowed.example"},
        ) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("event: connected"):
                    break
        await asyncio.sleep(0.5)
        devices = {d["device_id"] for d in await _devices(http, limited, "wes", sid)}
        assert "tab" in devices and "evil-tab" not in devices


# ------------------------------------------------------------------ helpers


def _raw_ws(stack: Stack, path: str) -> socket.socket:
    """A WebSocket client that reads nothing after the handshake, with a small receive buffer
    (set before connecting, so the window stays small): the slowest possible client."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", stack.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _server_side_established(server_port: int, client_port: int) -> bool:
    """Whether the gateway still holds an ESTABLISHED TCP socket to `client_port` (loopback)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    for row in rows:
        local, remote, state = row[1], row[2], row[3]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            return state == "01"
    return False
