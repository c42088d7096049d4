"""Waiting for a dependency that is down: capped exponential backoff, logged once per outage.

Every sessiond process must outlive a Redis or PostgreSQL outage (a restart, a failover, a server
started after the process): it waits and retries instead of exiting, so that a supervisor
(`sessiond dev`, Kubernetes) has nothing to do when the server comes back. `wait_until_up` runs
a start-up step (open a pool, ping the store, subscribe) until it succeeds; `Backoff` is the
delay schedule for loops that retry by themselves.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from events.errors import StoreUnavailable

__all__ = ["Backoff", "wait_until_up"]

T = TypeVar("T")


class Backoff:
    """Delays of `first`, doubling up to `cap`, each with up to `jitter` of itself added at
    random (so that many processes reconnecting after one outage do not retry in step)."""

    def __init__(self, first: float = 0.1, cap: float = 5.0, jitter: float = 0.2) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay * (1 + self.jitter * random.random())

    def reset(self) -> None:
        self._next = self.first


def _outage(exc: BaseException) -> bool:
    return isinstance(exc, StoreUnavailable | OSError)


async def wait_until_up(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    log: logging.Logger,
    *,
    retry_if: Callable[[BaseException], bool] | None = None,
    backoff: Backoff | None = None,
) -> T:
    """`await attempt()` until it succeeds; return its result. An exception for which
    `retry_if` is false (default: anything but `StoreUnavailable` and `OSError`) is raised.

    One warning when the first attempt fails, one line when an attempt succeeds after that (with
    how long it took): an outage is visible in the log without a line per retry."""
    delays = backoff or Backoff()
    started = time.monotonic()
    failures = 0
    while True:
        try:
            result = await attempt()
        except Exception as exc:
            if not (retry_if or _outage)(exc):
                raise
            failures += 1
            if failures == 1:
                log.warning("%s unreachable (%s); waiting for it with backoff", what, exc)
            await asyncio.sleep(delays.next())
            continue
        if failures:
            log.warning(
                "%s reachable after %.1f s (%d failed attempts)",
                what,
                time.monotonic() - started,
                failures,
            )
        return result
