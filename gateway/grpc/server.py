"""The gRPC server of a gateway process: `SessionService`, the standard health service
(`grpc.health.v1.Health`) and server reflection, on `GRPC_ADDR`.

It runs in the gateway process, on uvicorn's event loop, beside the HTTP server, because it is
one more adapter on the same `Context`: a `Watch` is served by the same hub (one change-feed
subscription per process, shared by WS, SSE and gRPC clients), the same per-user rate limit and
connection slots apply, and a drain on SIGTERM ends gRPC streams with the WS and SSE ones. A
process of its own would subscribe to the feed again and drain separately.
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.grpc import sessiond_pb2, sessiond_pb2_grpc
from gateway.grpc.service import SessionService
from gateway.operations import Context

__all__ = ["SERVICE_NAME", "GrpcServer"]

log = logging.getLogger("sessiond.gateway.grpc")

SERVICE_NAME = sessiond_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name

#: HTTP/2 keepalive: the server pings an idle stream every 20 s and drops a peer that does not
#: answer in 10 s (a Watch whose client vanished is detached within half a minute).
_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
]


class GrpcServer:
    """The gRPC side of one gateway process: `start` after the app's lifespan made the
    `Context`, `stop` after the drain."""

    def __init__(self, ctx: Context, addr: str) -> None:
        self.ctx = ctx
        self.addr = addr
        self.port = 0
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(options=_OPTIONS)
        sessiond_pb2_grpc.add_SessionServiceServicer_to_server(SessionService(ctx), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )

    async def start(self) -> int:
        """Listen and serve; the port bound (raises when the address cannot be bound)."""
        self.port = self.server.add_insecure_port(self.addr)
        if not self.port:
            raise OSError(f"GRPC_ADDR={self.addr}: cannot listen there")
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC listening on %s", self.addr)
        return self.port

    async def draining(self) -> None:
        """Health says NOT_SERVING from now on (balancers stop sending new calls)."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, give the running ones `grace_s` seconds, then cancel them."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
