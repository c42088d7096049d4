"""The worker runtime: many deciders keyed by actor id, on Redis Streams, behind fenced leases.

- `worker.Worker`: owns partitions (leases, rebalance), runs one `PartitionRunner` per partition.
- `batch`: pure planning of a batch (decide in memory, lay out the append script's arguments).
- `scripts`: the Lua scripts (the fenced batch append, leases, timers).
- `cache`: the LRU actor cache with passivation.
- `events_io`: reading an actor's stream (for `sessiond events`).
"""

from actors.runtime.config import RuntimeConfig, load_runtime_config

__all__ = ["RuntimeConfig", "load_runtime_config"]
