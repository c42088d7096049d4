"""The hub's change feed on a real Redis pub/sub connection (the store's `ChangeFeed`):
changes reach the session's connections, a killed feed connection is replaced, re-subscribed
and every session caught up from history, detaching unsubscribes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.hub import Hub
from gateway.protocol import MessageType
from gateway.push import Push
from infra.store import DEFAULT_PARTITIONS, open_store, partition_of
from infra.store.layout import ADMIN_CHANNEL, change_channel
from tests.hubkit import MemConn
from tests.hubkit import changes_message as _changes

pytestmark = pytest.mark.anyio

#: the shard channels of the sessions these tests publish to
S1 = change_channel(partition_of("s1", DEFAULT_PARTITIONS), "s1")
S2 = change_channel(partition_of("s2", DEFAULT_PARTITIONS), "s2")


async def _subscribers(redis: aioredis.Redis, channel: str) -> int:
    return dict(await redis.pubsub_shardnumsub(channel))[channel.encode()]


class History:
    """Session histories in memory; `after` calls are recorded (catch-up reads)."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.reads: list[tuple[str, int, int | None]] = []

    async def current_version(self, sid: str) -> int:
        return self.versions.get(sid, 0)

    async def after(self, sid: str, since: int, upto: int | None = None):
        self.reads.append((sid, since, upto))
        last = self.versions.get(sid, 0) if upto is None else upto
        pushes = [
            Push(MessageType.STATE_UPDATE, {"v": v}, session_id=sid, version=v)
            for v in range(since + 1, last + 1)
        ]
        return pushes, max(since, last), True


@contextlib.asynccontextmanager
async def _running_hub(
    redis_url: str, history: History
) -> AsyncIterator[tuple[aioredis.Redis, Hub, History]]:
    """A started hub on a real Redis, with `history` as its event history; closed after."""
    redis = aioredis.Redis.from_url(redis_url)
    store = open_store(redis_url)
    hub = Hub(store.feed, history)  # type: ignore[arg-type]
    await hub.start()
    try:
        yield redis, hub, history
    finally:
        await hub.close()
        await store.aclose()
        await redis.aclose()


async def _until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


async def test_feed_delivers_survives_a_killed_connection_and_catches_up(redis_url: str) -> None:
    async with _running_hub(redis_url, History()) as (redis, hub, history):
        history.versions["s1"] = 2
        a, b = MemConn("s1", "u", "a"), MemConn("s1", "u", "b")
        other = MemConn("s2", "u", "c")
        for c in (a, b, other):
            await hub.attach(c)
        assert await _subscribers(redis, S1) == 1

        history.versions["s1"] = 3
        assert await redis.spublish(S1, _changes("s1", 3)) == 1
        await _until(lambda: a.versions() == [3] and b.versions() == [3])
        assert other.frames == []

        await redis.spublish(ADMIN_CHANNEL, json.dumps({"payload": {"note": "hi"}}))
        await _until(lambda: len(other.frames) == 1)
        assert other.frames[0]["type"] == "broadcast"

        # the feed connection dies; versions 4 and 5 are published while it is away
        assert await redis.client_kill_filter(_type="pubsub") >= 1
        history.versions["s1"] = 5
        await redis.spublish(S1, _changes("s1", 4, 5))
        await _until(lambda: hub.pubsub.reconnects == 1)
        # on reconnect each session is caught up from history
        await _until(lambda: a.versions() == [3, 4, 5] and b.versions() == [3, 4, 5])
        assert ("s1", 3, None) in history.reads
        # and live changes flow again on the re-subscribed channels
        history.versions["s1"] = 6
        assert await redis.spublish(S1, _changes("s1", 6)) == 1
        await _until(lambda: a.versions() == [3, 4, 5, 6])
        assert await redis.spublish(ADMIN_CHANNEL, json.dumps({"payload": {}})) == 1
        await _until(lambda: len(other.frames) == 2)

        for c in (a, b):
            await hub.detach(c)
        deadline = time.monotonic() + 5
        while await _subscribers(redis, S1) != 0:
            assert time.monotonic() < deadline, "still subscribed after the last detach"
            await asyncio.sleep(0.01)
        assert await _subscribers(redis, S2) == 1


class SlowHistory(History):
    """History whose reads take a while, so that live changes arrive during a catch-up."""

    async def after(self, sid: str, since: int, upto: int | None = None):
        await asyncio.sleep(0.2)
        return await super().after(sid, since, upto)


async def test_gaps_are_filled_from_history_in_order_and_nothing_overtakes_a_fill(
    redis_url: str,
) -> None:
    """Changes in sequence are pushed as they arrive; one that skips versions waits for history,
    and changes published meanwhile queue behind it (no reordering, no duplicates)."""
    async with _running_hub(redis_url, SlowHistory()) as (redis, hub, history):
        history.versions["s1"] = 1
        a = MemConn("s1", "u", "a")
        await hub.attach(a)
        await redis.spublish(S1, _changes("s1", 2))
        await _until(lambda: a.versions() == [2])
        assert history.reads == []  # in sequence: pushed without reading history
        history.versions["s1"] = 7
        await redis.spublish(S1, _changes("s1", 5))  # 3 and 4 were missed
        await redis.spublish(S1, _changes("s1", 6))  # arrives during the fill
        await redis.spublish(S1, _changes("s1", 6, 7))  # a duplicate, then new
        await _until(lambda: a.versions()[-1:] == [7])
        assert a.versions() == [2, 3, 4, 5, 6, 7]
        assert history.reads == [("s1", 2, 4)]
