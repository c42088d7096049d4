"""PostgreSQL's `events.archive` as the event store's `Archive`.

The projector writes every event to `events.archive` in the transaction that advances its
checkpoint, so the archive holds what retention trims from Redis. Whoever opens the store sets
a `PostgresArchive` as `store.archive` (the CLI's `events`, `replay`, `export`): the store's
`ActorReader.read` then returns an actor's whole history, Redis first, the archive for the
versions Redis no longer holds.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from events.codec import AnyEvent, encode
from events.envelope import EventEnvelope

__all__ = ["PostgresArchive", "archived_events", "correlated_events"]

_event_json = msgspec.json.Decoder(AnyEvent)


def _from_row(r: asyncpg.Record) -> EventEnvelope:
    event = _event_json.decode(r["data"])
    return EventEnvelope(
        event_id=r["event_id"],
        actor_id=r["actor_id"],
        version=r["version"],
        partition=r["partition"],
        ts=r["ts"],
        command_id=r["command_id"],
        correlation_id=r["correlation_id"],
        causation_id=r["causation_id"],
        type=r["type"],
        data=msgspec.Raw(encode(event)),
    )


async def archived_events(
    db: Any, actor_id: str, since: int = 0, before: int | None = None
) -> list[EventEnvelope]:
    """Archived events of `actor_id` with since < version (< before), oldest first (`db`: an
    asyncpg connection or pool)."""
    rows = await db.fetch(
        "SELECT * FROM events.archive WHERE actor_id = $1 AND version > $2"
        " AND ($3::bigint IS NULL OR version < $3) ORDER BY version",
        actor_id,
        since,
        before,
    )
    return [_from_row(r) for r in rows]


async def correlated_events(db: Any, correlation_id: str, limit: int = 1000) -> list[EventEnvelope]:
    """Archived events of every actor that carry `correlation_id`, in projection order, at
    most `limit` (migration 007's index serves it)."""
    rows = await db.fetch(
        "SELECT * FROM events.archive WHERE correlation_id = $1 ORDER BY seq LIMIT $2",
        correlation_id,
        limit,
    )
    return [_from_row(r) for r in rows]


class PostgresArchive:
    """The `Archive` of the store (see `infra.store.api.Archive`).

    With `pool`, it reads through that pool (its owner closes it) and PostgreSQL's errors pass
    through. Without, it opens a small pool of its own from `database_url` on first use
    (`close` closes it); when there is no `database_url` or that pool cannot be opened, it holds
    nothing, so a command run without PostgreSQL still prints what Redis holds. Before the
    archive's migration ran it holds nothing either."""

    def __init__(
        self, database_url: str | None = None, *, pool: asyncpg.Pool | None = None
    ) -> None:
        self.database_url = database_url
        self._pool = pool
        self._own = pool is None
        self._failed = False

    async def _db(self) -> asyncpg.Pool | None:
        if self._pool is None and self.database_url and not self._failed:
            try:
                self._pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self._failed = True
        return self._pool

    async def events(self, actor_id: str, after: int, before: int | None) -> list[EventEnvelope]:
        db = await self._db()
        if db is None:
            return []
        try:
            return await archived_events(db, actor_id, after, before)
        except asyncpg.UndefinedTableError:  # not migrated: nothing archived yet
            return []

    async def last_version(self, actor_id: str) -> int:
        db = await self._db()
        if db is None:
            return 0
        try:
            version = await db.fetchval(
                "SELECT max(version) FROM events.archive WHERE actor_id = $1", actor_id
            )
        except asyncpg.UndefinedTableError:
            return 0
        return int(version or 0)

    async def close(self) -> None:
        """Close the pool it opened itself (a given pool is left to its owner)."""
        pool, self._pool = self._pool, None
        if pool is not None and self._own:
            await pool.close()
