"""The `store` fixture of the contract suite: one parameter per backend (the next issue adds a
Redis Cluster), each with a harness for what only the backend's operator can do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from infra.store import MemoryStore, open_store

P = 4


class RedisHarness:
    """The Redis server as its operator sees it (redis-py, outside the store)."""

    backend = "redis"

    def __init__(self, url: str) -> None:
        self.url = url

    async def drop_subscribers(self) -> None:
        """Kill every pub/sub connection (CLIENT KILL), as a network cut would."""
        import redis.asyncio as aioredis

        admin = aioredis.Redis.from_url(self.url)
        try:
            assert await admin.client_kill_filter(_type="pubsub") >= 1
        finally:
            await admin.aclose()


class MemoryHarness:
    backend = "memory"

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def drop_subscribers(self) -> None:
        self.store.drop_subscribers()


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store_and_harness(
    backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Any, Any]]:
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        store: Any = open_store(url, P)
        harness: Any = RedisHarness(url)
    else:
        store = MemoryStore(P)
        harness = MemoryHarness(store)
    try:
        yield store, harness
    finally:
        await store.aclose()


@pytest.fixture
def store(store_and_harness: tuple[Any, Any]) -> Any:
    return store_and_harness[0]


@pytest.fixture
def harness(store_and_harness: tuple[Any, Any]) -> Any:
    return store_and_harness[1]
