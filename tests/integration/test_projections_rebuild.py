"""`sessiond projections rebuild / status / trim` against real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from events import session as se
from events.codec import encode
from events.errors import DomainError
from infra.store import open_store
from infra.store.layout import event_stream, partition_log, snapshot_key
from infra.store.routing import partition_of
from projections.archive import PostgresArchive
from projections.history import read_history
from projections.migrate import migrate
from projections.projector import Projector, ProjectorConfig
from projections.rebuild import rebuild
from projections.retention import trim_partition
from projections.status import partition_status
from projections.store import load_model
from projections.verify import fold_logs
from tests.actorkit import LocalActors, random_command
from tests.rediskit import connect

pytestmark = pytest.mark.anyio
P = 4
ROOT = Path(__file__).resolve().parents[2]

DUMP = {
    "session.active_sessions": "session_id",
    "session.session_metadata": "session_id",
    "session.devices": "session_id, device_id",
    "session.state_snapshots": "session_id",
    "session.handoffs": "token",
    "simulator.instances": "simulator_id",
    "projection.actor_versions": "actor_id",
}


async def _dump(conn: asyncpg.Connection) -> dict[str, list[str]]:
    return {
        t: [
            r[0] for r in await conn.fetch(f"SELECT row_to_json(x)::text FROM {t} x ORDER BY {key}")
        ]
        for t, key in DUMP.items()
    }


async def _schema(conn: asyncpg.Connection) -> set[tuple[str, ...]]:
    idx = await conn.fetch(
        "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes"
        " WHERE schemaname IN ('session', 'simulator', 'projection')"
    )
    fks = await conn.fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
        " FROM pg_constraint WHERE connamespace::regnamespace::text"
        " IN ('session', 'simulator', 'projection')"
    )
    return {tuple(r.values()) for r in idx} | {tuple(r.values()) for r in fks}


class _History:
    def __init__(self, redis_url: str, seed: int, sessions: int) -> None:
        self.redis = connect(redis_url)
        self.store = open_store(redis_url, P)
        self.actors = LocalActors(self.store)
        self.rng = random.Random(seed)
        self.ids = [str(uuid.UUID(int=self.rng.getrandbits(128))) for _ in range(sessions)]
        self.now = 1_800_000_000_000

    async def run(self, commands: int) -> int:
        for _ in range(commands):
            self.now += 5
            aid, command = random_command(self.rng, self.actors, self.ids, self.now)
            try:
                self.actors.send_nowait(aid, command)
            except DomainError:
                pass
        await self.actors.flush()
        return self.actors.appended

    async def aclose(self) -> None:
        await self.actors.close()
        await self.store.aclose()
        await self.redis.aclose()


async def _start(redis_url: str, dsn: str):
    store = open_store(redis_url, P)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    projector = Projector(
        ProjectorConfig(redis_url=redis_url, database_url=dsn, partitions=P, batch_size=200),
        store,
        pool,
    )
    return projector, asyncio.create_task(projector.run()), pool, store


async def _stop(projector, task, pool, store) -> None:
    projector.stop()
    await task
    await pool.close()
    await store.aclose()


async def _wait(pool: asyncpg.Pool, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while await pool.fetchval("SELECT count(*) FROM events.archive") < n:
        assert time.monotonic() < deadline, "projector did not catch up"
        await asyncio.sleep(0.05)


async def test_rebuild_produces_tables_identical_to_the_live_ones(redis_url, database_url):
    await migrate(database_url)
    history = _History(redis_url, seed=21, sessions=50)
    n = await history.run(2500)
    projector, task, pool, store = await _start(redis_url, database_url)
    try:
        await _wait(pool, n)
        async with pool.acquire() as conn:
            live, schema = await _dump(conn), await _schema(conn)
            bar = io.StringIO()
            stats = await rebuild(database_url, progress=bar)
            assert stats.events == n
            assert "events/s" in bar.getvalue() and f"{n:,}/{n:,}" in bar.getvalue()
            assert await _dump(conn) == live
            assert await _schema(conn) == schema
            assert await conn.fetchval("SELECT to_regnamespace('rebuild')") is None
            # the same with three folding processes, each taking a share of the partitions
            parallel = await rebuild(database_url, progress=None, workers=3)
            assert parallel.workers == 3 and parallel.events == n
            assert await _dump(conn) == live
            assert await _schema(conn) == schema
        # live projection carries on, on the new tables, with aggregates reloaded from them
        n = await history.run(800)
        await _wait(pool, n)
        assert projector.parts and all(s.generation == 2 for s in projector.parts.values())
    finally:
        await _stop(projector, task, pool, store)
    conn = await asyncpg.connect(database_url)
    try:
        expected = await fold_logs(history.store)
        actual = await load_model(conn)
        assert actual.sessions == expected.sessions and actual.actors == expected.actors
        # cascades still hold on the swapped-in tables
        await conn.execute("DELETE FROM session.active_sessions")
        for table in ("session.session_metadata", "session.devices", "simulator.instances"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
    finally:
        await conn.close()
        await history.aclose()


async def test_rebuild_while_events_flow_loses_nothing(redis_url, database_url):
    await migrate(database_url)
    history = _History(redis_url, seed=8, sessions=40)
    n = await history.run(1500)
    projector, task, pool, store = await _start(redis_url, database_url)
    try:
        await _wait(pool, n // 2)

        async def more() -> None:
            for _ in range(10):
                await history.run(100)
                await asyncio.sleep(0.01)

        producer = asyncio.create_task(more())
        await rebuild(database_url, progress=None, workers=2)  # two folding processes
        await rebuild(database_url, name="actor_versions", progress=None)
        await producer
        await _wait(pool, history.actors.appended)
    finally:
        await _stop(projector, task, pool, store)
    conn = await asyncpg.connect(database_url)
    try:
        expected = await fold_logs(history.store)
        actual = await load_model(conn)
        assert actual.sessions == expected.sessions and actual.actors == expected.actors
    finally:
        await conn.close()
        await history.aclose()


async def test_status_reports_lag_and_trim_keeps_all_history(redis_url, database_url):
    await migrate(database_url)
    history = _History(redis_url, seed=4, sessions=20)
    n = await history.run(600)
    redis, store = history.redis, history.store
    conn = await asyncpg.connect(database_url)
    try:
        rows = await partition_status(store, conn)
        assert sum(r["events_behind"] for r in rows) == n
        assert max(r["seconds_behind"] for r in rows) > 0
        # a consumer group (the reactor) that has not read the log holds it back
        busiest = max(range(P), key=lambda p: [r["events_behind"] for r in rows][p])
        await redis.xgroup_create(partition_log(busiest), "reactor", id="0")
        projector, task, pool, s2 = await _start(redis_url, database_url)
        try:
            await _wait(pool, n)
        finally:
            await _stop(projector, task, pool, s2)
        rows = await partition_status(store, conn)
        assert [r["events_behind"] for r in rows] == [0] * P
        # snapshots for every session actor, as the worker writes them: (version, state)
        for aid, states in history.actors.history.items():
            if aid.startswith("session:"):
                version, state = states[-1]
                p = partition_of(aid.split(":", 1)[1], P)
                await redis.set(snapshot_key(p, aid), encode((version, state)))
        before = {p: await redis.xlen(partition_log(p)) for p in range(P)}
        report = [await trim_partition(store, conn, p, keep=3) for p in range(P)]
        for p in range(P):
            left = await redis.xlen(partition_log(p))
            if p == busiest:
                assert left == before[p]  # the group has read nothing: nothing goes
            else:
                # everything up to and including the checkpoint is archived
                assert left == 0 and report[p]["log_entries_removed"] == before[p]
        assert sum(r["actor_events_removed"] for r in report) > 0
        # every actor's whole history is still readable (Redis + archive), in order
        store.archive = PostgresArchive(pool=conn)
        for aid, states in history.actors.history.items():
            envs = await read_history(store, aid)
            assert [e.version for e in envs] == [v for v, _ in states]
        # the newest 3 versions of a session stay in Redis
        aid = next(a for a in history.actors.history if a.startswith("session:"))
        p = partition_of(aid.split(":", 1)[1], P)
        last = history.actors.history[aid][-1][0]
        assert await redis.xlen(event_stream(p, aid)) == min(3, last)
    finally:
        await conn.close()
        await history.aclose()


async def test_session_events_after_a_trim_come_from_the_archive(redis_url, database_url):
    await migrate(database_url)
    redis = connect(redis_url)
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    sid = str(uuid.uuid4())
    aid = f"session:{sid}"
    await actors.send(aid, se.CreateSession(at=1, user_id="u", session_id=sid))
    for i in range(9):
        await actors.send(aid, se.ApplyStateChanges(at=2 + i, user_id="u", changes={"i": i}))
    projector, task, pool, s2 = await _start(redis_url, database_url)
    try:
        await _wait(pool, 10)
    finally:
        await _stop(projector, task, pool, s2)
    p = partition_of(sid, P)
    await redis.xtrim(event_stream(p, aid), minid="8-0")
    conn = await asyncpg.connect(database_url)
    store.archive = PostgresArchive(pool=conn)
    try:
        envs = await read_history(store, aid, since=2)
        assert [e.version for e in envs] == list(range(3, 11))
        assert [e.event_id for e in envs] == [
            e.event_id for e in (await read_history(store, aid))[2:]
        ]
    finally:
        await conn.close()
        await actors.close()
        await store.aclose()
        await redis.aclose()
    # `sessiond events` falls back to the archive for the trimmed versions
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "SESSIOND_PARTITIONS": str(P),
    }
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "infra.cli", "events", aid, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["version"] for line in out.stdout.splitlines()] == list(range(1, 11))


async def test_projections_cli_status_verify_rebuild_and_trim(redis_url, database_url):
    await migrate(database_url)
    history = _History(redis_url, seed=12, sessions=10)
    n = await history.run(300)
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "SESSIOND_PARTITIONS": str(P),
    }

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "infra.cli", "projections", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    status = await asyncio.to_thread(cli, "status", "--json")
    rows = [r for r in map(json.loads, status.stdout.splitlines()) if r["kind"] == "partition"]
    assert sum(r["events_behind"] for r in rows) == n and len(rows) == P
    table = await asyncio.to_thread(cli, "status")
    assert table.returncode == 0 and f"total: {n} events behind" in table.stdout
    projector, task, pool, store = await _start(redis_url, database_url)
    try:
        await _wait(pool, n)
    finally:
        await _stop(projector, task, pool, store)
    verify = await asyncio.to_thread(cli, "verify")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True
    rebuilt = await asyncio.to_thread(cli, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["events"] == n and "events/s" in rebuilt.stderr
    bad = await asyncio.to_thread(cli, "rebuild", "--name", "nope")
    assert bad.returncode == 2 and "unknown projection" in bad.stderr
    assert "Traceback" not in bad.stderr
    dry = await asyncio.to_thread(cli, "trim", "--dry-run")
    assert sum(json.loads(line)["log_entries_removed"] for line in dry.stdout.splitlines()) == n
    assert await log_length_now(redis_url) == n  # a dry run removes nothing
    await history.aclose()


async def log_length_now(redis_url: str) -> int:
    redis = connect(redis_url)
    try:
        return sum([await redis.xlen(partition_log(p)) for p in range(P)])
    finally:
        await redis.aclose()
