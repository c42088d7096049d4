"""Housekeeping runs by itself (issue 14): the projector process, every
SESSIOND_HOUSEKEEPING_INTERVAL_MS, trims Redis never below what is archived and snapshotted and
runs seed 002's `session.cleanup_expired_sessions()`, with a log line per run. Real worker,
projector and gateway processes; nothing but the product's own schedule is run here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from infra.store import layout
from infra.store.routing import partition_of
from tests.integration.gwstack import Stack, running_stack

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def stack(redis_server_url: str, postgres_server_url: str, tmp_path_factory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("housekeeping-logs")
    with running_stack(
        redis_server_url,
        postgres_server_url,
        logs,
        SESSION_TTL="4s",
        SESSIOND_HOUSEKEEPING_INTERVAL_MS="1000",
        SESSIOND_SNAPSHOT_EVERY="5",
        SESSIOND_RETENTION_KEEP="3",
    ) as s:
        yield s


async def test_housekeeping_trims_redis_and_deletes_expired_sessions_on_its_own(
    stack: Stack,
) -> None:
    sid, h = str(uuid.uuid4()), stack.headers("keeper")
    stream = layout.event_stream(partition_of(sid, 4), f"session:{sid}")
    redis = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    db = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
            for n in range(20):
                r = await http.post(
                    "/session/snapshot",
                    headers=h,
                    json={"session_id": sid, "state_data": {"n": n}},
                )
                assert r.status_code == 200, r.text
            written = r.json()["session_version"]
            deadline = time.monotonic() + 15
            while await redis.xlen(stream) >= written:  # trimmed below archive and snapshot
                assert time.monotonic() < deadline, stack.log("projector")
                await asyncio.sleep(0.2)
            first = int((await redis.xrange(stream, count=1))[0][0].split(b"-")[0])
            archived = await db.fetchval(
                "SELECT count(*) FROM events.archive WHERE actor_id = $1", f"session:{sid}"
            )
            assert first > 1 and archived >= first - 1  # what left Redis is in the archive
            r = await http.get(f"/session/{sid}", headers=h)
            assert r.json()["state_data"] == {"n": 19}  # reads are whole after the trim
            # nothing uses the session: it expires, and the schedule deletes its rows
            deadline = time.monotonic() + 20
            while await db.fetchval(
                "SELECT count(*) FROM session.active_sessions WHERE session_id = $1", sid
            ):
                assert time.monotonic() < deadline, stack.log("projector")
                await asyncio.sleep(0.3)
        assert "housekeeping: 1 expired session(s) deleted" in stack.log("projector")
    finally:
        await db.close()
        await redis.aclose()
