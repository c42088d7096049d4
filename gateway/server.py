"""Run the gateway on uvicorn: websockets-sansio for WS, httptools for HTTP, uvloop.

On SIGTERM/SIGINT: stop accepting, push `reconnect` to every client, give them the drain timeout
to leave, close the rest, LeaveDevice for each (no presence left behind), then shut down.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn

from gateway.app import create_app, drain
from gateway.config import GatewayConfig

__all__ = ["DrainingServer", "build_server", "serve"]

log = logging.getLogger("sessiond.gateway")


class DrainingServer(uvicorn.Server):
    """uvicorn, with the gateway's drain before its own connection shutdown."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        ctx = getattr(getattr(getattr(self, "_sessiond_app", None), "state", None),
                      "context", None)
        if ctx is not None and not ctx.draining:
            log.info("draining %d connections", len(ctx.hub.conns))
            try:
                await drain(ctx)
            except Exception:
                log.exception("drain failed")
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
    return server


def serve(config: GatewayConfig) -> None:
    """Run until SIGTERM/SIGINT (blocking)."""
    from infra.gctune import tune_gc

    tune_gc()  # thousands of long-lived connection objects: see infra.gctune
    server = build_server(config)
    server.run()
