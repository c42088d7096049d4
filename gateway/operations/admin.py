"""Admin operations (seed 004): metrics, active sessions, live connections, and a broadcast to
every client of every gateway. Each needs the admin role.

A broadcast is published in one shape, `{"payload": <object>, "admin_only": <bool>}`: every
gateway's hub delivers `payload` as BROADCAST to all its clients, or as ADMIN_UPDATE to its
admins only. `Broadcast.notification` builds seed 004's notification payload.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.auth import Claims
from gateway.errors import ApiError
from gateway.operations.access import require_admin

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "METRIC_KINDS",
    "SESSION_STATUSES",
    "AdminSession",
    "Broadcast",
    "Broadcasted",
    "ConnectionList",
    "SessionList",
    "SessionQuery",
    "admin_connections",
    "admin_metrics",
    "admin_sessions",
    "broadcast",
    "now_iso",
    "search_sessions",
]

#: The admin metrics, by name (`all`: every one of them).
METRIC_KINDS = ("sessions", "connections", "snapshots")

#: The most sessions one page of `search_sessions` lists.
MAX_SESSIONS = 1000
#: `status=` values of the session search (`ANY`: expired ones too; none: every live one).
SESSION_STATUSES = ("ACTIVE", "RECONNECTING", "INACTIVE", "EXPIRED", "ANY")

_broadcast = msgspec.json.Encoder()


class Broadcast(msgspec.Struct, frozen=True, kw_only=True):
    payload: dict[str, Any]
    admin_only: bool = False

    @classmethod
    def notification(cls, message: str, kind: str, timestamp: str) -> Broadcast:
        """Seed 004's notification: `{message, type, timestamp}`."""
        return cls(payload={"message": message, "type": kind, "timestamp": timestamp})


class Broadcasted(msgspec.Struct, frozen=True, kw_only=True):
    gateways: int  # how many gateway processes received it


class AdminSession(msgspec.Struct, frozen=True, kw_only=True):
    """A live session as the admin list shows it (times in ISO 8601)."""

    session_id: str
    user_id: str
    status: str
    created_at: str
    last_active: str
    expires_at: str
    metadata: dict[str, Any]


class SessionList(msgspec.Struct, frozen=True, kw_only=True):
    sessions: list[AdminSession]
    count: int
    next_cursor: str | None = None  # `cursor` for the next page (None: this was the last)


class ConnectionList(msgspec.Struct, frozen=True, kw_only=True):
    """Every gateway's live connections: each is the record its gateway registered (its
    fields grow with the gateway, so they stay a mapping) and its `connection_id`."""

    connections: list[dict[str, Any]]
    count: int


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def broadcast(ctx: Context, claims: Claims, req: Broadcast) -> Broadcasted:
    require_admin(claims)
    n = await ctx.store.feed.broadcast(
        _broadcast.encode({"payload": req.payload, "admin_only": req.admin_only})
    )
    return Broadcasted(gateways=int(n))


async def admin_metrics(ctx: Context, claims: Claims, kind: str) -> dict[str, Any]:
    """One kind of metrics (or `all`), with the time they were taken."""
    require_admin(claims)
    if kind == "all":
        return {
            "timestamp": now_iso(),
            **{name: await _METRICS[name](ctx) for name in METRIC_KINDS},
        }
    if kind not in _METRICS:
        raise ApiError(404, "NOT_FOUND", f"no metrics named {kind!r}")
    return {"timestamp": now_iso(), **await _METRICS[kind](ctx)}


async def admin_sessions(ctx: Context, claims: Claims, limit: int | None) -> SessionList:
    """The live sessions, most recently active first (at most `limit`, default 100)."""
    return await search_sessions(ctx, claims, SessionQuery(limit=limit or 100))


class SessionQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The session search: `user` (a user id or its beginning), `device` (a device id the
    session has), `status` (one of `SESSION_STATUSES`; default: every live one), `cursor`
    (the page's `next_cursor` to go on), `limit`."""

    user: str = ""
    device: str = ""
    status: str = ""
    cursor: str = ""
    limit: int = 50


def _encode_cursor(last_active: datetime, session_id: str) -> str:
    raw = msgspec.json.encode([last_active.isoformat(), session_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, sid = msgspec.json.decode(raw, type=tuple[str, str])
        return datetime.fromisoformat(when), str(uuid.UUID(sid))
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise ApiError(400, "INVALID_ARGUMENT", "cursor is not one this API returned") from None


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search_sessions(ctx: Context, claims: Claims, q: SessionQuery) -> SessionList:
    """Sessions, most recently active first, one page at a time (keyset pagination on
    `(last_active, session_id)`: a page is as fast at the millionth session as at the first,
    and a session that moves while paging is neither lost nor repeated within its place)."""
    require_admin(claims)
    status = q.status.upper()
    if status and status not in SESSION_STATUSES:
        raise ApiError(400, "INVALID_ARGUMENT", f"status must be one of {SESSION_STATUSES}")
    limit = max(1, min(q.limit, MAX_SESSIONS))
    after_ts, after_sid = _decode_cursor(q.cursor) if q.cursor else (None, "")
    if ctx.db is None:
        return SessionList(sessions=[], count=0)
    rows = await ctx.db.fetch(
        "SELECT s.session_id, s.user_id, s.status, s.created_at, s.last_active, s.expires_at,"
        " m.metadata FROM session.active_sessions s LEFT JOIN session.session_metadata m"
        " ON m.session_id = s.session_id"
        " WHERE ($1 = '' OR s.user_id LIKE $2)"
        " AND ($3 = '' OR EXISTS (SELECT 1 FROM session.devices d"
        "     WHERE d.session_id = s.session_id AND d.device_id = $3))"
        " AND (CASE WHEN $4 = 'ANY' THEN true"
        "      WHEN $4 = '' THEN s.status <> 'EXPIRED' AND s.expires_at > now()"
        "      ELSE s.status = $4 END)"
        " AND ($5::timestamptz IS NULL OR (s.last_active, s.session_id) < ($5, $6))"
        " ORDER BY s.last_active DESC, s.session_id DESC LIMIT $7",
        q.user,
        _like_prefix(q.user),
        q.device,
        status,
        after_ts,
        after_sid,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    sessions = [
        AdminSession(
            session_id=r["session_id"],
            user_id=r["user_id"],
            status=r["status"],
            created_at=r["created_at"].isoformat(),
            last_active=r["last_active"].isoformat(),
            expires_at=r["expires_at"].isoformat(),
            metadata=msgspec.json.decode(r["metadata"])
            if isinstance(r["metadata"], (str, bytes))
            else (r["metadata"] or {}),
        )
        for r in rows
    ]
    cursor = _encode_cursor(rows[-1]["last_active"], rows[-1]["session_id"]) if more else None
    return SessionList(sessions=sessions, count=len(sessions), next_cursor=cursor)


async def admin_connections(ctx: Context, claims: Claims) -> ConnectionList:
    """Every gateway's live connections (the store's connection registry)."""
    require_admin(claims)
    conns = await _connections(ctx)
    return ConnectionList(connections=conns, count=len(conns))


async def _connections(ctx: Context) -> list[dict[str, Any]]:
    return [
        {"connection_id": conn_id, **msgspec.json.decode(info)}
        for _gateway, conn_id, info in await ctx.store.connections.connections()
    ]


async def _sessions(ctx: Context) -> dict[str, Any]:
    if ctx.db is None:
        return {}
    row = await ctx.db.fetchrow(
        "SELECT count(*) AS total,"
        " count(*) FILTER (WHERE status <> 'EXPIRED' AND expires_at > now()) AS active,"
        " count(*) FILTER (WHERE created_at > now() - interval '1 hour') AS created_last_hour,"
        " count(DISTINCT user_id) AS users FROM session.active_sessions"
    )
    by_status = {
        r["status"]: r["n"]
        for r in await ctx.db.fetch(
            "SELECT status, count(*) AS n FROM session.active_sessions GROUP BY status"
        )
    }
    return {
        "total_sessions": row["total"],
        "active_sessions": row["active"],
        "sessions_created_last_hour": row["created_last_hour"],
        "unique_users": row["users"],
        "by_status": by_status,
    }


async def _connections_metrics(ctx: Context) -> dict[str, Any]:
    conns = await _connections(ctx)
    by_transport: dict[str, int] = {}
    by_gateway: dict[str, int] = {}
    for c in conns:
        transport, gateway = c.get("transport", "ws"), c.get("gateway", "")
        by_transport[transport] = by_transport.get(transport, 0) + 1
        by_gateway[gateway] = by_gateway.get(gateway, 0) + 1
    return {
        "total_connections": len(conns),
        "local_connections": len(ctx.hub.conns),
        "local_sessions": len(ctx.hub.feeds),
        "by_transport": by_transport,
        "by_gateway": by_gateway,
        "gateways": len(by_gateway),
    }


async def _snapshots(ctx: Context) -> dict[str, Any]:
    if ctx.db is None:
        return {}
    row = await ctx.db.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(pg_column_size(state)), 0) AS bytes,"
        " coalesce(avg(pg_column_size(state)), 0) AS avg_bytes,"
        " coalesce(max(state_version), 0) AS max_version,"
        " count(*) FILTER (WHERE updated_at > now() - interval '1 hour') AS last_hour"
        " FROM session.state_snapshots"
    )
    return {
        "total_snapshots": row["n"],
        "total_bytes": int(row["bytes"]),
        "average_bytes": float(row["avg_bytes"]),
        "max_version": row["max_version"],
        "updated_last_hour": row["last_hour"],
    }


_METRICS = {"sessions": _sessions, "connections": _connections_metrics, "snapshots": _snapshots}
