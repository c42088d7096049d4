"""Reading an actor's event stream from Redis (what `sessiond events` prints).

Kept apart from the CLI so other readers (an archive fallback for trimmed history, replay tools)
can wrap or reuse it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from actors import keys
from events.codec import decode_event_envelope
from events.envelope import EventEnvelope

__all__ = ["find_partition", "follow_actor_events", "read_actor_events"]


async def find_partition(
    redis: aioredis.Redis, actor_id: str, partitions: int, session_id: str | None = None
) -> int | None:
    """The partition of `actor_id`: from its session id when known (a session actor's id
    carries it), else by probing every partition for its stream. None if it has no events."""
    if session_id is None and keys.actor_kind(actor_id) == "session":
        session_id = keys.actor_uuid(actor_id)
    if session_id:
        return keys.partition_of(session_id, partitions)
    pipe = redis.pipeline(transaction=False)
    for p in range(partitions):
        pipe.exists(keys.event_stream(p, actor_id))
    found = await pipe.execute()
    for p, exists in enumerate(found):
        if exists:
            return p
    return None


async def read_actor_events(
    redis: aioredis.Redis, partition: int, actor_id: str, since: int = 0, count: int | None = None
) -> list[EventEnvelope]:
    """Events of `actor_id` with version > `since`, oldest first (what Redis still holds)."""
    entries = await redis.xrange(
        keys.event_stream(partition, actor_id), f"{since + 1}-0", "+", count=count
    )
    return [decode_event_envelope(fields[b"e"]) for _, fields in entries]


async def follow_actor_events(
    redis: aioredis.Redis, partition: int, actor_id: str, since: int = 0, block_ms: int = 1000
) -> AsyncIterator[EventEnvelope]:
    """Events after version `since` as they are appended, forever (cancel to stop)."""
    stream = keys.event_stream(partition, actor_id)
    last: Any = f"{since}-0"
    while True:
        resp = await redis.xread({stream: last}, block=block_ms, count=500)
        for _, entries in resp or []:
            for entry_id, fields in entries:
                last = entry_id
                yield decode_event_envelope(fields[b"e"])
