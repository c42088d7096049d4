"""End to end: one poison event in a partition does not deny service to its other users
(issue 15, item 1b), with a real worker, projector and gateway.

The poison goes in below the gateway (which refuses a U+0000 at the edge): a session's events
appended straight to its actor stream and the partition log, as the worker appends them, the
second one with a U+0000 in a state key, which PostgreSQL cannot store. Then another user
creates a session in the same partition through the gateway: it must be readable (GET 200), its
second device must get the first one's push, and the poison must be a dead letter that
`projections status` shows, while `projections verify` still finds the tables equal to the log.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid

import asyncpg
import httpx
import msgspec
import pytest

from events import session as se
from events.codec import encode, type_name
from events.envelope import EventEnvelope
from infra.store.layout import event_stream, partition_log
from infra.store.routing import partition_of
from tests.integration.gwstack import ROOT, SESSIOND, Stack, connect_ws, of_type, recv_until
from tests.rediskit import connect

pytestmark = pytest.mark.anyio

P = 4  # the stack's SESSIOND_PARTITIONS


def _session_in(partition: int) -> str:
    while partition_of(sid := str(uuid.uuid4()), P) != partition:
        pass
    return sid


async def _append(redis, partition: int, actor_id: str, version: int, event) -> str:
    cid = uuid.uuid4().hex
    body = encode(
        EventEnvelope(
            event_id=uuid.uuid4().hex,
            actor_id=actor_id,
            version=version,
            partition=partition,
            ts=event.at,
            command_id=cid,
            correlation_id=cid,
            causation_id=cid,
            type=type_name(event),
            data=msgspec.Raw(encode(event)),
        )
    )
    await redis.xadd(event_stream(partition, actor_id), {"e": body}, id=f"{version}-0")
    return (await redis.xadd(partition_log(partition), {"e": body})).decode()


async def test_a_poison_event_does_not_stop_its_partition_for_other_users(stack: Stack) -> None:
    victim = 2
    now = int(time.time() * 1000)
    bad = _session_in(victim)
    actor = f"session:{bad}"
    redis = connect(stack.env["REDIS_URL"])
    try:
        await _append(
            redis,
            victim,
            actor,
            1,
            se.SessionCreated(
                at=now,
                session_id=bad,
                user_id="mallory",
                expires_at=now + 3_600_000,
                ttl_ms=3_600_000,
            ),
        )
        poison_id = await _append(
            redis,
            victim,
            actor,
            2,
            se.StateChanged(at=now + 1, changes={"a\u0000b": 1}, deleted_keys=[], state_version=1),
        )
    finally:
        await redis.aclose()
    # another user's new session in the same partition, through the gateway
    sid = _session_in(victim)
    bob = stack.headers("bob")
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        r = await http.post(
            "/api/session/start",
            headers=bob,
            json={"sessionId": sid, "routerId": str(uuid.uuid4())},
        )
        assert r.status_code == 200, r.text
        r = await http.post(
            "/session/snapshot",
            headers=bob,
            json={"session_id": sid, "state_data": {"level": 3}},
        )
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 15
        while True:
            r = await http.get(f"/session/{sid}", headers=bob)
            if r.status_code == 200 and r.json()["state_data"] == {"level": 3}:
                break
            assert time.monotonic() < deadline, (r.status_code, r.text, stack.log("projector"))
            await asyncio.sleep(0.1)
    # its second device gets the first one's push
    ws_a, hello_a = await connect_ws(stack, "bob", "device-a", session_id=sid)
    ws_b, hello_b = await connect_ws(stack, "bob", "device-b", session_id=sid)
    try:
        assert hello_a["type"] == hello_b["type"] == "connected", (hello_a, hello_b)
        await ws_a.send(
            json.dumps({"type": "state_update", "payload": {"key": "level", "value": 4}})
        )
        got = await recv_until(
            ws_b, lambda m: of_type("state_update")(m) and m["payload"]["changes"] == {"level": 4}
        )
        assert got["payload"]["changes"] == {"level": 4}
    finally:
        await ws_a.close()
        await ws_b.close()
    # the poison is a dead letter, and the projector said so at error level (reads fold what
    # the projector has not applied, so the GET above does not show that it got this far: wait)
    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        deadline = time.monotonic() + 15
        while True:
            dead = await conn.fetch(
                "SELECT partition, log_id, actor_id, version FROM projection.dead_letters"
            )
            if dead or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert [tuple(d) for d in dead] == [(victim, poison_id, actor, 2)]
    assert "cannot be projected" in stack.log("projector")
    status = subprocess.run(
        [*SESSIOND, "projections", "status"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert f"dead letters: 1 (partition {victim}: 1)" in status.stdout, status.stdout
    assert poison_id in status.stdout
    # every other event is in the tables exactly as the log says (the poison left out)
    deadline = time.monotonic() + 15
    while True:
        verify = subprocess.run(
            [*SESSIOND, "projections", "verify"],
            env=stack.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if verify.returncode == 0:
            break
        assert time.monotonic() < deadline, verify.stdout + verify.stderr
        await asyncio.sleep(0.5)  # the last pushes' presence events may still be projecting
    report = json.loads(verify.stdout)
    assert report["ok"] is True and report["dead_letters"] == 1
