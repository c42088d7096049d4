"""`sessiond projections rebuild`: the read models again from `events.archive`, then swapped in.

1. Under a brief lock on `projection.checkpoints` (which every projector transaction updates
   first, so no projector transaction is in flight), note the archive's last `seq`: every row at
   or below it is committed.
2. Without any lock: fold the archive up to there through `projections.model` (the very code the
   live projector runs) and COPY the resulting rows into fresh tables in the schema `rebuild`
   (same columns, defaults, constraints, indexes and cascading keys as the live ones).
3. In one transaction, holding the checkpoints lock again (projectors wait, nothing is lost):
   fold the events archived since step 1 into the fresh tables, drop the live tables and move the
   fresh ones into their schemas under the live names (indexes renamed to the live names).
   Projectors then continue on the new tables as if nothing happened.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from events.codec import AnyEvent
from events.simulator import SimulatorRequested
from projections.model import Model, RowChanges, diff, to_datetime
from projections.store import (
    Tables,
    load_sessions,
    simulator_sessions,
    write_actor_versions,
    write_changes,
)

__all__ = ["PROJECTIONS", "RebuildStats", "rebuild"]

REBUILD_SCHEMA = "rebuild"

#: projection name -> the live tables it owns (children after their parent).
PROJECTIONS: dict[str, list[str]] = {
    "sessions": [
        "session.active_sessions",
        "session.session_metadata",
        "session.devices",
        "session.state_snapshots",
        "session.handoffs",
        "simulator.instances",
    ],
    "actor_versions": ["projection.actor_versions"],
}

_event_json = msgspec.json.Decoder(AnyEvent)


@dataclass
class RebuildStats:
    events: int
    seconds: float
    caught_up: int  # events archived while the rebuild ran, folded in at the swap
    phases: dict[str, float] | None = None  # seconds: fold + COPY, foreign keys, swap
    workers: int = 1

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _fresh(name: str) -> str:
    return f"{REBUILD_SCHEMA}.{name.split('.', 1)[1]}"


def _tables(selected: list[str]) -> Tables:
    live = Tables()
    kw = {
        f: (_fresh(getattr(live, f)) if getattr(live, f) in selected else getattr(live, f))
        for f in ("sessions", "metadata", "devices", "states", "handoffs", "simulators", "actors")
    }
    return Tables(**kw)


async def _create_fresh(conn: asyncpg.Connection, selected: list[str]) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")
    await conn.execute(f"CREATE SCHEMA {REBUILD_SCHEMA}")
    for table in selected:
        await conn.execute(f"CREATE TABLE {_fresh(table)} (LIKE {table} INCLUDING ALL)")


async def _add_foreign_keys(conn: asyncpg.Connection, selected: list[str]) -> None:
    """The live tables' foreign keys, onto the fresh tables (pointing at fresh parents)."""
    for table in selected:
        rows = await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
            " WHERE conrelid = $1::regclass AND contype = 'f'",
            table,
        )
        for r in rows:
            definition = r["def"]
            for parent in selected:
                definition = definition.replace(
                    f"REFERENCES {parent}(", f"REFERENCES {_fresh(parent)}("
                )
            await conn.execute(
                f'ALTER TABLE {_fresh(table)} ADD CONSTRAINT "{r["conname"]}" {definition}'
            )


def _copy_rows(changes: RowChanges) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Rows for COPY, per live table name, with the writer's exact conversions."""
    enc = msgspec.json.Encoder()
    j = lambda v: enc.encode(v).decode()  # noqa: E731
    d = to_datetime
    return {
        "session.active_sessions": (
            ["session_id", "user_id", "status", "created_at", "last_active", "expires_at", "token"],
            [
                (
                    r.session_id,
                    r.user_id,
                    r.status,
                    d(r.created_at),
                    d(r.last_active),
                    d(r.expires_at),
                    r.token,
                )
                for r in changes.sessions
            ],
        ),
        "session.session_metadata": (
            ["session_id", "metadata"],
            [(r.session_id, j(r.metadata)) for r in changes.sessions],
        ),
        "session.devices": (
            [
                "session_id",
                "device_id",
                "device_type",
                "device_name",
                "os",
                "status",
                "connections",
                "ws_connections",
                "sse_connections",
                "connection_ids",
                "pod_name",
                "ip_address",
                "left_reason",
                "joined_at",
                "last_seen",
            ],
            [
                (
                    r.session_id,
                    r.device_id,
                    r.device_type,
                    r.device_name,
                    r.os,
                    r.status,
                    len(r.connection_ids),
                    r.ws_connections,
                    r.sse_connections,
                    j(r.connection_ids),
                    r.pod_name,
                    r.ip_address,
                    r.left_reason,
                    d(r.joined_at),
                    d(r.last_seen),
                )
                for r in changes.devices
            ],
        ),
        "session.state_snapshots": (
            ["session_id", "state", "state_version", "device_id", "app_version", "updated_at"],
            [
                (
                    r.session_id,
                    j(r.state),
                    r.state_version,
                    r.device_id,
                    r.app_version,
                    d(r.updated_at),
                )
                for r in changes.states
            ],
        ),
        "session.handoffs": (
            [
                "token",
                "session_id",
                "source_device",
                "target_device",
                "status",
                "state_version",
                "created_at",
                "expires_at",
                "accepted_at",
            ],
            [
                (
                    r.token,
                    r.session_id,
                    r.source_device,
                    r.target_device,
                    r.status,
                    r.state_version,
                    d(r.created_at),
                    d(r.expires_at),
                    d(r.accepted_at) if r.accepted_at is not None else None,
                )
                for r in changes.handoffs
            ],
        ),
        "simulator.instances": (
            [
                "simulator_id",
                "session_id",
                "user_id",
                "status",
                "endpoint",
                "created_at",
                "last_active",
                "initial_symbols",
                "initial_cash",
            ],
            [
                (
                    r.simulator_id,
                    r.session_id,
                    r.user_id,
                    r.status,
                    r.endpoint,
                    d(r.created_at),
                    d(r.last_active),
                    j(r.initial_symbols),
                    r.initial_cash,
                )
                for r in changes.simulators
            ],
        ),
    }


_FOLD_QUERY = (
    "SELECT seq, actor_id, version, partition, ts, data FROM events.archive"
    " WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
)
# one of several parallel folders: its share of the partitions (sessions never span partitions)
_SHARD_QUERY = (
    "SELECT seq, actor_id, version, partition, ts, data FROM events.archive"
    " WHERE seq > $1 AND seq <= $2 AND partition % $4 = $5 ORDER BY seq LIMIT $3"
)
_CHUNK = 20_000


async def _fold_range(
    conn: asyncpg.Connection,
    model: Model,
    low: int,
    high: int,
    on_progress: Callable[[int], None] | None = None,
    spare: asyncpg.Connection | None = None,
    shard: tuple[int, int] | None = None,
) -> int:
    """Fold archive rows low < seq <= high into `model`, in chunks (keyset pagination);
    with a `spare` connection, the next chunk is fetched while the current one is folded;
    with a `shard` (k, n), only the partitions p with p % n == k.
    """
    n = 0
    decode = _event_json.decode
    apply = model.apply_fields
    query, extra = (_SHARD_QUERY, (shard[1], shard[0])) if shard else (_FOLD_QUERY, ())
    rows = await conn.fetch(query, low, high, _CHUNK, *extra)
    while rows:
        # fetch the next chunk on a second connection while this one is folded
        ahead = None
        if spare is not None and len(rows) == _CHUNK:
            ahead = asyncio.ensure_future(spare.fetch(query, rows[-1][0], high, _CHUNK, *extra))
            conn, spare = spare, conn
        step = 2000 if ahead is not None else len(rows)
        for i in range(0, len(rows), step):
            if ahead is not None:
                await asyncio.sleep(0)  # let the next chunk stream in while this one folds
            for _seq, actor_id, version, partition, ts, data in rows[i : i + step]:
                apply(actor_id, partition, version, ts, decode(data))
        n += len(rows)
        if on_progress is not None:
            on_progress(n)
        if ahead is not None:
            rows = await ahead
        elif len(rows) == _CHUNK:
            rows = await conn.fetch(query, rows[-1][0], high, _CHUNK, *extra)
        else:
            rows = []
    return n


class _Progress:
    def __init__(self, total: int, out: Any) -> None:
        self.total = max(total, 1)
        self.out = out
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, final: bool = False) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        width = 30
        filled = int(width * min(done, self.total) / self.total)
        self.out.write(
            f"\rrebuild [{'#' * filled}{'.' * (width - filled)}]"
            f" {done:,}/{self.total:,} events  {rate:,.0f} events/s"
        )
        if final:
            self.out.write("\n")
        self.out.flush()


async def _lock_projectors(conn: asyncpg.Connection) -> None:
    await conn.execute("LOCK TABLE projection.checkpoints IN SHARE ROW EXCLUSIVE MODE")


async def _swap(conn: asyncpg.Connection, selected: list[str]) -> None:
    for table in reversed(selected):  # children first
        await conn.execute(f"DROP TABLE {table}")
    for table in selected:
        schema = table.split(".", 1)[0]
        await conn.execute(f"ALTER TABLE {_fresh(table)} SET SCHEMA {schema}")


async def _canonical_index_names(
    conn: asyncpg.Connection, selected: list[str]
) -> list[tuple[str, str]]:
    """(fresh index name, live index name) pairs, matched by definition."""
    pairs = []
    for table in selected:
        schema, name = table.split(".", 1)
        live = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
            schema,
            name,
        )
        fresh = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
            REBUILD_SCHEMA,
            name,
        )
        by_def = {r["indexdef"].split(" USING ", 1)[1]: r["indexname"] for r in fresh}
        for r in live:
            shape = r["indexdef"].split(" USING ", 1)[1]
            if shape in by_def and by_def[shape] != r["indexname"]:
                pairs.append((by_def[shape], r["indexname"]))
    return pairs


async def _copy_model(conn: asyncpg.Connection, model: Model, selected: list[str]) -> None:
    """COPY every row of `model` into the fresh tables of the selected projections."""
    if "session.active_sessions" in selected:
        for table, (columns, rows) in _copy_rows(model.changes()).items():
            if rows:
                await conn.copy_records_to_table(
                    table.split(".", 1)[1],
                    records=rows,
                    columns=columns,
                    schema_name=REBUILD_SCHEMA,
                )
    if "projection.actor_versions" in selected:
        rows = [(a, t[0], t[1], t[2], to_datetime(t[3])) for a, t in model._actors.items()]
        if rows:
            await conn.copy_records_to_table(
                "actor_versions",
                schema_name=REBUILD_SCHEMA,
                records=rows,
                columns=["actor_id", "session_id", "partition", "version", "updated_at"],
            )


async def _fold_and_copy(
    dsn: str,
    high: int,
    selected: list[str],
    on_progress: Callable[[int], None] | None,
    shard: tuple[int, int] | None = None,
) -> int:
    conn = await asyncpg.connect(dsn)
    spare = await asyncpg.connect(dsn)
    try:
        model = Model()
        n = await _fold_range(conn, model, 0, high, on_progress, spare=spare, shard=shard)
        await _copy_model(conn, model, selected)
        return n
    finally:
        await spare.close()
        await conn.close()


def _shard_main(
    dsn: str, high: int, selected: list[str], shard: tuple[int, int], counter: Any
) -> None:
    """Entry point of a folding process (spawned): fold its partitions, COPY its rows."""

    def report(n: int) -> None:
        counter.value = n

    report(asyncio.run(_fold_and_copy(dsn, high, selected, report, shard)))


async def _fold_parallel(
    dsn: str, high: int, selected: list[str], workers: int, bar: Callable[[int], None]
) -> int:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    counters = [ctx.Value("q", 0) for _ in range(workers)]
    procs = [
        ctx.Process(
            target=_shard_main, args=(dsn, high, selected, (k, workers), counters[k]), daemon=True
        )
        for k in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        while any(proc.is_alive() for proc in procs):
            bar(sum(c.value for c in counters))
            await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
    failed = [proc.exitcode for proc in procs if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"a rebuild folding process failed (exit codes {failed})")
    return sum(c.value for c in counters)


async def _catch_up(conn: asyncpg.Connection, high: int, selected: list[str], t: Tables) -> int:
    """Fold the events archived after `high` into the fresh tables, the way the live projector
    does: load the touched sessions' aggregates from the (fresh) tables, fold, write the diff."""
    rows = await conn.fetch(
        "SELECT actor_id, partition, version, ts, data FROM events.archive"
        " WHERE seq > $1 ORDER BY seq",
        high,
    )
    if not rows:
        return 0
    events = [(r[0], r[1], r[2], r[3], _event_json.decode(r[4])) for r in rows]
    model = Model()
    sims = {a.partition(":")[2] for a, *_ in events if a.startswith("simulator:")}
    model.simulator_sessions = await simulator_sessions(conn, list(sims), t)
    sids: set[str] = set()
    for actor_id, _, _, _, event in events:
        kind, _, uid = actor_id.partition(":")
        if kind == "session":
            sids.add(uid)
        elif type(event) is SimulatorRequested:
            sids.add(event.session_id)
        elif uid in model.simulator_sessions:
            sids.add(model.simulator_sessions[uid])
    if "session.active_sessions" in selected:
        model.sessions = await load_sessions(conn, list(sids), t)
    before = dict(model.sessions)
    for e in events:
        model.apply_fields(*e)
    if "session.active_sessions" in selected:
        await write_changes(conn, diff((before.get(s), model.sessions.get(s)) for s in sids), t)
    if "projection.actor_versions" in selected:
        await write_actor_versions(conn, [(a, *v) for a, v in model._actors.items()], t)
    return len(rows)


async def rebuild(
    dsn: str, name: str = "all", progress: Any = sys.stderr, workers: int = 1
) -> RebuildStats:
    """Rebuild projection `name` ("all", or a key of `PROJECTIONS`) from the archive.

    `workers` folding processes, each taking its share of the partitions (a session's events
    never span partitions). One is the default (`ProjectorConfig.rebuild_workers`): on the 2-core
    machines we measured on, a second process (spawn + imports) did not pay for itself.
    """
    if name == "all":
        selected = [t for tables in PROJECTIONS.values() for t in tables]
    elif name in PROJECTIONS:
        selected = PROJECTIONS[name]
    else:
        raise ValueError(f"unknown projection {name!r} (one of: all, {', '.join(PROJECTIONS)})")
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        async with conn.transaction():
            await _lock_projectors(conn)
            high = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM events.archive")
            total = await conn.fetchval("SELECT count(*) FROM events.archive WHERE seq <= $1", high)
        bar = _Progress(total, progress)
        await _create_fresh(conn, selected)
        t0 = time.monotonic()
        if workers > 1:
            folded = await _fold_parallel(dsn, high, selected, workers, bar)
        else:
            folded = await _fold_and_copy(dsn, high, selected, bar)
        t1 = time.monotonic()
        await _add_foreign_keys(conn, selected)
        renames = await _canonical_index_names(conn, selected)
        t2 = time.monotonic()
        async with conn.transaction():
            await _lock_projectors(conn)
            caught_up = await _catch_up(conn, high, selected, _tables(selected))
            for fresh, live in renames:
                await conn.execute(f'ALTER INDEX {REBUILD_SCHEMA}."{fresh}" RENAME TO "{live}"')
            await _swap(conn, selected)
            # projectors holding aggregates of the old tables: their next commit is refused,
            # they reclaim the partition and reload from the new tables
            await conn.execute("UPDATE projection.checkpoints SET generation = generation + 1")
            await conn.execute(f"DROP SCHEMA {REBUILD_SCHEMA}")
        done = folded + caught_up
        bar(done, final=True)
        t3 = time.monotonic()
        return RebuildStats(
            events=done,
            seconds=t3 - started,
            caught_up=caught_up,
            phases={
                "fold+copy": round(t1 - t0, 3),
                "keys": round(t2 - t1, 3),
                "swap": round(t3 - t2, 3),
            },
            workers=workers,
        )
    finally:
        await conn.close()
