"""The PostgreSQL pool factory talks to the real server; an unreachable one is StoreUnavailable.
(Redis is reached through the event store only: see tests/contract and test_store_*.py.)"""

from __future__ import annotations

import pytest

from events.errors import StoreUnavailable
from infra.postgres import create_pool


@pytest.mark.anyio
async def test_postgres_pool_runs_queries(database_url: str) -> None:
    pool = await create_pool(database_url, max_size=2)
    try:
        assert await pool.fetchval("SELECT 1 + 1") == 2
    finally:
        await pool.close()


@pytest.mark.anyio
async def test_unreachable_postgres_is_store_unavailable(server_data_dir) -> None:
    with pytest.raises(StoreUnavailable, match="cannot connect to PostgreSQL"):
        await create_pool(f"postgresql://postgres@/x?host={server_data_dir}", timeout=2)
