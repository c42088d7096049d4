"""The console's REST adapter and its page: each handler decodes the path and query, calls one
operation of `gateway.operations.console` (admin only), and the result is encoded as JSON.

`ADMIN_ROUTES` has the shape of `gateway.rest.API_ROUTES` (so `/openapi.json` documents them),
`QUERY_PARAMETERS` adds what the generator cannot see (query strings), and `page_routes()`
serves the console itself: `/admin` and its static files under `/admin/ui/`, from this package
(no CDN, no build step: plain ES modules).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from gateway.errors import ApiError, error_response
from gateway.operations import Context, admin
from gateway.operations import console as ops
from gateway.operations.access import require_admin
from gateway.rest import authenticate, path_uuid
from gateway.validate import identifier, version_param

__all__ = ["ADMIN_ROUTES", "MAX_REPLAY_BYTES", "QUERY_PARAMETERS", "document", "page_routes"]

UI = Path(__file__).parent / "ui"
#: An exported history may be far larger than an API body (10,000 events are ~3 MB).
MAX_REPLAY_BYTES = 64 * 1024 * 1024

_lines = msgspec.json.Decoder(list[dict[str, Any]])
_line = msgspec.json.Decoder(dict[str, Any])


def _int(request: Request, name: str, default: int | None) -> int | None:
    value = version_param(request.query_params.get(name), name)
    return default if value is None else value


async def session_overview(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    return await ops.session_overview(ctx, claims, path_uuid(request))


async def actor_events(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    return await ops.actor_events(
        ctx,
        claims,
        request.path_params["actor"],
        after=_int(request, "after", 0) or 0,
        limit=_int(request, "limit", 1000) or 1000,
    )


async def actor_state(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    return await ops.actor_state(
        ctx, claims, request.path_params["actor"], _int(request, "version", None)
    )


async def correlated_events(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    cid = identifier(
        request.query_params.get("correlation_id", ""), "correlation_id", ctx.config, required=True
    )
    return await ops.correlated(ctx, claims, cid, _int(request, "limit", 1000) or 1000)


async def live_stats(request: Request, ctx: Context) -> Any:
    return await ops.live_stats(ctx, authenticate(request, ctx))


async def load_replay(request: Request, ctx: Context) -> Any:
    """POST /admin/replays: an exported history, as JSON lines or one JSON array."""
    claims = authenticate(request, ctx)
    require_admin(claims)  # before reading a body this large
    raw = await request.body()
    if len(raw) > MAX_REPLAY_BYTES:
        raise ApiError(413, "BODY_TOO_LARGE", f"a replay is limited to {MAX_REPLAY_BYTES} bytes")
    try:
        if raw.lstrip()[:1] == b"[":
            lines = _lines.decode(raw)
        else:
            lines = [_line.decode(x) for x in raw.splitlines() if x.strip()]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, "INVALID_ARGUMENT", f"not an exported history: {exc}") from None
    return ops.load_replay(ctx, claims, lines)


async def replay_state(request: Request, ctx: Context) -> Any:
    claims = authenticate(request, ctx)
    replay_id = identifier(request.path_params["replay_id"], "replay_id", ctx.config)
    return ops.replay_state(
        ctx, claims, replay_id, request.path_params["actor"], _int(request, "version", None)
    )


#: (method, path, handler, request body type, response type, summary), as `API_ROUTES`.
ADMIN_ROUTES: list[tuple[str, str, Any, Any, Any, str]] = [
    (
        "GET",
        "/admin/sessions/{session_id}",
        session_overview,
        None,
        ops.SessionOverview,
        "console: one session (devices, connections per gateway, simulator, live state)",
    ),
    (
        "GET",
        "/admin/actors/{actor}/events",
        actor_events,
        None,
        ops.EventPage,
        "console: an actor's events after a version (Redis, then the archive)",
    ),
    (
        "GET",
        "/admin/actors/{actor}/state",
        actor_state,
        None,
        ops.ActorState,
        "console: an actor's state after a version, and what that version changed",
    ),
    (
        "GET",
        "/admin/events",
        correlated_events,
        None,
        ops.EventPage,
        "console: every archived event that carries a correlation id",
    ),
    (
        "GET",
        "/admin/stats",
        live_stats,
        None,
        ops.Stats,
        "console: this gateway's live counters (connections, messages, push latency, lag)",
    ),
    (
        "POST",
        "/admin/replays",
        load_replay,
        list[dict[str, Any]],
        ops.ReplayLoaded,
        "console: load an exported history (JSON lines or an array) to step through",
    ),
    (
        "GET",
        "/admin/replays/{replay_id}/actors/{actor}/state",
        replay_state,
        None,
        ops.ActorState,
        "console: a loaded replay's actor state after a version",
    ),
]

_ACTOR = {
    "type": "string",
    "pattern": "^(session|simulator):[0-9a-fA-F-]{36}$",
    "example": "session:550e8400-e29b-41d4-a716-446655440000",
}
_COUNT = {"type": "integer", "minimum": 0}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


#: Query parameters by (method, path), for `/openapi.json`.
QUERY_PARAMETERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("get", "/admin/sessions"): [
        _q("user", {"type": "string"}, "a user id or its beginning"),
        _q("device", {"type": "string"}, "a device id the session has"),
        _q(
            "status",
            {"type": "string", "enum": list(admin.SESSION_STATUSES)},
            "default: every live session",
        ),
        _q("cursor", {"type": "string"}, "next_cursor of the previous page"),
        _q("limit", _COUNT, "sessions per page (default 100, at most 1000)"),
    ],
    ("get", "/admin/actors/{actor}/events"): [
        _q("after", _COUNT, "only versions after this one (default 0)"),
        _q("limit", _COUNT, "events per page (default 1000, at most 5000)"),
    ],
    ("get", "/admin/actors/{actor}/state"): [
        _q("version", _COUNT, "the version (default: the newest)"),
    ],
    ("get", "/admin/events"): [
        {**_q("correlation_id", {"type": "string"}, "the correlation id"), "required": True},
        _q("limit", _COUNT, "at most this many events (default 1000)"),
    ],
    ("get", "/admin/replays/{replay_id}/actors/{actor}/state"): [
        _q("version", _COUNT, "the version (default: the newest)"),
    ],
}


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the query parameters and the actor path's pattern to the generated document."""
    for (method, path), params in QUERY_PARAMETERS.items():
        op = openapi["paths"].get(path, {}).get(method)
        if op is None:
            continue
        op["parameters"] = [p for p in op["parameters"] if p["in"] == "path"] + params
    for operations in openapi["paths"].values():
        for op in operations.values():
            for p in op.get("parameters", []):
                if p["in"] == "path" and p["name"] == "actor":
                    p["schema"] = _ACTOR
    return openapi


def _index(request: Request) -> Response:
    return FileResponse(UI / "index.html", headers={"cache-control": "no-cache"})


_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


def _asset(request: Request) -> Response:
    name = request.path_params["name"]
    path = (UI / name).resolve()
    if UI.resolve() not in path.parents or not path.is_file() or path.suffix not in _TYPES:
        return error_response(404, "NOT_FOUND", f"no console asset {name}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={"cache-control": "no-cache"})


def page_routes() -> list[Route]:
    """`/admin` (the console) and `/admin/ui/<file>` (its scripts and styles)."""
    return [Route("/admin", _index), Route("/admin/ui/{name:path}", _asset)]
