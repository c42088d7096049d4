"""Projection lag per partition: how many log entries and how many seconds the projector is
behind, and how many entries it dead-lettered (`sessiond projections status`)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from infra.store import START, PartitionLog, Store, position_key
from projections.health import ROLE
from projections.projector import CHECKPOINT_NAME

__all__ = ["count_after", "dead_letter_counts", "partition_status"]

#: Log entries read per page while counting.
_PAGE = 10_000


async def count_after(
    log: PartitionLog, partition: int, after: str, cap: int = 1_000_000
) -> tuple[int, str | None]:
    """(entries of the partition's log after position `after`, capped at `cap`; the position
    of the first of them)."""
    n, first, cursor = 0, None, after
    while n < cap:
        entries = await log.range(partition, after=cursor, count=_PAGE)
        if not entries:
            break
        if first is None:
            first = entries[0][0]
        n += len(entries)
        cursor = entries[-1][0]
    return n, first


async def dead_letter_counts(
    conn: asyncpg.Connection, name: str = CHECKPOINT_NAME
) -> dict[int, int]:
    """partition -> dead letters (empty before migration 006 ran)."""
    if not await conn.fetchval("SELECT to_regclass('projection.dead_letters') IS NOT NULL"):
        return {}
    rows = await conn.fetch(
        "SELECT partition, count(*) AS n FROM projection.dead_letters"
        " WHERE name = $1 GROUP BY partition",
        name,
    )
    return {r["partition"]: r["n"] for r in rows}


async def partition_status(
    store: Store, conn: asyncpg.Connection, name: str = CHECKPOINT_NAME
) -> list[dict[str, Any]]:
    """One row per partition of the store: checkpoint, epoch, events projected, events and
    seconds behind, dead letters, the projector holding its lease."""
    rows = {
        r["partition"]: r
        for r in await conn.fetch("SELECT * FROM projection.checkpoints WHERE name = $1", name)
    }
    dead = await dead_letter_counts(conn, name)
    owners = await store.leases.holders(ROLE)
    now = int(time.time() * 1000)
    out = []
    for p in range(store.partitions):
        cp = rows.get(p)
        last = cp["last_id"] if cp else START
        behind, first = await count_after(store.log, p, last)
        out.append(
            {
                "partition": p,
                "checkpoint": last,
                "epoch": cp["epoch"] if cp else 0,
                "projected": cp["events"] if cp else 0,
                "events_behind": behind,
                "seconds_behind": (
                    round(max(0, now - position_key(first)[0]) / 1000, 3) if first else 0.0
                ),
                "dead_letters": dead.get(p, 0),
                "owner": owners.get(p),
            }
        )
    return out
