"""The projector's rounds against real Redis and PostgreSQL: one transaction per round over every
partition that had entries, fencing of one partition mid-round (the round rolls back, only that
partition is let go, the others commit next round), and an uncertain failure."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

import projections.projector as projector_module
from events import session as se
from infra.store import open_store
from infra.store.layout import change_channel, partition_log
from infra.store.routing import partition_of
from projections.health import ROLE
from projections.migrate import migrate
from projections.projector import Projector, ProjectorConfig, pool_settings
from projections.store import load_model
from projections.verify import fold_logs
from tests.actorkit import LocalActors
from tests.rediskit import connect

pytestmark = pytest.mark.anyio

P = 4

#: how a round commits: one statement (the default for small rounds), or a transaction block
#: (big rounds, or a hook before COMMIT: `Projector(before_commit=...)`)
PATHS = pytest.mark.parametrize("path", ["statement", "transaction"])


async def _nothing() -> None:
    return None


def _count_commits(monkeypatch, projector: Projector, path: str) -> list[list[int]]:
    """Record the partitions of every commit (-1 first when it went as one statement); force
    the commit path."""
    commits: list[list[int]] = []
    commit = projector_module.commit_batches

    async def counted(conn, batches, epochs, *args, **kw):
        commits.append(sorted(b.partition for b in batches))
        try:
            await commit(conn, batches, epochs, *args, **kw)
        finally:
            commits[-1].sort()

    write_round = projector_module.write_round

    async def one_statement(*args, **kw):
        assert path == "statement", "a round meant for a transaction block went as a statement"
        commits[-1].append(-1)  # marks a commit that went as one statement
        return await write_round(*args, **kw)

    monkeypatch.setattr(projector_module, "commit_batches", counted)
    monkeypatch.setattr(projector_module, "write_round", one_statement)
    projector._before_commit = _nothing if path == "transaction" else None
    return commits


def _as(path: str, *partitions: int) -> list[int]:
    """What `_count_commits` records for a commit of `partitions` on `path`."""
    return ([-1] if path == "statement" else []) + sorted(partitions)


@pytest.fixture
async def dsn(database_url: str) -> str:
    await migrate(database_url)
    return database_url


def _sessions(per_partition: int = 3, first: int = 0) -> list[str]:
    """The deterministic session ids of `_history`: at least `per_partition` in each."""
    sessions: list[str] = []
    n = 0
    while min(sum(partition_of(s, P) == p for s in sessions) for p in range(P)) < per_partition:
        sessions.append(str(uuid.UUID(int=(first + n) * 7919 + 1)))
        n += 1
    return sessions


async def _history(
    redis_url: str, per_partition: int = 3, updates: int = 4, first: int = 0
) -> dict[int, int]:
    """Sessions in every partition, each created and changed a few times; events per partition.
    (`first`: where the deterministic session ids start, for a second history.)"""
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    counts = dict.fromkeys(range(P), 0)
    sessions = _sessions(per_partition, first)
    now = 1_800_000_000_000
    for sid in sessions:
        before = actors.appended
        actors.send_nowait(f"session:{sid}", se.CreateSession(at=now, user_id="u", session_id=sid))
        for i in range(updates):
            actors.send_nowait(
                f"session:{sid}",
                se.ApplyStateChanges(at=now + i + 1, user_id="u", changes={"n": i}),
            )
        counts[partition_of(sid, P)] += actors.appended - before
    await actors.flush()
    await actors.close()
    await store.aclose()
    assert all(counts.values())
    return counts


async def _projector(redis_url: str, dsn: str) -> tuple[Projector, asyncpg.Pool]:
    """A projector driven round by round (no `run`): it holds every partition. Its pool has
    the server settings `sessiond projector` gives its own."""
    config = ProjectorConfig(
        redis_url=redis_url,
        database_url=dsn,
        partitions=P,
        batch_size=1000,
        block_ms=50,
        lease_ttl_ms=30_000,
    )
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=4, server_settings=pool_settings(config)
    )
    projector = Projector(config, open_store(redis_url, P), pool)
    await projector._rebalance()
    assert sorted(projector.parts) == list(range(P))
    return projector, pool


async def _close(projector: Projector, pool: asyncpg.Pool) -> None:
    await projector.aclose()
    await pool.close()
    await projector.store.aclose()


async def _log_heads(redis_url: str) -> dict[int, str]:
    redis = connect(redis_url)
    try:
        return {
            p: (await redis.xrevrange(partition_log(p), count=1))[0][0].decode() for p in range(P)
        }
    finally:
        await redis.aclose()


async def _assert_exactly_once(redis_url: str, pool: asyncpg.Pool, total: int) -> None:
    assert await pool.fetchval("SELECT count(*) FROM events.archive") == total
    assert (
        await pool.fetchval("SELECT count(DISTINCT (actor_id, version)) FROM events.archive")
        == total
    )
    heads = await _log_heads(redis_url)
    rows = await pool.fetch("SELECT partition, last_id, events FROM projection.checkpoints")
    assert {r["partition"]: r["last_id"] for r in rows} == heads
    assert sum(r["events"] for r in rows) == total
    store = open_store(redis_url, P)
    try:
        expected = await fold_logs(store)
    finally:
        await store.aclose()
    async with pool.acquire() as conn:
        actual = await load_model(conn)
    assert actual.sessions == expected.sessions
    assert actual.actors == expected.actors


async def _drain(projector: Projector, pool: asyncpg.Pool, total: int) -> None:
    for _ in range(50):
        if await pool.fetchval("SELECT count(*) FROM events.archive") >= total:
            return
        await projector._rebalance()
        await projector.step()
    raise AssertionError("projector did not catch up")


@PATHS
async def test_one_round_over_every_partition_is_one_transaction(redis_url, dsn, monkeypatch, path):
    counts = await _history(redis_url)
    total = sum(counts.values())
    projector, pool = await _projector(redis_url, dsn)
    commits = _count_commits(monkeypatch, projector, path)
    redis = connect(redis_url)
    pubsub = redis.pubsub()
    await pubsub.ssubscribe(*(change_channel(partition_of(s, P), s) for s in _sessions()))
    try:
        assert await projector.step() == total  # every partition's log in one round
        assert commits == [_as(path, *range(P))] and projector.rounds_committed == 1
        # the changes went out with the appends: the projector publishes nothing
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
        # every row the round wrote carries the same transaction id
        xids = set()
        for table in (
            "events.archive",
            "projection.actor_versions",
            "session.active_sessions",
            "session.state_snapshots",
        ):
            xids |= {r[0] for r in await pool.fetch(f"SELECT DISTINCT xmin::text FROM {table}")}
        xids |= {
            r[0]
            for r in await pool.fetch(
                "SELECT DISTINCT xmin::text FROM projection.checkpoints WHERE last_id <> '0-0'"
            )
        }
        assert len(xids) == 1, xids
        assert await pool.fetchval("SELECT count(DISTINCT partition) FROM events.archive") == P
        await _assert_exactly_once(redis_url, pool, total)
        # an idle round commits nothing
        assert await projector.step() == 0 and len(commits) == 1
    finally:
        await pubsub.aclose()
        await redis.aclose()
        await _close(projector, pool)


@PATHS
async def test_fencing_one_partition_mid_round_rolls_back_and_lets_only_it_go(
    redis_url, dsn, monkeypatch, path
):
    counts = await _history(redis_url)
    total = sum(counts.values())
    projector, pool = await _projector(redis_url, dsn)
    commits = _count_commits(monkeypatch, projector, path)
    victim = 2
    prepare = projector_module.prepare_batch
    fenced = []

    async def prepare_then_fence(conn, p, state, items):
        # after the round's read, before its commit: a newer owner claims the victim
        if p == victim and not fenced:
            fenced.append(
                await pool.fetchval(
                    "UPDATE projection.checkpoints SET epoch = epoch + 1 WHERE partition = $1"
                    " RETURNING epoch",
                    victim,
                )
            )
        return await prepare(conn, p, state, items)

    monkeypatch.setattr(projector_module, "prepare_batch", prepare_then_fence)
    others = [p for p in range(P) if p != victim]
    states = {p: projector.parts[p] for p in others}
    try:
        assert await projector.step() == 0
        assert fenced and commits == [_as(path, *range(P))]
        # nothing of the round was committed, not even the other partitions' checkpoints
        assert await pool.fetchval("SELECT count(*) FROM events.archive") == 0
        assert await pool.fetchval("SELECT count(*) FROM session.active_sessions") == 0
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM projection.checkpoints WHERE last_id <> '0-0'"
            )
            == 0
        )
        # only the victim was let go: its state and its lease
        assert victim not in projector.parts and victim not in projector.leases.held
        assert (await projector.store.leases.holders(ROLE)).get(victim) != projector.owner
        for p in others:
            assert projector.parts[p] is states[p]
            assert states[p].last_id == "0-0" and not states[p].cache
            assert p in projector.leases.held
        # next round: the others commit; the victim's checkpoint has not moved
        assert await projector.step() == total - counts[victim]
        heads = await _log_heads(redis_url)
        rows = {
            r["partition"]: r
            for r in await pool.fetch(
                "SELECT partition, last_id, epoch, events FROM projection.checkpoints"
            )
        }
        for p in others:
            assert rows[p]["last_id"] == heads[p] and rows[p]["events"] == counts[p]
        assert rows[victim]["last_id"] == "0-0" and rows[victim]["epoch"] == fenced[0]
        assert await pool.fetchval("SELECT count(*) FROM events.archive") == total - counts[victim]
        assert (
            await pool.fetchval("SELECT count(*) FROM events.archive WHERE partition = $1", victim)
            == 0
        )
        # the victim's new owner (here: this projector again, with the next lease epoch)
        # resumes from its checkpoint; nothing lost, nothing doubled
        await _drain(projector, pool, total)
        assert victim in projector.parts
        await _assert_exactly_once(redis_url, pool, total)
    finally:
        await _close(projector, pool)


@PATHS
async def test_an_uncertain_round_failure_lets_its_partitions_go_then_commits_them_singly(
    redis_url, dsn, monkeypatch, path
):
    counts = await _history(redis_url)
    total = sum(counts.values())
    projector, pool = await _projector(redis_url, dsn)
    commits = _count_commits(monkeypatch, projector, path)
    # the last write of the round fails (after the others, before COMMIT)
    name = "write_round" if path == "statement" else "write_actor_versions"
    write = getattr(projector_module, name)
    failures = []

    async def fail_once(*args, **kw):
        if not failures:
            failures.append(1)
            raise RuntimeError("boom")
        return await write(*args, **kw)

    monkeypatch.setattr(projector_module, name, fail_once)
    try:
        assert await projector.step() == 0  # logged, not raised
        assert failures and len(commits) == 1 and commits[0][-P:] == list(range(P))
        assert await pool.fetchval("SELECT count(*) FROM events.archive") == 0
        # uncertain outcome: every partition of the round forgotten and released
        assert not projector.parts and not projector.leases.held
        await _drain(projector, pool, total)
        # after a failed round, partitions commit one transaction each for a while
        assert sorted(commits[1:]) == [_as(path, p) for p in range(P)]
        await _assert_exactly_once(redis_url, pool, total)
    finally:
        await _close(projector, pool)


async def test_the_projector_commits_without_waiting_for_the_wal_flush(redis_url, dsn):
    """The server takes `pool_settings` (a misspelt setting would refuse every connection), and
    the projector's rounds commit with `synchronous_commit=off` (see `pool_settings`)."""
    projector, pool = await _projector(redis_url, dsn)
    try:
        conn = await projector._connection()
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await conn.fetchval("SHOW application_name") == "sessiond-projector"
    finally:
        await _close(projector, pool)


async def test_run_holds_one_connection_and_gives_it_back(redis_url, dsn):
    counts = await _history(redis_url, per_partition=2, updates=2)
    total = sum(counts.values())
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    projector = Projector(
        ProjectorConfig(
            redis_url=redis_url, database_url=dsn, partitions=P, block_ms=20, lease_ttl_ms=30_000
        ),
        open_store(redis_url, P),
        pool,
    )
    task = asyncio.create_task(projector.run())
    try:
        for _ in range(500):
            if projector.events_projected >= total:
                break
            await asyncio.sleep(0.02)
        held = projector._conn
        assert held is not None
        await asyncio.sleep(0.2)  # idle rounds keep the same connection
        assert projector._conn is held
    finally:
        projector.stop()
        await task
    assert projector._conn is None
    await asyncio.wait_for(pool.close(), 10)  # nothing left acquired
    await projector.store.aclose()
    assert projector.events_projected == total


async def test_the_loop_recovers_from_lost_redis_and_postgres_connections(redis_url, dsn):
    first = sum((await _history(redis_url)).values())
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    redis = connect(redis_url)
    projector = Projector(
        ProjectorConfig(
            redis_url=redis_url, database_url=dsn, partitions=P, block_ms=20, lease_ttl_ms=1500
        ),
        open_store(redis_url, P),
        pool,
    )
    task = asyncio.create_task(projector.run())

    async def archived(n: int) -> None:
        deadline = time.monotonic() + 30
        while await pool.fetchval("SELECT count(*) FROM events.archive") < n:
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.05)

    try:
        await archived(first)
        # both of the loop's connections drop: its PostgreSQL session and its Redis connection
        pid = projector._conn.get_server_pid()
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        clients = (await redis.execute_command("CLIENT", "LIST")).decode().splitlines()
        # the loop's reader: the connection named after the store and the projector
        ids = [c.split()[0].split("=")[1] for c in clients if f"-{projector.owner} " in c]
        assert len(ids) == 1, clients
        await redis.execute_command("CLIENT", "KILL", "ID", ids[0])
        total = first + sum((await _history(redis_url, first=1000)).values())
        await archived(total)
        await asyncio.sleep(0.3)  # nothing more arrives
        await _assert_exactly_once(redis_url, pool, total)
        assert projector._conn is not None and projector._conn.get_server_pid() != pid
    finally:
        projector.stop()
        await task
        await pool.close()
        await projector.store.aclose()
        await redis.aclose()


async def test_rounds_start_at_most_every_round_min_ms_and_share_what_arrived(redis_url, dsn):
    """An idle projector starts a round as soon as events arrive; under load, what arrives while
    the next round waits its turn (round_min_ms) is projected in that one round."""
    import msgspec

    projector, pool = await _projector(redis_url, dsn)
    projector.config = msgspec.structs.replace(projector.config, round_min_ms=300)
    try:
        first = await _history(redis_url, per_partition=1, updates=1)
        t0 = time.monotonic()
        assert await projector.step() == sum(first.values())
        assert time.monotonic() - t0 < 0.25  # no wait before the first round
        second = await _history(redis_url, per_partition=1, updates=1, first=1000)
        third = await _history(redis_url, per_partition=1, updates=1, first=2000)
        assert await projector.step() == sum(second.values()) + sum(third.values())
        assert time.monotonic() - t0 >= 0.29  # the second round waited for its turn
        await _assert_exactly_once(
            redis_url, pool, sum(first.values()) + sum(second.values()) + sum(third.values())
        )
    finally:
        await _close(projector, pool)


async def test_a_big_round_commits_each_partition_concurrently_and_fences_only_one(
    redis_url, dsn, monkeypatch
):
    """A backlog round (from CONCURRENT_FROM events) prepares and commits every partition on a
    connection of its own, concurrently; a partition fenced meanwhile is let go, the others'
    commits stand, and nothing is lost or doubled once it is claimed again."""
    counts = await _history(redis_url)
    total = sum(counts.values())
    monkeypatch.setattr(projector_module, "CONCURRENT_FROM", 2)
    projector, pool = await _projector(redis_url, dsn)
    victim = 1
    prepare = projector_module.prepare_batch
    fenced: list[int] = []
    in_flight = 0
    most = 0

    async def prepare_then_fence(conn, p, state, items):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            if p == victim and not fenced:
                fenced.append(
                    await pool.fetchval(
                        "UPDATE projection.checkpoints SET epoch = epoch + 1 WHERE partition = $1"
                        " RETURNING epoch",
                        victim,
                    )
                )
            await asyncio.sleep(0.05)  # the others are preparing meanwhile
            return await prepare(conn, p, state, items)
        finally:
            in_flight -= 1

    monkeypatch.setattr(projector_module, "prepare_batch", prepare_then_fence)
    try:
        assert await projector.step() == total - counts[victim]
        assert most > 1, "partitions were not prepared concurrently"
        assert victim not in projector.parts and victim not in projector.leases.held
        rows = {
            r["partition"]: r
            for r in await pool.fetch(
                "SELECT partition, last_id, events FROM projection.checkpoints"
            )
        }
        heads = await _log_heads(redis_url)
        for p in range(P):
            if p != victim:
                assert rows[p]["last_id"] == heads[p] and rows[p]["events"] == counts[p]
        assert rows[victim]["last_id"] == "0-0"
        await _drain(projector, pool, total)
        await _assert_exactly_once(redis_url, pool, total)
    finally:
        await _close(projector, pool)


async def test_the_lag_metrics_count_what_waits_per_partition_and_fall_to_zero(
    redis_url: str, dsn: str
) -> None:
    from infra.metrics import REGISTRY

    def lag(name: str, p: int) -> float | None:
        return REGISTRY.get_sample_value(f"sessiond_projector_lag_{name}", {"partition": str(p)})

    projector, pool = await _projector(redis_url, dsn)
    try:
        counts = await _history(redis_url)
        await asyncio.sleep(0.05)
        await projector._measure_lag()  # the first measurement counts events too
        assert {p: lag("events", p) for p in range(P)} == {p: float(n) for p, n in counts.items()}
        assert all(lag("seconds", p) > 0 for p in range(P))
        assert REGISTRY.get_sample_value("sessiond_projector_owned_partitions") == P
        events_before = REGISTRY.get_sample_value("sessiond_projector_events_total")
        rounds_before = REGISTRY.get_sample_value("sessiond_projector_batch_seconds_count")
        while await projector.step():
            pass
        await projector._measure_lag()
        assert {lag("events", p) for p in range(P)} == {0.0}
        assert {lag("seconds", p) for p in range(P)} == {0.0}
        total = sum(counts.values())
        assert REGISTRY.get_sample_value("sessiond_projector_events_total") == (
            events_before + total
        )
        assert REGISTRY.get_sample_value("sessiond_projector_batch_seconds_count") > rounds_before
    finally:
        await _close(projector, pool)
