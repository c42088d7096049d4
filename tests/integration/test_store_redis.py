"""What only the Redis store has to survive: a server that lost its scripts (restart, SCRIPT
FLUSH) or its consumer groups (a restart without persistence). The contract itself is in
tests/contract."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from events.errors import StoreUnavailable
from infra.store import APPENDED, layout, open_store, partition_of
from tests.contract.test_store_contract import append_one, command, owner_of, read_n

pytestmark = pytest.mark.anyio

P = 4


def actor_in(partition: int) -> tuple[str, str]:
    while True:
        sid = str(uuid.uuid4())
        if partition_of(sid, P) == partition:
            return f"session:{sid}", sid


async def test_scripts_flushed_from_redis_are_loaded_again(redis_url: str) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    store = open_store(redis_url, P)
    try:
        actor, sid = actor_in(1)
        await admin.script_flush()
        writer = await owner_of(store, 1)  # ACQUIRE ran without the script loaded
        await store.commands.enqueue(1, command(actor, sid, "c1"))
        ((entry, _),) = await read_n(writer, 1)
        await admin.script_flush()
        assert await append_one(writer, actor, "c1", 0, entry=entry) == [APPENDED]
        await admin.script_flush()
        # with a read sent ahead on the writer's own connection too
        batch = writer.new_batch()
        batch.settle(b"0-2", "c2", batch.actor(actor), 1, "", b"out")
        assert await writer.append(batch, read_ahead=True) == [APPENDED]
        await store.commands.enqueue(1, command(actor, sid, "c3"))
        assert len(await read_n(writer, 1)) == 1
        assert await store.leases.renew("worker", 1, "w", writer.epoch, 10_000)
        await writer.close()
    finally:
        await store.aclose()
        await admin.aclose()


async def test_a_consumer_group_lost_by_redis_is_created_again(redis_url: str) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    store = open_store(redis_url, P)
    try:
        actor, sid = actor_in(2)
        writer = await owner_of(store, 2)
        assert await writer.read_commands(10, 10) == []
        await admin.delete(layout.command_stream(2))  # the stream and its group are gone
        with pytest.raises(StoreUnavailable, match="NOGROUP"):
            await writer.read_commands(10, 10)
        await store.commands.enqueue(2, command(actor, sid, "after"))
        assert len(await read_n(writer, 1)) == 1
        await writer.close()
    finally:
        await store.aclose()
        await admin.aclose()
