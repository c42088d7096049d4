"""A device's presence in its session, for the transports that hold a connection open (WS,
SSE, a gRPC watch): opening a connection joins its device, closing it leaves, round-trip times
become connection quality.

`open_connection` is the whole of it: the session (named, or the user's session on the device),
read authorization of the watch, the user's connection slot on this process, the JoinDevice
command with the gateway's limits (the session actor decides the rest), the connection registry.
A connection that joined is paired with exactly one `close_connection`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import msgspec

from events.session import (
    ChangeConnectionQuality,
    ConnectionQuality,
    JoinDevice,
    LeaveDevice,
    Transport,
)
from gateway.auth import Claims
from gateway.errors import ApiError
from gateway.hub import Connection
from gateway.operations.commands import now_ms, send
from gateway.operations.reads import authorize_read
from gateway.operations.sessions import DeviceSession, create_session, session_for_device

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "Opening",
    "close_connection",
    "open_connection",
    "quality_for",
    "record_rtt",
]

log = logging.getLogger("sessiond.gateway")

#: A join refused for these reasons creates the session first, when the opening asks for it.
#: Not SESSION_EXPIRED: an expired session is never silently started again empty; the client
#: gets the error and restores its last state into a new session, or starts afresh explicitly
#: (`POST /api/session/start` with `restart`), see the README's "Session lifetime".
_RESTARTABLE = frozenset({"SESSION_NOT_FOUND", "SESSION_ENDED"})


class Opening(msgspec.Struct, frozen=True, kw_only=True):
    """What a client says when it opens a connection. `conn.session_id` "" asks for the
    user's session on the device (created when needed); `create` creates a named session
    that does not exist, or ended (seed 000's WebSocket "creates session if needed"), but
    not an expired one (SESSION_EXPIRED)."""

    device_type: str = ""
    device_name: str = ""
    os: str = ""
    ip_address: str = ""
    create: bool = False


async def open_connection(ctx: Context, claims: Claims, conn: Connection, req: Opening) -> int:
    """Join `conn`'s device to its session; returns the session version it joined at.

    Within the limits: connections of the user on this process (checked here), connections
    and devices of the session (checked by the session actor, which also forgets the device
    `device_retention_s` after it left)."""
    if not conn.session_id:
        found = await session_for_device(
            ctx, claims, DeviceSession(device_id=conn.device_id, ip_address=req.ip_address)
        )
        conn.session_id = found.session_id
    else:
        await authorize_read(ctx, claims, conn.session_id, must_exist=not req.create)
    try:
        outcome = await _join(ctx, claims, conn, req, attempt=0)
    except ApiError as exc:
        if not req.create or exc.code not in _RESTARTABLE:
            raise
        await create_session(
            ctx, claims, conn.session_id, device_id=conn.device_id, ip_address=req.ip_address
        )
        outcome = await _join(ctx, claims, conn, req, attempt=1)
    return outcome.version if outcome is not None else 0


async def _join(
    ctx: Context, claims: Claims, conn: Connection, req: Opening, *, attempt: int
) -> object:
    cfg = ctx.config
    if not ctx.slots.take(conn.user_id):
        ctx.metrics.command_errors.labels("TOO_MANY_CONNECTIONS").inc()
        raise ApiError(
            429,
            "TOO_MANY_CONNECTIONS",
            f"this user already has "
            f"{cfg.max_connections_per_user} open connections on this gateway",
        )
    try:
        outcome = await send(
            ctx,
            conn.session_id,
            JoinDevice(
                at=now_ms(),
                user_id=claims.user_id,
                admin=claims.is_admin,
                device_id=conn.device_id,
                connection_id=conn.conn_id,
                transport=Transport.SSE if conn.transport == "sse" else Transport.WS,
                device_type=req.device_type,
                device_name=req.device_name,
                os=req.os,
                pod_name=cfg.pod_name,
                ip_address=req.ip_address,
                max_connections=cfg.max_connections_per_session,
                max_devices=cfg.max_devices_per_session,
                retention_ms=round(cfg.device_retention_s * 1000),
            ),
            command_id=f"join:{conn.conn_id}:{attempt}",
        )
    except BaseException:
        ctx.slots.give_back(conn.user_id)
        raise
    with contextlib.suppress(Exception):
        await ctx.store.connections.register(
            cfg.gateway_id,
            conn.conn_id,
            msgspec.json.encode(
                {
                    "session_id": conn.session_id,
                    "user_id": conn.user_id,
                    "device_id": conn.device_id,
                    "transport": conn.transport,
                    "connected_at": int(conn.connected_at),
                    "gateway": cfg.gateway_id,
                }
            ),
            cfg.registry_ttl_s,
        )
    ctx.metrics.connections.labels(conn.transport).inc()
    return outcome


async def close_connection(ctx: Context, conn: Connection) -> None:
    """The device's connection closed: its slot back, out of the registry, LeaveDevice (the
    device leaves with its last connection). While draining, the leave is waited for."""
    ctx.slots.give_back(conn.user_id)
    ctx.metrics.connections.labels(conn.transport).dec()
    with contextlib.suppress(Exception):
        await ctx.store.connections.unregister(ctx.config.gateway_id, conn.conn_id)
    try:
        await send(
            ctx,
            conn.session_id,
            LeaveDevice(
                at=now_ms(),
                user_id=conn.user_id,
                device_id=conn.device_id,
                connection_id=conn.conn_id,
            ),
            command_id=f"leave:{conn.conn_id}",
            wait=ctx.draining,
        )
    except ApiError as exc:
        log.warning("leave of %s failed: %s", conn.conn_id, exc.message)


def quality_for(rtt_ms: float, good_ms: float, poor_ms: float) -> str:
    """GOOD below `good_ms`, DEGRADED below `poor_ms`, else POOR."""
    if rtt_ms < good_ms:
        return "GOOD"
    if rtt_ms < poor_ms:
        return "DEGRADED"
    return "POOR"


async def record_rtt(ctx: Context, conn: Connection, rtt_ms: float) -> bool:
    """A measured round trip: a quality change becomes a command (only a change: heartbeats
    do not flood the log). True when the connection just became POOR (the client is advised
    to reconnect)."""
    conn.rtt_ms = rtt_ms
    quality = quality_for(rtt_ms, ctx.config.rtt_good_ms, ctx.config.rtt_poor_ms)
    if quality == conn.quality:
        return False
    conn.quality = quality
    await send(
        ctx,
        conn.session_id,
        ChangeConnectionQuality(
            at=now_ms(),
            user_id=conn.user_id,
            admin=conn.is_admin,
            quality=ConnectionQuality(quality),
            rtt_ms=rtt_ms,
            device_id=conn.device_id,
        ),
        wait=False,
    )
    return quality == "POOR"
