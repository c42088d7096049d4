"""Real processes: `sessiond worker` + `sessiond projector` subprocesses, commands through the
store's command sender; and a projector frozen with SIGSTOP whose successor takes over, exactly
once, on a single node and on a 3-master cluster."""

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
from events.errors import DomainError
from infra.store import open_store, partition_of
from infra.store.layout import change_channel
from projections.changes import decode_changes
from projections.migrate import migrate
from projections.store import load_model
from projections.verify import fold_logs, log_length
from tests.actorkit import LocalActors, random_command
from tests.rediskit import connect

pytestmark = pytest.mark.anyio
P = 4
ROOT = Path(__file__).resolve().parents[2]


def _spawn(role: str, redis_url: str, dsn: str, log: Path, **extra: str) -> subprocess.Popen:
    return _start(["infra.cli", role], redis_url, dsn, log, **extra)


def _spawn_slow_projector(
    redis_url: str, dsn: str, log: Path, commit_delay_ms: int, **extra: str
) -> subprocess.Popen:
    """A projector whose rounds wait `commit_delay_ms` inside their transaction."""
    return _start(
        ["tests.integration.faulty_projector", "--commit-delay-ms", str(commit_delay_ms)],
        redis_url,
        dsn,
        log,
        **extra,
    )


def _start(
    module: list[str], redis_url: str, dsn: str, log: Path, **extra: str
) -> subprocess.Popen:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": dsn,
        "SESSIOND_PARTITIONS": str(P),
        "LEASE_TTL_MS": "1000",
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", *module],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _caught_up(store, conn: asyncpg.Connection, timeout: float, log: Path) -> int:
    deadline = time.monotonic() + timeout
    while True:
        total = await log_length(store)
        archived = await conn.fetchval("SELECT count(*) FROM events.archive")
        if total and archived == total:
            return total
        assert time.monotonic() < deadline, (archived, total, log.read_text()[-3000:])
        await asyncio.sleep(0.1)


async def _assert_equal_fold(store, conn: asyncpg.Connection) -> None:
    expected = await fold_logs(store)
    actual = await load_model(conn)
    assert actual.sessions == expected.sessions
    assert actual.actors == expected.actors
    assert await conn.fetchval("SELECT count(*) FROM events.archive") == await log_length(store)


async def test_worker_and_projector_processes_project_every_command(
    redis_url, database_url, tmp_path
):
    await migrate(database_url)
    log = tmp_path / "procs.log"
    procs = [
        _spawn("worker", redis_url, database_url, log),
        _spawn("projector", redis_url, database_url, log),
    ]
    redis = connect(redis_url)
    conn = await asyncpg.connect(database_url)
    store = open_store(redis_url, P)
    bus = store.commands
    try:
        sids = [str(uuid.uuid4()) for _ in range(12)]
        watched = sids[0]
        pubsub = redis.pubsub()
        await pubsub.ssubscribe(change_channel(partition_of(watched, P), watched))
        now = int(time.time() * 1000)
        sims = {}

        async def send(actor: str, sid: str, command, *, until_ok: bool = False) -> None:
            deadline = time.monotonic() + 30
            while True:
                outcome = await bus.send(actor, sid, command, timeout=15)
                assert outcome is not None, actor
                if outcome.ok or not until_ok:
                    return
                # e.g. the simulator's CreateSimulator (a policy) has not run yet
                assert time.monotonic() < deadline, outcome
                await asyncio.sleep(0.1)

        for i, sid in enumerate(sids):
            user = f"user-{i % 3}"
            aid = f"session:{sid}"
            await send(
                aid,
                sid,
                se.CreateSession(
                    at=now, user_id=user, session_id=sid, device_id="d1", pod_name="gw-a"
                ),
            )
            await send(
                aid,
                sid,
                se.JoinDevice(
                    at=now + 1, user_id=user, device_id="d1", connection_id="c1", device_type="web"
                ),
            )
            await send(
                aid,
                sid,
                se.ReplaceState(
                    at=now + 2, user_id=user, session_id=sid, state={"step": i}, device_id="d1"
                ),
            )
            await send(
                aid, sid, se.ApplyStateChanges(at=now + 3, user_id=user, changes={"mood": "calm"})
            )
            if i % 2 == 0:
                sims[sid] = str(uuid.uuid4())
                await send(
                    aid,
                    sid,
                    se.ReserveSimulator(
                        at=now + 4,
                        user_id=user,
                        simulator_id=sims[sid],
                        initial_symbols=["AAPL", "GOOG"],
                    ),
                )
            if i % 4 == 3:
                await send(aid, sid, se.EndSession(at=now + 5, user_id=user))
        for sid, sim in sims.items():
            await send(
                f"simulator:{sim}",
                sid,
                si.RecordProvisioned(at=now + 6, endpoint=f"http://{sim}"),
                until_ok=True,
            )
            await send(f"simulator:{sim}", sid, si.RecordHeartbeat(at=now + 7), until_ok=True)
        running_expected = sum(1 for i, sid in enumerate(sids) if sid in sims and i % 4 != 3)
        # the status reports travel back to the sessions as policy commands: wait for them
        deadline = time.monotonic() + 60
        while (
            await conn.fetchval(
                "SELECT count(*) FROM session.session_metadata"
                " WHERE metadata->>'simulator_status' = 'RUNNING'"
            )
            < running_expected
        ):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        await _caught_up(store, conn, 60, log)
        await _assert_equal_fold(store, conn)

        rows = await conn.fetch(
            "SELECT s.session_id, m.metadata->>'simulator_id' AS sim,"
            " m.metadata->>'simulator_status' AS st FROM session.active_sessions s"
            " JOIN session.session_metadata m ON s.session_id = m.session_id"
            " WHERE s.user_id = 'user-0' AND s.expires_at > NOW()"
        )
        expected = {
            (sid, sims.get(sid), "RUNNING" if sid in sims else None)
            for i, sid in enumerate(sids)
            if i % 3 == 0 and i % 4 != 3
        }
        assert {(r["session_id"], r["sim"], r["st"]) for r in rows} == expected
        running = await conn.fetchval(
            "SELECT count(*) FROM simulator.instances WHERE status = 'RUNNING'"
        )
        assert running == running_expected

        got = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if msg:
                got.extend(decode_changes(msg["data"]))
            elif got:
                break
        versions = [c.version for c in got]
        assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 6
        state = msgspec.json.decode(
            await conn.fetchval(
                "SELECT state FROM session.state_snapshots WHERE session_id = $1", watched
            )
        )
        assert state == {"step": 0, "mood": "calm"}
        await pubsub.aclose()
    finally:
        await store.aclose()
        _stop(*procs)
        await conn.close()
        await redis.aclose()


async def test_a_sigstopped_projector_is_fenced_and_its_successor_finishes(
    any_redis_url, database_url, tmp_path
):
    await migrate(database_url)
    store = open_store(any_redis_url, P)
    actors = LocalActors(store)
    rng = random.Random(9)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(60)]
    now = 1_800_000_000_000

    async def produce(n: int) -> None:
        nonlocal now
        for _ in range(n):
            now += 3
            aid, command = random_command(rng, actors, ids, now)
            try:
                actors.send_nowait(aid, command)
            except DomainError:
                pass
        await actors.flush()

    await produce(2500)
    conn = await asyncpg.connect(database_url)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    # a 2 s lease (not 1 s): once A wakes up it takes back half the partitions, and with
    # renewals every ~0.33 s a CPU-starved machine made the leases churn until the test timed out
    lease = {"LEASE_TTL_MS": "2000"}
    slow = {"SESSIOND_PROJECTOR_BATCH": "40", **lease}
    a = _spawn_slow_projector(any_redis_url, database_url, log_a, 150, **slow)
    b = None
    try:
        deadline = time.monotonic() + 60
        while await conn.fetchval("SELECT count(*) FROM events.archive") < 200:
            assert time.monotonic() < deadline and a.poll() is None, log_a.read_text()
            await asyncio.sleep(0.05)
        a.send_signal(signal.SIGSTOP)  # frozen, most likely inside a transaction
        frozen_at = await conn.fetchval("SELECT count(*) FROM events.archive")
        b = _spawn("projector", any_redis_url, database_url, log_b, **lease)
        await _caught_up(store, conn, 60, log_b)
        assert frozen_at < await log_length(store)
        a.send_signal(signal.SIGCONT)  # A wakes up: every write it attempts must be refused
        await asyncio.sleep(2.0)
        await produce(500)
        await _caught_up(store, conn, 60, log_b)
        await asyncio.sleep(1.0)
        await _assert_equal_fold(store, conn)
        epochs = await conn.fetch("SELECT partition, epoch FROM projection.checkpoints")
        assert all(r["epoch"] >= 2 for r in epochs)  # every partition changed hands
    finally:
        _stop(*(p for p in (a, b) if p is not None))
        await conn.close()
        await actors.close()
        await store.aclose()
