"""The memory store's building blocks: an append-only stream with consumer groups, a waiting
list for blocking reads, and values with an expiry (the parts of Redis the store relies on)."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterable, Sequence
from typing import Any

from events.errors import StoreUnavailable
from infra.store.api import START, position_key

__all__ = ["Expiring", "MemoryStream", "Position", "now_ms", "position", "wait_any"]

Position = tuple[int, int]


def now_ms() -> int:
    return int(time.time() * 1000)


def position(text: str) -> Position:
    return position_key(text)


def _text(pos: Position) -> str:
    return f"{pos[0]}-{pos[1]}"


async def wait_any(streams: Iterable[MemoryStream], timeout_ms: int) -> None:
    """Until one of `streams` gets an entry, at most `timeout_ms`."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = list(streams)
    for s in waiting:
        s.waiters.append(fut)
    try:
        await asyncio.wait_for(fut, max(0.0, timeout_ms / 1000))
    except TimeoutError:
        pass
    finally:
        for s in waiting:
            if fut in s.waiters:
                s.waiters.remove(fut)


class _Group:
    __slots__ = ("last", "pending")

    def __init__(self, last: Position) -> None:
        self.last = last
        self.pending: dict[Position, list[Any]] = {}  # position -> [consumer, delivered ms]


class MemoryStream:
    """Entries (position, value) in position order; positions are generated like Redis stream
    ids ("<ms>-<seq>") unless given. Consumer groups track delivery and pending entries."""

    def __init__(self) -> None:
        self.positions: list[Position] = []
        self.values: list[Any] = []
        self.last: Position = (0, 0)
        self.groups: dict[str, _Group] = {}
        self.waiters: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self.positions)

    # ------------------------------------------------------------------ writing
    def add(self, value: Any, at: Position | None = None) -> str:
        """Append `value` (at `at`, which must be after the last position); returns its
        position."""
        if at is None:
            ms = now_ms()
            at = (ms, 0) if ms > self.last[0] else (self.last[0], self.last[1] + 1)
        elif at <= self.last:
            raise ValueError(f"position {_text(at)} is not after {_text(self.last)}")
        self.positions.append(at)
        self.values.append(value)
        self.last = at
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        return _text(at)

    def trim_below(self, below: Position, *, dry_run: bool = False) -> int:
        cut = bisect.bisect_left(self.positions, below)
        if not dry_run:
            del self.positions[:cut]
            del self.values[:cut]
        return cut

    def cap(self, maxlen: int) -> None:
        extra = len(self.positions) - maxlen
        if extra > 0:
            del self.positions[:extra]
            del self.values[:extra]

    def delete(self, at: Position) -> None:
        i = bisect.bisect_left(self.positions, at)
        if i < len(self.positions) and self.positions[i] == at:
            del self.positions[i]
            del self.values[i]

    # ------------------------------------------------------------------ reading
    def get(self, at: Position) -> Any:
        i = bisect.bisect_left(self.positions, at)
        if i < len(self.positions) and self.positions[i] == at:
            return self.values[i]
        return None

    def after(
        self, after: Position, upto: Position | None = None, count: int | None = None
    ) -> list[tuple[str, Any]]:
        """Entries with after < position (<= upto), at most `count`."""
        start = bisect.bisect_right(self.positions, after)
        end = len(self.positions) if upto is None else bisect.bisect_right(self.positions, upto)
        if count is not None:
            end = min(end, start + count)
        return [(_text(self.positions[i]), self.values[i]) for i in range(start, end)]

    def before(self, before: Position | None, count: int) -> list[tuple[str, Any]]:
        """Entries with position < before (None: all), newest first, at most `count`."""
        end = len(self.positions) if before is None else bisect.bisect_left(self.positions, before)
        start = max(0, end - count)
        return [(_text(self.positions[i]), self.values[i]) for i in range(end - 1, start - 1, -1)]

    # ------------------------------------------------------------------ consumer groups
    def create_group(self, name: str) -> None:
        if name not in self.groups:
            self.groups[name] = _Group((0, 0))

    def _group(self, name: str) -> _Group:
        group = self.groups.get(name)
        if group is None:  # what Redis answers with NOGROUP
            raise StoreUnavailable(f"no consumer group {name!r} on this stream")
        return group

    def read_new(self, group: str, consumer: str, count: int) -> list[tuple[str, Any]]:
        g = self._group(group)
        got = self.after(g.last, count=count)
        now = now_ms()
        for text, _ in got:
            pos = position(text)
            g.pending[pos] = [consumer, now]
            g.last = pos
        return got

    def read_pending(
        self, group: str, consumer: str, after: Position, count: int
    ) -> list[tuple[str, Any]]:
        g = self._group(group)
        mine = sorted(p for p, (c, _) in g.pending.items() if c == consumer and p > after)
        return [(_text(p), self.get(p)) for p in mine[:count]]

    def claim(
        self, group: str, consumer: str, min_idle_ms: int, start: Position, count: int
    ) -> tuple[str, list[tuple[str, Any]]]:
        g = self._group(group)
        now = now_ms()
        candidates = sorted(p for p in g.pending if p >= start)
        got: list[tuple[str, Any]] = []
        scanned = 0
        for pos in candidates:
            if scanned >= count:
                return _text(pos), got
            scanned += 1
            entry = g.pending[pos]
            if now - entry[1] < min_idle_ms:
                continue
            entry[0], entry[1] = consumer, now
            got.append((_text(pos), self.get(pos)))
        return START, got

    def ack(self, group: str, positions: Sequence[Position]) -> None:
        g = self.groups.get(group)
        if g is not None:
            for pos in positions:
                g.pending.pop(pos, None)

    def floor(self) -> str | None:
        """The lowest position a group still needs (see `PartitionLog.group_floor`)."""
        floor: Position | None = None
        for g in self.groups.values():
            need = (g.last[0], g.last[1] + 1) if g.last != (0, 0) else (0, 0)
            if g.pending:
                need = min(need, min(g.pending))
            floor = need if floor is None else min(floor, need)
        return None if floor is None else _text(floor)


class Expiring:
    """Values with an optional expiry (ms since the epoch), forgotten once it passed."""

    def __init__(self) -> None:
        self._items: dict[Any, tuple[Any, int | None]] = {}

    def get(self, key: Any) -> Any:
        item = self._items.get(key)
        if item is None:
            return None
        value, until = item
        if until is not None and until <= now_ms():
            del self._items[key]
            return None
        return value

    def set(self, key: Any, value: Any, ttl_ms: int | None = None) -> None:
        self._items[key] = (value, None if ttl_ms is None else now_ms() + ttl_ms)

    def expire(self, key: Any, ttl_ms: int) -> None:
        value = self.get(key)
        if value is not None:
            self.set(key, value, ttl_ms)

    def pop(self, key: Any) -> Any:
        value = self.get(key)
        self._items.pop(key, None)
        return value

    def keys(self) -> list[Any]:
        return [k for k in list(self._items) if self.get(k) is not None]
