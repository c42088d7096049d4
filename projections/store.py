"""PostgreSQL side of the projections: set-based writes of row changes, loads, the archive.

Every write takes whole batches (one statement per table, arrays unnested server-side, or COPY),
never a row at a time. Table names are parameters (`Tables`) so `projections rebuild` can fill a
fresh copy of the tables with the very same statements before swapping it in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from projections.model import (
    _EPOCH,
    ActorRow,
    DeviceRow,
    HandoffRow,
    Model,
    RowChanges,
    SessionAggregate,
    SessionRow,
    SimulatorRow,
    StateRow,
)

__all__ = [
    "LIVE",
    "ArchiveRow",
    "Tables",
    "archive_rows",
    "load_model",
    "load_sessions",
    "simulator_sessions",
    "to_ms",
    "write_actor_versions",
    "write_archive",
    "write_changes",
    "write_round",
]

_json = msgspec.json.Encoder()


def _j(value: Any) -> str:
    return _json.encode(value).decode()


def _jrows(rows: Sequence[Any]) -> str:
    """Row structs as one JSON array of objects (field names as keys)."""
    return _json.encode(rows).decode()


def to_ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class Tables:
    """Qualified names of the projected tables (live ones, or a rebuild's fresh copies)."""

    sessions: str = "session.active_sessions"
    metadata: str = "session.session_metadata"
    devices: str = "session.devices"
    states: str = "session.state_snapshots"
    handoffs: str = "session.handoffs"
    simulators: str = "simulator.instances"
    actors: str = "projection.actor_versions"


LIVE = Tables()


def _T(column: str) -> str:
    """SQL: ms since the epoch (bigint) -> timestamptz, exactly (integer microseconds)."""
    return f"(timestamptz 'epoch' + {column} * interval '1 millisecond')"


# ------------------------------------------------------------------------------ statements
# The SQL of each write, built once per target (live tables or a rebuild's copies) and shared by
# the per-table statements (`write_changes`, ...) and the one-statement round (`round_sql`):
# `rows` is the parameter holding the JSON document, `where` an optional condition on its rows.


def _where(where: str) -> str:
    return f" WHERE {where}" if where else ""


def _device_deletes(t: Tables, sessions: str, devices: str, where: str = "") -> str:
    return (
        f"DELETE FROM {t.devices} d USING unnest({sessions}::text[], {devices}::text[])"
        f" AS k(s, dv) WHERE d.session_id = k.s AND d.device_id = k.dv"
        + (f" AND {where}" if where else "")
    )


def _deletes(table: str, key: str, keys: str, where: str = "") -> str:
    return f"DELETE FROM {table} WHERE {key} = ANY({keys}::text[])" + (
        f" AND {where}" if where else ""
    )


def _session_rows(rows: str, where: str = "") -> str:
    return (
        "SELECT * FROM json_to_recordset(" + rows + "::json) AS x(session_id text,"
        " user_id text, status text, created_at bigint, last_active bigint,"
        " expires_at bigint, token text, metadata jsonb)" + _where(where)
    )


def _sessions_upsert(t: Tables, source: str) -> str:
    return (
        f"INSERT INTO {t.sessions} (session_id, user_id, status, created_at,"
        " last_active, expires_at, token) SELECT session_id, user_id, status,"
        f" {_T('created_at')}, {_T('last_active')}, {_T('expires_at')}, token FROM {source}"
        " ON CONFLICT (session_id) DO UPDATE SET user_id = EXCLUDED.user_id,"
        " status = EXCLUDED.status, created_at = EXCLUDED.created_at,"
        " last_active = EXCLUDED.last_active, expires_at = EXCLUDED.expires_at,"
        " token = EXCLUDED.token"
    )


def _metadata_upsert(t: Tables, source: str) -> str:
    return (
        f"INSERT INTO {t.metadata} (session_id, metadata) SELECT session_id, metadata"
        f" FROM {source} ON CONFLICT (session_id) DO UPDATE SET metadata = EXCLUDED.metadata"
    )


def _devices_upsert(t: Tables, rows: str, where: str = "") -> str:
    return (
        f"INSERT INTO {t.devices} (session_id, device_id, device_type, device_name, os,"
        " status, connections, ws_connections, sse_connections, connection_ids, pod_name,"
        " ip_address, left_reason, joined_at, last_seen)"
        " SELECT session_id, device_id, device_type, device_name, os, status,"
        " (SELECT count(*) FROM jsonb_each_text(connection_ids)),"
        " (SELECT count(*) FROM jsonb_each_text(connection_ids) c WHERE c.value = 'ws'),"
        " (SELECT count(*) FROM jsonb_each_text(connection_ids) c WHERE c.value = 'sse'),"
        f" connection_ids, pod_name, ip_address, left_reason, {_T('joined_at')},"
        f" {_T('last_seen')} FROM json_to_recordset({rows}::json) AS x(session_id text,"
        " device_id text, device_type text, device_name text, os text, status text,"
        " connection_ids jsonb, pod_name text, ip_address text, left_reason text,"
        " joined_at bigint, last_seen bigint)"
        + _where(where)
        + " ON CONFLICT (session_id, device_id) DO UPDATE SET"
        " device_type = EXCLUDED.device_type, device_name = EXCLUDED.device_name,"
        " os = EXCLUDED.os, status = EXCLUDED.status, connections = EXCLUDED.connections,"
        " ws_connections = EXCLUDED.ws_connections,"
        " sse_connections = EXCLUDED.sse_connections,"
        " connection_ids = EXCLUDED.connection_ids, pod_name = EXCLUDED.pod_name,"
        " ip_address = EXCLUDED.ip_address, left_reason = EXCLUDED.left_reason,"
        " joined_at = EXCLUDED.joined_at, last_seen = EXCLUDED.last_seen"
    )


def _states_upsert(t: Tables, rows: str, where: str = "") -> str:
    return (
        f"INSERT INTO {t.states} (session_id, state, state_version, device_id, app_version,"
        " updated_at) SELECT session_id, state, state_version, device_id, app_version,"
        f" {_T('updated_at')} FROM json_to_recordset({rows}::json) AS x(session_id text,"
        " state json, state_version bigint, device_id text, app_version text,"
        " updated_at bigint)"
        + _where(where)
        + " ON CONFLICT (session_id) DO UPDATE SET state = EXCLUDED.state,"
        " state_version = EXCLUDED.state_version, device_id = EXCLUDED.device_id,"
        " app_version = EXCLUDED.app_version, updated_at = EXCLUDED.updated_at"
    )


def _handoffs_upsert(t: Tables, rows: str, where: str = "") -> str:
    return (
        f"INSERT INTO {t.handoffs} (token, session_id, source_device, target_device, status,"
        " state_version, created_at, expires_at, accepted_at)"
        " SELECT token, session_id, source_device, target_device, status, state_version,"
        f" {_T('created_at')}, {_T('expires_at')}, {_T('accepted_at')}"
        f" FROM json_to_recordset({rows}::json) AS x(token text, session_id text,"
        " source_device text, target_device text, status text, state_version bigint,"
        " created_at bigint, expires_at bigint, accepted_at bigint)"
        + _where(where)
        + " ON CONFLICT (token) DO UPDATE SET status = EXCLUDED.status,"
        " accepted_at = EXCLUDED.accepted_at, expires_at = EXCLUDED.expires_at"
    )


def _simulators_upsert(t: Tables, rows: str, where: str = "") -> str:
    return (
        f"INSERT INTO {t.simulators} (simulator_id, session_id, user_id, status, endpoint,"
        " created_at, last_active, initial_symbols, initial_cash)"
        " SELECT simulator_id, session_id, user_id, status, endpoint,"
        f" {_T('created_at')}, {_T('last_active')}, initial_symbols, initial_cash"
        f" FROM json_to_recordset({rows}::json) AS x(simulator_id text, session_id text,"
        " user_id text, status text, endpoint text, created_at bigint, last_active bigint,"
        " initial_symbols jsonb, initial_cash float8)"
        + _where(where)
        + " ON CONFLICT (simulator_id) DO UPDATE SET status = EXCLUDED.status,"
        " endpoint = EXCLUDED.endpoint, last_active = EXCLUDED.last_active,"
        " session_id = EXCLUDED.session_id, user_id = EXCLUDED.user_id,"
        " created_at = EXCLUDED.created_at, initial_symbols = EXCLUDED.initial_symbols,"
        " initial_cash = EXCLUDED.initial_cash"
    )


def _actors_upsert(t: Tables, rows: str, where: str = "") -> str:
    return (
        f"INSERT INTO {t.actors} (actor_id, session_id, partition, version, updated_at)"
        " SELECT r->>0, r->>1, (r->>2)::int, (r->>3)::bigint,"
        f" {_T('(r->>4)::bigint')} FROM json_array_elements({rows}::json) AS r"
        + _where(where)
        + " ON CONFLICT (actor_id) DO UPDATE SET"
        " session_id = EXCLUDED.session_id, partition = EXCLUDED.partition,"
        " version = EXCLUDED.version, updated_at = EXCLUDED.updated_at"
    )


def _archive_insert(rows: str, where: str = "") -> str:
    return (
        "INSERT INTO events.archive (event_id, actor_id, version, partition, ts, type, data,"
        " command_id, correlation_id, causation_id, log_id)"
        " SELECT r->>0, r->>1, (r->>2)::bigint, (r->>3)::int, (r->>4)::bigint, r->>5,"
        " (r->>6)::json, r->>7, r->>8, r->>9, r->>10"
        f" FROM json_array_elements({rows}::json) WITH ORDINALITY AS a(r, o)"
        + _where(where)
        + " ORDER BY o ON CONFLICT DO NOTHING"
    )


async def write_changes(conn: asyncpg.Connection, ch: RowChanges, t: Tables = LIVE) -> None:
    """Apply coalesced row changes: children deletes, session deletes, then upserts parent first."""
    if ch.device_deletes:
        await conn.execute(
            _device_deletes(t, "$1", "$2"),
            [k[0] for k in ch.device_deletes],
            [k[1] for k in ch.device_deletes],
        )
    if ch.handoff_deletes:
        await conn.execute(_deletes(t.handoffs, "token", "$1"), ch.handoff_deletes)
    if ch.simulator_deletes:
        await conn.execute(_deletes(t.simulators, "simulator_id", "$1"), ch.simulator_deletes)
    if ch.state_deletes:
        await conn.execute(_deletes(t.states, "session_id", "$1"), ch.state_deletes)
    if ch.session_deletes:
        await conn.execute(_deletes(t.sessions, "session_id", "$1"), ch.session_deletes)
    # Upserts: each table's rows go as ONE JSON document (msgspec encodes the row structs
    # directly; PostgreSQL's json_to_recordset unpacks it), one statement per table.
    if ch.sessions:
        # parent and child in one statement; the child's foreign key is checked at the end of
        # the statement, when the parent row exists
        await conn.execute(
            f"WITH u AS ({_session_rows('$1')}), s AS ({_sessions_upsert(t, 'u')})"
            f" {_metadata_upsert(t, 'u')}",
            _jrows(ch.sessions),
        )
    if ch.devices:
        await conn.execute(_devices_upsert(t, "$1"), _jrows(ch.devices))
    if ch.states:
        await conn.execute(_states_upsert(t, "$1"), _jrows(ch.states))
    if ch.handoffs:
        await conn.execute(_handoffs_upsert(t, "$1"), _jrows(ch.handoffs))
    if ch.simulators:
        await conn.execute(_simulators_upsert(t, "$1"), _jrows(ch.simulators))


async def write_actor_versions(
    conn: asyncpg.Connection,
    rows: Iterable[ActorRow | tuple[str, str, int, int, int]],
    t: Tables = LIVE,
) -> None:
    """Upsert actors' last archived versions: `ActorRow`s, or tuples
    (actor_id, session_id, partition, version, updated_at ms)."""
    a = [
        (r.actor_id, r.session_id, r.partition, r.version, r.updated_at)
        if isinstance(r, ActorRow)
        else r
        for r in rows
    ]
    if not a:
        return
    await conn.execute(_actors_upsert(t, "$1"), _json.encode(a).decode())


# ------------------------------------------------------------------------------ archive

#: One `events.archive` row without `seq` (the database numbers rows in insertion order).
ArchiveRow = tuple[str, str, int, int, int, str, str, str, str, str, str]
ARCHIVE_COLUMNS = (
    "event_id",
    "actor_id",
    "version",
    "partition",
    "ts",
    "type",
    "data",
    "command_id",
    "correlation_id",
    "causation_id",
    "log_id",
)


def archive_rows(items: Iterable[tuple[str, Any, Any]]) -> list[ArchiveRow]:
    """(log id, envelope, decoded event) -> archive rows; `data` is the event's JSON (with its
    `type` tag, so it decodes straight back into the event)."""
    return [
        (
            env.event_id,
            env.actor_id,
            env.version,
            env.partition,
            env.ts,
            env.type,
            _json.encode(event).decode(),
            env.command_id,
            env.correlation_id,
            env.causation_id,
            log_id,
        )
        for log_id, env, event in items
    ]


#: From this many rows on, the archive is written with COPY (fastest per row, but five round
#: trips with its savepoint); below it, with one INSERT ... SELECT FROM unnest (lowest latency).
COPY_THRESHOLD = 500


async def write_archive(conn: asyncpg.Connection, rows: Sequence[ArchiveRow]) -> None:
    """Append to the archive, skipping events already there (impossible with the checkpoint in
    the same transaction, but the projector must never wedge on it)."""
    if not rows:
        return
    if len(rows) >= COPY_THRESHOLD:
        try:
            async with conn.transaction():  # a savepoint inside the caller's transaction
                await conn.copy_records_to_table(
                    "archive", schema_name="events", records=rows, columns=ARCHIVE_COLUMNS
                )
            return
        except asyncpg.UniqueViolationError:
            pass
    # small batches (low latency: one round trip), or the duplicate-tolerant fallback
    await conn.execute(_archive_insert("$1"), _json.encode(rows).decode())


# ------------------------------------------------------------------------------ loads


def _session_row(r: asyncpg.Record) -> SessionRow:
    return SessionRow(
        session_id=r["session_id"],
        user_id=r["user_id"],
        status=r["status"],
        created_at=to_ms(r["created_at"]),
        last_active=to_ms(r["last_active"]),
        expires_at=to_ms(r["expires_at"]),
        token=r["token"],
        metadata=msgspec.json.decode(r["metadata"]) if r["metadata"] is not None else {},
    )


def _device_row(r: asyncpg.Record) -> DeviceRow:
    return DeviceRow(
        session_id=r["session_id"],
        device_id=r["device_id"],
        device_type=r["device_type"],
        device_name=r["device_name"],
        os=r["os"],
        status=r["status"],
        connection_ids=msgspec.json.decode(r["connection_ids"]),
        pod_name=r["pod_name"],
        ip_address=r["ip_address"],
        left_reason=r["left_reason"],
        joined_at=to_ms(r["joined_at"]),
        last_seen=to_ms(r["last_seen"]),
    )


def _state_row(r: asyncpg.Record) -> StateRow:
    return StateRow(
        session_id=r["session_id"],
        state=msgspec.json.decode(r["state"]),
        state_version=r["state_version"],
        device_id=r["device_id"],
        app_version=r["app_version"],
        updated_at=to_ms(r["updated_at"]),
    )


def _handoff_row(r: asyncpg.Record) -> HandoffRow:
    return HandoffRow(
        token=r["token"],
        session_id=r["session_id"],
        source_device=r["source_device"],
        target_device=r["target_device"],
        status=r["status"],
        state_version=r["state_version"],
        created_at=to_ms(r["created_at"]),
        expires_at=to_ms(r["expires_at"]),
        accepted_at=to_ms(r["accepted_at"]) if r["accepted_at"] is not None else None,
    )


def _simulator_row(r: asyncpg.Record) -> SimulatorRow:
    return SimulatorRow(
        simulator_id=r["simulator_id"],
        session_id=r["session_id"],
        user_id=r["user_id"],
        status=r["status"],
        endpoint=r["endpoint"],
        created_at=to_ms(r["created_at"]),
        last_active=to_ms(r["last_active"]),
        initial_symbols=msgspec.json.decode(r["initial_symbols"])
        if r["initial_symbols"] is not None
        else [],
        initial_cash=r["initial_cash"],
    )


async def _load(
    conn: asyncpg.Connection, where: str, args: Sequence[Any], t: Tables = LIVE
) -> dict[str, SessionAggregate]:
    sessions = await conn.fetch(
        f"SELECT s.*, m.metadata FROM {t.sessions} s"
        f" LEFT JOIN {t.metadata} m USING (session_id) {where.format(a='s')}",
        *args,
    )
    out: dict[str, dict[str, Any]] = {
        r["session_id"]: {
            "session": _session_row(r),
            "devices": {},
            "state": None,
            "handoffs": {},
            "simulators": {},
        }
        for r in sessions
    }
    if not out:
        return {}
    for r in await conn.fetch(f"SELECT * FROM {t.devices} d {where.format(a='d')}", *args):
        if r["session_id"] in out:
            out[r["session_id"]]["devices"][r["device_id"]] = _device_row(r)
    for r in await conn.fetch(f"SELECT * FROM {t.states} x {where.format(a='x')}", *args):
        if r["session_id"] in out:
            out[r["session_id"]]["state"] = _state_row(r)
    for r in await conn.fetch(f"SELECT * FROM {t.handoffs} h {where.format(a='h')}", *args):
        if r["session_id"] in out:
            out[r["session_id"]]["handoffs"][r["token"]] = _handoff_row(r)
    for r in await conn.fetch(f"SELECT * FROM {t.simulators} i {where.format(a='i')}", *args):
        if r["session_id"] in out:
            out[r["session_id"]]["simulators"][r["simulator_id"]] = _simulator_row(r)
    return {sid: SessionAggregate(**parts) for sid, parts in out.items()}


async def load_sessions(
    conn: asyncpg.Connection, session_ids: Sequence[str], t: Tables = LIVE
) -> dict[str, SessionAggregate]:
    """The stored aggregates of these sessions (absent sessions are simply missing)."""
    if not session_ids:
        return {}
    return await _load(conn, "WHERE {a}.session_id = ANY($1::text[])", [list(session_ids)], t)


async def simulator_sessions(
    conn: asyncpg.Connection, simulator_ids: Sequence[str], t: Tables = LIVE
) -> dict[str, str]:
    """simulator uuid -> session id, as archived (it outlives the simulator's row)."""
    if not simulator_ids:
        return {}
    rows = await conn.fetch(
        f"SELECT actor_id, session_id FROM {t.actors}"
        " WHERE actor_id = ANY($1::text[]) AND session_id <> ''",
        [f"simulator:{s}" for s in simulator_ids],
    )
    return {r["actor_id"].partition(":")[2]: r["session_id"] for r in rows}


async def load_model(conn: asyncpg.Connection, t: Tables = LIVE) -> Model:
    """Every projected row, as a `Model` (to compare live tables with a fold of the log)."""
    model = Model()
    model.sessions = await _load(conn, "", [], t)
    for r in await conn.fetch(f"SELECT * FROM {t.actors}"):
        model.actors[r["actor_id"]] = ActorRow(
            actor_id=r["actor_id"],
            session_id=r["session_id"],
            partition=r["partition"],
            version=r["version"],
            updated_at=to_ms(r["updated_at"]),
        )
    return model


# ------------------------------------------------------------------------------ one round

_OK = "(SELECT ok FROM ok)"

#: A whole projector round in ONE statement (one round trip, its own implicit transaction):
#: lock the round's checkpoints in partition order, keeping those that pass the fence (lease
#: epoch, position read from, tables' generation; re-checked on the newest row version); only if
#: ALL pass (`ok`) does every other part write: checkpoints advanced, archive appended, the
#: coalesced row changes applied, actor versions upserted. Otherwise nothing is written. Returns
#: the partitions that passed. The batches are disjoint (distinct partitions: distinct sessions,
#: devices, handoffs, simulators, actors), so the parts touch disjoint keys and their order
#: within the statement does not matter; foreign keys are checked at its end.
_ROUND_FENCE = (
    "WITH u AS MATERIALIZED (SELECT * FROM unnest($2::int[], $3::text[], $4::text[],"
    " $5::bigint[], $6::bigint[], $7::bigint[]) AS u(partition, from_id, to_id, epoch, n,"
    " generation)),"
    " fresh AS MATERIALIZED (SELECT c.partition FROM projection.checkpoints c"
    " JOIN u ON c.partition = u.partition WHERE c.name = $1 AND c.epoch <= u.epoch"
    " AND c.last_id = u.from_id AND c.generation = u.generation"
    " ORDER BY c.partition FOR UPDATE OF c),"
    " ok AS MATERIALIZED (SELECT count(*) = cardinality($2::int[]) AS ok FROM fresh),"
    " cp AS (UPDATE projection.checkpoints c SET last_id = u.to_id, epoch = u.epoch,"
    " events = c.events + u.n, updated_at = now() FROM u"
    " WHERE c.name = $1 AND c.partition = u.partition"
    f" AND c.partition IN (SELECT partition FROM fresh) AND {_OK})"
)

#: The optional parts of a round, in statement order: (name, parameters it takes, its CTEs given
#: those parameters). A round's statement holds only the parts it has rows for: a typical live
#: round (state updates) needs 3 of the 12, and PostgreSQL plans and starts every CTE it is given.
_ROUND_PARTS: tuple[tuple[str, int, Callable[..., str]], ...] = (
    ("archive", 1, lambda r: f"ar AS ({_archive_insert(r, _OK)})"),
    ("device_deletes", 2, lambda s, d: f"dd AS ({_device_deletes(LIVE, s, d, _OK)})"),
    ("handoff_deletes", 1, lambda k: f"hd AS ({_deletes(LIVE.handoffs, 'token', k, _OK)})"),
    (
        "simulator_deletes",
        1,
        lambda k: f"md AS ({_deletes(LIVE.simulators, 'simulator_id', k, _OK)})",
    ),
    ("state_deletes", 1, lambda k: f"sd AS ({_deletes(LIVE.states, 'session_id', k, _OK)})"),
    ("session_deletes", 1, lambda k: f"xd AS ({_deletes(LIVE.sessions, 'session_id', k, _OK)})"),
    (
        "sessions",
        1,
        lambda r: (
            f"su AS MATERIALIZED ({_session_rows(r, _OK)}),"
            f" xu AS ({_sessions_upsert(LIVE, 'su')}),"
            f" mu AS ({_metadata_upsert(LIVE, 'su')})"
        ),
    ),
    ("devices", 1, lambda r: f"du AS ({_devices_upsert(LIVE, r, _OK)})"),
    ("states", 1, lambda r: f"su2 AS ({_states_upsert(LIVE, r, _OK)})"),
    ("handoffs", 1, lambda r: f"hu AS ({_handoffs_upsert(LIVE, r, _OK)})"),
    ("simulators", 1, lambda r: f"mu2 AS ({_simulators_upsert(LIVE, r, _OK)})"),
    ("actors", 1, lambda r: f"av AS ({_actors_upsert(LIVE, r, _OK)})"),
)


@functools.cache
def round_sql(parts: frozenset[str]) -> str:
    """The round statement with the fence and the named optional parts (parameters $8...)."""
    ctes = [_ROUND_FENCE]
    n = 7
    for name, arity, cte in _ROUND_PARTS:
        if name in parts:
            ctes.append(cte(*(f"${n + 1 + i}" for i in range(arity))))
            n += arity
    return ", ".join(ctes) + " SELECT partition FROM fresh"


async def write_round(
    conn: asyncpg.Connection,
    name: str,
    partitions: Sequence[int],
    from_ids: Sequence[str],
    to_ids: Sequence[str],
    epochs: Sequence[int],
    sizes: Sequence[int],
    generations: Sequence[int],
    archive: Sequence[ArchiveRow],
    ch: RowChanges,
    actors: Sequence[tuple[str, str, int, int, int]],
) -> set[int]:
    """`round_sql`: advance the checkpoints of `partitions` and write their batches, all or
    nothing, in one statement outside any transaction block. Returns the partitions that passed
    the fence: all of them when written, a subset when nothing was written."""
    given: dict[str, tuple[Any, ...]] = {}
    if archive:
        given["archive"] = (_jrows(archive),)
    if ch.device_deletes:
        given["device_deletes"] = (
            [k[0] for k in ch.device_deletes],
            [k[1] for k in ch.device_deletes],
        )
    for part, keys in (
        ("handoff_deletes", ch.handoff_deletes),
        ("simulator_deletes", ch.simulator_deletes),
        ("state_deletes", ch.state_deletes),
        ("session_deletes", ch.session_deletes),
    ):
        if keys:
            given[part] = (keys,)
    for part, rows in (
        ("sessions", ch.sessions),
        ("devices", ch.devices),
        ("states", ch.states),
        ("handoffs", ch.handoffs),
        ("simulators", ch.simulators),
        ("actors", actors),
    ):
        if rows:
            given[part] = (_jrows(rows),)
    args = [a for part, _, _ in _ROUND_PARTS if part in given for a in given[part]]
    rows = await conn.fetch(
        round_sql(frozenset(given)),
        name,
        list(partitions),
        list(from_ids),
        list(to_ids),
        list(epochs),
        list(sizes),
        list(generations),
        *args,
    )
    return {r[0] for r in rows}
