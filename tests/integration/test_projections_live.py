"""The projector against real Redis and real PostgreSQL: seed 002's queries, exactly-once under
kill -9, fencing of a stale owner, and the change feed."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import msgspec
import pytest

from events import session as se
from events import simulator as si
from events.errors import DomainError, Fenced
from infra.store import LeaseShare, open_store, partition_of
from infra.store.layout import change_channel
from projections.changes import decode_changes
from projections.health import ROLE
from projections.migrate import migrate
from projections.projector import (
    PartitionState,
    Projector,
    ProjectorConfig,
    claim_partition,
    commit_batch,
    decode_entries,
    prepare_batch,
)
from projections.store import load_model
from projections.verify import fold_logs, log_length
from tests.actorkit import LocalActors, random_command
from tests.rediskit import connect

pytestmark = pytest.mark.anyio

P = 4
ROOT = Path(__file__).resolve().parents[2]


async def _project_all(
    redis_url: str, dsn: str, expected: int, *, timeout: float = 60.0, batch: int = 500
) -> None:
    """Run an in-process projector until the archive holds `expected` events."""
    store = open_store(redis_url, P)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    projector = Projector(
        ProjectorConfig(
            redis_url=redis_url, database_url=dsn, partitions=P, batch_size=batch, lease_ttl_ms=5000
        ),
        store,
        pool,
    )
    task = asyncio.create_task(projector.run())
    try:
        deadline = time.monotonic() + timeout
        while await pool.fetchval("SELECT count(*) FROM events.archive") < expected:
            assert time.monotonic() < deadline, "projector did not catch up"
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        projector.stop()
        await task
        await pool.close()
        await store.aclose()


async def _assert_tables_equal_fold(redis_url: str, dsn: str) -> None:
    store = open_store(redis_url, P)
    conn = await asyncpg.connect(dsn)
    try:
        expected = await fold_logs(store)
        actual = await load_model(conn)
        assert actual.sessions.keys() == expected.sessions.keys()
        for sid, agg in expected.sessions.items():
            assert actual.sessions[sid] == agg, sid
        assert actual.actors == expected.actors
        events = await log_length(store)
        assert await conn.fetchval("SELECT count(*) FROM events.archive") == events
        assert (
            await conn.fetchval("SELECT count(DISTINCT (actor_id, version)) FROM events.archive")
            == events
        )
    finally:
        await conn.close()
        await store.aclose()


async def _random_history(redis_url: str, sessions: int, commands: int, seed: int) -> int:
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    rng = random.Random(seed)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(sessions)]
    now = 1_800_000_000_000
    for _ in range(commands):
        now += 7
        aid, command = random_command(rng, actors, ids, now)
        try:
            actors.send_nowait(aid, command)
        except DomainError:
            pass
        if actors.pending > 1000:
            await actors.flush()
    await actors.flush()
    await actors.close()
    await store.aclose()
    return actors.appended


@pytest.fixture
async def dsn(database_url: str) -> str:
    await migrate(database_url)
    return database_url


async def test_seed_002_example_queries_return_what_the_commands_created(redis_url, dsn):
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    now = int(time.time() * 1000)
    user, other = "user-42", "user-7"
    s1, s2, s3 = (str(uuid.uuid4()) for _ in range(3))
    sim = str(uuid.uuid4())
    await actors.send(
        f"session:{s1}",
        se.CreateSession(
            at=now - 7_200_000,
            user_id=user,
            session_id=s1,
            device_id="phone",
            pod_name="gw-1",
            ip_address="10.1.2.3",
        ),
    )
    await actors.send(
        f"session:{s1}",
        se.JoinDevice(
            at=now - 7_100_000,
            user_id=user,
            device_id="phone",
            connection_id="c1",
            device_type="mobile",
            device_name="iPhone 13",
            os="ios",
        ),
    )
    await actors.send(
        f"session:{s1}",
        se.JoinDevice(
            at=now - 7_000_000,
            user_id=user,
            device_id="phone",
            connection_id="c2",
            transport=se.Transport.SSE,
        ),
    )
    await actors.send(
        f"session:{s1}",
        se.ChangeConnectionQuality(
            at=now - 6_900_000, user_id=user, quality=se.ConnectionQuality.DEGRADED, rtt_ms=250
        ),
    )
    await actors.send(
        f"session:{s1}",
        se.ReserveSimulator(
            at=now - 6_800_000,
            user_id=user,
            simulator_id=sim,
            initial_symbols=["AAPL", "MSFT"],
            initial_cash=25000.0,
        ),
    )
    await actors.send(
        f"simulator:{sim}", si.RecordProvisioned(at=now - 6_700_000, endpoint="http://sim-1:8080")
    )
    await actors.send(f"simulator:{sim}", si.RecordHeartbeat(at=now - 6_600_000))  # RUNNING
    # a second session of the same user that ends: its rows go away
    await actors.send(f"session:{s2}", se.CreateSession(at=now, user_id=user, session_id=s2))
    await actors.send(f"session:{s2}", se.EndSession(at=now + 1, user_id=user))
    # another user's session, already expired
    await actors.send(
        f"session:{s3}",
        se.CreateSession(at=now - 10_000, user_id=other, session_id=s3, ttl_ms=5_000),
    )
    await actors.send(f"session:{s3}", se.ExpireSession(at=now - 5_000))
    await _project_all(redis_url, dsn, actors.appended)
    await actors.close()
    await store.aclose()

    conn = await asyncpg.connect(dsn)
    try:
        # Check Active Sessions for a User (seed 002 verbatim: trailing blanks trimmed, the
        # user id filled in)
        rows = await conn.fetch(
            """
SELECT s.session_id, s.created_at, s.last_active, s.expires_at,
       m.metadata->>'simulator_id' as simulator_id
FROM session.active_sessions s
JOIN session.session_metadata m ON s.session_id = m.session_id
WHERE s.user_id = '<user_id>' AND s.expires_at > NOW();
""".replace("<user_id>", user)
        )
        assert [(r["session_id"], r["simulator_id"]) for r in rows] == [(s1, sim)]
        assert rows[0]["created_at"].timestamp() == pytest.approx((now - 7_200_000) / 1000)

        # Find Inactive Simulators (verbatim): RUNNING, last active 110 minutes ago
        rows = await conn.fetch("""
SELECT simulator_id, session_id, user_id, status,
       EXTRACT(EPOCH FROM (NOW() - last_active)) as seconds_inactive
FROM simulator.instances
WHERE status != 'STOPPED'
AND last_active < NOW() - INTERVAL '1 hour';
""")
        assert [(r["simulator_id"], r["session_id"], r["user_id"], r["status"]) for r in rows] == [
            (sim, s1, user, "RUNNING")
        ]
        assert float(rows[0]["seconds_inactive"]) >= 6_600

        # Check Session Connection Statistics (verbatim)
        rows = await conn.fetch("""
SELECT s.session_id,
       (m.metadata->>'frontend_connections')::int as ws_connections,
       (m.metadata->>'sse_connections')::int as sse_connections,
       m.metadata->>'connection_quality' as quality,
       m.metadata->>'last_ws_connection' as last_connection
FROM session.active_sessions s
JOIN session.session_metadata m ON s.session_id = m.session_id
WHERE s.expires_at > NOW();
""")
        assert [tuple(r.values())[:4] for r in rows] == [(s1, 1, 1, "DEGRADED")]
        assert rows[0]["last_connection"].startswith(
            time.strftime("%Y-%m-%dT", time.gmtime((now - 7_100_000) / 1000))
        )

        meta = msgspec.json.decode(
            await conn.fetchval(
                "SELECT metadata FROM session.session_metadata WHERE session_id = $1", s1
            )
        )
        assert meta["pod_name"] == "gw-1" and meta["ip_address"] == "10.1.2.3"
        assert meta["simulator_status"] == "RUNNING"
        assert meta["simulator_endpoint"] == "http://sim-1:8080"
        assert meta["device_ids"] == ["phone"]
        device = await conn.fetchrow("SELECT * FROM session.devices WHERE session_id = $1", s1)
        assert (
            device["device_type"],
            device["device_name"],
            device["os"],
            device["status"],
            device["connections"],
        ) == ("mobile", "iPhone 13", "ios", "online", 2)
        # ended: removed; expired: marked, then cleaned up by seed 002's function
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM session.active_sessions WHERE session_id = $1", s2
            )
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT status FROM session.active_sessions WHERE session_id = $1", s3
            )
            == "EXPIRED"
        )
        assert await conn.fetchval("SELECT session.cleanup_expired_sessions()") == 1
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM session.session_metadata WHERE session_id = $1", s3
            )
            == 0
        )
        sym = await conn.fetchrow("SELECT initial_symbols, initial_cash FROM simulator.instances")
        assert msgspec.json.decode(sym["initial_symbols"]) == ["AAPL", "MSFT"]
        assert sym["initial_cash"] == 25000.0
    finally:
        await conn.close()


async def test_tables_equal_the_fold_of_a_random_history(redis_url, dsn):
    appended = await _random_history(redis_url, sessions=60, commands=3000, seed=3)
    await _project_all(redis_url, dsn, appended, batch=97)
    await _assert_tables_equal_fold(redis_url, dsn)


async def test_each_append_publishes_the_sessions_changes_in_version_order(redis_url, dsn):
    redis = connect(redis_url)
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    sid = str(uuid.uuid4())
    pubsub = redis.pubsub()
    await pubsub.ssubscribe(change_channel(partition_of(sid, P), sid))
    now = 1_800_000_000_000
    await actors.send(
        f"session:{sid}",
        se.CreateSession(at=now, user_id="u", session_id=sid, token="secret-token"),
    )
    for i in range(5):
        await actors.send(
            f"session:{sid}", se.ApplyStateChanges(at=now + i + 1, user_id="u", changes={"n": i})
        )
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 6 and time.monotonic() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg:
            got.extend(decode_changes(msg["data"]))
    assert [c.version for c in got] == [1, 2, 3, 4, 5, 6]
    assert got[0].type == "SessionCreated" and "token" not in got[0].data
    assert got[-1].data["changes"] == {"n": 4} and got[-1].data["state_version"] == 5
    await pubsub.aclose()
    await actors.close()
    await store.aclose()
    await redis.aclose()


async def test_a_paused_projector_whose_lease_was_taken_over_cannot_commit(redis_url, dsn):
    appended = await _random_history(redis_url, sessions=10, commands=200, seed=5)
    assert appended
    store = open_store(redis_url, P)
    conn = await asyncpg.connect(dsn)
    try:
        lengths = [await store.log.length(p) for p in range(P)]
        p = max(range(P), key=lengths.__getitem__)
        old = LeaseShare(store.leases, ROLE, "old", P, ttl_ms=200)
        epoch_old = (await old.tick()).gained[p]
        last, generation = await claim_partition(conn, p, epoch_old)
        state = PartitionState(epoch=epoch_old, last_id=last, generation=generation)
        entries = await store.log.range(p, after=state.last_id, count=50)
        batch = await prepare_batch(conn, p, state, decode_entries(entries))
        # "old" pauses past its lease; "new" takes the partition over and claims the checkpoint
        await asyncio.sleep(0.3)
        new = LeaseShare(store.leases, ROLE, "new", P, ttl_ms=10_000)
        gained_new = (await new.tick()).gained
        assert gained_new[p] > epoch_old
        await claim_partition(conn, p, gained_new[p])
        with pytest.raises(Fenced):
            await commit_batch(conn, batch, epoch_old)
        assert await conn.fetchval("SELECT count(*) FROM events.archive") == 0
        assert await conn.fetchval("SELECT count(*) FROM session.active_sessions") == 0
        # the new owner commits the same batch
        await commit_batch(conn, batch, gained_new[p])
        assert await conn.fetchval("SELECT count(*) FROM events.archive") == batch.size
    finally:
        await conn.close()
        await store.aclose()


def _start_projector(redis_url: str, dsn: str, log: Path) -> subprocess.Popen:
    """`sessiond projector` whose rounds wait 30 ms inside their transaction (a wide window
    for the kill)."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": dsn,
        "SESSIOND_PARTITIONS": str(P),
        "LEASE_TTL_MS": "1000",
        "SESSIOND_PROJECTOR_BATCH": "50",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.faulty_projector", "--commit-delay-ms", "30"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def test_killed_projector_restarts_without_missing_or_doubled_rows(redis_url, dsn, tmp_path):
    appended = await _random_history(redis_url, sessions=80, commands=4000, seed=11)
    conn = await asyncpg.connect(dsn)
    log = tmp_path / "projector.log"
    try:
        kills = 0
        rng = random.Random(2)
        while kills < 3:
            proc = _start_projector(redis_url, dsn, log)
            try:
                # wait until it is mid-stream (some batches committed, more to go)
                deadline = time.monotonic() + 60
                start = await conn.fetchval("SELECT count(*) FROM events.archive")
                while await conn.fetchval("SELECT count(*) FROM events.archive") < start + 150:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    await asyncio.sleep(0.02)
                # kill it while one of its transactions is open (written, not committed)
                while not await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                    " 'sessiond-projector' AND state = 'idle in transaction'"
                    " AND query LIKE 'INSERT INTO projection.actor_versions%'"
                ):
                    assert time.monotonic() < deadline, log.read_text()
                    await asyncio.sleep(0.001)
                await asyncio.sleep(rng.random() * 0.01)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            kills += 1
        assert await conn.fetchval("SELECT count(*) FROM events.archive") < appended
        proc = _start_projector(redis_url, dsn, log)
        try:
            deadline = time.monotonic() + 90
            while await conn.fetchval("SELECT count(*) FROM events.archive") < appended:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        await conn.close()
    await _assert_tables_equal_fold(redis_url, dsn)
