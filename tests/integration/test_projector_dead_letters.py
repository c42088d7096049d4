"""One event the projector cannot project never stops its partition (issue 15, item 1b).

Poison goes straight into the stream, below the gateway (which refuses it at the edge): a real
event envelope appended to the actor's stream and the partition log exactly as the worker
appends it. The projector must find that one event in its batch, record it in
`projection.dead_letters` (with the raw entry), count it, say so at error level, and project
everything else exactly once, another user's session in the same partition included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid

import asyncpg
import msgspec
import pytest

import projections.projector as projector_module
from events import session as se
from events.codec import encode, type_name
from events.envelope import EventEnvelope
from infra.metrics import REGISTRY
from infra.store import open_store
from infra.store.layout import event_stream, partition_log
from infra.store.routing import partition_of
from projections.dead_letters import dead_letter_keys, dead_letter_summary
from projections.migrate import migrate
from projections.projector import CHECKPOINT_NAME, Projector, ProjectorConfig, pool_settings
from projections.store import load_model
from projections.verify import fold_logs
from tests.actorkit import LocalActors
from tests.integration.gwstack import ROOT
from tests.rediskit import connect

pytestmark = pytest.mark.anyio

P = 4
VICTIM = 1  # the partition the poison goes to
NOW = 1_800_000_000_000


@pytest.fixture
async def dsn(database_url: str) -> str:
    await migrate(database_url)
    return database_url


def _session_in(partition: int, salt: int) -> str:
    n = salt * 10_007
    while partition_of(sid := str(uuid.UUID(int=n + 1)), P) != partition:
        n += 1
    return sid


async def _append_raw(redis, partition: int, actor_id: str, version: int, body: bytes) -> str:
    """Append one entry to the actor's stream and the partition log, as the worker does."""
    await redis.xadd(event_stream(partition, actor_id), {"e": body}, id=f"{version}-0")
    entry_id = await redis.xadd(partition_log(partition), {"e": body})
    return entry_id.decode()


def _envelope(actor_id: str, version: int, partition: int, event) -> bytes:
    cid = uuid.uuid4().hex
    return encode(
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


async def _history_with_poison(redis_url: str, poison: str) -> dict:
    """Sessions in every partition; in VICTIM: a session whose second event is `poison`
    ("nul": a state key with U+0000, "garbage": bytes that are no envelope), then another
    user's session created after it. Returns what the test checks."""
    redis = connect(redis_url)
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    for i, p in enumerate(list(range(P)) * 2):
        sid = _session_in(p, 100 + i)
        actors.send_nowait(
            f"session:{sid}", se.CreateSession(at=NOW, user_id=f"u{i}", session_id=sid)
        )
        actors.send_nowait(
            f"session:{sid}", se.ApplyStateChanges(at=NOW + 1, user_id=f"u{i}", changes={"n": i})
        )
    await actors.flush()
    bad_sid = _session_in(VICTIM, 7)
    actor = f"session:{bad_sid}"
    actors.send_nowait(actor, se.CreateSession(at=NOW, user_id="mallory", session_id=bad_sid))
    await actors.flush()
    if poison == "nul":
        body = _envelope(
            actor,
            2,
            VICTIM,
            se.StateChanged(at=NOW + 2, changes={"a\u0000b": 1}, deleted_keys=[], state_version=1),
        )
    else:
        body = b"\xc1 not msgpack"
    poison_id = await _append_raw(redis, VICTIM, actor, 2, body)
    good_sid = _session_in(VICTIM, 9)
    actors.send_nowait(
        f"session:{good_sid}", se.CreateSession(at=NOW + 3, user_id="alice", session_id=good_sid)
    )
    actors.send_nowait(
        f"session:{good_sid}",
        se.ApplyStateChanges(at=NOW + 4, user_id="alice", changes={"theme": "dark"}),
    )
    await actors.flush()
    total = sum([await redis.xlen(partition_log(p)) for p in range(P)])
    await actors.close()
    await store.aclose()
    await redis.aclose()
    return {
        "poison_id": poison_id,
        "body": body,
        "bad_actor": actor,
        "good": good_sid,
        "total": total,
    }


async def _projector(redis_url: str, dsn: str) -> tuple[Projector, asyncpg.Pool]:
    config = ProjectorConfig(
        redis_url=redis_url,
        database_url=dsn,
        partitions=P,
        batch_size=1000,
        block_ms=50,
        lease_ttl_ms=30_000,
    )
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=P + 1, server_settings=pool_settings(config)
    )
    projector = Projector(config, open_store(redis_url, P), pool)
    await projector._rebalance()
    assert sorted(projector.parts) == list(range(P))
    return projector, pool


async def _caught_up(projector: Projector, pool: asyncpg.Pool, redis_url: str) -> None:
    """Rounds until every checkpoint is at its log's head (bounded)."""
    redis = connect(redis_url)
    try:
        heads = {
            p: (await redis.xrevrange(partition_log(p), count=1))[0][0].decode() for p in range(P)
        }
    finally:
        await redis.aclose()
    for _ in range(20):
        await projector.step()
        rows = await pool.fetch("SELECT partition, last_id FROM projection.checkpoints")
        if {r["partition"]: r["last_id"] for r in rows} == heads:
            return
    raise AssertionError(f"not caught up: {rows} vs {heads}")


def _dead_letters_counted(partition: int) -> float:
    return (
        REGISTRY.get_sample_value(
            "sessiond_projector_dead_letters_total", {"partition": str(partition)}
        )
        or 0.0
    )


@pytest.mark.parametrize("path", ["statement", "transaction", "concurrent"])
async def test_an_event_postgresql_refuses_is_dead_lettered_and_the_partition_moves_on(
    redis_url, dsn, monkeypatch, caplog, path
):
    history = await _history_with_poison(redis_url, "nul")
    if path == "concurrent":  # a backlog round: each partition on a connection of its own
        monkeypatch.setattr(projector_module, "CONCURRENT_FROM", 2)
    projector, pool = await _projector(redis_url, dsn)
    if path == "transaction":  # a hook before COMMIT: the round goes as a transaction block

        async def nothing() -> None:
            return None

        projector._before_commit = nothing
    counted = _dead_letters_counted(VICTIM)
    caplog.set_level(logging.WARNING, logger="sessiond.projector")
    try:
        await _caught_up(projector, pool, redis_url)
        # the one event is recorded, with what it was and why, and its raw bytes
        rows = await pool.fetch("SELECT * FROM projection.dead_letters")
        assert len(rows) == 1, rows
        dead = rows[0]
        assert (dead["name"], dead["partition"], dead["log_id"]) == (
            CHECKPOINT_NAME,
            VICTIM,
            history["poison_id"],
        )
        assert (dead["actor_id"], dead["version"], dead["type"]) == (
            history["bad_actor"],
            2,
            "StateChanged",
        )
        assert "Unicode" in dead["error"] or "0x00" in dead["error"], dead["error"]
        assert bytes(dead["raw"]) == history["body"]
        assert _dead_letters_counted(VICTIM) == counted + 1
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(
            "dead_letters" in r.getMessage() and history["poison_id"] in r.getMessage()
            for r in errors
        ), [r.getMessage() for r in caplog.records]
        # another user's session in the same partition, created after the poison, is projected
        state = await pool.fetchval(
            "SELECT state::text FROM session.state_snapshots WHERE session_id = $1", history["good"]
        )
        assert json.loads(state) == {"theme": "dark"}
        # everything else exactly once: the archive holds every entry but the poison, and the
        # tables equal the fold of the log without it
        assert await pool.fetchval("SELECT count(*) FROM events.archive") == history["total"] - 1
        assert (
            await pool.fetchval("SELECT count(DISTINCT (actor_id, version)) FROM events.archive")
            == history["total"] - 1
        )
        skip = await dead_letter_keys(pool, CHECKPOINT_NAME)
        assert skip == {(VICTIM, history["poison_id"])}
        async with pool.acquire() as conn:
            actual = await load_model(conn)
        expected = await fold_logs(projector.store, skip)
        assert actual.sessions == expected.sessions
        assert actual.actors == expected.actors
        summary = await dead_letter_summary(pool, CHECKPOINT_NAME)
        assert summary["total"] == 1 and summary["per_partition"] == {VICTIM: 1}
        assert summary["latest"][0]["log_id"] == history["poison_id"]
        # and the partition keeps going: a later event of the same partition is projected
        actors = LocalActors(projector.store)
        later = _session_in(VICTIM, 11)
        actors.send_nowait(
            f"session:{later}", se.CreateSession(at=NOW + 9, user_id="bob", session_id=later)
        )
        await actors.flush()
        await actors.close()
        await _caught_up(projector, pool, redis_url)
        assert (
            await pool.fetchval(
                "SELECT user_id FROM session.active_sessions WHERE session_id = $1", later
            )
            == "bob"
        )
        assert projector.dead_letters == 1 and sorted(projector.parts) == list(range(P))
    finally:
        await projector.aclose()
        await pool.close()
        await projector.store.aclose()


async def test_an_entry_that_does_not_decode_is_dead_lettered_with_its_raw_bytes(redis_url, dsn):
    history = await _history_with_poison(redis_url, "garbage")
    projector, pool = await _projector(redis_url, dsn)
    try:
        await _caught_up(projector, pool, redis_url)
        dead = await pool.fetchrow("SELECT * FROM projection.dead_letters")
        assert dead["log_id"] == history["poison_id"] and dead["partition"] == VICTIM
        assert (dead["actor_id"], dead["version"], dead["type"]) == ("", 0, "")
        assert bytes(dead["raw"]) == history["body"]
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM session.state_snapshots WHERE session_id = $1",
                history["good"],
            )
            == 1
        )
        assert await pool.fetchval("SELECT count(*) FROM events.archive") == history["total"] - 1
    finally:
        await projector.aclose()
        await pool.close()
        await projector.store.aclose()


async def test_a_refusal_that_is_not_one_events_fault_dead_letters_nothing(redis_url, dsn):
    """A table the projector writes is missing: every event would be refused alike. Nothing is
    dead-lettered, nothing is skipped; once the table is back, everything is projected."""
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    for i in range(8):
        sid = _session_in(i % P, 300 + i)
        actors.send_nowait(f"session:{sid}", se.CreateSession(at=NOW, user_id="u", session_id=sid))
        actors.send_nowait(
            f"session:{sid}", se.ApplyStateChanges(at=NOW + 1, user_id="u", changes={"k": i})
        )
    await actors.flush()
    await actors.close()
    await store.aclose()
    projector, pool = await _projector(redis_url, dsn)
    await pool.execute("ALTER TABLE session.state_snapshots RENAME TO state_snapshots_gone")
    try:
        for _ in range(3):
            with pytest.raises(asyncpg.UndefinedTableError):
                await projector.step()
            await projector._rebalance()  # the uncertain round let its partitions go
        assert await pool.fetchval("SELECT count(*) FROM projection.dead_letters") == 0
        assert await pool.fetchval("SELECT count(*) FROM events.archive") == 0
        await pool.execute("ALTER TABLE session.state_snapshots_gone RENAME TO state_snapshots")
        deadline = time.monotonic() + 10
        while await pool.fetchval("SELECT count(*) FROM session.state_snapshots") < 8:
            assert time.monotonic() < deadline
            await projector._rebalance()
            await projector.step()
        assert await pool.fetchval("SELECT count(*) FROM projection.dead_letters") == 0
        assert await pool.fetchval("SELECT count(*) FROM events.archive") == 16
    finally:
        await projector.aclose()
        await pool.close()
        await projector.store.aclose()


async def test_projections_status_and_verify_report_the_dead_letters(redis_url, dsn):
    history = await _history_with_poison(redis_url, "nul")
    projector, pool = await _projector(redis_url, dsn)
    try:
        await _caught_up(projector, pool, redis_url)
    finally:
        await projector.aclose()
        await pool.close()
        await projector.store.aclose()
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": dsn, "SESSIOND_PARTITIONS": str(P)}

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
    assert status.returncode == 0, status.stderr
    lines = [json.loads(line) for line in status.stdout.splitlines()]
    parts = {r["partition"]: r for r in lines if r["kind"] == "partition"}
    assert {p: r["dead_letters"] for p, r in parts.items()} == {
        p: int(p == VICTIM) for p in range(P)
    }
    assert all(r["events_behind"] == 0 for r in parts.values())
    [letter] = [r for r in lines if r["kind"] == "dead_letter"]
    assert (
        letter["partition"],
        letter["log_id"],
        letter["actor_id"],
        letter["version"],
        letter["type"],
    ) == (VICTIM, history["poison_id"], history["bad_actor"], 2, "StateChanged")
    table = await asyncio.to_thread(cli, "status")
    assert table.returncode == 0, table.stderr
    assert f"dead letters: 1 (partition {VICTIM}: 1)" in table.stdout
    assert history["poison_id"] in table.stdout and history["bad_actor"] in table.stdout
    # verify: the tables equal the fold of the log without the dead letter, which it reports
    verify = await asyncio.to_thread(cli, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] is True and report["dead_letters"] == 1
    assert "dead-lettered" in verify.stderr and "Traceback" not in verify.stderr
