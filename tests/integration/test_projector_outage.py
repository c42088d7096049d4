"""The projector survives a PostgreSQL crash by itself (issue 15, item 2).

kill -9 of the PostgreSQL server under load, a restart on the same data directory: the projector
must say it cannot reach PostgreSQL meanwhile (its status record), reconnect with backoff, claim
its leased partitions' checkpoints again and catch up, losing and doubling nothing. The server
is this test's own (`server_data_dir`), never the session-wide one other tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
import uuid

import asyncpg
import pytest

from events.errors import DomainError
from infra.embedded import start_postgres
from infra.store import open_store
from projections.health import describe, read_statuses
from projections.migrate import migrate
from projections.projector import Projector, ProjectorConfig, pool_settings
from projections.store import load_model
from projections.verify import fold_logs, log_length
from tests.actorkit import LocalActors, random_command
from tests.integration.gwstack import ROOT
from tests.integration.pgkill import kill_postgres, restart_postgres

pytestmark = pytest.mark.anyio

P = 4


async def _load(redis_url: str, stop: asyncio.Event, rate_per_s: float = 400) -> int:
    """Commands to random sessions at about `rate_per_s`, appended as the worker would, until
    `stop`; returns the events appended."""
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    rng = random.Random(15)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(40)]
    now = 1_800_000_000_000
    try:
        while not stop.is_set():
            for _ in range(int(rate_per_s / 50)):
                now += 3
                aid, command = random_command(rng, actors, ids, now)
                with contextlib.suppress(DomainError):
                    actors.send_nowait(aid, command)
            await actors.flush()
            await asyncio.sleep(0.02)
        return actors.appended
    finally:
        await actors.close()
        await store.aclose()


async def _caught_up(redis_url: str, dsn: str) -> bool:
    store = open_store(redis_url, P)
    try:
        total = await log_length(store)
    finally:
        await store.aclose()
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        return await conn.fetchval("SELECT count(*) FROM events.archive") == total
    finally:
        await conn.close()


async def test_the_projector_resumes_by_itself_after_postgresql_is_killed_and_restarted(
    redis_url, server_data_dir
):
    pg_dir = server_data_dir / "pg"
    server = start_postgres(pg_dir, fsync=False)
    dsn = server.url
    await migrate(dsn)
    config = ProjectorConfig(
        redis_url=redis_url, database_url=dsn, partitions=P, block_ms=50, lease_ttl_ms=3000
    )
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=6, server_settings=pool_settings(config)
    )
    store = open_store(redis_url, P)
    projector = Projector(config, store, pool, status_period_s=0.2)
    task = asyncio.create_task(projector.run())
    stop_load = asyncio.Event()
    load = asyncio.create_task(_load(redis_url, stop_load))
    try:
        deadline = time.monotonic() + 20
        while projector.events_projected < 200:
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.05)
        kill_postgres(server)
        # the projector says so, in its status record, within a few status periods
        deadline = time.monotonic() + 10
        while True:
            statuses = await read_statuses(store)
            if statuses and statuses[0].postgres == "unreachable":
                break
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(0.1)
        assert describe(statuses[0]).startswith("cannot reach PostgreSQL since ")
        # `projections status` says so too, rather than failing with a traceback
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": dsn,
            "SESSIOND_PARTITIONS": str(P),
        }
        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "infra.cli", "projections", "status"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 1, status.stdout + status.stderr
        assert "PostgreSQL unreachable" in status.stdout and "Traceback" not in status.stderr
        assert f"{projector.owner}: cannot reach PostgreSQL since " in status.stdout
        assert projector.leases.held, "the projector gave its leases up during the outage"
        await asyncio.sleep(3 * config.lease_ttl_ms / 1000)  # down for several lease periods
        server = restart_postgres(pg_dir, fsync=False)
        assert server.url == dsn
        restarted = time.monotonic()
        # by itself: it reaches PostgreSQL again, projects every partition, says so
        while (await read_statuses(store))[0].postgres != "ok" or sorted(projector.parts) != list(
            range(P)
        ):
            assert time.monotonic() - restarted < 30, (await read_statuses(store), projector.parts)
            await asyncio.sleep(0.05)
        resumed_s = time.monotonic() - restarted
        await asyncio.sleep(1.0)  # load keeps coming after the restart
        stop_load.set()
        appended = await load
        stopped = time.monotonic()
        while not await _caught_up(redis_url, dsn):
            assert time.monotonic() - stopped < 30, "the projector did not catch up"
            assert not task.done(), task
            await asyncio.sleep(0.05)
        drained_s = time.monotonic() - stopped
        # nothing lost, nothing doubled: the tables equal the fold of the log
        conn = await asyncpg.connect(dsn)
        try:
            total = await log_length(store)
            assert total == appended
            assert await conn.fetchval("SELECT count(*) FROM events.archive") == total
            assert (
                await conn.fetchval(
                    "SELECT count(DISTINCT (actor_id, version)) FROM events.archive"
                )
                == total
            )
            expected = await fold_logs(store)
            actual = await load_model(conn)
            assert actual.sessions == expected.sessions
            assert actual.actors == expected.actors
        finally:
            await conn.close()
        print(
            f"\nPostgreSQL ready again -> projector projecting every partition: {resumed_s:.2f}"
            f" s; load stopped -> caught up: {drained_s:.2f} s ({total} events)"
        )
    finally:
        stop_load.set()
        projector.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(load, 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 5)
        await store.aclose()
        server.stop()
