"""Retention: trim Redis below what is both archived and snapshotted, never losing history.

- The partition log: entries up to the projector's checkpoint are in `events.archive` (same
  transaction). Other consumer groups on the log (the reactor) keep what they have not yet
  acknowledged: the trim point is the minimum of the entry after the checkpoint and every
  group's floor (`PartitionLog.group_floor`).
- An actor's events: versions below min(archived version, snapshot version) are safe (the
  archive has them, and the worker loads from the snapshot onwards); the newest `keep`
  versions stay anyway so clients can resume from recent versions without the archive.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from infra.store import START, PartitionLog, Store, position_key
from projections.projector import CHECKPOINT_NAME

__all__ = ["log_trim_point", "trim_partition"]

#: Actors trimmed per round of concurrent requests (on Redis: one pipelined write each).
_TRIM_CHUNK = 1000


def _next(position: str) -> str:
    ms, seq = position_key(position)
    return f"{ms}-{seq + 1}"


async def log_trim_point(log: PartitionLog, partition: int, checkpoint: str) -> str:
    """The lowest log position someone still needs: entries strictly below it may go."""
    point = _next(checkpoint) if checkpoint != START else START
    floor = await log.group_floor(partition)
    if floor is not None:
        point = min(point, floor, key=position_key)
    return point


async def trim_partition(
    store: Store, conn: asyncpg.Connection, partition: int, keep: int = 100, dry_run: bool = False
) -> dict[str, Any]:
    """Trim one partition's log and actor streams; returns what was (or would be) removed."""
    checkpoint = (
        await conn.fetchval(
            "SELECT last_id FROM projection.checkpoints WHERE name = $1 AND partition = $2",
            CHECKPOINT_NAME,
            partition,
        )
        or START
    )
    point = await log_trim_point(store.log, partition, checkpoint)
    log_removed = await store.log.trim(partition, point, dry_run=dry_run)
    archived = {
        r["actor_id"]: int(r["version"])
        for r in await conn.fetch(
            "SELECT actor_id, version FROM projection.actor_versions WHERE partition = $1",
            partition,
        )
    }
    snapshots = await store.actors.snapshot_versions(partition, list(archived))
    # the lowest version to keep, per actor; without a snapshot the worker still folds from
    # version 1: keep everything
    below = {
        actor: safe
        for actor, version in archived.items()
        if (snap := snapshots.get(actor)) is not None
        and (safe := min(version, snap) - keep + 1) > 1
    }
    removed = 0
    actors = list(below)
    for i in range(0, len(actors), _TRIM_CHUNK):
        chunk = actors[i : i + _TRIM_CHUNK]
        removed += sum(
            await asyncio.gather(
                *(store.actors.trim(partition, a, below[a], dry_run=dry_run) for a in chunk)
            )
        )
    return {
        "partition": partition,
        "checkpoint": checkpoint,
        "log_trim_point": point,
        "log_entries_removed": log_removed,
        "actors_trimmed": len(below),
        "actor_events_removed": removed,
        "dry_run": dry_run,
    }
