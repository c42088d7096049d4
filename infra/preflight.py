"""Production refuses to start on servers that could lose what it acknowledged.

Called once at process start, before any work (`check_redis` by every process that talks to
Redis, `check_postgres` by those that talk to PostgreSQL). With ``SESSIOND_ENV=prod`` (or its
alias ``production``) a failed check raises `UnsafeServer`, which the CLI prints as one line and
exits 2; in dev and test they check nothing, since the embedded servers and laptops are
configured for convenience, not durability.

- Redis / Valkey: ``maxmemory-policy`` must be ``noeviction``. Any other policy lets the server
  delete keys under memory pressure: command streams, actor streams, leases and fencing epochs,
  that is acknowledged state and the guard against two writers. And persistence must be on (AOF,
  or RDB snapshots): without it a server restart empties every stream.
- PostgreSQL: version `MIN_POSTGRES` or later. sessiond's SQL itself needs nothing newer than
  9.5 (``ON CONFLICT``), but the test suite runs on PostgreSQL 18 only and older majors no longer
  get fixes from the PostgreSQL project: 15 is the oldest major still supported (14 reached its
  end of life in November 2026).
"""

from __future__ import annotations

from typing import Any

from events.errors import SessiondError
from infra.store import Store

__all__ = ["MIN_POSTGRES", "UnsafeServer", "check_postgres", "check_redis"]

#: The oldest PostgreSQL major version production accepts (see the module docstring).
MIN_POSTGRES = 15


class UnsafeServer(SessiondError):
    """A store server is configured in a way production must not run on; the message says
    what to change."""

    code = "UNSAFE_SERVER"


async def check_redis(store: Store, env: str) -> None:
    """In prod, refuse a Redis/Valkey that may evict keys or keeps nothing across a restart."""
    if env != "prod":
        return
    found = await store.durability()
    if found.maxmemory_policy != "noeviction":
        raise UnsafeServer(
            f"{found.server} has maxmemory-policy {found.maxmemory_policy}: it may evict"
            " streams and leases under memory pressure; set maxmemory-policy noeviction"
            " (SESSIOND_ENV=prod)"
        )
    if not found.aof and not found.rdb:
        unknown = " (and its RDB schedule cannot be read)" if found.rdb is None else ""
        raise UnsafeServer(
            f"{found.server} has no persistence{unknown}: a restart would lose every stream;"
            " set appendonly yes (or an RDB save schedule) (SESSIOND_ENV=prod)"
        )


async def check_postgres(conn: Any, env: str, minimum: int = MIN_POSTGRES) -> None:
    """In prod, refuse a PostgreSQL older than `minimum` (a major version). `conn`: an asyncpg
    connection or pool."""
    if env != "prod":
        return
    number = int(await conn.fetchval("SHOW server_version_num"))
    major = number // 10000
    if major < minimum:
        version = await conn.fetchval("SHOW server_version")
        raise UnsafeServer(
            f"PostgreSQL {version} is older than {minimum}, the oldest version sessiond runs"
            " on in production (SESSIOND_ENV=prod)"
        )
