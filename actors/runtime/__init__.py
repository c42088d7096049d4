"""The worker runtime: many deciders keyed by actor id, on Redis Streams, behind fenced leases.

- `worker.Worker`: owns partitions (leases, rebalance), runs one `PartitionRunner` per partition,
  on the event store (`infra.store`: the fenced batch append, leases, timers, reads).
- `batch`: pure planning of a batch (decide in memory, fill the store's append batch).
- `cache`: the LRU actor cache with passivation.
"""

from actors.runtime.config import RuntimeConfig, load_runtime_config

__all__ = ["RuntimeConfig", "load_runtime_config"]
