"""Redis clients configured the way sessiond's hot paths need them.

Call `connect(url)` once per process (or per component) and share the client: it holds a
connection pool. Responses are bytes (stream payloads are msgpack). ``socket_timeout=None``:
redis-py's per-read timeout costs about 40% on pipelined hot paths here (see DESIGN.md), and
blocking reads (XREADGROUP BLOCK, pub/sub) must not be cut short by it; liveness is covered by
the connect timeout, TCP keepalive and periodic health checks instead.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

__all__ = ["client_options", "connect", "connect_sync"]

_DEFAULTS: dict[str, Any] = {
    "socket_timeout": None,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "health_check_interval": 30,
    "decode_responses": False,
    "max_connections": 512,
}


def client_options(url: str, **kw: Any) -> dict[str, Any]:
    """The defaults with `kw` over them; TCP keepalive only for TCP URLs (redis-py's unix
    socket connection refuses the option)."""
    options = {**_DEFAULTS, **kw}
    if url.startswith("unix:"):
        options.pop("socket_keepalive", None)
    return options


def connect(url: str, **kw: Any) -> redis.asyncio.Redis:
    """An asyncio client for `url` (``redis://``, ``rediss://`` or ``unix://``); `kw` overrides."""
    return redis.asyncio.Redis.from_url(url, **client_options(url, **kw))


def connect_sync(url: str, **kw: Any) -> redis.Redis:
    """A blocking client, for scripts, CLI commands and test set-up."""
    return redis.Redis.from_url(url, **client_options(url, **kw))
