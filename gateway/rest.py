"""REST handlers: seed 000's sessions and simulators, seed 003's session API (bodies verbatim),
seed 004's snapshot / device / handoff / admin API, token refresh, health and readiness.

Every handler: authenticate (bearer JWT) and rate-limit per user, validate the body into a
msgspec Struct, authorize (a user reaches only their own sessions), send a command (its id is the
`Idempotency-Key`, or a generated one, scoped to the user, session and endpoint: see
gateway/idempotency.py) or read a projection, answer JSON. Every failure is
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from events.codec import decode_event
from events.ids import session_actor
from events.session import (
    AcceptHandoff,
    ApplyStateChanges,
    ConflictStrategy,
    DisconnectDevice,
    EndSession,
    HandoffStarted,
    RefreshSession,
    ReplaceState,
    ResolveConflict,
    StartHandoff,
)
from events.simulator import StopSimulator
from gateway import schemas as S
from gateway.auth import Claims, bearer
from gateway.errors import ApiError, error_response, from_exception
from gateway.idempotency import IdempotencyKey, check_key, scoped
from gateway.service import Gateway, now_ms, parse_uuid
from gateway.validate import check_identifiers, decode_json, identifier, version_param

__all__ = ["API_ROUTES", "endpoint"]

_enc = msgspec.json.Encoder()
VERSION = "0.1.0"


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(_enc.encode(obj), status_code=status, media_type="application/json")


def endpoint(fn: Callable[[Request, Gateway], Awaitable[Any]]) -> Callable[[Request], Any]:
    """Wrap a handler: errors become the error shape, results become JSON, metrics count."""

    async def handler(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        started = time.perf_counter()
        try:
            result = await fn(request, gw)
            response = result if isinstance(result, Response) else json_response(result)
        except Exception as exc:
            err = from_exception(exc)
            response = error_response(err.status, err.code, err.message, err.headers, err.extra)
        gw.metrics.http_requests.labels(request.method, str(response.status_code)).inc()
        gw.metrics.http_latency.labels(request.method).observe(time.perf_counter() - started)
        return response

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


def auth(request: Request, gw: Gateway, *, admin: bool = False) -> Claims:
    claims = gw.tokens.verify(bearer(request.headers.get("authorization")))
    gw.rate_limit(claims.user_id)
    if admin and not claims.is_admin:
        raise ApiError(403, "ADMIN_REQUIRED", "this endpoint needs the admin role")
    return claims


async def body(request: Request, gw: Gateway, type_: type) -> Any:
    raw = await request.body()
    if len(raw) > gw.config.max_body_bytes:
        raise ApiError(413, "BODY_TOO_LARGE", f"bodies are limited to {gw.config.max_body_bytes}"
                       " bytes")
    if not raw.strip():
        raw = b"{}"
    fields = decode_json(raw, gw.config)  # what the stores cannot hold is refused here
    if isinstance(fields, dict):
        check_identifiers(fields, gw.config)
    try:
        return msgspec.convert(fields, type_)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "INVALID_ARGUMENT", f"invalid body: {exc}") from None


def idem(request: Request, claims: Claims, session_id: str, *body: Any) -> IdempotencyKey:
    """The write's idempotency key: the client's `Idempotency-Key` (else a generated one),
    scoped to the user, the session and this endpoint; the request (path, query and `body`)
    is fingerprinted, so the key reused for another request is told apart from a retry."""
    key = request.headers.get("idempotency-key")
    return scoped("http", claims.user_id, session_id, request.scope["endpoint"].__name__,
                  None if key is None else check_key(key), request.method, request.url.path,
                  sorted(request.query_params.multi_items()), *body)


def path_uuid(request: Request, name: str = "session_id") -> str:
    return parse_uuid(request.path_params[name], name)


def check_user(claims: Claims, user_id: str) -> None:
    if user_id and user_id != claims.user_id and not claims.is_admin:
        raise ApiError(403, "SESSION_FORBIDDEN", "user_id does not match the token's user")


def check_state(gw: Gateway, state: Any, what: str = "state") -> None:
    try:
        msgspec.msgpack.encode(state)  # what the store will hold: 64-bit integers only
    except OverflowError:
        raise ApiError(400, "INVALID_ARGUMENT",
                       f"{what}: integers must fit in 64 bits") from None
    if len(_enc.encode(state)) > gw.config.max_state_bytes:
        raise ApiError(413, "STATE_TOO_LARGE",
                       f"{what} is limited to {gw.config.max_state_bytes} bytes")


def _last(events: list[Any], attr: str, default: Any = 0) -> Any:
    for e in reversed(events):
        if hasattr(e, attr):
            return getattr(e, attr)
    return default


# ------------------------------------------------------------------ seed 000
async def create_session(request: Request, gw: Gateway) -> Any:
    """POST /api/sessions: device id + bearer token -> the user's session on that device."""
    claims = auth(request, gw)
    req = await body(request, gw, S.CreateSessionRequest)
    device = identifier(req.device_id or req.deviceId or request.headers.get("x-device-id", ""),
                        "device_id", gw.config)
    client = request.client.host if request.client else ""
    sid, created = await gw.session_for_device(
        claims, device, ip_address=client, idempotency_key=request.headers.get("idempotency-key"))
    return json_response(S.CreateSessionResponse(session_id=sid, user_id=claims.user_id,
                                                 device_id=device, created=created),
                         201 if created else 200)


async def start_simulator(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    sid = path_uuid(request)
    await gw.check_owner(claims, sid)
    req = await body(request, gw, S.StartSimulatorRequest)
    key = idem(request, claims, sid, req)
    sim_id = str(uuid.uuid5(uuid.NAMESPACE_URL, key.command_id))  # a retry names the same one
    await gw.reserve_simulator(sid, claims.user_id, sim_id, req.initial_symbols,
                               req.initial_cash, idempotency=key)
    return json_response(S.SimulatorInfo(simulator_id=sim_id, session_id=sid, status="CREATING",
                                         user_id=claims.user_id,
                                         initial_symbols=req.initial_symbols,
                                         initial_cash=req.initial_cash), 202)


async def stop_simulator(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    sid = path_uuid(request)
    await gw.check_owner(claims, sid)
    sim = await gw.simulator(sid)
    if sim is None:
        raise ApiError(404, "SIMULATOR_NOT_FOUND", "this session has no simulator")
    await gw.command(sid, StopSimulator(at=now_ms(), user_id=claims.user_id),
                     actor_id=gw.simulator_actor_id(sim["simulator_id"]),
                     idempotency=idem(request, claims, sid))
    return json_response({**sim, "status": "STOPPING"}, 202)


async def simulator_status(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    sid = path_uuid(request)
    await gw.check_owner(claims, sid)
    sim = await gw.simulator(sid)
    if sim is None:
        raise ApiError(404, "SIMULATOR_NOT_FOUND", "this session has no simulator")
    return sim


# ------------------------------------------------------------------ seed 003
async def session_start(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    req = await body(request, gw, S.SessionStartRequest)
    sid = parse_uuid(req.sessionId, "sessionId")
    router = parse_uuid(req.routerId, "routerId")
    await gw.check_owner(claims, sid, must_exist=False)
    await gw.create_session(claims, sid, router_id=router, restart=req.restart,
                            ip_address=request.client.host if request.client else "",
                            idempotency=idem(request, claims, sid, req))
    return S.SessionStartResponse(session_id=sid, router_reachable=True,
                                  infrastructure_ready=True,
                                  message="Session established successfully")


async def session_end(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    req = await body(request, gw, S.SessionEndRequest)
    sid = parse_uuid(req.sessionId, "sessionId")
    parse_uuid(req.routerId, "routerId")
    await gw.command(sid, EndSession(at=now_ms(), user_id=claims.user_id, reason="ended"),
                     idempotency=idem(request, claims, sid, req))
    return S.MessageResponse(message="Session ended")


async def session_refresh(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    req = await body(request, gw, S.SessionRefreshRequest)
    sid = parse_uuid(req.sessionId, "sessionId")
    await gw.command(sid, RefreshSession(at=now_ms(), user_id=claims.user_id),
                     idempotency=idem(request, claims, sid, req))
    return S.MessageResponse(message=f"Session {sid} refreshed")


# ------------------------------------------------------------------ seed 004
async def post_snapshot(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    req = await body(request, gw, S.SnapshotRequest)
    sid = parse_uuid(req.session_id, "session_id")
    check_user(claims, req.user_id)
    check_state(gw, req.state_data, "state_data")
    await gw.check_owner(claims, sid, must_exist=False)
    outcome = await gw.command(sid, ReplaceState(
        at=now_ms(), user_id=claims.user_id, session_id=sid, state=req.state_data,
        version=req.version, device_id=req.device_id, app_version=req.app_version),
        idempotency=idem(request, claims, sid, req))
    events = await gw.events_of(sid, outcome) if outcome is not None else []
    return S.SnapshotWriteResponse(
        session_id=sid, user_id=claims.user_id, version=_last(events, "state_version",
                                                              req.version or 0),
        session_version=outcome.version if outcome else 0, device_id=req.device_id,
        app_version=req.app_version)


async def get_snapshot(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    sid = path_uuid(request, "uuid")
    await gw.check_owner(claims, sid)
    min_v = version_param(request.query_params.get("min_version"), "min_version")
    if min_v:
        await gw.wait_projected(sid, min_v)
    return await gw.snapshot(sid)


async def post_incremental(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    req = await body(request, gw, S.IncrementalRequest)
    sid = parse_uuid(req.session_id, "session_id")
    check_user(claims, req.user_id)
    check_state(gw, req.changes, "changes")
    await gw.check_owner(claims, sid)
    outcome = await gw.command(sid, ApplyStateChanges(
        at=now_ms(), user_id=claims.user_id, changes=req.changes, deleted_keys=req.deleted_keys,
        base_version=req.base_version, device_id=req.device_id),
        idempotency=idem(request, claims, sid, req))
    events = await gw.events_of(sid, outcome) if outcome is not None else []
    return S.IncrementalResponse(
        session_id=sid, version=_last(events, "state_version", req.base_version or 0),
        session_version=outcome.version if outcome else 0,
        applied_changes=len(req.changes), deleted_keys=req.deleted_keys)


async def post_conflict(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    req = await body(request, gw, S.ConflictRequest)
    sid = parse_uuid(req.session_id, "session_id")
    check_user(claims, req.user_id)
    check_state(gw, req.client_state, "client_state")
    await gw.check_owner(claims, sid)
    outcome = await gw.command(sid, ResolveConflict(
        at=now_ms(), user_id=claims.user_id, client_state=req.client_state,
        strategy=ConflictStrategy(req.resolution_strategy), client_version=req.client_version),
        idempotency=idem(request, claims, sid, req))
    events = await gw.events_of(sid, outcome) if outcome is not None else []
    resolved = _last(events, "state", {})
    return S.ConflictResponse(session_id=sid, resolution_strategy=req.resolution_strategy,
                              resolved_state=resolved, version=_last(events, "state_version", 0),
                              session_version=outcome.version if outcome else 0)


async def get_devices(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    sid = path_uuid(request, "uuid")
    await gw.check_owner(claims, sid)
    devices = await gw.devices(sid)
    return {"session_id": sid, "devices": devices, "count": len(devices)}


async def post_handoff(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    sid = path_uuid(request, "uuid")
    req = await body(request, gw, S.HandoffRequest)
    await gw.check_owner(claims, sid)
    token = secrets.token_urlsafe(24)
    outcome = await gw.command(sid, StartHandoff(
        at=now_ms(), user_id=claims.user_id, token=token, source_device=req.source_device,
        target_device=req.target_device), idempotency=idem(request, claims, sid, req))
    events = await gw.events_of(sid, outcome) if outcome is not None else []
    token = _last(events, "token", token)  # a retry's answer names the first request's token
    expires = _last(events, "expires_at", now_ms() + 300_000)
    return json_response(S.HandoffResponse(
        token=token, session_id=sid, source_device=req.source_device,
        target_device=req.target_device, expires_at=expires, expires_in=300), 201)


async def get_handoff(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    sid = path_uuid(request, "uuid")
    token = identifier(request.path_params["token"], "token", gw.config, required=True)
    await gw.check_owner(claims, sid)
    device = identifier(request.query_params.get("device_id", ""), "device_id", gw.config)
    await gw.command(sid, AcceptHandoff(at=now_ms(), user_id=claims.user_id, token=token,
                                        device_id=device),
                     idempotency=idem(request, claims, sid))
    started = await _handoff_started(gw, sid, token)
    if started is None:
        raise ApiError(404, "HANDOFF_NOT_FOUND", "unknown handoff token")
    return S.HandoffValidation(
        valid=True, session_id=sid, token=token, source_device=started.source_device,
        target_device=started.target_device, state_data=started.state,
        state_version=started.state_version)


#: How many of a session's newest events are searched for a handoff's start (a page at a time;
#: a handoff token lives five minutes, so it is among the newest).
HANDOFF_SEARCH_PAGE = 200
HANDOFF_SEARCH_PAGES = 50


async def _handoff_started(gw: Gateway, sid: str, token: str) -> HandoffStarted | None:
    """The HandoffStarted event of `token` (it carries the state): the newest events first,
    then (when Redis no longer holds the older ones) the archive's."""
    actors, partition, actor = gw.store.actors, gw.store.partition_of(sid), session_actor(sid)
    before: int | None = None
    for _ in range(HANDOFF_SEARCH_PAGES):
        envs = await actors.read_backwards(partition, actor, before=before,
                                           limit=HANDOFF_SEARCH_PAGE)
        found = _handoff_in(envs, token)
        if found is not None:
            return found
        if envs:
            before = envs[-1].version
        if before is not None and before <= 1:
            return None
        if len(envs) < HANDOFF_SEARCH_PAGE:  # Redis holds nothing older: the archive may
            older = await actors.read(partition, actor,
                                      upto=None if before is None else before - 1)
            return _handoff_in(older, token)
    return None


def _handoff_in(envs: list[Any], token: str) -> HandoffStarted | None:
    for env in envs:
        if env.type == "HandoffStarted":
            event = decode_event(env.data, env.type)
            if isinstance(event, HandoffStarted) and event.token == token:
                return event
    return None


async def delete_device(request: Request, gw: Gateway) -> Any:
    claims = auth(request, gw)
    sid = path_uuid(request, "uuid")
    device = identifier(request.path_params["device_id"], "device_id", gw.config, required=True)
    await gw.check_owner(claims, sid)
    await gw.command(sid, DisconnectDevice(at=now_ms(), user_id=claims.user_id, device_id=device,
                                           reason="disconnected"),
                     idempotency=idem(request, claims, sid))
    return S.DisconnectResponse(session_id=sid, device_id=device, disconnected=True,
                                message=f"Device {device} disconnected")


# ------------------------------------------------------------------ admin
async def _metrics_sessions(gw: Gateway) -> dict[str, Any]:
    if gw.pool is None:
        return {}
    row = await gw.pool.fetchrow(
        "SELECT count(*) AS total,"
        " count(*) FILTER (WHERE status <> 'EXPIRED' AND expires_at > now()) AS active,"
        " count(*) FILTER (WHERE created_at > now() - interval '1 hour') AS created_last_hour,"
        " count(DISTINCT user_id) AS users FROM session.active_sessions")
    by_status = {r["status"]: r["n"] for r in await gw.pool.fetch(
        "SELECT status, count(*) AS n FROM session.active_sessions GROUP BY status")}
    return {"total_sessions": row["total"], "active_sessions": row["active"],
            "sessions_created_last_hour": row["created_last_hour"],
            "unique_users": row["users"], "by_status": by_status}


async def _connections(gw: Gateway) -> list[dict[str, Any]]:
    return [{"connection_id": conn_id, **msgspec.json.decode(info)}
            for _gateway, conn_id, info in await gw.store.connections.connections()]


async def _metrics_connections(gw: Gateway) -> dict[str, Any]:
    conns = await _connections(gw)
    by_transport: dict[str, int] = {}
    by_gateway: dict[str, int] = {}
    for c in conns:
        by_transport[c.get("transport", "ws")] = by_transport.get(c.get("transport", "ws"), 0) + 1
        by_gateway[c.get("gateway", "")] = by_gateway.get(c.get("gateway", ""), 0) + 1
    return {"total_connections": len(conns), "local_connections": len(gw.hub.conns),
            "local_sessions": len(gw.hub.feeds), "by_transport": by_transport,
            "by_gateway": by_gateway, "gateways": len(by_gateway)}


async def _metrics_snapshots(gw: Gateway) -> dict[str, Any]:
    if gw.pool is None:
        return {}
    row = await gw.pool.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(pg_column_size(state)), 0) AS bytes,"
        " coalesce(avg(pg_column_size(state)), 0) AS avg_bytes,"
        " coalesce(max(state_version), 0) AS max_version,"
        " count(*) FILTER (WHERE updated_at > now() - interval '1 hour') AS last_hour"
        " FROM session.state_snapshots")
    return {"total_snapshots": row["n"], "total_bytes": int(row["bytes"]),
            "average_bytes": float(row["avg_bytes"]), "max_version": row["max_version"],
            "updated_last_hour": row["last_hour"]}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def admin_metrics(request: Request, gw: Gateway) -> Any:
    auth(request, gw, admin=True)
    kind = request.path_params["kind"]
    makers = {"sessions": _metrics_sessions, "connections": _metrics_connections,
              "snapshots": _metrics_snapshots}
    if kind == "all":
        return {"timestamp": _now_iso(),
                **{k: await fn(gw) for k, fn in makers.items()}}
    if kind not in makers:
        raise ApiError(404, "NOT_FOUND", f"no metrics named {kind!r}")
    return {"timestamp": _now_iso(), **await makers[kind](gw)}


async def admin_sessions(request: Request, gw: Gateway) -> Any:
    auth(request, gw, admin=True)
    limit = min(version_param(request.query_params.get("limit"), "limit") or 100, 1000)
    rows = await gw.pool.fetch(
        "SELECT s.session_id, s.user_id, s.status, s.created_at, s.last_active, s.expires_at,"
        " m.metadata FROM session.active_sessions s LEFT JOIN session.session_metadata m"
        " ON m.session_id = s.session_id WHERE s.status <> 'EXPIRED' AND s.expires_at > now()"
        " ORDER BY s.last_active DESC LIMIT $1", limit) if gw.pool is not None else []
    sessions = [{"session_id": r["session_id"], "user_id": r["user_id"], "status": r["status"],
                 "created_at": r["created_at"].isoformat(),
                 "last_active": r["last_active"].isoformat(),
                 "expires_at": r["expires_at"].isoformat(),
                 "metadata": msgspec.json.decode(r["metadata"]) if isinstance(
                     r["metadata"], (str, bytes)) else (r["metadata"] or {})}
                for r in rows]
    return {"sessions": sessions, "count": len(sessions)}


async def admin_connections(request: Request, gw: Gateway) -> Any:
    auth(request, gw, admin=True)
    conns = await _connections(gw)
    return {"connections": conns, "count": len(conns)}


async def admin_broadcast(request: Request, gw: Gateway) -> Any:
    auth(request, gw, admin=True)
    req = await body(request, gw, S.BroadcastRequest)
    n = await gw.store.feed.broadcast(msgspec.json.encode(
        {"payload": {"message": req.message, "type": req.type, "timestamp": _now_iso()}}))
    return S.BroadcastResponse(message=req.message, type=req.type, gateways=int(n))


# ------------------------------------------------------------------ auth, health
async def auth_refresh(request: Request, gw: Gateway) -> Any:
    req = await body(request, gw, S.RefreshRequest)
    claims = gw.tokens.verify(req.refresh_token, "refresh")
    return gw.tokens.issue_pair(claims.user_id, claims.roles)


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{(s % 3600) // 60}m{s % 60}s"


async def health(request: Request, gw: Gateway) -> Any:
    """Seed 004's fields, and `checks` of Redis, PostgreSQL, worker leases and the projector;
    status healthy / degraded / unhealthy (503) by the rule in `gateway.health`."""
    from gateway.health import UNHEALTHY, health_checks

    status, checks = await health_checks(gw)
    return json_response(S.HealthResponse(
        status=status, timestamp=_now_iso(), version=VERSION,
        uptime=_uptime(time.time() - gw.started_at), active_connections=len(gw.hub.conns),
        metrics=S.HealthMetrics(snapshot_ttl_hours=168, multi_device_enabled=True,
                                versioning_enabled=True), checks=checks),
        503 if status == UNHEALTHY else 200)


async def ready(request: Request, gw: Gateway) -> Any:
    r = await gw.ready()
    return json_response(r, 200 if r["ready"] else 503)


#: (method, path, handler, request body type, response type, summary)
API_ROUTES: list[tuple[str, str, Any, Any, Any, str]] = [
    ("POST", "/api/sessions", create_session, S.CreateSessionRequest, S.CreateSessionResponse,
     "seed 000: the user's session on a device (reused if active, else created)"),
    ("POST", "/api/sessions/{session_id}/simulator", start_simulator, S.StartSimulatorRequest,
     S.SimulatorInfo, "seed 000: start the session's simulator"),
    ("DELETE", "/api/sessions/{session_id}/simulator", stop_simulator, None, S.SimulatorInfo,
     "seed 000: stop the session's simulator"),
    ("POST", "/api/sessions/{session_id}/simulator/stop", stop_simulator, None, S.SimulatorInfo,
     "seed 000: stop the session's simulator"),
    ("GET", "/api/sessions/{session_id}/simulator", simulator_status, None, S.SimulatorInfo,
     "seed 000: the session's simulator status"),
    ("POST", "/api/session/start", session_start, S.SessionStartRequest, S.SessionStartResponse,
     "seed 003: start a session (restart=true ends the live one first)"),
    ("POST", "/api/session/end", session_end, S.SessionEndRequest, S.MessageResponse,
     "seed 003: end a session"),
    ("POST", "/api/session/refresh", session_refresh, S.SessionRefreshRequest,
     S.MessageResponse, "seed 003: refresh a session's activity timer"),
    ("POST", "/session/snapshot", post_snapshot, S.SnapshotRequest, S.SnapshotWriteResponse,
     "seed 004: create/update the session snapshot"),
    ("GET", "/session/{uuid}", get_snapshot, None, S.SnapshotResponse,
     "seed 004: the session snapshot"),
    ("POST", "/session/incremental", post_incremental, S.IncrementalRequest,
     S.IncrementalResponse, "seed 004: apply an incremental update"),
    ("POST", "/session/conflict/resolve", post_conflict, S.ConflictRequest, S.ConflictResponse,
     "seed 004: resolve a state conflict"),
    ("GET", "/session/{uuid}/devices", get_devices, None, S.DevicesResponse,
     "seed 004: the session's devices"),
    ("POST", "/session/{uuid}/handoff", post_handoff, S.HandoffRequest, S.HandoffResponse,
     "seed 004: start a device handoff"),
    ("GET", "/session/{uuid}/handoff/{token}", get_handoff, None, S.HandoffValidation,
     "seed 004: validate a handoff token (once)"),
    ("DELETE", "/session/{uuid}/device/{device_id}", delete_device, None, S.DisconnectResponse,
     "seed 004: disconnect a device"),
    ("GET", "/admin/metrics/{kind}", admin_metrics, None, None,
     "seed 004: admin metrics (sessions, connections, snapshots, all)"),
    ("GET", "/admin/sessions", admin_sessions, None, None, "seed 004: active sessions"),
    ("GET", "/admin/connections", admin_connections, None, None,
     "seed 004: active connections"),
    ("POST", "/admin/broadcast", admin_broadcast, S.BroadcastRequest, S.BroadcastResponse,
     "seed 004: broadcast a message to every client"),
    ("POST", "/auth/refresh", auth_refresh, S.RefreshRequest, S.TokenPair,
     "trade a refresh token for a new access/refresh pair"),
    ("GET", "/health", health, None, S.HealthResponse,
     "seed 004: health, with checks (healthy / degraded / unhealthy)"),
    ("GET", "/ready", ready, None, S.ReadyResponse, "readiness: Redis and PostgreSQL answer"),
]
