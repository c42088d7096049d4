"""The worker runtime: many deciders keyed by actor id, on Redis Streams, behind fenced leases.

- `worker.Worker`: owns partitions (leases, rebalance), runs one `PartitionRunner` per partition,
  on the event store (`infra.store`: the fenced batch append, leases, timers, reads).
- `batch`: pure planning of a batch (decide in memory, fill the store's append batch).
- `cache`: the LRU actor cache with passivation.

Its configuration is the `runtime` section of the settings (`infra.sections.RuntimeConfig`).
"""

__all__: list[str] = []
