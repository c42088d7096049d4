"""`/openapi.json`, generated from the msgspec types of the REST routes."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from gateway import schemas as S

__all__ = ["build_openapi"]


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
        params = [
            {"name": p, "in": "path", "required": True,
             "schema": {"type": "string", "format": "uuid"}
             if p in ("uuid", "session_id") else {"type": "string"}}
            for p in re.findall(r"{(\w+)}", path)
        ]
        if path.startswith("/admin/metrics/"):
            params = [{"name": "kind", "in": "path", "required": True,
                       "schema": {"type": "string",
                                  "enum": ["sessions", "connections", "snapshots", "all"]}}]
        op: dict[str, Any] = {
            "operationId": handler.__name__ + ("_" + method.lower()
                                               if path.endswith("/stop") else ""),
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {
                    "schema": by_type[resp] if resp is not None else {"type": "object"}}}},
                "400": {"description": "invalid request", **error},
                "401": {"description": "missing, expired or invalid token", **error},
                "403": {"description": "forbidden", **error},
                "404": {"description": "not found", **error},
                "409": {"description": "conflict", **error},
                "503": {"description": "unavailable", **error},
            },
        }
        if path not in ("/health", "/ready", "/auth/refresh"):
            op["security"] = [{"bearer": []}]
        if req is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": by_type[req]}}}
        paths.setdefault(path, {})[method.lower()] = op
    paths["/api/sessions/{session_id}/events"] = {"get": {
        "operationId": "session_events",
        "summary": "the session's changes as Server-Sent Events (Last-Event-ID resumes)",
        "parameters": [{"name": "session_id", "in": "path", "required": True,
                        "schema": {"type": "string", "format": "uuid"}}],
        "security": [{"bearer": []}],
        "responses": {"200": {"description": "text/event-stream",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      "401": {"description": "unauthorized", **error}},
    }}
    return {
        "openapi": "3.0.3",
        "info": {"title": "sessiond gateway", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }
