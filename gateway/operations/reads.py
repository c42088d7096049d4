"""Reads: the read models (PostgreSQL) and the session's live state, and who may read them.

A read is not a command: it is authorized here, with one owner lookup (`authorize_read`), and
answered from the projections. `current_session` is the read-your-writes view of a session's
lifecycle: the read model's row with the tail of the actor's events the projector has not
applied yet folded over it, by the same pure code the projector runs
(`projections.model.project_session`), so a session created a moment ago is already there.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec

from events.codec import decode_event
from events.ids import session_actor
from gateway.auth import Claims
from gateway.errors import ApiError
from infra.postgres import DatabaseUnavailable
from projections.model import EXPIRED, SessionAggregate, SessionRow, project_session

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "DeviceView",
    "SessionSnapshot",
    "SimulatorView",
    "authorize_read",
    "current_session",
    "device_rows",
    "is_live",
    "reset_state",
    "session_owner",
    "simulator_row",
    "snapshot_row",
    "wait_projected",
]


class SessionSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Seed 004's session snapshot: the shared state with its version, and the session."""

    session_id: str
    user_id: str
    status: str
    state_data: dict[str, Any]
    version: int
    session_version: int
    device_id: str
    app_version: str
    created_at: str | None
    updated_at: str | None
    expires_at: str | None


class DeviceView(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    device_type: str
    device_name: str
    os: str
    status: str
    online: bool
    connections: int
    ws_connections: int
    sse_connections: int
    pod_name: str
    joined_at: str | None
    last_seen: str | None
    left_reason: str | None


class SimulatorView(msgspec.Struct, frozen=True, kw_only=True):
    """Seed 002's simulator instance, as the read model holds it."""

    simulator_id: str
    session_id: str
    user_id: str
    status: str
    endpoint: str | None
    created_at: str | None
    last_active: str | None
    initial_symbols: list[str]
    initial_cash: float


# ------------------------------------------------------------------ who may read


async def session_owner(ctx: Context, session_id: str) -> str | None:
    """The session's user id from the projection, or from its first event when the
    projection has not caught up (or the session ended); None when the session never existed.

    While PostgreSQL is unreachable, the first event alone answers, when Redis still holds it
    (version 1). Without it (no events, or trimmed), "does not exist" cannot be told from "not
    known here": DatabaseUnavailable (503)."""
    outage: DatabaseUnavailable | None = None
    if ctx.db is not None:
        try:
            owner = await ctx.db.fetchval(
                "SELECT user_id FROM session.active_sessions WHERE session_id = $1", session_id
            )
        except DatabaseUnavailable as exc:
            outage, owner = exc, None
        if owner is not None:
            return owner
    try:  # version 1 from Redis, else from the archive (when it was trimmed)
        first = await ctx.store.actors.read(
            ctx.store.partition_of(session_id), session_actor(session_id), upto=1
        )
    except DatabaseUnavailable as exc:
        raise outage or exc from None
    if not first:
        if outage is not None:
            raise outage
        return None
    return getattr(decode_event(first[0].data, first[0].type), "user_id", None)


async def authorize_read(
    ctx: Context, claims: Claims, session_id: str, *, must_exist: bool = True
) -> None:
    """A user reads only their own sessions (admins read all): 404 SESSION_NOT_FOUND for a
    session that never existed (unless not `must_exist`: a watch that creates it), 403
    SESSION_FORBIDDEN for another user's. A watch (WS, SSE) is a read of the session's
    changes, authorized here too; the writes it makes are authorized by the deciders."""
    owner = await session_owner(ctx, session_id)
    if owner is None:
        if not must_exist:
            return
        raise ApiError(404, "SESSION_NOT_FOUND", f"session {session_id} does not exist")
    if owner != claims.user_id and not claims.is_admin:
        raise ApiError(403, "SESSION_FORBIDDEN", "this session belongs to another user")


# ------------------------------------------------------------------ the session, now


async def current_session(ctx: Context, session_id: str) -> tuple[SessionRow | None, int]:
    """The session's row as it is now (None: ended, or never created) and the version of the
    session actor it reflects (0: the session never existed).

    The read model's row (with the version it was projected at) is the base; the events after
    that version, from the store, are folded over it. Without a database (none configured, or
    unreachable: writes go on without PostgreSQL, so must this) every event is folded, from
    the first."""
    try:
        agg, version = await _projected_session(ctx, session_id)
    except DatabaseUnavailable:
        agg, version = None, 0
    tail = await ctx.store.actors.read(
        ctx.store.partition_of(session_id), session_actor(session_id), after=version
    )
    for env in tail:
        agg = project_session(agg, session_id, decode_event(env.data, env.type))
        version = env.version
    return (agg.session if agg is not None else None), version


def is_live(session: SessionRow | None, now: int) -> bool:
    """Whether a session (from `current_session`) takes requests at `now` (ms): started, not
    ended, not expired (its expiry timer may not have fired yet)."""
    return session is not None and session.status != EXPIRED and now < session.expires_at


async def _projected_session(ctx: Context, session_id: str) -> tuple[SessionAggregate | None, int]:
    """The read model's session row and the actor version it reflects, read together (the
    projector writes both in one transaction)."""
    if ctx.db is None:
        return None, 0
    row = await ctx.db.fetchrow(
        "SELECT v.version, s.user_id, s.status, s.created_at, s.last_active, s.expires_at"
        " FROM projection.actor_versions v"
        " LEFT JOIN session.active_sessions s ON s.session_id = $1"
        " WHERE v.actor_id = $2",
        session_id,
        session_actor(session_id),
    )
    if row is None:
        return None, 0
    if row["user_id"] is None:  # ended: its rows are gone
        return None, row["version"]
    session = SessionRow(
        session_id=session_id,
        user_id=row["user_id"],
        status=row["status"],
        created_at=_ms(row["created_at"]),
        last_active=_ms(row["last_active"]),
        expires_at=_ms(row["expires_at"]),
        token=None,
        metadata={},
    )
    return SessionAggregate(session=session), row["version"]


# ------------------------------------------------------------------ the read models


async def snapshot_row(ctx: Context, session_id: str) -> SessionSnapshot:
    """The session's snapshot from the read model (404 when it has no row)."""
    if ctx.db is None:
        raise ApiError(503, "STORE_UNAVAILABLE", "no projection database configured")
    row = await ctx.db.fetchrow(
        "SELECT s.session_id, s.user_id, s.status, s.created_at, s.last_active, s.expires_at,"
        " st.state, coalesce(st.state_version, 0) AS state_version, st.device_id,"
        " st.app_version, st.updated_at, coalesce(v.version, 0) AS session_version"
        " FROM session.active_sessions s"
        " LEFT JOIN session.state_snapshots st ON st.session_id = s.session_id"
        " LEFT JOIN projection.actor_versions v ON v.actor_id = 'session:' || s.session_id"
        " WHERE s.session_id = $1",
        session_id,
    )
    if row is None:
        raise ApiError(404, "SESSION_NOT_FOUND", f"session {session_id} does not exist")
    state = row["state"]
    return SessionSnapshot(
        session_id=row["session_id"],
        user_id=row["user_id"],
        status=row["status"],
        state_data=_json(state) if state is not None else {},
        version=row["state_version"],
        session_version=row["session_version"],
        device_id=row["device_id"] or "",
        app_version=row["app_version"] or "",
        created_at=_iso(row["created_at"]),
        updated_at=_iso(row["updated_at"] or row["last_active"]),
        expires_at=_iso(row["expires_at"]),
    )


async def device_rows(ctx: Context, session_id: str) -> list[DeviceView]:
    """The session's devices from the read model (none without a database)."""
    if ctx.db is None:
        return []
    rows = await ctx.db.fetch(
        "SELECT device_id, device_type, device_name, os, status, connections,"
        " ws_connections, sse_connections, pod_name, joined_at, last_seen, left_reason"
        " FROM session.devices WHERE session_id = $1 ORDER BY joined_at",
        session_id,
    )
    return [
        DeviceView(
            device_id=r["device_id"],
            device_type=r["device_type"],
            device_name=r["device_name"],
            os=r["os"],
            status=r["status"],
            online=r["status"] == "online",
            connections=r["connections"],
            ws_connections=r["ws_connections"],
            sse_connections=r["sse_connections"],
            pod_name=r["pod_name"],
            joined_at=_iso(r["joined_at"]),
            last_seen=_iso(r["last_seen"]),
            left_reason=r["left_reason"],
        )
        for r in rows
    ]


async def simulator_row(ctx: Context, session_id: str) -> SimulatorView | None:
    """The session's newest simulator from the read model (None: none, or no database)."""
    if ctx.db is None:
        return None
    r = await ctx.db.fetchrow(
        "SELECT simulator_id, session_id, user_id, status, endpoint, created_at, last_active,"
        " initial_symbols, initial_cash FROM simulator.instances WHERE session_id = $1"
        " ORDER BY created_at DESC LIMIT 1",
        session_id,
    )
    if r is None:
        return None
    return SimulatorView(
        simulator_id=r["simulator_id"],
        session_id=r["session_id"],
        user_id=r["user_id"],
        status=r["status"],
        endpoint=r["endpoint"],
        created_at=_iso(r["created_at"]),
        last_active=_iso(r["last_active"]),
        initial_symbols=_json(r["initial_symbols"]) if r["initial_symbols"] else [],
        initial_cash=r["initial_cash"],
    )


async def wait_projected(ctx: Context, session_id: str, version: int, timeout: float = 2.0) -> None:
    """Read-your-writes: wait (bounded) until the read models reflect `version`."""
    if ctx.db is None or version <= 0:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await ctx.db.fetchval(
            "SELECT version FROM projection.actor_versions WHERE actor_id = $1",
            session_actor(session_id),
        )
        if v is not None and v >= version:
            return
        await asyncio.sleep(0.01)


async def reset_state(ctx: Context, session_id: str) -> tuple[dict[str, Any], int]:
    """The session's whole state from the read models, and its version: what a client whose
    history is gone starts again from (the hub's `reset`)."""
    snap = await snapshot_row(ctx, session_id)
    devices = await device_rows(ctx, session_id)
    sim = await simulator_row(ctx, session_id)
    return {"session": snap, "devices": devices, "simulator": sim}, snap.session_version


def _json(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        return msgspec.json.decode(value)
    return value


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000)
