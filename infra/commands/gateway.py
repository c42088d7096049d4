"""`sessiond gateway`: the WebSocket / SSE / REST edge (uvicorn, one port)."""

from __future__ import annotations

import argparse
import os

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gateway",
        help="run the gateway (WS /ws, SSE, REST, /health, /metrics) on one port",
        description=(
            "Run the gateway on uvicorn (websockets-sansio, httptools, uvloop). Listens on "
            "127.0.0.1:8080 by default (SERVER_ADDR / GATEWAY_PORT change it). Needs REDIS_URL "
            "(or REDIS_ADDR) and DATABASE_URL. SIGTERM drains: clients are told to reconnect, "
            "then closed within GATEWAY_DRAIN_TIMEOUT seconds."
        ),
    )
    p.add_argument("--host", default=None, help="bind address (default from SERVER_ADDR)")
    p.add_argument("--port", type=int, default=None, help="port (default from SERVER_ADDR)")
    p.add_argument("--drain-timeout", type=float, default=None,
                   help="seconds clients get to leave on SIGTERM (default 10)")
    p.set_defaults(func=run, handler=run)


def run(args: argparse.Namespace) -> int:
    from gateway.config import load_gateway_config
    from gateway.server import serve

    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.drain_timeout is not None:
        overrides["drain_timeout_s"] = args.drain_timeout
    config = load_gateway_config(**overrides)
    profile = os.environ.get("SESSIOND_GATEWAY_PROFILE")
    if profile:  # a development aid: cProfile stats written at exit
        import cProfile

        with cProfile.Profile() as prof:
            try:
                serve(config)
            finally:
                prof.dump_stats(profile)
        return 0
    serve(config)
    return 0
