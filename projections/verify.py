"""`sessiond projections verify`: the read model folded in memory from the Redis partition logs,
to compare with the tables (meaningful while Redis still holds the whole logs)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

__all__ = ["fold_logs", "log_length"]


async def fold_logs(redis: Redis, partitions: int) -> Any:
    """The read model as a fold of every partition log, in memory (what the tables must equal)."""
    from actors.keys import partition_log as log_key
    from events.codec import decode_event, decode_event_envelope
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
                env = decode_event_envelope(fields[b"e"])
                model.apply(env, decode_event(env.data, env.type))
                last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return model


async def log_length(redis: Redis, partitions: int) -> int:
    from actors.keys import partition_log as log_key

    return sum([await redis.xlen(log_key(p)) for p in range(partitions)])
