"""The gateway ASGI app: a list of routes, shared resources in the lifespan (Starlette style).

`create_app(config)` builds it; `gateway.server.serve(config)` runs it on uvicorn
(websockets-sansio, httptools, uvloop) with a graceful drain on SIGTERM. The lifespan makes the
process `Context` (store, database, token service, hub, metrics) that every adapter hands to
the operations, starts the hub, the connection upkeep and the market data relay, and closes
them in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from gateway import market_data, upkeep
from gateway.admin.routes import ADMIN_ROUTES, page_routes
from gateway.admin.routes import document as document_admin
from gateway.asyncapi import build_asyncapi
from gateway.config import GatewayConfig
from gateway.docs import docs_routes
from gateway.errors import error_response
from gateway.health import probe_checks
from gateway.openapi import build_openapi
from gateway.operations import Context
from gateway.protocol import MessageType
from gateway.push import Push, session_closed_by
from gateway.rest import API_ROUTES, EXTRA_ROUTES, VERSION, endpoint
from gateway.sse import SseEndpoint
from gateway.ws import WebSocketEndpoint
from infra.backoff import wait_until_up
from infra.probe import probe_server
from infra.store import CommandSender, Store, open_store

__all__ = ["create_app", "drain"]

log = logging.getLogger("sessiond.gateway")


async def drain(ctx: Context, timeout: float | None = None) -> None:
    """Graceful drain: refuse new connections, tell clients to reconnect elsewhere, give them
    `timeout` seconds to leave, close the rest (1012), and send LeaveDevice for every one."""
    timeout = ctx.config.drain_timeout_s if timeout is None else timeout
    ctx.draining = True
    deadline = time.monotonic() + timeout
    advice = Push(MessageType.RECONNECT, {"reason": "server_draining", "retry_after_ms": 100})
    for conn in tuple(ctx.hub.conns.values()):
        conn.deliver(advice)
    while ctx.hub.conns and time.monotonic() < deadline - timeout / 2:
        await asyncio.sleep(0.05)
    for conn in tuple(ctx.hub.conns.values()):
        conn.close_soon(1012, "SERVER_DRAINING")
    pending = {t for t in ctx.handlers if not t.done()}
    left = max(0.1, deadline - time.monotonic())
    if pending:
        await asyncio.wait(pending, timeout=left)


def _metrics(request: Request) -> Response:
    from infra.metrics import CONTENT_TYPE, render

    return Response(render(), media_type=CONTENT_TYPE)


class GatewayApp:
    """The ASGI entry point: `/ws` goes straight to the plain WebSocket endpoint (no
    middleware frames held for the connection's lifetime: ~5 KiB less per connection), the
    rest (and the lifespan) to the Starlette app."""

    def __init__(self, app: Starlette, ws: Any) -> None:
        self.app = app
        self.ws = ws
        self.state = app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            scope["app"] = self.app
            await self.ws(scope, receive, send)
        else:
            await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def _resources(
    config: GatewayConfig, store: Store | None, pool: Any, bus: CommandSender | None
) -> AsyncIterator[Context]:
    """The process's event store, PostgreSQL pool and command sender as a `Context`: each
    made from `config` unless given, and closed on the way out only when made here."""
    async with contextlib.AsyncExitStack() as made:
        s = store
        if s is None:
            s = open_store(config.redis_url, config.partitions, name=f"gw-{config.gateway_id}")
            made.push_async_callback(s.aclose)
        p = pool
        if p is None and config.database_url:
            from infra.postgres import create_pool

            # no connection at start: PostgreSQL may be down (reads answer 503 until it is back)
            p = await create_pool(config.database_url, max_size=10, init_size=0)
            made.push_async_callback(p.close)
        b = bus
        if b is None:
            b = s.command_sender(name=f"gw-{config.gateway_id}")
            made.push_async_callback(b.close)
        # Redis may be down or not started yet: wait for it rather than exit (infra.backoff)
        await wait_until_up("Redis", s.ping, log)
        await wait_until_up("Redis", b.start, log)
        yield Context(config, s, p, b)


@contextlib.asynccontextmanager
async def _serving(ctx: Context) -> AsyncIterator[None]:
    """The hub, the connection upkeep, this gateway's registration and the market data relay,
    while the app serves; on the way out, a drain first (unless one ran), then each stopped."""
    await ctx.hub.start()
    upkeep_task = asyncio.get_running_loop().create_task(upkeep.run(ctx))
    gateway_id = ctx.config.gateway_id
    with contextlib.suppress(Exception):
        await ctx.store.connections.announce(gateway_id)
    ctx.hub.on_change.append(lambda push: _on_change(ctx, push))
    relay = await market_data.install(
        ctx.store.market_data,
        ctx.hub,
        ctx.sender,
        activity_interval_s=ctx.config.simulator_activity_interval_ms / 1000,
    )
    try:
        yield
    finally:
        if not ctx.draining:
            await drain(ctx, min(1.0, ctx.config.drain_timeout_s))
        with contextlib.suppress(Exception):
            await relay.close()
        upkeep_task.cancel()
        with contextlib.suppress(BaseException):
            await upkeep_task
        await ctx.hub.close()
        with contextlib.suppress(Exception):
            await ctx.store.connections.remove_gateway(gateway_id)


def create_app(
    config: GatewayConfig,
    *,
    store: Store | None = None,
    pool: Any = None,
    bus: CommandSender | None = None,
) -> GatewayApp:
    """The gateway app. The event store, the Postgres pool and the command sender (`bus`) are
    made in the lifespan from `config` unless given (tests may inject them); what is given is
    not closed here."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with _resources(config, store, pool, bus) as ctx:
            async with (
                _serving(ctx),
                probe_server(config.metrics_addr, probe_checks(ctx), partitions=config.partitions),
            ):
                app.state.context = ctx
                yield {"context": ctx}

    ws_endpoint = WebSocketEndpoint()
    routes: list[Any] = [WebSocketRoute("/ws", ws_endpoint)]
    for method, path, handler, *_ in (*API_ROUTES, *ADMIN_ROUTES, *EXTRA_ROUTES):
        routes.append(Route(path, endpoint(handler, path), methods=[method]))
    routes.append(Route("/api/sessions/{session_id}/events", SseEndpoint(), methods=["GET"]))
    openapi = msgspec.json.encode(
        document_admin(build_openapi([*API_ROUTES, *ADMIN_ROUTES], VERSION))
    )
    asyncapi = msgspec.json.encode(build_asyncapi(VERSION, config.addr))
    routes += [
        Route("/openapi.json", lambda r: Response(openapi, media_type="application/json")),
        Route("/asyncapi.json", lambda r: Response(asyncapi, media_type="application/json")),
        *docs_routes(),
        Route("/metrics", _metrics),
        *page_routes(),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "NOT_FOUND", f"no route {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "INTERNAL", "internal error")

    origins = list(config.allowed_origins)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["*"],
                allow_headers=["*"],
                allow_credentials="*" not in origins,
                max_age=600,
            )
        ],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error},
    )
    app.state.config = config
    return GatewayApp(app, ws_endpoint)


def _on_change(ctx: Context, push: Push) -> None:
    """Changes that act on local connections: a device disconnected (forced or timed out)
    loses its connections here; an ended session closes its connections."""
    payload = push.payload if isinstance(push.payload, dict) else {}
    event = payload.get("event")
    if event == "DeviceLeft" and payload.get("reason") in ("disconnected", "timeout"):
        for conn in ctx.hub.connections_of(push.session_id):
            if conn.device_id == payload.get("device_id"):
                conn.close_soon(4000, "DEVICE_DISCONNECTED")
    elif (reason := session_closed_by(push)) is not None:
        for conn in ctx.hub.connections_of(push.session_id):
            conn.close_when_caught_up(4410, reason)
