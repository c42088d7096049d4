"""Blocking reads of many streams at once (the projector's partition logs, the gateway's
market-data relay), on connections of the reader's own.

On a single node one XREAD names every stream: one connection, one round trip. On a cluster a
command may not name keys of two slots, so the reader keeps one link per slot (to the master
serving it) with at most one XREAD in flight on each. `read` first asks every slot without
one what it holds now (an XREAD that does not wait, all at once) and returns all of it; when
nothing came, it sends each of them an XREAD that waits (a *standing* read), returns as soon as
any answers (with every other answer in by then), and leaves the rest standing for the next
call. A standing read sent with positions the caller no longer asks for is abandoned with its
connection (a blocked connection cannot be taken back). Streams of one slot share one XREAD.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from infra.store.redis.client import RedisClient
from infra.store.redis.cluster import key_slot
from infra.store.redis.resp import pack
from infra.store.redis.router import Link

__all__ = ["StreamReader"]


class _Standing:
    __slots__ = ("link", "read", "sent")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.read: asyncio.Future | None = None
        self.sent: dict[bytes, str] | None = None


def _xread(count: int, block_ms: int | None, positions: Mapping[bytes, str]) -> bytes:
    """XREAD of `positions`, waiting up to `block_ms` (None: not at all)."""
    block = () if block_ms is None else ("BLOCK", block_ms)
    return pack(["XREAD", "COUNT", count, *block, "STREAMS", *positions, *positions.values()])


class StreamReader:
    """XREAD BLOCK over streams of any slots (see the module). Not for concurrent use."""

    def __init__(self, client: RedisClient, name: str) -> None:
        self._client = client
        self._name = name
        self._own = client.dedicated(name)  # a single node's one connection
        self._slots: dict[int, _Standing] = {}

    def submit(self, slot: int | None, packed: bytes) -> asyncio.Future:
        """Send a command to `slot`'s master ahead of the next read: on a single node on the
        reader's own connection (in the same write as the next XREAD), on a cluster on the
        store's shared link (a slot's own connection may be blocked in a standing read)."""
        if self._client.router.slots is None:
            return self._own.submit(packed)
        return self._client.send(slot, packed)

    async def read(
        self, positions: Mapping[bytes, str], count: int, block_ms: int
    ) -> list[tuple[bytes, Any]]:
        """[(stream, raw entries), ...] of the streams with entries after their position,
        waiting up to `block_ms` for the first; raises `StoreUnavailable`."""
        if not positions:
            await asyncio.sleep(block_ms / 1000)
            return []
        await self._client.ready()
        if self._client.router.slots is None:
            return list(await self._own.submit(_xread(count, block_ms, positions)) or ())
        return await self._read_slots(positions, count, block_ms)

    async def _read_slots(
        self, positions: Mapping[bytes, str], count: int, block_ms: int
    ) -> list[tuple[bytes, Any]]:
        groups: dict[int, dict[bytes, str]] = {}
        for key, position in positions.items():
            groups.setdefault(key_slot(key), {})[key] = position
        for slot, standing in list(self._slots.items()):
            if standing.read is not None and standing.sent != groups.get(slot):
                standing.link.close()  # blocked for positions no longer wanted
                del self._slots[slot]
        # what every slot without a standing read holds now, together (no waiting)
        fresh = []
        for slot, want in groups.items():
            standing = self._slots.get(slot)
            if standing is None:
                name = f"{self._client.name}-{self._name}-s{slot}"
                standing = self._slots[slot] = _Standing(self._client.router.link(name, slot))
            if standing.read is None:
                standing.read = standing.link.submit(_xread(count, None, want))
                standing.sent = want
                fresh.append(standing.read)
        if fresh:
            await asyncio.wait(fresh, timeout=5.0)
        out, error = self._collect()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while not out and error is None and loop.time() < deadline:
            left = max(1, int((deadline - loop.time()) * 1000))
            for slot, want in groups.items():
                standing = self._slots[slot]
                if standing.read is None:
                    standing.read = standing.link.submit(_xread(count, left, want))
                    standing.sent = want
            reads = [s.read for s in self._slots.values() if s.read is not None]
            await asyncio.wait(reads, timeout=left / 1000 + 5.0, return_when="FIRST_COMPLETED")
            out, error = self._collect()
        if error is not None and not out:
            raise error
        return out

    def _collect(self) -> tuple[list[tuple[bytes, Any]], BaseException | None]:
        """The answers of the standing reads that are in (those slots read again next)."""
        out: list[tuple[bytes, Any]] = []
        error: BaseException | None = None
        for standing in self._slots.values():
            fut = standing.read
            if fut is None or not fut.done():
                continue
            standing.read = standing.sent = None
            if fut.cancelled():
                continue
            exc = fut.exception()
            if exc is not None:
                error = error or exc
            else:
                out.extend(fut.result() or ())
        return out, error

    def close(self) -> None:
        self._own.close()
        slots, self._slots = self._slots, {}
        for standing in slots.values():
            standing.link.close()
