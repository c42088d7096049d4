"""The Redis store's command sender (what was the CommandBus) on real Redis: pipelined XADDs
(one write per loop turn, order kept), outcomes matched to their callers, error replies, killed
connections, cancellation, the reply channel surviving a kill, the stored-outcome fallback,
credentials and db from the URL, command ids."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import redis.asyncio as aioredis

from actors.decider import Decider
from actors.runtime.worker import Worker
from events.base import Command, Event
from events.envelope import CommandEnvelope
from events.errors import DomainError, StoreUnavailable
from infra.store import CommandSender, layout, new_command_id, open_store
from infra.store.routing import partition_of
from tests.integration.rawkit import count_writes
from tests.rediskit import connect

pytestmark = pytest.mark.anyio

P = 4


class BusAdd(Command, frozen=True, tag="BusAdd"):
    n: int


class BusAdded(Event, frozen=True, tag="BusAdded"):
    n: int


class Total(msgspec.Struct, frozen=True):
    total: int = 0


def _decide(command: Any, state: Total) -> list[Any]:
    if command.n < 0:
        raise DomainError("INVALID_ARGUMENT", f"n={command.n} must not be negative")
    return [BusAdded(at=command.at, n=command.n)]


TOY = Decider(
    kind="bustoy",
    initial_state=Total(),
    decide=_decide,
    evolve=lambda s, e: msgspec.structs.replace(s, total=s.total + e.n),
    is_terminal=lambda s: False,
    deadlines=lambda s: [],
    react=lambda s, e: [],
)
_commands = msgspec.msgpack.Decoder(BusAdd)
_events = msgspec.msgpack.Decoder(BusAdded)


@contextlib.asynccontextmanager
async def worker_running(url: str) -> AsyncIterator[Worker]:
    worker = Worker(
        open_store(url, P),
        worker_id="bus-test",
        lease_ttl_ms=2000,
        decider_for=lambda actor_id: TOY,
        decode_command=_commands.decode,
        decode_event=lambda data, type_: _events.decode(data),
    )
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 10)
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)
        await worker.store.aclose()


@contextlib.asynccontextmanager
async def bus_for(url: str, **kw: Any) -> AsyncIterator[tuple[aioredis.Redis, Any]]:
    redis = connect(url)
    store = open_store(url, P)
    bus = store.command_sender(**kw)
    try:
        yield redis, bus
    finally:
        await bus.close()
        await store.aclose()
        await redis.aclose()


def now_ms() -> int:
    return int(time.time() * 1000)


def actor_in(partition: int) -> tuple[str, str]:
    while True:
        sid = str(uuid.uuid4())
        if partition_of(sid, P) == partition:
            return f"bustoy:{sid}", sid


def _count_writes(bus: CommandSender) -> list[bytes]:
    return count_writes(bus._links())


async def _queued(redis: aioredis.Redis, partition: int) -> list[CommandEnvelope]:
    entries = await redis.xrange(layout.command_stream(partition))
    return [msgspec.msgpack.decode(f[b"c"], type=CommandEnvelope) for _, f in entries]


async def test_sends_of_one_loop_turn_go_out_in_one_write_in_order(redis_url: str) -> None:
    actor, sid = actor_in(1)
    async with bus_for(redis_url) as (redis, bus):
        await bus.send(actor, sid, BusAdd(at=now_ms(), n=0), command_id="warm", wait=False)
        writes = _count_writes(bus)
        results = await asyncio.gather(
            *(
                bus.send(actor, sid, BusAdd(at=now_ms(), n=i), command_id=f"c{i}", wait=False)
                for i in range(200)
            )
        )
        assert results == [None] * 200
        assert len(writes) == 1, f"{len(writes)} writes for 200 sends of one loop turn"
        assert writes[0].count(b"XADD") == 200
        queued = await _queued(redis, 1)
        assert [e.command_id for e in queued] == ["warm"] + [f"c{i}" for i in range(200)]
        assert [_commands.decode(e.data).n for e in queued[1:]] == list(range(200))
        assert all(e.reply_to == "" for e in queued)


async def test_concurrent_waiting_sends_each_get_their_own_outcome(redis_url: str) -> None:
    actors_ = [actor_in(p) for p in range(P) for _ in range(3)]
    async with worker_running(redis_url), bus_for(redis_url) as (redis, bus):
        await bus.start()
        sends = []
        for i in range(120):
            actor, sid = actors_[i % len(actors_)]
            n = -1 if i % 7 == 0 else i  # some are refused by the decider
            sends.append((actor, sid, n, f"cmd-{i}"))
        outcomes = await asyncio.gather(
            *(bus.send(a, s, BusAdd(at=now_ms(), n=n), command_id=cid) for a, s, n, cid in sends)
        )
        for (_, _, n, cid), out in zip(sends, outcomes, strict=True):
            assert out is not None and out.command_id == cid
            if n < 0:
                assert not out.ok and out.error_code == "INVALID_ARGUMENT"
                assert f"n={n}" in out.error_message
            else:
                assert out.ok and out.events == 1
        # per actor, the events are in the order the sends were issued
        for actor, sid in actors_:
            part = partition_of(sid, P)
            entries = await redis.xrange(layout.event_stream(part, actor))
            got = [msgspec.msgpack.decode(f[b"e"])["command_id"] for _, f in entries]
            want = [cid for a, _, n, cid in sends if a == actor and n >= 0]
            assert got == want
        assert bus._waiters == {}


async def test_an_error_reply_fails_only_its_caller(redis_url: str) -> None:
    bad_actor, bad_sid = actor_in(2)
    good_actor, good_sid = actor_in(3)
    async with bus_for(redis_url) as (redis, bus):
        await redis.set(layout.command_stream(2), b"not a stream")  # XADD there: WRONGTYPE
        results = await asyncio.gather(
            bus.send(good_actor, good_sid, BusAdd(at=now_ms(), n=1), wait=False),
            bus.send(bad_actor, bad_sid, BusAdd(at=now_ms(), n=2), wait=False),
            bus.send(bad_actor, bad_sid, BusAdd(at=now_ms(), n=3), timeout=1),
            bus.send(good_actor, good_sid, BusAdd(at=now_ms(), n=4), wait=False),
            return_exceptions=True,
        )
        assert results[0] is None and results[3] is None
        for res in results[1:3]:
            assert isinstance(res, StoreUnavailable) and "WRONGTYPE" in str(res)
        assert [_commands.decode(e.data).n for e in await _queued(redis, 3)] == [1, 4]
        assert bus._waiters == {}


async def test_a_killed_connection_fails_in_flight_sends_and_the_next_send_works(
    redis_url: str,
) -> None:
    actor, sid = actor_in(0)
    async with bus_for(redis_url, name="killme") as (redis, bus):
        await bus.start()
        await bus.send(actor, sid, BusAdd(at=now_ms(), n=0), wait=False)
        clients = await redis.client_list()
        (victim,) = [c for c in clients if c["name"] == "sd-bus-killme"]
        # Redis holds every write while paused: the XADDs stay in flight until the kill
        await redis.execute_command("CLIENT", "PAUSE", 2000, "WRITE")
        try:
            in_flight = [
                asyncio.ensure_future(
                    bus.send(actor, sid, BusAdd(at=now_ms(), n=i), wait=i % 2 == 0, timeout=3)
                )
                for i in range(1, 11)
            ]
            await asyncio.sleep(0.1)
            assert not any(t.done() for t in in_flight)
            assert await redis.client_kill_filter(_id=victim["id"]) == 1
            results = await asyncio.gather(*in_flight, return_exceptions=True)
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert bus._waiters == {}
        # the next send reconnects
        assert (
            await bus.send(actor, sid, BusAdd(at=now_ms(), n=99), command_id="after", wait=False)
            is None
        )
        assert (await _queued(redis, 0))[-1].command_id == "after"
        (again,) = [c for c in await redis.client_list() if c["name"] == "sd-bus-killme"]
        assert again["id"] != victim["id"]


async def test_cancelled_sends_keep_the_replies_in_step(redis_url: str) -> None:
    actor, sid = actor_in(1)
    async with worker_running(redis_url), bus_for(redis_url) as (_, bus):
        await bus.start()
        tasks = [
            asyncio.ensure_future(
                bus.send(actor, sid, BusAdd(at=now_ms(), n=i), command_id=f"k{i}", wait=i % 2 == 0)
            )
            for i in range(40)
        ]
        await asyncio.sleep(0)  # every send has submitted its XADD
        for t in tasks[::4]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, res in enumerate(results):
            if i % 4 == 0:
                assert isinstance(res, asyncio.CancelledError)
            elif i % 2 == 0:
                assert res is not None and res.command_id == f"k{i}" and res.ok
            else:
                assert res is None
        out = await bus.send(actor, sid, BusAdd(at=now_ms(), n=1), command_id="last")
        assert out is not None and out.command_id == "last" and out.ok
        assert bus._waiters == {}


async def test_replies_resume_after_the_reply_connection_is_killed(
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    actor, sid = actor_in(2)
    async with worker_running(redis_url), bus_for(redis_url) as (redis, bus):
        bus.recheck_s = 30.0  # only the reply can be quick
        assert (await bus.send(actor, sid, BusAdd(at=now_ms(), n=1))).ok  # type: ignore[union-attr]
        assert await redis.client_kill_filter(_type="pubsub") >= 1
        sub = bus._sub
        assert sub is not None
        deadline = time.monotonic() + 10
        while sub.reconnects < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        channel = layout.reply_channel(2, bus.channel)
        assert dict(await redis.pubsub_shardnumsub(channel))[channel.encode()] == 1
        started = time.monotonic()
        out = await bus.send(actor, sid, BusAdd(at=now_ms(), n=2), timeout=8)
        assert out is not None and out.ok and out.version == 2
        assert time.monotonic() - started < 4, "the outcome came from the stored key, not a reply"


async def test_a_missed_reply_is_read_from_the_stored_outcome(redis_url: str) -> None:
    actor, sid = actor_in(3)
    async with worker_running(redis_url), bus_for(redis_url) as (_, bus):
        await bus.start()
        assert bus._sub is not None
        # the worker publishes to no one now
        await bus._sub.unsubscribe(*(layout.reply_channel(p, bus.channel) for p in range(P)))
        out = await bus.send(actor, sid, BusAdd(at=now_ms(), n=5), command_id="missed", timeout=5)
        assert out is not None and out.ok and out.command_id == "missed"
        stored = await bus.outcome(sid, "missed")
        assert stored is not None and stored.version == out.version


async def test_no_worker_means_store_unavailable_after_the_timeout(redis_url: str) -> None:
    actor, sid = actor_in(0)
    async with bus_for(redis_url) as (_, bus):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no outcome"):
            await bus.send(actor, sid, BusAdd(at=now_ms(), n=1), timeout=0.3)
        assert time.monotonic() - started < 2
        assert bus._waiters == {}


async def test_unreachable_redis_is_store_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with bus_for(f"redis://127.0.0.1:{port}/0") as (_, bus):
        actor, sid = actor_in(0)
        with pytest.raises(StoreUnavailable):
            await bus.send(actor, sid, BusAdd(at=now_ms(), n=1), wait=False)
        with pytest.raises(StoreUnavailable):
            await bus.send(actor, sid, BusAdd(at=now_ms(), n=1))


async def test_credentials_and_db_come_from_the_client_url(redis_url: str) -> None:
    admin = connect(redis_url)
    await admin.execute_command("ACL", "SETUSER", "bus-user", "on", ">pw", "~*", "&*", "+@all")
    u = urlsplit(redis_url)
    url = f"redis://bus-user:pw@{u.hostname}:{u.port}/6"
    actor, sid = actor_in(1)
    try:
        async with bus_for(url) as (_, bus):
            await bus.start()
            assert (
                await bus.send(
                    actor, sid, BusAdd(at=now_ms(), n=1), command_id="in-db6", wait=False
                )
                is None
            )
        db6 = connect(f"redis://{u.hostname}:{u.port}/6")
        try:
            assert [e.command_id for e in await _queued(db6, 1)] == ["in-db6"]
        finally:
            await db6.aclose()
        assert await admin.xlen(layout.command_stream(1)) == 0
        channel = layout.reply_channel(1, bus.channel)
        assert dict(await admin.pubsub_shardnumsub(channel))[channel.encode()] == 0
    finally:
        await admin.execute_command("ACL", "DELUSER", "bus-user")
        await admin.aclose()


def test_command_ids_are_unique_uuid_shaped_and_differ_in_a_forked_child() -> None:
    ids = [new_command_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for cid in ids[:50] + ids[-50:]:
        parsed = uuid.UUID(cid)
        assert str(parsed) == cid and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(w, new_command_id().encode())
        finally:
            os._exit(0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    parent = new_command_id()
    assert child[:24] != parent[:24]  # a new random prefix, not the parent's sequence
