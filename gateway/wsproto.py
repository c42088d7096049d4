"""What the `/ws` endpoint trims from uvicorn's websockets-sansio protocol once a connection is
open, for memory: every open connection keeps its protocol object for hours, so a few KiB
each are the difference between the gateway and a bare websockets server (issue 19's
`ws_memory_ratio`, `tests/bench/bench_gateway.py` (b)).

- The parsed opening request and its response: uvicorn keeps them for the connection's life
  but reads them only until the accept.
- The scope's headers and query string (the token among them): read by the handshake only.
- The receive queue: an `asyncio.Queue` is four deques (~3 KiB empty); uvicorn only calls
  `put_nowait`, `get` and `empty` on it, which `LeanQueue` provides with one list.

Each step checks that the attribute is what it expects and otherwise leaves it alone, so a
uvicorn that changes its internals costs memory, never correctness.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["LeanQueue", "trim_open_connection"]


class LeanQueue:
    """The receive queue of one connection: unbounded, one reader (uvicorn's `receive`)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self, items: list[Any] | None = None) -> None:
        self._items: list[Any] = items or []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


def trim_open_connection(scope: dict[str, Any], send: Any) -> None:
    """Drop what only the opening handshake needed from the connection whose ASGI `send` this
    is (call it between messages, never while `receive` waits)."""
    scope["headers"] = []
    scope["query_string"] = b""
    proto = getattr(send, "__self__", None)
    if proto is None:
        return
    for name in ("request", "response"):
        if getattr(proto, name, None) is not None:
            setattr(proto, name, None)
    queue = getattr(proto, "queue", None)
    if type(queue) is asyncio.Queue and not queue._getters:  # nobody waits on it: swap it
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        proto.queue = LeanQueue(items)
