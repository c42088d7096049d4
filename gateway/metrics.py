"""The gateway's Prometheus metrics (in the shared `infra.metrics` registry, served at /metrics)."""

from __future__ import annotations

from infra.metrics import counter, gauge, histogram

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    def __init__(self) -> None:
        self.connections = gauge(
            "sessiond_gateway_connections", "open client connections", ("transport",)
        )
        self.ws_messages = counter(
            "sessiond_gateway_ws_messages_total", "WebSocket messages received", ("type",)
        )
        self.ws_errors = counter(
            "sessiond_gateway_ws_errors_total", "errors sent to WebSocket clients", ("code",)
        )
        self.pushes = counter("sessiond_gateway_pushes_total", "changes pushed to connections")
        self.commands = counter(
            "sessiond_gateway_commands_total", "commands sent to actors", ("type",)
        )
        self.command_errors = counter(
            "sessiond_gateway_command_errors_total", "commands refused or failed", ("code",)
        )
        self.http_requests = counter(
            "sessiond_gateway_http_requests_total", "HTTP requests", ("method", "status")
        )
        self.http_latency = histogram(
            "sessiond_gateway_http_seconds", "HTTP request latency", ("method",)
        )
        self.slow_clients = counter(
            "sessiond_gateway_slow_clients_total", "clients disconnected for a full backlog"
        )
