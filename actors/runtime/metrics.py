"""Prometheus metrics of the worker runtime (process-wide, shared by every Worker instance), in
the process's one registry (`infra.metrics`), served with the rest on SESSIOND_METRICS_ADDR."""

from __future__ import annotations

from infra.metrics import counter, gauge, histogram

__all__ = [
    "APPEND_SECONDS",
    "BATCH_SIZE",
    "COMMANDS",
    "CONFLICTS",
    "EVENTS",
    "FENCED",
    "OWNED_PARTITIONS",
    "TIMERS_FIRED",
]

COMMANDS = counter("sessiond_worker_commands_total", "Commands settled by the worker", ("result",))
EVENTS = counter("sessiond_worker_events_total", "Events appended by the worker")
BATCH_SIZE = histogram(
    "sessiond_worker_batch_size",
    "Commands per append script call",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
APPEND_SECONDS = histogram(
    "sessiond_worker_append_seconds",
    "Latency of one append script call (a whole batch)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
CONFLICTS = counter("sessiond_worker_version_conflicts_total", "Actors reloaded after a conflict")
FENCED = counter("sessiond_worker_fenced_total", "Writes refused because a newer owner exists")
TIMERS_FIRED = counter("sessiond_worker_timers_fired_total", "Due timers turned into commands")
OWNED_PARTITIONS = gauge("sessiond_worker_owned_partitions", "Partitions this process owns")
