"""Prometheus metrics: one registry per process, shared by every component in it.

Define metrics at module level of the component that owns them with `counter` / `gauge` /
`histogram` (they register in `REGISTRY`, and defining the same name twice returns the first, so
re-imports and tests do not fail). Serve them with `render()`: every process serves it on
`SESSIOND_METRICS_ADDR` (`infra.probe`), the gateway also at ``/metrics`` on its own port. The
registry carries prometheus_client's process, platform and GC collectors (``process_*``,
``python_*``), so every process reports its CPU, memory, open files and collections.
"""

from __future__ import annotations

import threading
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "CONTENT_TYPE",
    "PARTITIONS",
    "REGISTRY",
    "counter",
    "gauge",
    "histogram",
    "render",
]

REGISTRY = CollectorRegistry(auto_describe=True)
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)
prometheus_client.GCCollector(registry=REGISTRY)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
_lock = threading.Lock()
_made: dict[str, Any] = {}


def _get_or_make(cls: type, name: str, doc: str, **kw: Any) -> Any:
    with _lock:
        existing = _made.get(name)
        if existing is not None:
            if not isinstance(existing, cls):
                raise ValueError(f"metric {name!r} already defined as {type(existing).__name__}")
            return existing
        metric = cls(name, doc, registry=REGISTRY, **kw)
        _made[name] = metric
        return metric


def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return _get_or_make(Counter, name, doc, labelnames=labels)


def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return _get_or_make(Gauge, name, doc, labelnames=labels)


def histogram(
    name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] | None = None
) -> Histogram:
    kw: dict[str, Any] = {"labelnames": labels}
    if buckets is not None:
        kw["buckets"] = buckets
    return _get_or_make(Histogram, name, doc, **kw)


#: The deployment's partition count P, exported by every process (`infra.probe.probe_server`).
PARTITIONS = gauge("sessiond_partitions", "Partitions of the deployment (SESSIOND_PARTITIONS)")


def render() -> bytes:
    """The text exposition of every metric in `REGISTRY`."""
    return prometheus_client.generate_latest(REGISTRY)
