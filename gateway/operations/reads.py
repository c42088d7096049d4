"""Reads: the read models (PostgreSQL) and the session's live state, and who may read them.

A read is not a command: it is authorized here, with one owner lookup (`authorize_read`), and
answered from the projections, read-your-writes: `session_view` takes the read model's rows of
the session with the actor version they were projected at (one consistent PostgreSQL snapshot)
and folds the tail of the actors' events the projector has not applied yet over them, with the
same pure code the projector runs (`projections.model`). Every read of a session (its snapshot,
its devices, its simulator, a client's `reset`) therefore reflects every write acknowledged
before it, through any gateway, whether or not the projector keeps up; a read never returns a
version below one a client was already given.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec

from events.codec import decode_event
from events.ids import session_actor, simulator_actor
from gateway.auth import Claims
from gateway.errors import ApiError
from infra.postgres import DatabaseUnavailable
from projections.model import (
    EXPIRED,
    ONLINE,
    DeviceRow,
    SessionAggregate,
    SessionRow,
    SimulatorRow,
    iso,
    project_session,
    project_simulator,
)
from projections.store import load_sessions

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "Device",
    "SessionSnapshot",
    "SimulatorView",
    "authorize_read",
    "current_session",
    "device_rows",
    "is_live",
    "reset_state",
    "session_owner",
    "session_view",
    "simulator_row",
    "snapshot_row",
]

#: How long a read with `min_version` waits for the session to reach it.
MIN_VERSION_WAIT_S = 2.0


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


class Device(msgspec.Struct, frozen=True, kw_only=True):
    """A device of a session as the read model holds it (the REST body's `devices` items)."""

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
    left_reason: str | None = None


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


# ------------------------------------------------------------------ the session's rows, now


async def session_view(
    ctx: Context, session_id: str, *, during_outage: bool = False
) -> tuple[SessionAggregate | None, int]:
    """Every row of the session as it is now (None: ended, or never created) and the version
    of the session actor it reflects (0: never created).

    The base is the read model (rows and actor versions from one snapshot of PostgreSQL); the
    events of the session actor, and of its simulators, after the versions the rows were
    projected at come from the store and are folded over them. Without a database configured
    every event is folded from the first; while it is unreachable a client's read is 503
    DatabaseUnavailable (issue 15's contract), unless `during_outage` (the writes' liveness
    checks, which go on without PostgreSQL) folds from the first too (what Redis no longer
    holds needs the archive: then DatabaseUnavailable all the same)."""
    try:
        agg, version, sims = await _stored_view(ctx, session_id)
    except DatabaseUnavailable:
        if not during_outage:
            raise
        agg, version, sims = None, 0, {}
    partition = ctx.store.partition_of(session_id)
    for env in await ctx.store.actors.read(partition, session_actor(session_id), after=version):
        agg = project_session(agg, session_id, decode_event(env.data, env.type))
        version = env.version
    if agg is None:
        return None, version
    sim_ids = set(agg.simulators)
    if agg.session.metadata.get("simulator_id"):
        sim_ids.add(agg.session.metadata["simulator_id"])
    for sim_id in sorted(sim_ids):
        tail = await ctx.store.actors.read(
            partition, simulator_actor(sim_id), after=sims.get(sim_id, 0)
        )
        for env in tail:
            agg = project_simulator(agg, sim_id, decode_event(env.data, env.type))
    return agg, version


async def _stored_view(
    ctx: Context, session_id: str
) -> tuple[SessionAggregate | None, int, dict[str, int]]:
    """The read model's aggregate of the session, the session actor's projected version and
    its simulators' (simulator id -> version), read in one snapshot."""
    if ctx.db is None:
        return None, 0, {}

    async def read(conn: Any) -> tuple[SessionAggregate | None, int, dict[str, int]]:
        agg = (await load_sessions(conn, [session_id])).get(session_id)
        sim_ids = list(agg.simulators) if agg is not None else []
        if agg is not None and agg.session.metadata.get("simulator_id"):
            sim_ids.append(agg.session.metadata["simulator_id"])
        actor_ids = [session_actor(session_id), *(simulator_actor(s) for s in sim_ids)]
        rows = await conn.fetch(
            "SELECT actor_id, version FROM projection.actor_versions WHERE actor_id = ANY($1)",
            actor_ids,
        )
        versions = {r["actor_id"]: r["version"] for r in rows}
        sims = {s: versions.get(simulator_actor(s), 0) for s in sim_ids}
        return agg, versions.get(session_actor(session_id), 0), sims

    return await ctx.db.snapshot(read)


async def current_session(ctx: Context, session_id: str) -> tuple[SessionRow | None, int]:
    """The session's row as it is now (None: ended, or never created) and the version of the
    session actor it reflects (0: the session never existed): `session_view`'s session, also
    while PostgreSQL is unreachable (writes go on without it, so must their checks)."""
    agg, version = await session_view(ctx, session_id, during_outage=True)
    return (agg.session if agg is not None else None), version


def is_live(session: SessionRow | None, now: int) -> bool:
    """Whether a session (from `current_session`) takes requests at `now` (ms): started, not
    ended, not expired (its expiry timer may not have fired yet)."""
    return session is not None and session.status != EXPIRED and now < session.expires_at


# ------------------------------------------------------------------ what clients read


async def snapshot_row(ctx: Context, session_id: str, min_version: int = 0) -> SessionSnapshot:
    """The session's snapshot now (404 when it has no row). With `min_version`, a session
    below that version is waited for (bounded by `MIN_VERSION_WAIT_S`), then refused with
    409 VERSION_NOT_REACHED rather than answered with an older state."""
    agg, version = await session_view(ctx, session_id)
    if min_version > version:
        agg, version = await _reach(ctx, session_id, min_version, version)
    if agg is None:
        raise ApiError(404, "SESSION_NOT_FOUND", f"session {session_id} does not exist")
    return _snapshot(agg, version)


async def _reach(
    ctx: Context, session_id: str, min_version: int, version: int
) -> tuple[SessionAggregate | None, int]:
    """Wait for the session actor to reach `min_version`, then read the view again."""
    partition, actor = ctx.store.partition_of(session_id), session_actor(session_id)
    deadline = time.monotonic() + MIN_VERSION_WAIT_S
    while version < min_version and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        version = await ctx.store.actors.last_version(partition, actor)
    if version < min_version:
        raise ApiError(
            409,
            "VERSION_NOT_REACHED",
            f"session {session_id} is at version {version}, below min_version {min_version}",
        )
    return await session_view(ctx, session_id)


def _snapshot(agg: SessionAggregate, version: int) -> SessionSnapshot:
    s, st = agg.session, agg.state
    return SessionSnapshot(
        session_id=s.session_id,
        user_id=s.user_id,
        status=s.status,
        state_data=st.state if st is not None else {},
        version=st.state_version if st is not None else 0,
        session_version=version,
        device_id=st.device_id if st is not None else "",
        app_version=st.app_version if st is not None else "",
        created_at=iso(s.created_at),
        updated_at=iso(st.updated_at if st is not None else s.last_active),
        expires_at=iso(s.expires_at),
    )


def _device(d: DeviceRow) -> Device:
    return Device(
        device_id=d.device_id,
        device_type=d.device_type,
        device_name=d.device_name,
        os=d.os,
        status=d.status,
        online=d.status == ONLINE,
        connections=len(d.connection_ids),
        ws_connections=d.ws_connections,
        sse_connections=d.sse_connections,
        pod_name=d.pod_name,
        joined_at=iso(d.joined_at),
        last_seen=iso(d.last_seen),
        left_reason=d.left_reason,
    )


def _devices(agg: SessionAggregate | None) -> list[Device]:
    if agg is None:
        return []
    return [_device(d) for d in sorted(agg.devices.values(), key=lambda d: d.joined_at)]


def _simulator(agg: SessionAggregate | None) -> SimulatorView | None:
    """The session's newest simulator."""
    if agg is None or not agg.simulators:
        return None
    r: SimulatorRow = max(agg.simulators.values(), key=lambda r: r.created_at)
    return SimulatorView(
        simulator_id=r.simulator_id,
        session_id=r.session_id,
        user_id=r.user_id,
        status=r.status,
        endpoint=r.endpoint,
        created_at=iso(r.created_at),
        last_active=iso(r.last_active),
        initial_symbols=list(r.initial_symbols),
        initial_cash=r.initial_cash,
    )


async def device_rows(ctx: Context, session_id: str) -> list[Device]:
    """The session's devices now (none when the session has no rows)."""
    agg, _ = await session_view(ctx, session_id)
    return _devices(agg)


async def simulator_row(ctx: Context, session_id: str) -> SimulatorView | None:
    """The session's newest simulator now (None: none)."""
    agg, _ = await session_view(ctx, session_id)
    return _simulator(agg)


async def reset_state(ctx: Context, session_id: str) -> tuple[dict[str, Any], int]:
    """The session's whole state now, and its version: what a client whose history is gone
    starts again from (the hub's `reset`); the changes after that version follow it."""
    agg, version = await session_view(ctx, session_id)
    if agg is None:
        raise ApiError(404, "SESSION_NOT_FOUND", f"session {session_id} does not exist")
    state = {
        "session": _snapshot(agg, version),
        "devices": _devices(agg),
        "simulator": _simulator(agg),
    }
    return state, version
