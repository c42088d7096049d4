"""Projection lag per partition: how many log entries and how many seconds the projector is
behind, and how many entries it dead-lettered (`sessiond projections status`)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
from redis.asyncio import Redis

from infra.store.layout import lease_key, partition_log
from projections.lease import ROLE
from projections.projector import CHECKPOINT_NAME

__all__ = ["count_after", "dead_letter_counts", "partition_status"]


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


async def count_after(
    redis: Redis, key: str, after: str, cap: int = 1_000_000
) -> tuple[int, str | None]:
    """(entries with id > `after`, capped at `cap`; id of the first of them)."""
    n, first, cursor = 0, None, after
    while n < cap:
        entries = await redis.xrange(key, min=f"({cursor}", max="+", count=10_000)
        if not entries:
            break
        if first is None:
            raw = entries[0][0]
            first = raw.decode() if isinstance(raw, bytes) else raw
        n += len(entries)
        raw = entries[-1][0]
        cursor = raw.decode() if isinstance(raw, bytes) else raw
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
    redis: Redis, conn: asyncpg.Connection, partitions: int, name: str = CHECKPOINT_NAME
) -> list[dict[str, Any]]:
    rows = {
        r["partition"]: r
        for r in await conn.fetch("SELECT * FROM projection.checkpoints WHERE name = $1", name)
    }
    dead = await dead_letter_counts(conn, name)
    now = int(time.time() * 1000)
    out = []
    for p in range(partitions):
        cp = rows.get(p)
        last = cp["last_id"] if cp else "0-0"
        behind, first = await count_after(redis, partition_log(p), last)
        owner = await redis.get(lease_key(p, ROLE))
        out.append(
            {
                "partition": p,
                "checkpoint": last,
                "epoch": cp["epoch"] if cp else 0,
                "projected": cp["events"] if cp else 0,
                "events_behind": behind,
                "seconds_behind": round(max(0, now - _id_ms(first)) / 1000, 3) if first else 0.0,
                "dead_letters": dead.get(p, 0),
                "owner": owner.decode() if isinstance(owner, bytes) else owner,
            }
        )
    return out
