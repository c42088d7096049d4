"""Projection benchmark, not collected by pytest: .venv/bin/python tests/bench/bench_projections.py

Prints, in one run on one Redis and one PostgreSQL (embedded, or REDIS_URL / DATABASE_URL):
  1. projector events/s on a backlog of EVENTS events over SESSIONS sessions (in-process
     projector, all partitions, batches of SESSIOND_PROJECTOR_BATCH);
  2. the raw baseline: the same rows, precomputed, written by plain asyncpg with the same
     transaction shape (checkpoint UPDATE + archive COPY + set-based upserts per batch), and the
     ratio projector / baseline (goal >= 0.5);
  3. `projections rebuild` events/s from the archive (goal >= 50,000);
  4. while RATE commands/s flow through a real `sessiond worker` and a real `sessiond
     projector`: the live push p50/p99 (command sent -> its change published by the worker's
     append) and the projection lag p50/p99 (event appended -> the projector's checkpoint in
     PostgreSQL past it, polled every 10 ms), with the machine's steal and CPU pressure.
Env knobs: EVENTS (200000), SESSIONS (10000), RATE (5000), LAG_SECONDS (10), PARTITIONS (16),
ROUNDS (2: projector and baseline alternate, the best of each is kept), ONLY=lag (part 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import msgspec  # noqa: E402

from events import session as se  # noqa: E402
from events.codec import decode_event, decode_event_envelope, encode  # noqa: E402
from events.errors import DomainError  # noqa: E402
from events.ids import session_actor  # noqa: E402
from infra.gctune import tune_gc  # noqa: E402
from infra.store import build_envelope, open_store  # noqa: E402
from infra.store.layout import change_channel, command_stream, partition_log  # noqa: E402
from infra.store.routing import partition_of  # noqa: E402
from projections.changes import decode_changes  # noqa: E402
from projections.migrate import migrate  # noqa: E402
from projections.model import Model, diff, session_of  # noqa: E402
from projections.projector import Projector, ProjectorConfig, pool_settings  # noqa: E402
from projections.rebuild import rebuild  # noqa: E402
from projections.store import (  # noqa: E402
    archive_rows,
    write_actor_versions,
    write_archive,
    write_changes,
)
from tests.actorkit import LocalActors, random_command  # noqa: E402
from tests.bench.machine import MachineSample  # noqa: E402
from tests.rediskit import connect  # noqa: E402

EVENTS = int(os.environ.get("EVENTS", 200_000))
SESSIONS = int(os.environ.get("SESSIONS", 10_000))
RATE = int(os.environ.get("RATE", 5000))
LAG_SECONDS = float(os.environ.get("LAG_SECONDS", 10))
P = int(os.environ.get("PARTITIONS", 16))
BATCH = int(os.environ.get("SESSIOND_PROJECTOR_BATCH", 2000))
ROUNDS = int(os.environ.get("ROUNDS", 2))


def say(msg: str) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{msg}    [load {load}]", flush=True)


async def fresh_db(admin_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = admin_dsn.partition("?")
    base = base.rsplit("/", 1)[0] + f"/{name}"
    dsn = base + (f"?{query}" if query else "")
    await migrate(dsn)
    return dsn


async def make_backlog(redis_url: str) -> int:
    redis = connect(redis_url)
    await redis.flushall()
    await redis.aclose()
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(SESSIONS)]
    now = 1_800_000_000_000
    # every session starts, then random traffic until EVENTS events exist
    for sid in ids:
        now += 1
        actors.send_nowait(
            session_actor(sid),
            se.CreateSession(at=now, user_id=f"user-{sid[:4]}", session_id=sid, device_id="dev-0"),
        )
    while actors.appended < EVENTS:
        now += 1
        aid, command = random_command(rng, actors, ids, now)
        try:
            actors.send_nowait(aid, command)
        except DomainError:
            pass
        if actors.pending >= 2000:
            await actors.flush()
    await actors.flush()
    await actors.close()
    await store.aclose()
    return actors.appended


async def bench_projector(redis_url: str, dsn: str, total: int) -> float:
    store = open_store(redis_url, P)
    config = ProjectorConfig(
        redis_url=redis_url,
        database_url=dsn,
        partitions=P,
        batch_size=BATCH,
        lease_ttl_ms=30_000,
        pool_size=4,
    )
    # the server settings `sessiond projector` gives its connections (synchronous_commit=off)
    pool = await asyncpg.create_pool(
        dsn, min_size=2, max_size=5, server_settings=pool_settings(config)
    )
    tune_gc()  # as `sessiond projector` does at start-up
    projector = Projector(config, store, pool)
    start = time.perf_counter()
    task = asyncio.create_task(projector.run())
    while projector.events_projected < total:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    elapsed = time.perf_counter() - start
    projector.stop()
    await task
    assert await pool.fetchval("SELECT count(*) FROM events.archive") == total
    await pool.close()
    await store.aclose()
    return total / elapsed


async def precompute_batches(redis_url: str) -> list[tuple[int, str, str, object]]:
    """The projector's batches (per partition, BATCH events), projected in memory."""
    redis = connect(redis_url)
    batches = []
    for p in range(P):
        model = Model()
        last = "0-0"
        while True:
            reply = await redis.xread({partition_log(p): last}, count=BATCH)
            if not reply:
                break
            entries = reply[0][1]
            items = []
            for entry_id, fields in entries:
                env = decode_event_envelope(fields[b"e"])
                items.append((entry_id.decode(), env, decode_event(env.data, env.type)))
            touched: dict[str, object] = {}
            actors = {}
            for _, env, ev in items:
                sid = session_of(env, ev, model.simulator_sessions)
                if sid is not None and sid not in touched:
                    touched[sid] = model.sessions.get(sid)
                model.apply(env, ev)
                actors[env.actor_id] = model.actors[env.actor_id]
            changes = diff((b, model.sessions.get(s)) for s, b in touched.items())
            batches.append(
                (p, last, items[-1][0], (archive_rows(items), changes, list(actors.values())))
            )
            last = items[-1][0]
    await redis.aclose()
    return batches


async def bench_baseline(dsn: str, batches: list, total: int) -> float:
    # the projector's server settings too: the ratio compares code, not commit durability
    settings = pool_settings(ProjectorConfig(redis_url="", database_url=dsn))
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4, server_settings=settings)
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO projection.checkpoints (name, partition) VALUES ('live', $1)",
            [(p,) for p in range(P)],
        )
    by_p: dict[int, list] = {}
    for b in batches:
        by_p.setdefault(b[0], []).append(b)

    async def write(batch) -> None:
        p, from_id, to_id, (archive, changes, actors) = batch
        async with pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE projection.checkpoints SET last_id = $3, epoch = 1,"
                " events = events + $4, updated_at = now()"
                " WHERE name = $1 AND partition = $2 AND epoch <= 1 AND last_id = $5",
                "live",
                p,
                to_id,
                len(archive),
                from_id,
            )
            assert status == "UPDATE 1"
            await write_archive(conn, archive)
            await write_changes(conn, changes)
            await write_actor_versions(conn, actors)

    start = time.perf_counter()
    # like the projector: one batch per partition at a time, partitions concurrently (4 conns)
    rounds = max(len(v) for v in by_p.values())
    for i in range(rounds):
        await asyncio.gather(*(write(v[i]) for v in by_p.values() if i < len(v)))
    elapsed = time.perf_counter() - start
    assert await pool.fetchval("SELECT count(*) FROM events.archive") == total
    await pool.close()
    return total / elapsed


class Lag(msgspec.Struct, frozen=True):
    """What part 4 measured, in ms: `push_*` the live push (command sent -> its change published
    by the worker's append: what a device waits for), `projection_*` the projection lag (event
    appended -> the projector's checkpoint past it in PostgreSQL: what the tables wait for)."""

    offered: float
    pushes: int
    push_p50: float
    push_p99: float
    projected: int
    projection_p50: float
    projection_p99: float
    pressure: str


async def _watch_checkpoints(
    dsn: str, seen: list[tuple[float, int, tuple[int, int]]], every_s: float = 0.01
) -> None:
    """Poll the projector's checkpoints every `every_s`: (time seen, partition, last id)."""
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            rows = await conn.fetch("SELECT partition, last_id FROM projection.checkpoints")
            now = time.time() * 1000
            for r in rows:
                ms, _, n = r["last_id"].partition("-")
                seen.append((now, r["partition"], (int(ms), int(n or 0))))
            await asyncio.sleep(every_s)
    finally:
        await conn.close()


def _projection_lags(
    appended: dict[int, list[tuple[int, int]]], seen: list[tuple[float, int, tuple[int, int]]]
) -> list[float]:
    """Per event (its partition log id, whose first part is Redis' clock when it was appended),
    the time until a polled checkpoint of its partition was at or past it."""
    lags: list[float] = []
    by_partition: dict[int, list[tuple[float, tuple[int, int]]]] = {}
    for at, part, last in seen:
        by_partition.setdefault(part, []).append((at, last))
    for part, ids in appended.items():
        polls = by_partition.get(part, [])
        i = 0
        for entry in sorted(ids):
            while i < len(polls) and polls[i][1] < entry:
                i += 1
            if i == len(polls):
                break  # never projected while we watched
            lags.append(polls[i][0] - entry[0])
    return sorted(lags)


async def bench_lag(redis_url: str, dsn: str) -> Lag:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": dsn, "SESSIOND_PARTITIONS": str(P)}
    redis = connect(redis_url)
    await redis.flushall()
    logs = Path(tempfile.mkdtemp(prefix="bench-proj-"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "infra.cli", role],
            cwd=ROOT,
            env=env,
            stdout=(logs / f"{role}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for role in ("worker", "projector")
    ]
    sids = [str(uuid.uuid4()) for _ in range(1000)]
    pushes: list[float] = []
    pubsub = redis.pubsub()
    await pubsub.ssubscribe(*(change_channel(partition_of(sid, P), sid) for sid in sids))

    async def listen() -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None:
                continue
            now = time.time() * 1000
            for change in decode_changes(msg["data"]):
                if change.type == "StateChanged":
                    pushes.append(now - change.ts)

    checkpoints: list[tuple[float, int, tuple[int, int]]] = []
    listener = asyncio.create_task(listen())
    watcher: asyncio.Task | None = None
    try:
        await asyncio.sleep(2.0)  # leases
        pipe = redis.pipeline(transaction=False)
        for sid in sids:
            e = build_envelope(
                session_actor(sid),
                sid,
                se.CreateSession(at=int(time.time() * 1000), user_id="u", session_id=sid),
                partitions=P,
            )
            pipe.xadd(command_stream(e.partition), {"c": encode(e)})
        await pipe.execute()
        await asyncio.sleep(3.0)
        pushes.clear()
        watcher = asyncio.create_task(_watch_checkpoints(dsn, checkpoints))
        started_at = time.time() * 1000
        machine = MachineSample.now()
        sent = 0
        start = time.perf_counter()
        tick = 0.01
        per_tick = max(1, int(RATE * tick))
        rng = random.Random(1)
        while time.perf_counter() - start < LAG_SECONDS:
            pipe = redis.pipeline(transaction=False)
            now = int(time.time() * 1000)
            for _ in range(per_tick):
                sid = rng.choice(sids)
                e = build_envelope(
                    session_actor(sid),
                    sid,
                    se.ApplyStateChanges(at=now, user_id="u", changes={"k": rng.randrange(1000)}),
                    partitions=P,
                )
                pipe.xadd(command_stream(e.partition), {"c": encode(e)})
            await pipe.execute()
            sent += per_tick
            target = start + sent / RATE
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        offered = sent / (time.perf_counter() - start)
        pressure = str(MachineSample.now().pressure(machine))
        await asyncio.sleep(5.0)  # drain
    finally:
        listener.cancel()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        await pubsub.aclose()
        await redis.aclose()
    if len(pushes) < 100:
        raise RuntimeError(f"too few changes pushed ({len(pushes)}); logs in {logs}")
    redis = connect(redis_url)
    appended: dict[int, list[tuple[int, int]]] = {}
    for p in range(P):
        for entry_id, fields in await redis.xrange(partition_log(p)):
            ms, _, n = entry_id.decode().partition("-")
            if int(ms) >= started_at and decode_event_envelope(fields[b"e"]).type == "StateChanged":
                appended.setdefault(p, []).append((int(ms), int(n)))
    await redis.aclose()
    projected = _projection_lags(appended, checkpoints)
    if len(projected) < 100:
        raise RuntimeError(f"too few events projected ({len(projected)}); logs in {logs}")
    pushes.sort()
    return Lag(
        offered=offered,
        pushes=len(pushes),
        push_p50=statistics.median(pushes),
        push_p99=pushes[int(len(pushes) * 0.99)],
        projected=len(projected),
        projection_p50=statistics.median(projected),
        projection_p99=projected[int(len(projected) * 0.99)],
        pressure=pressure,
    )


async def main() -> None:
    from infra.embedded import start_postgres, start_redis

    tmp = Path(tempfile.mkdtemp(prefix="bench-projections-"))
    tmp.chmod(0o755)
    redis_server = pg_server = None
    redis_url = os.environ.get("REDIS_URL")
    admin = os.environ.get("DATABASE_URL")
    try:
        if not redis_url:
            redis_server = start_redis(tmp / "redis", appendfsync="everysec")
            redis_url = redis_server.url
        if not admin:
            pg_server = start_postgres(tmp / "pg", fsync=True)
            admin = pg_server.url
        if os.environ.get("ONLY") == "lag":
            await run_lag(redis_url, admin)
            return
        say(
            f"backlog: {EVENTS:,} events over {SESSIONS:,} sessions, {P} partitions,"
            f" batches of {BATCH}"
        )
        t = time.perf_counter()
        total = await make_backlog(redis_url)
        say(f"  generated {total:,} events in {time.perf_counter() - t:.1f} s")

        # the machine is shared: alternate projector and baseline ROUNDS times, keep the best
        batches = await precompute_batches(redis_url)
        rates, bases = [], []
        for i in range(ROUNDS):
            dsn = await fresh_db(admin, f"bench_projector_{i}")
            rates.append(await bench_projector(redis_url, dsn, total))
            say(f"projector round {i + 1}: {rates[-1]:,.0f} events/s")
            dsn_raw = await fresh_db(admin, f"bench_baseline_{i}")
            bases.append(await bench_baseline(dsn_raw, batches, total))
            say(
                f"raw asyncpg baseline round {i + 1} (same rows, same transactions):"
                f" {bases[-1]:,.0f} events/s"
            )
        rate, base = max(rates), max(bases)
        say(
            f"projector (best of {ROUNDS}): {rate:,.0f} events/s; baseline (best of {ROUNDS}):"
            f" {base:,.0f} events/s"
        )
        say(
            f"ratio projector / baseline: {rate / base:.2f} (goal >= 0.5); per round:"
            f" {', '.join(f'{r / b:.2f}' for r, b in zip(rates, bases, strict=True))}"
        )

        runs = []
        for i in range(ROUNDS):
            runs.append(await rebuild(dsn, progress=None))
            say(
                f"projections rebuild round {i + 1}: {runs[-1].events:,} events in"
                f" {runs[-1].seconds:.2f} s = {runs[-1].rate:,.0f} events/s"
            )
        say(
            f"projections rebuild (best of {ROUNDS}): {max(r.rate for r in runs):,.0f}"
            " events/s (goal >= 50,000)"
        )

        await run_lag(redis_url, admin)
    finally:
        if redis_server is not None:
            redis_server.stop()
        if pg_server is not None:
            pg_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def run_lag(redis_url: str, admin: str) -> None:
    dsn_lag = await fresh_db(admin, "bench_lag")
    lag = await bench_lag(redis_url, dsn_lag)
    say(f"lag at {RATE:,} commands/s offered ({lag.offered:,.0f} sent) [{lag.pressure}]:")
    say(
        f"  live push (command sent -> its change published by the worker's append), {lag.pushes:,}"
        f" changes: p50 {lag.push_p50:.1f} ms, p99 {lag.push_p99:.1f} ms"
    )
    say(
        f"  projection lag (event appended -> the projector's checkpoint past it, polled every"
        f" 10 ms), {lag.projected:,} events: p50 {lag.projection_p50:.1f} ms,"
        f" p99 {lag.projection_p99:.1f} ms"
    )


if __name__ == "__main__":
    try:  # what `sessiond projector` runs on (infra.cli.run_async)
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
