"""Retention: trim Redis below what is both archived and snapshotted, never losing history.

- Partition log `sd:{pN}:log`: entries below the projector's checkpoint are in
  `events.archive` (same transaction). Other consumer groups on the log (the reactor) keep
  what they have not yet acknowledged: the trim point is the minimum of the checkpoint and every
  group's first pending / next undelivered entry.
- Actor stream `sd:{pN}:ev:<actor>`: versions below min(archived version, snapshot version) are
  safe (the archive has them, and the worker loads from the snapshot onwards); the newest
  `keep` versions stay anyway so clients can resume from recent versions without the archive.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from infra.store.layout import event_stream, partition_log, snapshot_key
from projections.projector import CHECKPOINT_NAME

__all__ = ["log_trim_point", "trim_partition"]


def _id(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next(entry_id: str) -> str:
    ms, seq = _key(entry_id)
    return f"{ms}-{seq + 1}"


async def log_trim_point(redis: Redis, key: str, checkpoint: str) -> str:
    """The lowest log id someone still needs: entries strictly below it may go."""
    point = _next(checkpoint) if checkpoint != "0-0" else "0-0"
    try:
        groups = await redis.xinfo_groups(key)
    except ResponseError:
        groups = []
    for g in groups:
        name = g.get("name") or g.get(b"name")
        last = _id(g.get("last-delivered-id") or g.get(b"last-delivered-id") or "0-0")
        need = _next(last) if last != "0-0" else "0-0"
        pending = await redis.xpending(key, name)
        low = pending.get("min") if isinstance(pending, dict) else None
        if low:
            need = min(need, _id(low), key=_key)
        point = min(point, need, key=_key)
    return point


async def trim_partition(redis: Redis, conn: asyncpg.Connection, partition: int,
                         keep: int = 100, dry_run: bool = False) -> dict[str, Any]:
    """Trim one partition's log and actor streams; returns what was (or would be) removed."""
    checkpoint = await conn.fetchval(
        "SELECT last_id FROM projection.checkpoints WHERE name = $1 AND partition = $2",
        CHECKPOINT_NAME, partition) or "0-0"
    log = partition_log(partition)
    point = await log_trim_point(redis, log, checkpoint)
    log_removed = 0
    if point != "0-0":
        if dry_run:
            log_removed = len(await redis.xrange(log, "-", f"({point}"))
        else:
            log_removed = await redis.xtrim(log, minid=point, approximate=False)
    actors = await conn.fetch(
        "SELECT actor_id, version FROM projection.actor_versions WHERE partition = $1",
        partition)
    pipe = redis.pipeline(transaction=False)
    for a in actors:
        pipe.get(snapshot_key(partition, a["actor_id"]))
    snaps = await pipe.execute() if actors else []
    removed = trimmed_actors = 0
    pipe = redis.pipeline(transaction=False)
    for a, raw in zip(actors, snaps, strict=True):
        if not raw:
            continue  # no snapshot: the worker still folds from version 1, keep everything
        try:
            snap_version = int(msgspec.msgpack.decode(raw)[0])
        except (msgspec.DecodeError, TypeError, ValueError, IndexError):
            continue
        safe = min(int(a["version"]), snap_version) - keep + 1  # lowest version to keep
        if safe <= 1:
            continue
        trimmed_actors += 1
        stream = event_stream(partition, a["actor_id"])
        if dry_run:
            pipe.xrange(stream, "-", f"({safe}-0")
        else:
            pipe.xtrim(stream, minid=f"{safe}-0", approximate=False)
    results = await pipe.execute() if trimmed_actors else []
    removed = sum(len(r) if isinstance(r, list) else int(r) for r in results)
    return {"partition": partition, "checkpoint": checkpoint, "log_trim_point": point,
            "log_entries_removed": log_removed, "actors_trimmed": trimmed_actors,
            "actor_events_removed": removed, "dry_run": dry_run}
