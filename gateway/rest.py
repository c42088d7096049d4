"""The REST adapter: seed 000's sessions and simulators, seed 003's session API (bodies
verbatim), seed 004's snapshot / device / handoff / admin API, token refresh, health and
readiness.

Every handler only decodes (bearer token, path, query, the `Idempotency-Key` header, a JSON
body validated into a msgspec Struct), calls one operation of `gateway.operations`, and encodes
its result as the seed's JSON body. Every failure is ``{"error": {"code", "message"}}`` with
its status (`gateway.errors`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind
from starlette.requests import Request
from starlette.responses import Response

from events.session import ConflictStrategy
from gateway import health as checks
from gateway import schemas as S
from gateway.auth import Claims, bearer
from gateway.errors import ApiError, error_response, from_exception
from gateway.operations import Context, access, admin, devices, handoffs, sessions, simulators
from gateway.operations import state as states
from gateway.operations.commands import correlated
from gateway.validate import (
    check_identifiers,
    decode_json,
    identifier,
    parse_uuid,
    version_param,
)
from infra import tracing
from infra.logging import log_context

__all__ = ["API_ROUTES", "EXTRA_ROUTES", "VERSION", "endpoint"]

_enc = msgspec.json.Encoder()
VERSION = "0.1.0"


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(_enc.encode(obj), status_code=status, media_type="application/json")


def endpoint(
    fn: Callable[[Request, Context], Awaitable[Any]], route: str = ""
) -> Callable[[Request], Any]:
    """Wrap a handler: errors become the error shape, results become JSON, metrics count (by
    `route`, the path template), and the request gets its span (a child of the client's
    ``traceparent`` header, if any) and its log fields. An ``X-Correlation-ID`` header is
    echoed on the response and carried by the events the request's commands cause."""

    async def handler(request: Request) -> Response:
        ctx: Context = request.app.state.context
        started = time.perf_counter()
        headers = request.headers
        correlation_id = headers.get("x-correlation-id", "")
        with (
            log_context(
                correlation_id=correlation_id,
                session_id=request.path_params.get("session_id")
                or request.path_params.get("uuid", ""),
            ),
            tracing.span(
                "sessiond.gateway.request", parent=headers.get("traceparent", ""),
                kind=SpanKind.SERVER, http_method=request.method, http_route=route,
            ) as span,
        ):  # fmt: skip
            echo = ""
            try:
                with correlated(correlation_id):  # checks it: a refused one is not echoed
                    echo = correlation_id
                    result = await fn(request, ctx)
                response = result if isinstance(result, Response) else json_response(result)
            except Exception as exc:
                err = from_exception(exc)
                response = error_response(err.status, err.code, err.message, err.headers, err.extra)
            if echo:
                response.headers.setdefault("x-correlation-id", echo)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status_code)
        status = str(response.status_code)
        ctx.metrics.http_requests.labels(request.method, route, status).inc()
        ctx.metrics.http_latency.labels(request.method, route).observe(
            time.perf_counter() - started
        )
        return response

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


def authenticate(request: Request, ctx: Context) -> Claims:
    """The bearer token's claims; one request of the caller's rate."""
    claims = access.authenticate(ctx, bearer(request.headers.get("authorization")))
    access.rate_limit(ctx, claims)
    return claims


async def body(request: Request, ctx: Context, type_: type) -> Any:
    raw = await request.body()
    limit = ctx.config.max_body_bytes
    if len(raw) > limit:
        raise ApiError(413, "BODY_TOO_LARGE", f"bodies are limited to {limit} bytes")
    if not raw.strip():
        raw = b"{}"
    fields = decode_json(raw, ctx.config)  # what the stores cannot hold is refused here
    if isinstance(fields, dict):
        check_identifiers(fields, ctx.config)
    try:
        return msgspec.convert(fields, type_)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "INVALID_ARGUMENT", f"invalid body: {exc}") from None


def path_uuid(request: Request, name: str = "session_id") -> str:
    return parse_uuid(request.path_params[name], name)


def idempotency_key(request: Request) -> str | None:
    return request.headers.get("idempotency-key")


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


# ------------------------------------------------------------------ seed 000
async def create_session(request: Request, ctx: Context) -> Any:
    """POST /api/sessions: device id + bearer token -> the user's session on that device."""
    claims = authenticate(request, ctx)
    req = await body(request, ctx, S.CreateSessionRequest)
    device = identifier(
        req.device_id or req.deviceId or request.headers.get("x-device-id", ""),
        "device_id",
        ctx.config,
    )
    found = await sessions.session_for_device(
        ctx,
        claims,
        sessions.DeviceSession(
            device_id=device,
            ip_address=client_ip(request),
            idempotency_key=idempotency_key(request),
        ),
    )
    return json_response(
        S.CreateSessionResponse(
            session_id=found.session_id,
            user_id=claims.user_id,
            device_id=device,
            created=found.created,
        ),
        201 if found.created else 200,
    )


async def start_simulator(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    sid = path_uuid(request)
    req = await body(request, ctx, S.StartSimulatorRequest)
    started = await simulators.start_simulator(
        ctx,
        claims,
        simulators.SimulatorStart(
            session_id=sid,
            initial_symbols=req.initial_symbols,
            initial_cash=req.initial_cash,
            idempotency_key=idempotency_key(request),
        ),
    )
    return json_response(
        S.SimulatorInfo(
            simulator_id=started.simulator_id,
            session_id=sid,
            status="CREATING",
            user_id=claims.user_id,
            initial_symbols=started.initial_symbols,
            initial_cash=started.initial_cash,
        ),
        202,
    )


async def stop_simulator(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    stopped = await simulators.stop_simulator(
        ctx,
        claims,
        simulators.SimulatorStop(
            session_id=path_uuid(request), idempotency_key=idempotency_key(request)
        ),
    )
    assert stopped.simulator is not None  # looked up: no simulator id was given
    return json_response(msgspec.structs.replace(stopped.simulator, status="STOPPING"), 202)


async def simulator_status(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    return await simulators.simulator_status(ctx, claims, path_uuid(request))


async def latest_quotes(request: Request, ctx: Context) -> Any:
    """GET .../simulator/quotes: the newest tick, for clients that poll instead of holding a
    WebSocket or an SSE stream."""
    claims = authenticate(request, ctx)
    return await simulators.latest_quotes(ctx, claims, path_uuid(request))


# ------------------------------------------------------------------ seed 003
async def session_start(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    req = await body(request, ctx, S.SessionStartRequest)
    sid = parse_uuid(req.sessionId, "sessionId")
    router = parse_uuid(req.routerId, "routerId")
    started = await sessions.start_session(
        ctx,
        claims,
        sessions.SessionStart(
            session_id=sid,
            router_id=router,
            restart=req.restart,
            ip_address=client_ip(request),
            idempotency_key=idempotency_key(request),
        ),
    )
    return S.SessionStartResponse(
        session_id=sid,
        router_reachable=started.router_reachable,
        infrastructure_ready=started.infrastructure_ready,
        message="Session established successfully",
    )


async def session_end(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    req = await body(request, ctx, S.SessionEndRequest)
    sid = parse_uuid(req.sessionId, "sessionId")
    router = parse_uuid(req.routerId, "routerId")
    await sessions.end_session(
        ctx,
        claims,
        sessions.SessionChange(
            session_id=sid, router_id=router, idempotency_key=idempotency_key(request)
        ),
    )
    return S.MessageResponse(message="Session ended")


async def session_refresh(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    req = await body(request, ctx, S.SessionRefreshRequest)
    sid = parse_uuid(req.sessionId, "sessionId")
    await sessions.refresh_session(
        ctx,
        claims,
        sessions.SessionChange(session_id=sid, idempotency_key=idempotency_key(request)),
    )
    return S.MessageResponse(message=f"Session {sid} refreshed")


# ------------------------------------------------------------------ seed 004
async def post_snapshot(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    req = await body(request, ctx, S.SnapshotRequest)
    sid = parse_uuid(req.session_id, "session_id")
    written = await states.save_snapshot(
        ctx,
        claims,
        states.SnapshotWrite(
            session_id=sid,
            state=req.state_data,
            version=req.version,
            device_id=req.device_id,
            app_version=req.app_version,
            user_id=req.user_id,
            idempotency_key=idempotency_key(request),
        ),
    )
    return S.SnapshotWriteResponse(
        session_id=sid,
        user_id=claims.user_id,
        version=written.state_version,
        session_version=written.session_version,
        device_id=req.device_id,
        app_version=req.app_version,
    )


async def get_snapshot(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    sid = path_uuid(request, "uuid")
    min_version = version_param(request.query_params.get("min_version"), "min_version")
    return await states.read_snapshot(
        ctx, claims, states.SnapshotRead(session_id=sid, min_version=min_version)
    )


async def post_incremental(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    req = await body(request, ctx, S.IncrementalRequest)
    sid = parse_uuid(req.session_id, "session_id")
    written = await states.apply_changes(
        ctx,
        claims,
        states.StateChanges(
            session_id=sid,
            changes=req.changes,
            deleted_keys=req.deleted_keys,
            base_version=req.base_version,
            device_id=req.device_id,
            user_id=req.user_id,
            idempotency_key=idempotency_key(request),
        ),
    )
    return S.IncrementalResponse(
        session_id=sid,
        version=written.state_version,
        session_version=written.session_version,
        applied_changes=len(req.changes),
        deleted_keys=req.deleted_keys,
    )


async def post_conflict(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    req = await body(request, ctx, S.ConflictRequest)
    sid = parse_uuid(req.session_id, "session_id")
    resolved = await states.resolve_conflict(
        ctx,
        claims,
        states.ConflictResolution(
            session_id=sid,
            client_state=req.client_state,
            strategy=ConflictStrategy(req.resolution_strategy),
            client_version=req.client_version,
            user_id=req.user_id,
            idempotency_key=idempotency_key(request),
        ),
    )
    return S.ConflictResponse(
        session_id=sid,
        resolution_strategy=req.resolution_strategy,
        resolved_state=resolved.state,
        version=resolved.state_version,
        session_version=resolved.session_version,
    )


async def get_devices(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    sid = path_uuid(request, "uuid")
    found = await devices.list_devices(ctx, claims, sid)
    return {"session_id": sid, "devices": found, "count": len(found)}


async def post_handoff(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    sid = path_uuid(request, "uuid")
    req = await body(request, ctx, S.HandoffRequest)
    issued = await handoffs.start_handoff(
        ctx,
        claims,
        handoffs.HandoffStart(
            session_id=sid,
            source_device=req.source_device,
            target_device=req.target_device,
            idempotency_key=idempotency_key(request),
        ),
    )
    return json_response(
        S.HandoffResponse(
            token=issued.token,
            session_id=sid,
            source_device=issued.source_device,
            target_device=issued.target_device,
            expires_at=issued.expires_at,
            expires_in=issued.expires_in,
        ),
        201,
    )


async def get_handoff(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    sid = path_uuid(request, "uuid")
    token = identifier(request.path_params["token"], "token", ctx.config, required=True)
    device = identifier(request.query_params.get("device_id", ""), "device_id", ctx.config)
    accepted = await handoffs.accept_handoff(
        ctx,
        claims,
        handoffs.HandoffAcceptance(
            session_id=sid, token=token, device_id=device, idempotency_key=idempotency_key(request)
        ),
    )
    return S.HandoffValidation(
        valid=True,
        session_id=sid,
        token=token,
        source_device=accepted.source_device,
        target_device=accepted.target_device,
        state_data=accepted.state,
        state_version=accepted.state_version,
    )


async def delete_device(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    sid = path_uuid(request, "uuid")
    device = identifier(request.path_params["device_id"], "device_id", ctx.config, required=True)
    await devices.disconnect_device(
        ctx,
        claims,
        devices.DeviceDisconnect(
            session_id=sid, device_id=device, idempotency_key=idempotency_key(request)
        ),
    )
    return S.DisconnectResponse(
        session_id=sid, device_id=device, disconnected=True, message=f"Device {device} disconnected"
    )


# ------------------------------------------------------------------ admin
async def admin_metrics(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    return await admin.admin_metrics(ctx, claims, request.path_params["kind"])


async def admin_sessions(request: Request, ctx: Context) -> Any:
    """GET /admin/sessions?user=&device=&status=&cursor=&limit= (keyset pages)."""
    claims = authenticate(request, ctx)
    q = request.query_params
    limit = version_param(q.get("limit"), "limit")
    return await admin.search_sessions(
        ctx,
        claims,
        admin.SessionQuery(
            user=identifier(q.get("user", ""), "user", ctx.config),
            device=identifier(q.get("device", ""), "device", ctx.config),
            status=q.get("status", "")[:32],
            cursor=q.get("cursor", "")[:512],
            limit=100 if limit is None else limit,
        ),
    )


async def admin_connections(request: Request, ctx: Context) -> Any:
    return await admin.admin_connections(ctx, authenticate(request, ctx))


async def admin_broadcast(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    req = await body(request, ctx, S.BroadcastRequest)
    sent = await admin.broadcast(
        ctx, claims, admin.Broadcast.notification(req.message, req.type, admin.now_iso())
    )
    return S.BroadcastResponse(message=req.message, type=req.type, gateways=sent.gateways)


# ------------------------------------------------------------------ auth, health
async def sse_ticket(request: Request, ctx: Context) -> Any:
    """A ticket for the session's SSE stream (EventSource cannot send the access token)."""
    claims = authenticate(request, ctx)
    return await access.mint_sse_ticket(ctx, claims, path_uuid(request, "session_id"))


async def auth_refresh(request: Request, ctx: Context) -> Any:
    req = await body(request, ctx, S.RefreshRequest)
    return access.refresh_tokens(ctx, req.refresh_token)


def _hours(ms: int) -> int | float:
    """SESSION_TTL in hours, as seed 004's health shows it: whole hours as an integer (168)."""
    hours = ms / 3_600_000
    return int(hours) if hours.is_integer() else round(hours, 4)


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{(s % 3600) // 60}m{s % 60}s"


async def health(request: Request, ctx: Context) -> Any:
    """Seed 004's fields, and `checks` of Redis, PostgreSQL, worker leases and the projector;
    status healthy / degraded / unhealthy (503) by the rule in `gateway.health`."""
    status, found = await checks.health_checks(ctx)
    return json_response(
        S.HealthResponse(
            status=status,
            timestamp=admin.now_iso(),
            version=VERSION,
            uptime=_uptime(time.time() - ctx.started_at),
            active_connections=len(ctx.hub.conns),
            metrics=S.HealthMetrics(
                snapshot_ttl_hours=_hours(ctx.config.session_ttl_ms),
                multi_device_enabled=True,
                versioning_enabled=True,
            ),
            checks=found,
        ),
        503 if status == checks.UNHEALTHY else 200,
    )


async def ready(request: Request, ctx: Context) -> Any:
    r = await checks.readiness(ctx)
    return json_response(r, 200 if r["ready"] else 503)


#: (method, path, handler, request body type, response type, summary)
API_ROUTES: list[tuple[str, str, Any, Any, Any, str]] = [
    (
        "POST",
        "/api/sessions",
        create_session,
        S.CreateSessionRequest,
        S.CreateSessionResponse,
        "seed 000: the user's session on a device (reused if active, else created)",
    ),
    (
        "POST",
        "/api/sessions/{session_id}/simulator",
        start_simulator,
        S.StartSimulatorRequest,
        S.SimulatorInfo,
        "seed 000: start the session's simulator",
    ),
    (
        "DELETE",
        "/api/sessions/{session_id}/simulator",
        stop_simulator,
        None,
        S.SimulatorInfo,
        "seed 000: stop the session's simulator",
    ),
    (
        "POST",
        "/api/sessions/{session_id}/simulator/stop",
        stop_simulator,
        None,
        S.SimulatorInfo,
        "seed 000: stop the session's simulator",
    ),
    (
        "GET",
        "/api/sessions/{session_id}/simulator",
        simulator_status,
        None,
        S.SimulatorInfo,
        "seed 000: the session's simulator status",
    ),
    (
        "POST",
        "/api/session/start",
        session_start,
        S.SessionStartRequest,
        S.SessionStartResponse,
        "seed 003: start a session (restart=true ends the live one first)",
    ),
    (
        "POST",
        "/api/session/end",
        session_end,
        S.SessionEndRequest,
        S.MessageResponse,
        "seed 003: end a session",
    ),
    (
        "POST",
        "/api/session/refresh",
        session_refresh,
        S.SessionRefreshRequest,
        S.MessageResponse,
        "seed 003: refresh a session's activity timer",
    ),
    (
        "POST",
        "/session/snapshot",
        post_snapshot,
        S.SnapshotRequest,
        S.SnapshotWriteResponse,
        "seed 004: create/update the session snapshot",
    ),
    (
        "GET",
        "/session/{uuid}",
        get_snapshot,
        None,
        S.SnapshotResponse,
        "seed 004: the session snapshot",
    ),
    (
        "POST",
        "/session/incremental",
        post_incremental,
        S.IncrementalRequest,
        S.IncrementalResponse,
        "seed 004: apply an incremental update",
    ),
    (
        "POST",
        "/session/conflict/resolve",
        post_conflict,
        S.ConflictRequest,
        S.ConflictResponse,
        "seed 004: resolve a state conflict",
    ),
    (
        "GET",
        "/session/{uuid}/devices",
        get_devices,
        None,
        S.DevicesResponse,
        "seed 004: the session's devices",
    ),
    (
        "POST",
        "/session/{uuid}/handoff",
        post_handoff,
        S.HandoffRequest,
        S.HandoffResponse,
        "seed 004: start a device handoff",
    ),
    (
        "GET",
        "/session/{uuid}/handoff/{token}",
        get_handoff,
        None,
        S.HandoffValidation,
        "seed 004: validate a handoff token (once)",
    ),
    (
        "DELETE",
        "/session/{uuid}/device/{device_id}",
        delete_device,
        None,
        S.DisconnectResponse,
        "seed 004: disconnect a device",
    ),
    (
        "GET",
        "/admin/metrics/{kind}",
        admin_metrics,
        None,
        None,
        "seed 004: admin metrics (sessions, connections, snapshots, all)",
    ),
    ("GET", "/admin/sessions", admin_sessions, None, None, "seed 004: active sessions"),
    ("GET", "/admin/connections", admin_connections, None, None, "seed 004: active connections"),
    (
        "POST",
        "/admin/broadcast",
        admin_broadcast,
        S.BroadcastRequest,
        S.BroadcastResponse,
        "seed 004: broadcast a message to every client",
    ),
    (
        "POST",
        "/api/sessions/{session_id}/events/ticket",
        sse_ticket,
        None,
        access.SseTicket,
        "a one-minute ticket that opens this session's SSE stream (`?ticket=`), for EventSource",
    ),
    (
        "POST",
        "/auth/refresh",
        auth_refresh,
        S.RefreshRequest,
        S.TokenPair,
        "trade a refresh token for a new access/refresh pair",
    ),
    (
        "GET",
        "/health",
        health,
        None,
        S.HealthResponse,
        "seed 004: health, with checks (healthy / degraded / unhealthy)",
    ),
    ("GET", "/ready", ready, None, S.ReadyResponse, "readiness: Redis and PostgreSQL answer"),
]

#: Routes served beside the documented API (not in /openapi.json).
EXTRA_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/sessions/{session_id}/simulator/quotes", latest_quotes),
]
