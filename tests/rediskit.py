"""redis-py clients for tests and benchmarks that look at Redis directly (white-box checks,
fault injection, raw baselines); the product reaches Redis only through `infra.store`.

`connect_cluster` gives redis-py's cluster client (commands routed by slot) for a Redis Cluster;
`flush_all` empties a single node or every master of a cluster.

``socket_timeout=None``: a blocking read (XREAD BLOCK, pub/sub) is not cut short by redis-py's
per-read timeout, and pipelined hot paths are not slowed by it (see DESIGN.md).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

__all__ = [
    "cluster_masters",
    "connect",
    "connect_any",
    "connect_cluster",
    "connect_sync",
    "flush_all",
    "get_many",
]

_DEFAULTS: dict[str, Any] = {
    "socket_timeout": None,
    "socket_connect_timeout": 5.0,
    "decode_responses": False,
    "max_connections": 512,
}


def connect(url: str, **kw: Any) -> redis.asyncio.Redis:
    """An asyncio client for `url` (``redis://`` or ``unix://``); `kw` overrides."""
    return redis.asyncio.Redis.from_url(url, **{**_DEFAULTS, **kw})


def connect_sync(url: str, **kw: Any) -> redis.Redis:
    """A blocking client, for test set-up."""
    return redis.Redis.from_url(url, **{**_DEFAULTS, **kw})


def connect_cluster(url: str, **kw: Any) -> redis.asyncio.RedisCluster:
    """An asyncio cluster client for any node's `url` (white-box checks on a cluster)."""
    kw = {**_DEFAULTS, **kw}
    kw.pop("max_connections", None)
    return redis.asyncio.RedisCluster.from_url(url, **kw)


def connect_any(url: str, **kw: Any) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """`connect_cluster` when `url` names a cluster node, else `connect`: for white-box checks
    that run on both (use `get_many`, not MGET, for keys of several partitions)."""
    if _cluster_enabled(url):
        return connect_cluster(url, **kw)
    return connect(url, **kw)


async def get_many(client: Any, keys: list[str]) -> list[bytes | None]:
    """GET of each key (MGET would cross slots on a cluster)."""
    return [await client.get(k) for k in keys]


def _cluster_enabled(url: str) -> bool:
    client = connect_sync(url)
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    finally:
        client.close()


def cluster_masters(url: str) -> list[str]:
    """The URLs of the masters serving slots, as the node at `url` sees them ([url] for a
    single node)."""
    client = connect_sync(url)
    try:
        if not client.info("cluster").get("cluster_enabled"):
            return [url]
        slots = client.execute_command("CLUSTER SLOTS")
    finally:
        client.close()
    masters = dict.fromkeys(f"redis://{_host(m[2][0])}:{m[2][1]}/0" for m in slots)
    return list(masters)


def _host(raw: Any) -> str:
    host = raw.decode() if isinstance(raw, bytes) else str(raw)
    return host or "127.0.0.1"


def flush_all(url: str) -> None:
    """FLUSHALL on a single node, or on every master of the cluster `url` belongs to."""
    for master in cluster_masters(url):
        client = connect_sync(master)
        try:
            client.flushall()
        finally:
            client.close()
