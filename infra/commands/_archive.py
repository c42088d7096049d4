"""PostgreSQL's `events.archive` as the store's `Archive`, for the commands that print or replay
an actor's history (`sessiond events`, `sessiond replay`).

It connects on first use; without a database, or while it cannot be reached or is not migrated,
it holds nothing (Redis alone still answers with what it has).
"""

from __future__ import annotations

from typing import Any

from events.envelope import EventEnvelope

__all__ = ["LazyArchive"]


class LazyArchive:
    """The archive at `database_url` (None: no archive)."""

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self._conn: Any = None
        self._failed = False

    async def _connection(self) -> Any:
        import asyncpg

        if self._conn is None and self.database_url and not self._failed:
            try:
                self._conn = await asyncpg.connect(self.database_url)
            except (OSError, asyncpg.PostgresError):
                self._failed = True
        return self._conn

    async def events(self, actor_id: str, after: int, before: int | None) -> list[EventEnvelope]:
        import asyncpg

        from projections.history import archived_events

        conn = await self._connection()
        if conn is None:
            return []
        try:
            return await archived_events(conn, actor_id, after, before)
        except asyncpg.UndefinedTableError:  # not migrated: no archive yet
            return []

    async def last_version(self, actor_id: str) -> int:
        import asyncpg

        conn = await self._connection()
        if conn is None:
            return 0
        try:
            return int(
                await conn.fetchval(
                    "SELECT max(version) FROM events.archive WHERE actor_id = $1", actor_id
                )
                or 0
            )
        except asyncpg.UndefinedTableError:
            return 0

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
