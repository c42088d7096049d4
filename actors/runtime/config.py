"""Tuning of the worker runtime, from `SESSIOND_*` environment variables with dev defaults.

The shared `infra.config.Settings` carries the deployment-wide values (Redis URL, partitions,
`LEASE_TTL_MS`, which `sessiond worker` passes in as an override); these are the runtime's own
knobs, kept here so the runtime needs nothing more from `infra/`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["RuntimeConfig", "load_runtime_config"]


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How a worker holds leases, batches commands, caches actors and fires timers."""

    lease_ttl_ms: int = 5_000  # a dead worker's partitions are taken over after about this long
    renew_interval_ms: int = 0  # 0 = lease_ttl_ms / 3
    batch_size: int = 500  # commands read (and appended in one script) per partition at a time
    block_ms: int = 100  # how long an idle partition blocks on XREADGROUP
    snapshot_every: int = 100  # write a snapshot when this many events passed since the last
    cache_max_actors: int = 200_000  # LRU bound of the in-memory actor cache
    passivate_after_ms: int = 600_000  # idle actors leave the cache after this long
    timer_poll_ms: int = 250  # how often the owner looks for due timers
    timer_batch: int = 500  # timers fired per poll at most
    outcome_ttl_ms: int = 24 * 3600 * 1000  # how long a command id deduplicates
    max_conflict_retries: int = 5  # reload-and-decide rounds per batch before retrying later
    trim_interval_ms: int = 10_000  # how often acknowledged commands are trimmed from the stream

    @property
    def renew_every_s(self) -> float:
        return (self.renew_interval_ms or self.lease_ttl_ms // 3) / 1000


_ENV = {
    "renew_interval_ms": "SESSIOND_LEASE_RENEW_MS",
    "batch_size": "SESSIOND_BATCH_SIZE",
    "block_ms": "SESSIOND_BLOCK_MS",
    "snapshot_every": "SESSIOND_SNAPSHOT_EVERY",
    "cache_max_actors": "SESSIOND_CACHE_MAX_ACTORS",
    "passivate_after_ms": "SESSIOND_PASSIVATE_AFTER_MS",
    "timer_poll_ms": "SESSIOND_TIMER_POLL_MS",
    "outcome_ttl_ms": "SESSIOND_OUTCOME_TTL_MS",
}


def load_runtime_config(env: Mapping[str, str] = os.environ, **overrides: Any) -> RuntimeConfig:
    """The runtime config from `env`; `overrides` (non-None values) win. Bad values raise
    `ValueError` naming the variable."""
    values: dict[str, Any] = {}
    for field, var in _ENV.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[field] = int(raw)
        except ValueError:
            raise ValueError(f"{var} must be an integer, got {raw!r}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = RuntimeConfig(**values)
    if config.lease_ttl_ms < 100:
        raise ValueError("lease_ttl_ms must be at least 100")
    if config.batch_size < 1 or config.snapshot_every < 1:
        raise ValueError("batch_size and snapshot_every must be positive")
    return config
