"""The event archive behind the gateway's store: PostgreSQL's `events.archive`, read through the
gateway's pool.

The store reads an actor's events from Redis first and asks this archive only for the versions
Redis no longer holds (trimmed by retention), so a client resuming from an old version, or a
handoff looked up after a trim, is still answered. Reads go through the gateway's `Database`:
while PostgreSQL is unreachable they raise `DatabaseUnavailable` (a 503), logged once.
"""

from __future__ import annotations

from events.envelope import EventEnvelope
from infra.postgres import Database
from projections.archive import archived_events

__all__ = ["PostgresArchive"]


class PostgresArchive:
    """The store's `Archive` on the gateway's PostgreSQL pool."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def events(self, actor_id: str, after: int, before: int | None) -> list[EventEnvelope]:
        return await archived_events(self.db, actor_id, after, before)  # type: ignore[arg-type]

    async def last_version(self, actor_id: str) -> int:
        version = await self.db.fetchval(
            "SELECT max(version) FROM events.archive WHERE actor_id = $1", actor_id
        )
        return int(version or 0)
