"""The gateway's Prometheus metrics (in the shared `infra.metrics` registry, served at /metrics)."""

from __future__ import annotations

from typing import Any

from infra.metrics import counter, gauge, histogram

__all__ = ["GatewayMetrics"]


class _Cached:
    """A labelled metric whose children are looked up once (prometheus' `labels()` costs
    ~15 us per call, several times per message on the hot path)."""

    __slots__ = ("children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self.metric.labels(*values)
        return child


class GatewayMetrics:
    def __init__(self) -> None:
        self.connections = _Cached(
            gauge("sessiond_gateway_connections", "open client connections", ("transport",))
        )
        self.ws_messages = _Cached(
            counter("sessiond_gateway_ws_messages_total", "WebSocket messages received", ("type",))
        )
        self.ws_errors = _Cached(
            counter(
                "sessiond_gateway_ws_errors_total", "errors sent to WebSocket clients", ("code",)
            )
        )
        self.pushes = counter("sessiond_gateway_pushes_total", "changes pushed to connections")
        self.commands = _Cached(
            counter("sessiond_gateway_commands_total", "commands sent to actors", ("type",))
        )
        self.command_errors = _Cached(
            counter(
                "sessiond_gateway_command_errors_total", "commands refused or failed", ("code",)
            )
        )
        # `route`: the route's path template (`/api/sessions/{session_id}`), never the raw
        # path, so the series stay few whatever the ids
        self.http_requests = _Cached(
            counter(
                "sessiond_gateway_http_requests_total",
                "HTTP requests",
                ("method", "route", "status"),
            )
        )
        self.http_latency = _Cached(
            histogram("sessiond_gateway_http_seconds", "HTTP request latency", ("method", "route"))
        )
        self.command_seconds = histogram(
            "sessiond_gateway_command_seconds",
            "command round trip (send -> outcome)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.slow_clients = counter(
            "sessiond_gateway_slow_clients_total", "clients disconnected for a full backlog"
        )
