"""What the projected tables must equal: a fold of every partition log, in memory
(`sessiond projections verify`, and the tests)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from redis.asyncio import Redis

__all__ = ["fold_logs", "log_length"]


async def fold_logs(redis: Redis, partitions: int, skip: Collection[tuple[int, str]] = ()) -> Any:
    """The read model as a fold of every partition log, in memory (what the tables must equal).
    `skip` names log entries (partition, entry id) to leave out: the projector's dead letters,
    which it recorded instead of projecting."""
    from events.codec import decode_event, decode_event_envelope
    from infra.store.layout import partition_log as log_key
    from projections.model import Model

    model = Model()
    for p in range(partitions):
        last = "-"
        while True:
            entries = await redis.xrange(log_key(p), min=last, count=5000)
            if last != "-" and entries:
                entries = entries[1:]
            if not entries:
                break
            for entry_id, fields in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                if (p, last) in skip:
                    continue
                env = decode_event_envelope(fields[b"e"])
                model.apply(env, decode_event(env.data, env.type))
    return model


async def log_length(redis: Redis, partitions: int) -> int:
    from infra.store.layout import partition_log as log_key

    return sum([await redis.xlen(log_key(p)) for p in range(partitions)])
