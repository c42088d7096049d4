"""redis-py clients for tests and benchmarks that look at Redis directly (white-box checks,
fault injection, raw baselines); the product reaches Redis only through `infra.store`.

``socket_timeout=None``: a blocking read (XREAD BLOCK, pub/sub) is not cut short by redis-py's
per-read timeout, and pipelined hot paths are not slowed by it (see DESIGN.md).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

__all__ = ["connect", "connect_sync"]

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
