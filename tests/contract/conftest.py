"""The `store` fixture of the contract suite: one parameter per backend (a single Redis node, a
3-master Redis Cluster, the memory store), each with a harness for what only the backend's
operator can do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from infra.store import MemoryStore, open_store
from tests.rediskit import cluster_masters

P = 4


class RedisHarness:
    """The Redis server (or every master of the cluster) as its operator sees it (redis-py,
    outside the store)."""

    def __init__(self, url: str, backend: str) -> None:
        self.url = url
        self.backend = backend

    async def drop_subscribers(self) -> None:
        """Kill every pub/sub connection (CLIENT KILL), as a network cut would."""
        import redis.asyncio as aioredis

        killed = 0
        for master in cluster_masters(self.url):
            admin = aioredis.Redis.from_url(master)
            try:
                killed += await admin.client_kill_filter(_type="pubsub")
            finally:
                await admin.aclose()
        assert killed >= 1


class MemoryHarness:
    backend = "memory"

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def drop_subscribers(self) -> None:
        self.store.drop_subscribers()


@pytest.fixture(params=["redis", "cluster", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store_and_harness(
    backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Any, Any]]:
    if backend in ("redis", "cluster"):
        url = request.getfixturevalue("redis_url" if backend == "redis" else "redis_cluster_url")
        store: Any = open_store(url, P)
        harness: Any = RedisHarness(url, backend)
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
