"""`sessiond gateway`: the WebSocket / SSE / REST edge (uvicorn, one port)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from infra.cli import add_knob_option

if TYPE_CHECKING:
    from infra.sections import GatewayConfig

__all__ = ["register", "run"]

log = logging.getLogger("sessiond.gateway")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gateway",
        help="run the gateway (WS /ws, SSE, REST, /health, /metrics) on one port",
        description=(
            "Run the gateway on uvicorn (websockets-sansio, httptools, uvloop). Listens on "
            "127.0.0.1:8080 by default (SERVER_ADDR / GATEWAY_PORT change it), and serves the gRPC "
            "API on GRPC_ADDR (default 127.0.0.1:50051). Needs REDIS_URL "
            "(or REDIS_ADDR) and DATABASE_URL. SIGTERM drains: clients are told to reconnect, "
            "then closed within GATEWAY_DRAIN_TIMEOUT seconds."
        ),
    )
    add_knob_option(p, "--host", "gateway.host", help="bind address (default from SERVER_ADDR)")
    add_knob_option(p, "--port", "gateway.port", help="port (default from SERVER_ADDR)")
    add_knob_option(
        p,
        "--drain-timeout",
        "gateway.drain_timeout_s",
        metavar="SECONDS",
        help="seconds clients get to leave on SIGTERM (default 10)",
    )
    p.set_defaults(func=run, handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.server import serve

    settings = args.settings
    settings.require_redis_url()
    if settings.env == "prod":
        asyncio.run(_preflight(settings.gateway))
    serve(settings.gateway)
    return 0


async def _preflight(config: GatewayConfig) -> None:
    """Refuse servers that could lose what the gateway acknowledges (`infra.preflight`),
    before uvicorn starts: a refusal is then one line, not a failed lifespan."""
    from infra.backoff import wait_until_up
    from infra.postgres import create_pool, pg_outage
    from infra.preflight import check_postgres, check_redis
    from infra.store import open_store

    if config.env != "prod":
        return  # the checks are prod's; a server that is away is waited for by the app
    store = open_store(config.redis_url, config.partitions)
    try:
        await wait_until_up("Redis", lambda: check_redis(store, config.env), log)
    finally:
        await store.aclose()
    if config.database_url:
        pool = await wait_until_up(
            "PostgreSQL",
            lambda: create_pool(config.database_url, min_size=1, max_size=1),
            log,
            retry_if=pg_outage,
        )
        try:
            await check_postgres(pool, config.env)
        finally:
            await pool.close()
