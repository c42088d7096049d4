"""Schema migrations: numbered plain SQL files in `projections/migrations/`, applied in order.

Each file runs in its own transaction together with its row in `projection.schema_migrations`,
so a migration is either applied and recorded or neither. A session-level advisory lock makes
concurrent migrators (several processes starting at once) take turns; the second one finds
everything applied and does nothing. A recorded migration whose file changed is an error:
schemas only grow, by new files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = ["MIGRATIONS_DIR", "Migration", "MigrationError", "applied", "discover", "migrate"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x5E55_10D0  # pg_advisory_lock key of the migrator
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS projection;
CREATE TABLE IF NOT EXISTS projection.schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
"""


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file name must be NNN_name.sql: {path.name}")
        out.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migrations share a number")
    return out


async def applied(conn: asyncpg.Connection) -> dict[int, str]:
    """version -> checksum of every recorded migration (empty when none ran yet)."""
    exists = await conn.fetchval("SELECT to_regclass('projection.schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM projection.schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


async def migrate(
    dsn_or_conn: str | asyncpg.Connection, directory: Path = MIGRATIONS_DIR
) -> list[Migration]:
    """Apply every pending migration; returns those applied by this call (empty if none)."""
    own = isinstance(dsn_or_conn, str)
    conn = await asyncpg.connect(dsn_or_conn) if own else dsn_or_conn
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(_BOOTSTRAP)
            done = await applied(conn)
            ran = []
            for mig in discover(directory):
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        raise MigrationError(
                            f"migration {mig.version:03d}_{mig.name} changed after it was "
                            "applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(mig.sql)
                    await conn.execute(
                        "INSERT INTO projection.schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        mig.version,
                        mig.name,
                        mig.checksum,
                    )
                ran.append(mig)
            return ran
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        if own:
            await conn.close()
