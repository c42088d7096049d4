"""Simulator routes the gateway mounts beside its own (seed 000 start / stop / status live in
`gateway/rest.py`): the latest market data of the session's simulator, for REST clients that
poll instead of holding a WebSocket or an SSE stream.

`GET /api/sessions/{session_id}/simulator/quotes` -> `{"simulator_id", "status", "tick"}` where
`tick` is the newest tick of the simulator's stream (`MarketData.latest`; `null` before the
first one).
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import ApiError
from gateway.rest import auth, endpoint, path_uuid

__all__ = ["latest_quotes", "routes"]

_json = msgspec.json.Encoder()


async def latest_quotes(request: Request, gw: Any) -> Response:
    claims = auth(request, gw)
    session_id = path_uuid(request)
    await gw.check_owner(claims, session_id)
    sim = await gw.simulator(session_id)
    if sim is None:
        raise ApiError(404, "SIMULATOR_NOT_FOUND", "this session has no simulator")
    latest = await gw.store.market_data.latest(sim["simulator_id"])
    raw = latest[1] if latest is not None else None
    body = {
        "simulator_id": sim["simulator_id"],
        "status": sim.get("status"),
        "tick": msgspec.Raw(raw) if raw else None,
    }
    return Response(_json.encode(body), media_type="application/json")


routes = [
    Route("/api/sessions/{session_id}/simulator/quotes", endpoint(latest_quotes), methods=["GET"]),
]
