"""`/openapi.json` (OpenAPI 3.1, whose schemas are JSON Schema 2020-12 as msgspec writes them),
generated from the msgspec types of the REST routes, with the statuses each route answers,
tags by area and request examples. `tests/unit/test_protocol_documents.py` validates it."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from gateway import schemas as S

__all__ = ["EXAMPLES", "SUCCESS", "build_openapi", "tag_of"]

#: The success statuses of the routes that do not answer 200 (by handler name): a creation
#: is 201 (POST /api/sessions: 200 when the device's session is reused), an accepted start or
#: stop of a simulator 202 (it becomes ACTIVE / STOPPED later, on the session's feed).
SUCCESS: dict[str, dict[str, str]] = {
    "create_session": {"201": "a new session", "200": "the device's live session, reused"},
    "start_simulator": {"202": "accepted: the simulator is CREATING"},
    "stop_simulator": {"202": "accepted: the simulator is STOPPING"},
    "post_handoff": {"201": "the handoff token"},
}

_SID = "123e4567-e89b-12d3-a456-426614174000"
_ROUTER = "987fcdeb-51a2-43d1-9876-ba9876543210"
#: One example body per request type (seed 003's and seed 004's own examples where they have
#: one).
EXAMPLES: dict[type, dict[str, Any]] = {
    S.CreateSessionRequest: {"device_id": "laptop-1"},
    S.StartSimulatorRequest: {"initial_symbols": ["AAPL", "MSFT"], "initial_cash": 100000.0},
    S.SessionStartRequest: {"sessionId": _SID, "routerId": _ROUTER, "restart": False},
    S.SessionEndRequest: {"sessionId": _SID, "routerId": _ROUTER},
    S.SessionRefreshRequest: {"sessionId": _SID},
    S.SnapshotRequest: {
        "session_id": _SID,
        "state_data": {"cart": ["sku-1"], "theme": "dark"},
        "device_id": "laptop-1",
        "app_version": "1.0.0",
    },
    S.IncrementalRequest: {
        "session_id": _SID,
        "changes": {"theme": "light"},
        "deleted_keys": ["cart"],
        "base_version": 1,
    },
    S.ConflictRequest: {
        "session_id": _SID,
        "client_state": {"theme": "dark"},
        "client_version": 1,
        "resolution_strategy": "merge",
    },
    S.HandoffRequest: {"source_device": "phone", "target_device": "laptop-1"},
    S.BroadcastRequest: {"message": "maintenance at 22:00 UTC", "type": "notification"},
    S.RefreshRequest: {"refresh_token": "<refresh token>"},
}

#: Tags by path prefix, in the order the docs page lists them.
_TAGS: tuple[tuple[str, str, str], ...] = (
    ("/api/session/", "sessions (seed 003)", "start, end and refresh a session"),
    (
        "/api/sessions",
        "sessions and simulators (seed 000)",
        "the user's session on a device, the session's exchange simulator, its SSE stream",
    ),
    (
        "/session/",
        "state, devices and handoffs (seed 004)",
        "snapshots, incremental changes, conflicts, devices, device handoff",
    ),
    ("/admin", "admin", "the admin role's reads and broadcast"),
    ("/auth", "auth", "tokens"),
    ("/", "health", "health and readiness probes"),
)

_ERRORS = {
    "400": "invalid request",
    "401": "missing, expired or invalid token",
    "403": "forbidden",
    "404": "not found",
    "409": "conflict",
    "410": "the session ended or expired",
    "413": "too large",
    "422": "idempotency key reused for another request",
    "429": "rate limited (Retry-After)",
    "503": "unavailable (Retry-After; OUTCOME_UNKNOWN carries the key to retry with)",
}


def tag_of(path: str) -> str:
    return next(name for prefix, name, _ in _TAGS if path.startswith(prefix))


def _parameters(path: str) -> list[dict[str, Any]]:
    if path.startswith("/admin/metrics/"):
        return [
            {
                "name": "kind",
                "in": "path",
                "required": True,
                "schema": {
                    "type": "string",
                    "enum": ["sessions", "connections", "snapshots", "all"],
                },
            }
        ]
    return [
        {
            "name": p,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"}
            if p in ("uuid", "session_id")
            else {"type": "string"},
        }
        for p in re.findall(r"{(\w+)}", path)
    ]


def build_openapi(routes: list[tuple[str, str, Any, Any, Any, str]], version: str) -> dict:
    types = [t for r in routes for t in (r[3], r[4]) if t is not None] + [S.ErrorSchema]
    types = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(types, schemas, strict=True))
    error = {"content": {"application/json": {"schema": by_type[S.ErrorSchema]}}}
    paths: dict[str, dict] = {}
    for method, path, handler, req, resp, summary in routes:
        body = {
            "content": {
                "application/json": {
                    "schema": by_type[resp] if resp is not None else {"type": "object"}
                }
            }
        }
        success = SUCCESS.get(handler.__name__, {"200": "OK"})
        op: dict[str, Any] = {
            "operationId": handler.__name__
            + ("_" + method.lower() if path.endswith("/stop") else ""),
            "summary": summary,
            "tags": [tag_of(path)],
            "parameters": _parameters(path),
            "responses": {
                **{status: {"description": text, **body} for status, text in success.items()},
                **{status: {"description": text, **error} for status, text in _ERRORS.items()},
            },
        }
        if method in ("POST", "DELETE") or path.endswith("/handoff/{token}"):
            op["parameters"].append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "1-200 visible ASCII characters: a retry with the same key is "
                    "applied once (see the README)",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                }
            )
            op["parameters"].append(
                {
                    "name": "X-Correlation-ID",
                    "in": "header",
                    "required": False,
                    "description": "1-200 visible ASCII characters: echoed on the response and "
                    "stored as the correlation id of every event the request causes "
                    "(GET /admin/events?correlation_id= finds them)",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                }
            )
        if path not in ("/health", "/ready", "/auth/refresh"):
            op["security"] = [{"bearer": []}]
        if req is not None:
            media: dict[str, Any] = {"schema": by_type[req]}
            if req in EXAMPLES:
                media["example"] = EXAMPLES[req]
            op["requestBody"] = {"required": True, "content": {"application/json": media}}
        paths.setdefault(path, {})[method.lower()] = op
    paths["/api/sessions/{session_id}/events"] = {
        "get": {
            "operationId": "session_events",
            "summary": "the session's changes as Server-Sent Events (Last-Event-ID resumes)",
            "tags": [tag_of("/api/sessions")],
            "parameters": [
                {
                    "name": "session_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                }
            ],
            "security": [{"bearer": []}],
            "responses": {
                "200": {
                    "description": "text/event-stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "401": {"description": "unauthorized", **error},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sessiond gateway",
            "version": version,
            "description": "REST and SSE. The WebSocket protocol is described by "
            "/asyncapi.json (AsyncAPI 3), the gRPC API by "
            "gateway/grpc/sessiond.proto (and server reflection).",
        },
        "tags": [{"name": name, "description": text} for _, name, text in _TAGS],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
