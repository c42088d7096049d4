"""Session lifecycle: start, end and refresh a session (seed 003), and the user's session on a
device, reused while it is live and created otherwise (seed 000's `POST /api/sessions`, and a
WebSocket opened without a session id).

`session_on_device` is the one device -> session lookup: the store's user+device index first,
then the read model (a session whose metadata or devices name the device).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import msgspec

from events.errors import StoreUnavailable
from events.session import CreateSession, EndSession, RefreshSession
from gateway.auth import Claims
from gateway.errors import ApiError
from gateway.idempotency import IdempotencyKey, check_key, new_key
from gateway.operations.commands import WriteResult, idempotency, now_ms, send, written
from gateway.operations.reads import current_session, is_live
from infra.postgres import DatabaseUnavailable

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "DEVICE_INDEX_TTL_S",
    "DeviceSession",
    "SessionChange",
    "SessionOnDevice",
    "SessionStart",
    "SessionStarted",
    "create_session",
    "end_session",
    "refresh_session",
    "session_for_device",
    "session_on_device",
    "start_session",
]

#: How long the user+device -> session index keeps an entry (a week).
DEVICE_INDEX_TTL_S = 7 * 24 * 3600

#: How long a request waits for a session another request is creating for the same device.
CREATION_WAIT_S = 2.0

_NS = uuid.UUID("6f1d8a52-3c1b-4d7e-9a55-0c5d2b7e9f10")


class SessionStart(msgspec.Struct, frozen=True, kw_only=True):
    """Seed 003's start: `restart` ends a live session first and starts it afresh."""

    session_id: str
    router_id: str
    restart: bool = False
    ip_address: str = ""
    idempotency_key: str | None = None


class SessionChange(msgspec.Struct, frozen=True, kw_only=True):
    """Seed 003's end and refresh (`router_id` names the router the client used)."""

    session_id: str
    router_id: str = ""
    idempotency_key: str | None = None


class DeviceSession(msgspec.Struct, frozen=True, kw_only=True):
    """Seed 000: the caller's session on `device_id`."""

    device_id: str
    ip_address: str = ""
    idempotency_key: str | None = None


class SessionOnDevice(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    created: bool


class SessionStarted(WriteResult, frozen=True, kw_only=True):
    """Seed 003's answer, from real checks made after the start: `router_reachable`, the
    worker that routes the session's commands (its partition's lease holder) is there;
    `infrastructure_ready`, PostgreSQL answers and a projector holds the partition (the read
    models follow the session)."""

    router_reachable: bool
    infrastructure_ready: bool


async def start_session(ctx: Context, claims: Claims, req: SessionStart) -> SessionStarted:
    """Create the session (a no-op when it is live, unless `restart`); the decider refuses
    another user's session. An infrastructure failure is seed 003's 500 SESSION_START_FAILED
    (with the idempotency key to retry with)."""
    key = idempotency(
        claims, req.session_id, "start_session", req.idempotency_key, req.router_id, req.restart
    )
    try:
        outcome = await create_session(
            ctx,
            claims,
            req.session_id,
            router_id=req.router_id,
            restart=req.restart,
            ip_address=req.ip_address,
            idempotency=key,
        )
    except ApiError as exc:
        if exc.status != 503:
            raise
        raise ApiError(
            500, "SESSION_START_FAILED", f"Session start failed: {exc.message}", extra=exc.extra
        ) from None
    router, infrastructure = await _start_checks(ctx, req.session_id)
    return SessionStarted(
        **written(outcome, key), router_reachable=router, infrastructure_ready=infrastructure
    )


async def _start_checks(ctx: Context, session_id: str) -> tuple[bool, bool]:
    """(a worker holds the session's partition, PostgreSQL answers and a projector holds it)."""
    partition = ctx.store.partition_of(session_id)
    try:
        workers, projectors = await asyncio.gather(
            ctx.store.leases.holders("worker"), ctx.store.leases.holders("projector")
        )
    except StoreUnavailable:
        return False, False
    database = ctx.db is not None
    if database:
        try:
            await ctx.db.fetchval("SELECT 1")
        except DatabaseUnavailable:
            database = False
    return partition in workers, database and partition in projectors


async def end_session(ctx: Context, claims: Claims, req: SessionChange) -> WriteResult:
    """Seed 003's end: `router_id`, when given, must be the session's (403 ROUTER_MISMATCH)."""
    key = idempotency(claims, req.session_id, "end_session", req.idempotency_key, req.router_id)
    command = EndSession(
        at=now_ms(),
        user_id=claims.user_id,
        admin=claims.is_admin,
        reason="ended",
        router_id=req.router_id,
    )
    return WriteResult(**written(await send(ctx, req.session_id, command, idempotency=key), key))


async def refresh_session(ctx: Context, claims: Claims, req: SessionChange) -> WriteResult:
    """Record activity: the session expires one whole TTL from now."""
    key = idempotency(claims, req.session_id, "refresh_session", req.idempotency_key)
    command = RefreshSession(at=now_ms(), user_id=claims.user_id, admin=claims.is_admin)
    return WriteResult(**written(await send(ctx, req.session_id, command, idempotency=key), key))


async def create_session(
    ctx: Context,
    claims: Claims,
    session_id: str,
    *,
    device_id: str = "",
    router_id: str = "",
    restart: bool = False,
    ip_address: str = "",
    idempotency: IdempotencyKey | None = None,
) -> object:
    """Send CreateSession for the caller, with the configured lifetime (SESSION_TTL); the
    outcome, see `commands.send`."""
    return await send(
        ctx,
        session_id,
        CreateSession(
            at=now_ms(),
            user_id=claims.user_id,
            admin=claims.is_admin,
            session_id=session_id,
            device_id=device_id,
            router_id=router_id,
            restart=restart,
            pod_name=ctx.config.pod_name,
            ip_address=ip_address,
            ttl_ms=ctx.config.session_ttl_ms,
        ),
        idempotency=idempotency,
    )


async def session_on_device(ctx: Context, user_id: str, device_id: str) -> str | None:
    """The session the user last had on `device_id`, live or not (None: none known): the
    store's index, else the read model."""
    found = await ctx.store.devices.get(user_id, device_id)
    if found is None and ctx.db is not None:
        found = await ctx.db.fetchval(
            "SELECT s.session_id FROM session.active_sessions s"
            " JOIN session.session_metadata m ON m.session_id = s.session_id"
            " WHERE s.user_id = $1 AND s.status <> 'EXPIRED' AND s.expires_at > now()"
            " AND (m.metadata->>'device_id' = $2 OR EXISTS (SELECT 1 FROM session.devices d"
            "      WHERE d.session_id = s.session_id AND d.device_id = $2))"
            " ORDER BY s.last_active DESC LIMIT 1",
            user_id,
            device_id,
        )
    return None if found is None else str(found)


async def session_for_device(ctx: Context, claims: Claims, req: DeviceSession) -> SessionOnDevice:
    """The user's live session on the device (reused), else a new one.

    A new session's id follows from the user, the device and the idempotency key (one is
    generated when the client sent none), so a retry with the key that OUTCOME_UNKNOWN
    returned names the same session, and the same key on another device another one. Two
    requests racing for one device agree through the index: the first claims it, the second
    waits for that session to exist."""
    device_id = req.device_id
    if not device_id or len(device_id) > 200:
        raise ApiError(400, "INVALID_ARGUMENT", "device_id is required (at most 200 chars)")
    key = new_key() if req.idempotency_key is None else check_key(req.idempotency_key)
    user = claims.user_id
    existing = await session_on_device(ctx, user, device_id)
    if existing is not None and await _usable(ctx, claims, existing):
        return SessionOnDevice(session_id=existing, created=False)
    sid = str(uuid.uuid5(_NS, f"{user}/{device_id}/{key}"))
    index = ctx.store.devices
    if existing is None and not await index.claim(user, device_id, sid, DEVICE_INDEX_TTL_S):
        # another request for the same user and device is creating one right now: use it
        other = await index.get(user, device_id)
        if other and await _usable(ctx, claims, other):
            return SessionOnDevice(session_id=other, created=False)
    await index.put(user, device_id, sid, DEVICE_INDEX_TTL_S)
    await create_session(
        ctx,
        claims,
        sid,
        device_id=device_id,
        ip_address=req.ip_address,
        idempotency=IdempotencyKey(
            key=key,
            command_id=f"create:{sid}",
            fingerprint="",
            generated=req.idempotency_key is None,
        ),
    )
    return SessionOnDevice(session_id=sid, created=True)


async def _usable(ctx: Context, claims: Claims, session_id: str) -> bool:
    """Whether the session is live and the caller's: a read of its current state, not a
    command. A session not started yet may be being created by a concurrent request (its id
    is claimed first): wait up to `CREATION_WAIT_S` for it. A store failure is raised, not
    read as False."""
    deadline = time.monotonic() + CREATION_WAIT_S
    while True:
        session, version = await current_session(ctx, session_id)
        if version > 0 or time.monotonic() >= deadline:
            return (
                is_live(session, now_ms())
                and session is not None
                and session.user_id == claims.user_id
            )
        await asyncio.sleep(0.05)
