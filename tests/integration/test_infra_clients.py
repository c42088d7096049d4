"""The shared client factories talk to the real servers with the settings the hot paths need."""

from __future__ import annotations

import pytest

from events.errors import StoreUnavailable
from infra.postgres import create_pool
from infra.redis import connect, connect_sync


@pytest.mark.anyio
async def test_async_redis_client_has_no_read_timeout_and_returns_bytes(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        assert client.connection_pool.connection_kwargs["socket_timeout"] is None
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        # a blocking read longer than any default timeout is not cut short
        assert await client.xread({"nothing": "$"}, block=300) == []
    finally:
        await client.aclose()


def test_sync_redis_client_works(redis_url: str) -> None:
    client = connect_sync(redis_url)
    try:
        assert client.ping() is True
    finally:
        client.close()


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
