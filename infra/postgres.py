"""asyncpg pools for the read models.

Call `create_pool(dsn)` in a component's start-up (Starlette lifespan, projector start) and close
it on shutdown. Connection failures are translated to `events.errors.StoreUnavailable` so callers
handle one error family.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from events.errors import StoreUnavailable

__all__ = ["create_pool"]


async def create_pool(dsn: str, **kw: Any) -> asyncpg.Pool:
    """An open pool for `dsn` (any DSN asyncpg accepts, unix-socket ones included).

    Defaults: 1-10 connections, a 10 s connect timeout, and ``statement_cache_size`` left at
    asyncpg's default. Any keyword is passed to `asyncpg.create_pool` and wins.
    """
    options: dict[str, Any] = {"min_size": 1, "max_size": 10, "timeout": 10.0}
    options.update(kw)
    try:
        return await asyncpg.create_pool(dsn, **options)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {e}") from e
