"""Run the gateway on uvicorn: websockets-sansio for WS, httptools for HTTP, uvloop; and its
gRPC server (`gateway.grpc.server`) on `GRPC_ADDR`, started once the lifespan made the
`Context` both serve from.

On SIGTERM/SIGINT: stop accepting (HTTP and gRPC), push `reconnect` to every client, give them
the drain timeout to leave, close the rest, LeaveDevice for each (no presence left behind), then
shut down.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

import uvicorn

from gateway.app import create_app, drain
from gateway.config import GatewayConfig
from gateway.grpc.server import GrpcServer

__all__ = ["DrainingServer", "build_server", "serve"]

log = logging.getLogger("sessiond.gateway")


class DrainingServer(uvicorn.Server):
    """uvicorn, with the gRPC server beside it and the gateway's drain before its own
    connection shutdown."""

    grpc: GrpcServer | None = None
    grpc_failed = False

    def _context(self) -> Any:
        return getattr(
            getattr(getattr(self, "_sessiond_app", None), "state", None), "context", None
        )

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        ctx = self._context()
        addr = getattr(self, "_sessiond_grpc_addr", "")
        if not self.started or ctx is None or not addr:
            return
        self.grpc = GrpcServer(ctx, addr)
        try:
            await self.grpc.start()
        except Exception as exc:  # the port is taken, the address is not ours...
            log.error("gRPC cannot listen on %s: %s", addr, exc)
            self.grpc_failed = self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        ctx = self._context()
        stopping = None
        if self.grpc is not None:  # new calls refused now; running ones end with the drain
            grace = ctx.config.drain_timeout_s if ctx is not None else 1.0
            stopping = asyncio.ensure_future(self.grpc.stop(grace))
        if ctx is not None and not ctx.draining:
            log.info("draining %d connections", len(ctx.hub.conns))
            try:
                await drain(ctx)
            except Exception:
                log.exception("drain failed")
        if stopping is not None:
            await stopping
        await super().shutdown(sockets)
        # A drained shutdown is a clean exit (code 0): do not re-raise the captured SIGTERM.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def build_server(config: GatewayConfig, **app_kw: Any) -> DrainingServer:
    app = create_app(config, **app_kw)
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        ws="websockets-sansio",
        http="httptools",
        loop="uvloop",
        lifespan="on",
        ws_max_size=max(1 << 20, config.max_ws_message * 4),
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        timeout_graceful_shutdown=config.drain_timeout_s + 5,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
    server = DrainingServer(uv)
    server._sessiond_app = app  # type: ignore[attr-defined]
    server._sessiond_grpc_addr = config.grpc_addr  # type: ignore[attr-defined]
    return server


def serve(config: GatewayConfig) -> None:
    """Run until SIGTERM/SIGINT (blocking)."""
    from infra.gctune import tune_gc

    tune_gc()  # thousands of long-lived connection objects: see infra.gctune
    server = build_server(config)
    server.run()
    if server.grpc_failed:
        sys.exit(3)
