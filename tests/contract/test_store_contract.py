"""The event store's contract, once, against every backend (`store` fixture: a real Redis node
and a real 3-master Redis Cluster from the test fixtures, and the memory store).

Each test reads as the sentence in `infra.store.api` it holds the store to. Nothing here looks
below the API, except the harness's operator actions (killing connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from events.codec import decode_command_envelope, encode
from events.envelope import EventEnvelope, Outcome
from events.errors import Fenced, StoreUnavailable
from events.session import RefreshSession
from infra.store import (
    APPENDED,
    START,
    UNSETTLED,
    LeaseShare,
    Snapshot,
    TimerFire,
    build_envelope,
    conflict_version,
    partition_of,
    partition_slot,
    position_key,
)
from tests.contract.conftest import P

pytestmark = pytest.mark.anyio

TTL = 10_000


# --------------------------------------------------------------------------- helpers


def session_in(partition: int) -> str:
    while True:
        sid = str(uuid.uuid4())
        if partition_of(sid, P) == partition:
            return sid


def actor_in(partition: int) -> tuple[str, str]:
    sid = session_in(partition)
    return f"session:{sid}", sid


def event(actor: str, version: int, partition: int, command_id: str = "c", n: int = 0) -> bytes:
    return encode(
        EventEnvelope(
            event_id=str(uuid.uuid4()),
            actor_id=actor,
            version=version,
            partition=partition,
            ts=1000 + version,
            command_id=command_id,
            correlation_id=command_id,
            causation_id=command_id,
            type="Added",
            data=msgspec.Raw(encode({"n": n})),
        )
    )


def outcome(
    command_id: str, actor: str, version: int = 0, events: int = 0, ok: bool = True
) -> bytes:
    return encode(
        Outcome(
            command_id=command_id,
            actor_id=actor,
            ok=ok,
            version=version,
            events=events,
            error_code="" if ok else "INVALID_ARGUMENT",
        )
    )


def command(actor: str, sid: str, command_id: str, reply_to: str = "") -> bytes:
    return encode(
        build_envelope(
            actor,
            sid,
            RefreshSession(at=1, user_id="u"),
            partitions=P,
            command_id=command_id,
            reply_to=reply_to,
        )
    )


async def owner_of(store: Any, partition: int, owner: str = "w") -> Any:
    epoch = await store.leases.acquire("worker", partition, owner, TTL)
    assert epoch is not None
    return store.open_partition(partition, epoch, owner)


async def read_n(writer: Any, n: int, timeout: float = 5.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"read {len(got)} of {n} commands"
        got += await writer.read_commands(100, 50)
    return got


async def append_one(
    writer: Any,
    actor: str,
    cid: str,
    expected: int,
    *,
    entry: bytes = b"0-1",
    reply_to: str = "",
    n: int = 1,
    snapshot: Snapshot | None = None,
    timers: list[tuple[str, int]] | None = None,
    removed: list[str] | None = None,
    routed: list[bytes] | None = None,
    change: tuple[str, bytes] | None = None,
) -> list[Any]:
    batch = writer.new_batch()
    slot = batch.actor(actor)
    events = [event(actor, expected + k + 1, writer.partition, cid) for k in range(n)]
    batch.append(
        entry,
        cid,
        slot,
        expected,
        reply_to,
        outcome(cid, actor, expected + n, n),
        events,
        routed or [],
        timers or [],
        removed or [],
        snapshot,
        change,
    )
    return await writer.append(batch)


@contextlib.asynccontextmanager
async def responder(store: Any, partition: int) -> AsyncIterator[list[str]]:
    """A minimal worker: answers every command of `partition` with one event (seen: ids)."""
    writer = await owner_of(store, partition, "responder")
    seen: list[str] = []

    async def run() -> None:
        while True:
            entries = await writer.read_commands(100, 50)
            if not entries:
                continue
            batch = writer.new_batch()
            versions: dict[str, int] = {}
            for entry_id, payload in entries:
                env = decode_command_envelope(payload)
                if env.actor_id not in versions:
                    versions[env.actor_id] = await store.actors.last_version(
                        partition, env.actor_id
                    )
                v = versions[env.actor_id]
                batch.append(
                    entry_id,
                    env.command_id,
                    batch.actor(env.actor_id),
                    v,
                    env.reply_to,
                    outcome(env.command_id, env.actor_id, v + 1, 1),
                    [event(env.actor_id, v + 1, partition, env.command_id)],
                    [],
                    [],
                    [],
                    None,
                )
                versions[env.actor_id] = v + 1
                seen.append(env.command_id)
            await writer.append(batch)

    task = asyncio.create_task(run())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await writer.close()


async def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not true in time"
        await asyncio.sleep(0.02)


class MemoryArchive:
    """The `Archive` protocol over a list of envelopes (what PostgreSQL's archive holds)."""

    def __init__(self) -> None:
        self.envelopes: list[EventEnvelope] = []

    async def events(self, actor_id: str, after: int, before: int | None) -> list[EventEnvelope]:
        return sorted(
            (
                e
                for e in self.envelopes
                if e.actor_id == actor_id
                and e.version > after
                and (before is None or e.version < before)
            ),
            key=lambda e: e.version,
        )

    async def last_version(self, actor_id: str) -> int:
        return max((e.version for e in self.envelopes if e.actor_id == actor_id), default=0)


# --------------------------------------------------------------------------- the append


async def test_an_append_writes_versioned_events_the_log_and_the_outcome(store: Any) -> None:
    actor, sid = actor_in(1)
    await store.commands.enqueue(1, command(actor, sid, "c1"))
    writer = await owner_of(store, 1)
    ((entry_id, payload),) = await read_n(writer, 1)
    assert decode_command_envelope(payload).command_id == "c1"
    assert await append_one(writer, actor, "c1", 0, entry=entry_id, n=2) == [APPENDED]
    envs = await store.actors.read(1, actor)
    assert [(e.version, e.command_id) for e in envs] == [(1, "c1"), (2, "c1")]
    log = await store.log.range(1)
    assert [msgspec.msgpack.decode(p)["version"] for _, p in log] == [1, 2]
    stored = await store.commands.outcome(sid, "c1")
    assert stored is not None and (stored.version, stored.events) == (2, 2)
    assert await writer.read_own_pending(10) == []  # acknowledged


async def test_a_stale_epoch_writes_nothing_and_raises_fenced(store: Any) -> None:
    actor, sid = actor_in(2)
    old = await owner_of(store, 2, "old")
    await store.leases.release("worker", 2, "old")
    new = await owner_of(store, 2, "new")
    assert new.epoch > old.epoch
    refused = await store.leases.refused("worker", 2)
    with pytest.raises(Fenced):
        await append_one(old, actor, "late", 0)
    with pytest.raises(Fenced):
        await old.fire_timers([TimerFire(actor, "k", 1, None)])
    assert await store.actors.read(2, actor) == []
    assert await store.log.length(2) == 0
    assert await store.commands.outcome(sid, "late") is None
    assert await store.leases.refused("worker", 2) == refused + 2
    assert await append_one(new, actor, "ok", 0) == [APPENDED]


async def test_a_version_mismatch_conflicts_and_so_do_that_actors_later_commands(
    store: Any,
) -> None:
    actor, _ = actor_in(0)
    other, _ = actor_in(0)
    writer = await owner_of(store, 0)
    assert await append_one(writer, actor, "first", 0) == [APPENDED]
    batch = writer.new_batch()
    a, b = batch.actor(actor), batch.actor(other)
    batch.append(
        b"0-1",
        "stale",
        a,
        0,
        "",
        outcome("stale", actor, 1, 1),
        [event(actor, 1, 0)],
        [],
        [],
        [],
        None,
    )
    batch.settle(b"0-2", "after", a, 1, "", outcome("after", actor, 1))
    batch.append(
        b"0-3",
        "fine",
        b,
        0,
        "",
        outcome("fine", other, 1, 1),
        [event(other, 1, 0)],
        [],
        [],
        [],
        None,
    )
    results = await writer.append(batch)
    assert [conflict_version(r) for r in results[:2]] == [1, 1]
    assert results[2] == APPENDED and conflict_version(APPENDED) is None
    assert [e.command_id for e in await store.actors.read(0, actor)] == ["first"]
    assert len(await store.actors.read(0, other)) == 1


async def test_a_settled_command_id_returns_its_stored_outcome_and_appends_nothing(
    store: Any,
) -> None:
    actor, sid = actor_in(3)
    writer = await owner_of(store, 3)
    await append_one(writer, actor, "dup", 0)
    first = await store.commands.outcome(sid, "dup")
    again = await append_one(writer, actor, "dup", 1, n=3)
    assert again == [encode(first)]
    assert len(await store.actors.read(3, actor)) == 1
    # a repeat inside one batch gets the original's stored outcome, or UNSETTLED without one
    batch = writer.new_batch()
    batch.repeat(b"0-5", "dup", "")
    batch.repeat(b"0-6", "never", "")
    assert await writer.append(batch) == [encode(first), UNSETTLED]


async def test_the_stored_outcome_is_republished_to_a_retry_reply_channel(store: Any) -> None:
    actor, sid = actor_in(1)
    writer = await owner_of(store, 1)
    await append_one(writer, actor, "once", 0)
    sender = store.command_sender("retrier")
    try:
        await sender.start()
        waiting = asyncio.ensure_future(
            sender.send(actor, sid, RefreshSession(at=1, user_id="u"), command_id="once", timeout=5)
        )
        (entry,) = await read_n(writer, 1)
        env = decode_command_envelope(entry[1])
        assert env.reply_to == sender.channel
        batch = writer.new_batch()
        batch.append(
            entry[0],
            "once",
            batch.actor(actor),
            1,
            env.reply_to,
            outcome("once", actor, 2, 1),
            [event(actor, 2, 1)],
            [],
            [],
            [],
            None,
        )
        results = await writer.append(batch)
        assert isinstance(results[0], bytes)
        got = await waiting
        assert got is not None and got.version == 1
        assert len(await store.actors.read(1, actor)) == 1
    finally:
        await sender.close()


async def test_refused_and_unreadable_entries_are_acknowledged(store: Any) -> None:
    actor, sid = actor_in(2)
    await store.commands.enqueue(2, b"\xc1 not an envelope")
    await store.commands.enqueue(2, command(actor, sid, "bad"))
    writer = await owner_of(store, 2)
    (junk, bad) = await read_n(writer, 2)
    batch = writer.new_batch()
    batch.acknowledge(junk[0])
    batch.refuse(bad[0], "bad", "", outcome("bad", actor, ok=False))
    assert await writer.append(batch) == [APPENDED, APPENDED]
    assert await writer.read_own_pending(10) == []
    refused = await store.commands.outcome(sid, "bad")
    assert refused is not None and not refused.ok
    assert await store.actors.read(2, actor) == []


async def test_routed_commands_are_queued_on_the_partition(store: Any) -> None:
    actor, sid = actor_in(0)
    writer = await owner_of(store, 0)
    routed = command(f"simulator:{uuid.uuid4()}", sid, "routed-1")
    await append_one(writer, actor, "c", 0, routed=[routed])
    ((_, payload),) = await read_n(writer, 1)
    assert decode_command_envelope(payload).command_id == "routed-1"


async def test_timers_are_upserted_removed_and_fire_once_while_their_due_holds(
    store: Any,
) -> None:
    actor, _ = actor_in(1)
    writer = await owner_of(store, 1)
    await append_one(writer, actor, "arm", 0, timers=[("a", 100), ("b", 200), ("c", 9_999)])
    await append_one(writer, actor, "move", 1, timers=[("b", 150)], removed=["c"])
    due = await writer.due_timers(1000, 10)
    assert [(t.actor_id, t.key, t.due) for t in due] == [(actor, "a", 100), (actor, "b", 150)]
    assert await writer.due_timers(120, 10) == [due[0]]
    ring = command(actor, "s", "timer:a")
    fired = await writer.fire_timers(
        [
            TimerFire(actor, "a", 100, ring),
            TimerFire(actor, "b", 140, ring),  # its due moved
            TimerFire(actor, "zz", 1, None),
        ]
    )
    assert fired == 1
    assert [(t.key, t.due) for t in await writer.due_timers(1000, 10)] == [("b", 150)]
    ((_, payload),) = await read_n(writer, 1)
    assert decode_command_envelope(payload).command_id == "timer:a"
    assert await writer.fire_timers([TimerFire(actor, "a", 100, ring)]) == 0  # fired once
    await writer.fire_timers([TimerFire(actor, "b", 150, None)])  # dropped, not fired
    assert await writer.due_timers(10_000, 10) == []


async def test_a_snapshot_is_loaded_with_the_events_after_it(store: Any) -> None:
    actor, _ = actor_in(3)
    writer = await owner_of(store, 3)
    await append_one(writer, actor, "a", 0, n=3, snapshot=Snapshot(3, encode({"total": 3})))
    await append_one(writer, actor, "b", 3, n=2)
    loaded = await store.actors.load(3, [actor, "session:nobody"])
    history = loaded[actor]
    assert history.snapshot == Snapshot(3, encode({"total": 3}))
    assert [v for v, _ in history.events] == [4, 5]
    assert loaded["session:nobody"].snapshot is None and loaded["session:nobody"].events == []
    full = (await store.actors.load(3, [actor], from_snapshot=False))[actor]
    assert full.snapshot is None and [v for v, _ in full.events] == [1, 2, 3, 4, 5]
    assert await store.actors.snapshot_versions(3, [actor, "session:x"]) == {
        actor: 3,
        "session:x": None,
    }


async def test_outcomes_expire_after_the_writers_ttl(store: Any) -> None:
    actor, sid = actor_in(0)
    epoch = await store.leases.acquire("worker", 0, "w", TTL)
    writer = store.open_partition(0, epoch, "w", outcome_ttl_ms=150)
    await append_one(writer, actor, "brief", 0)
    assert await store.commands.outcome(sid, "brief") is not None
    await asyncio.sleep(0.3)
    assert await store.commands.outcome(sid, "brief") is None


async def test_pending_commands_are_reread_and_claimed_by_a_new_owner(store: Any) -> None:
    actor, sid = actor_in(1)
    for i in range(3):
        await store.commands.enqueue(1, command(actor, sid, f"p{i}"))
    old = await owner_of(store, 1, "old")
    assert len(await read_n(old, 3)) == 3
    assert [decode_command_envelope(p).command_id for _, p in await old.read_own_pending(10)] == [
        "p0",
        "p1",
        "p2",
    ]
    await store.leases.release("worker", 1, "old")
    new = await owner_of(store, 1, "new")
    assert await new.read_own_pending(10) == []
    start, claimed = await new.claim_pending(START, 2)
    claimed_ids = [decode_command_envelope(p).command_id for _, p in claimed]
    while start != START:
        start, more = await new.claim_pending(start, 2)
        claimed_ids += [decode_command_envelope(p).command_id for _, p in more]
    assert claimed_ids == ["p0", "p1", "p2"]
    assert len(await new.read_own_pending(10)) == 3
    assert await old.read_own_pending(10) == []


async def test_read_commands_waits_for_a_command_and_trim_keeps_the_unacknowledged(
    store: Any,
) -> None:
    actor, sid = actor_in(2)
    writer = await owner_of(store, 2)
    started = time.monotonic()
    assert await writer.read_commands(10, 100) == []
    assert time.monotonic() - started >= 0.08
    reading = asyncio.ensure_future(writer.read_commands(10, 3000))
    await asyncio.sleep(0.05)
    await store.commands.enqueue(2, command(actor, sid, "x0"))
    assert len(await asyncio.wait_for(reading, 3)) == 1
    await store.commands.enqueue(2, command(actor, sid, "x1"))
    (first,) = await read_n(writer, 1)
    x0 = (await writer.read_own_pending(10))[0]
    await append_one(writer, actor, "x0", 0, entry=x0[0])
    assert await writer.trim_commands() == 1  # x0 only: x1 is still pending
    pending = await writer.read_own_pending(10)
    assert [decode_command_envelope(p).command_id for _, p in pending] == ["x1"]
    assert first[0] == pending[0][0]


async def test_an_append_may_read_ahead_without_losing_or_doubling_commands(store: Any) -> None:
    actor, sid = actor_in(3)
    writer = await owner_of(store, 3)
    await store.commands.enqueue(3, command(actor, sid, "r0"))
    ((entry, _),) = await read_n(writer, 1)
    batch = writer.new_batch()
    batch.append(
        entry,
        "r0",
        batch.actor(actor),
        0,
        "",
        outcome("r0", actor, 1, 1),
        [event(actor, 1, 3)],
        [],
        [],
        [],
        None,
    )
    assert await writer.append(batch, read_ahead=True) == [APPENDED]
    await store.commands.enqueue(3, command(actor, sid, "r1"))
    got = await read_n(writer, 1)
    assert [decode_command_envelope(p).command_id for _, p in got] == ["r1"]
    assert not writer.reading_ahead
    assert await writer.read_commands(10, 50) == []


# --------------------------------------------------------------------------- reading actors


async def test_read_returns_an_actors_events_in_order_within_bounds(store: Any) -> None:
    actor, _ = actor_in(0)
    writer = await owner_of(store, 0)
    await append_one(writer, actor, "a", 0, n=5)
    read = store.actors.read
    assert [e.version for e in await read(0, actor)] == [1, 2, 3, 4, 5]
    assert [e.version for e in await read(0, actor, after=2)] == [3, 4, 5]
    assert [e.version for e in await read(0, actor, after=1, upto=3)] == [2, 3]
    assert [e.version for e in await read(0, actor, limit=2)] == [1, 2]
    assert await read(0, actor, after=5) == []
    assert [e.version for e in await store.actors.read_backwards(0, actor, limit=2)] == [5, 4]
    assert [e.version for e in await store.actors.read_backwards(0, actor, before=3)] == [2, 1]
    assert await store.actors.last_version(0, actor) == 5
    assert await store.actors.last_version(0, "session:none") == 0


async def test_versions_trimmed_from_the_store_come_from_the_archive(store: Any) -> None:
    actor, _ = actor_in(1)
    writer = await owner_of(store, 1)
    await append_one(writer, actor, "a", 0, n=6)
    archive = MemoryArchive()
    archive.envelopes = await store.actors.read(1, actor, upto=4)
    assert await store.actors.trim(1, actor, 5, dry_run=True) == 4
    assert await store.actors.trim(1, actor, 5) == 4
    assert [e.version for e in await store.actors.read(1, actor)] == [5, 6]  # no archive yet
    store.archive = archive
    assert [e.version for e in await store.actors.read(1, actor)] == [1, 2, 3, 4, 5, 6]
    assert [e.version for e in await store.actors.read(1, actor, after=2, limit=3)] == [3, 4, 5]
    assert [e.version for e in await store.actors.read(1, actor, after=3)] == [4, 5, 6]
    assert await store.actors.trim(1, actor, 7) == 2  # Redis holds none of it now
    assert [e.version for e in await store.actors.read(1, actor, after=3, upto=5)] == [4]
    assert await store.actors.last_version(1, actor) == 6  # still known without entries
    gone, _ = actor_in(1)
    archive.envelopes.append(
        msgspec.structs.replace(archive.envelopes[0], actor_id=gone, version=9)
    )
    assert await store.actors.last_version(1, gone) == 9


async def test_follow_yields_events_as_they_are_appended(store: Any) -> None:
    actor, _ = actor_in(2)
    writer = await owner_of(store, 2)
    await append_one(writer, actor, "a", 0, n=2)
    got: list[int] = []

    async def follow() -> None:
        async for env in store.actors.follow(2, actor, after=1, block_ms=100):
            got.append(env.version)
            if len(got) == 3:
                return

    task = asyncio.ensure_future(follow())
    await asyncio.sleep(0.1)
    await append_one(writer, actor, "b", 2, n=2)
    await asyncio.wait_for(task, 5)
    assert got == [2, 3, 4]


async def test_find_partition_follows_the_session_or_looks_for_the_events(store: Any) -> None:
    actor, sid = actor_in(3)
    assert await store.actors.find_partition(actor) == 3
    assert store.partition_of(sid) == 3 == partition_of(sid, P)
    sim = f"simulator:{uuid.uuid4()}"
    assert await store.actors.find_partition(sim, sid) == 3
    assert await store.actors.find_partition(sim) is None
    writer = await owner_of(store, 3)
    await append_one(writer, sim, "s", 0)
    assert await store.actors.find_partition(sim) == 3


# --------------------------------------------------------------------------- partition log


async def test_the_log_keeps_append_order_and_ranges_by_position(store: Any) -> None:
    a, _ = actor_in(0)
    b, _ = actor_in(0)
    writer = await owner_of(store, 0)
    await append_one(writer, a, "a1", 0)
    await append_one(writer, b, "b1", 0)
    await append_one(writer, a, "a2", 1)
    log = await store.log.range(0)
    assert [msgspec.msgpack.decode(p)["command_id"] for _, p in log] == ["a1", "b1", "a2"]
    positions = [pos for pos, _ in log]
    assert positions == sorted(positions, key=position_key)
    assert [p for p, _ in await store.log.range(0, after=positions[0])] == positions[1:]
    assert [p for p, _ in await store.log.range(0, upto=positions[1])] == positions[:2]
    assert [p for p, _ in await store.log.range(0, count=1)] == positions[:1]
    assert await store.log.length(0) == 3
    assert await store.log.group_floor(0) is None
    assert await store.log.trim(0, positions[2], dry_run=True) == 2
    assert await store.log.trim(0, positions[2]) == 2
    assert [p for p, _ in await store.log.range(0)] == positions[2:]


async def test_the_log_counts_the_entries_after_a_position_up_to_a_limit(store: Any) -> None:
    a, _ = actor_in(0)
    writer = await owner_of(store, 0)
    for version in range(4):
        await append_one(writer, a, f"c{version}", version)
    positions = [pos for pos, _ in await store.log.range(0)]
    assert await store.log.count(0, START, 100) == 4
    assert await store.log.count(0, positions[0], 100) == 3
    assert await store.log.count(0, positions[-1], 100) == 0
    assert await store.log.count(0, START, 2) == 2
    assert await store.log.count(1, START, 100) == 0


async def test_the_store_reports_its_eviction_policy_and_persistence(
    store: Any, backend: str
) -> None:
    found = await store.durability()
    if backend == "memory":
        assert (found.server, found.aof, found.rdb) == ("memory", False, False)
    else:  # the test server: valkey with AOF on, no RDB schedule, the default policy
        assert found.server.startswith(("valkey ", "redis "))
        assert (found.maxmemory_policy, found.aof, found.rdb) == ("noeviction", True, False)


async def test_a_log_reader_reads_partitions_together(store: Any) -> None:
    a, _ = actor_in(1)
    b, _ = actor_in(2)
    w1, w2 = await owner_of(store, 1), await owner_of(store, 2)
    reader = store.log.reader("proj")
    try:
        assert await reader.read({1: START, 2: START}, 10, 50) == {}
        reading = asyncio.ensure_future(reader.read({1: START, 2: START}, 10, 3000))
        await asyncio.sleep(0.05)
        await append_one(w1, a, "a", 0, n=2)
        got = await asyncio.wait_for(reading, 3)
        assert list(got) == [1] and len(got[1]) == 2
        await append_one(w2, b, "b", 0)
        got = await reader.read({1: got[1][-1][0], 2: START}, 10, 1000)
        assert list(got) == [2]
    finally:
        await reader.close()


async def test_an_accepted_append_publishes_its_change_and_a_refused_or_repeated_one_does_not(
    store: Any,
) -> None:
    a, sid = actor_in(3)
    writer = await owner_of(store, 3)
    seen: list[tuple[str, bytes]] = []
    sub = store.feed.subscriber(lambda s, d: seen.append((s, d)))
    try:
        await sub.start()
        await sub.subscribe(sid)
        assert await append_one(writer, a, "c1", 0, change=(sid, b"v1")) == [APPENDED]
        # the same command again (a retry): its stored outcome, no second publish
        again = await append_one(writer, a, "c1", 0, entry=b"0-2", change=(sid, b"v1"))
        assert again != [APPENDED]
        # a stale expected version: refused, nothing published
        stale = await append_one(writer, a, "c2", 0, entry=b"0-3", change=(sid, b"stale"))
        assert conflict_version(stale[0]) == 1
        assert await append_one(writer, a, "c3", 1, entry=b"0-4", change=(sid, b"v2")) == [APPENDED]
        await eventually(lambda: _true(len(seen) >= 2))
        await asyncio.sleep(0.05)
        assert seen == [(sid, b"v1"), (sid, b"v2")]
    finally:
        await sub.close()


async def _true(value: bool) -> bool:
    return value


async def test_a_log_consumer_group_delivers_once_keeps_pending_and_claims_idle_entries(
    store: Any,
) -> None:
    a, _ = actor_in(3)
    writer = await owner_of(store, 3)
    await append_one(writer, a, "x", 0, n=3)
    one = store.log.consumer("reactor", "one")
    two = store.log.consumer("reactor", "two")
    try:
        with pytest.raises(StoreUnavailable):  # no such group yet
            await one.read_pending(3, START, 10)
        await one.ensure(3)
        await one.ensure(3)  # idempotent
        got = await one.read_new(3, 2, 100)
        assert len(got) == 2
        rest = await two.read_new(3, 10, 100)
        assert len(rest) == 1
        assert await two.read_new(3, 10, 50) == []
        assert await one.read_pending(3, START, 10) == got
        assert await store.log.group_floor(3) == got[0][0]
        await one.ack(3, [got[0][0]])
        assert await one.read_pending(3, START, 10) == got[1:]
        assert await store.log.group_floor(3) == got[1][0]
        await asyncio.sleep(0.05)
        start, claimed = await two.claim(3, 10, START, 10)
        assert start == START and [p for p, _ in claimed] == [got[1][0], rest[0][0]]
        assert await one.read_pending(3, START, 10) == []
        _, none = await one.claim(3, 60_000, START, 10)
        assert none == []
    finally:
        await one.close()
        await two.close()


# --------------------------------------------------------------------------- leases


async def test_a_lease_has_one_owner_and_every_acquisition_bumps_the_epoch(store: Any) -> None:
    leases = store.leases
    assert await leases.epoch("worker", 1) == 0
    first = await leases.acquire("worker", 1, "a", TTL)
    assert first == 1
    assert await leases.acquire("worker", 1, "b", TTL) is None
    again = await leases.acquire("worker", 1, "a", TTL)  # the same owner, anew: fences itself
    assert again == 2 and await leases.epoch("worker", 1) == 2
    assert not await leases.renew("worker", 1, "a", first, TTL)
    assert await leases.renew("worker", 1, "a", again, TTL)
    assert await leases.holders("worker") == {1: "a"}
    assert await leases.acquire("projector", 1, "b", TTL) == 1  # roles are independent
    assert await leases.holders("projector") == {1: "b"}


async def test_a_lease_lapses_renewal_fails_after_a_takeover_and_release_frees_it(
    store: Any,
) -> None:
    leases = store.leases
    epoch = await leases.acquire("worker", 2, "a", 150)
    await asyncio.sleep(0.25)
    assert await leases.holders("worker") == {}
    taken = await leases.acquire("worker", 2, "b", TTL)
    assert taken == epoch + 1
    assert await leases.renew_many("worker", "a", {2: epoch}, TTL) == {2: False}
    assert not await leases.release("worker", 2, "a")
    assert await leases.release("worker", 2, "b")
    assert await leases.holders("worker") == {}
    assert await leases.epoch("worker", 2) == taken  # the epoch stays
    assert await leases.renew_many("worker", "b", {}, TTL) == {}


async def test_members_heartbeat_lapse_and_leave(store: Any) -> None:
    leases = store.leases
    assert await leases.heartbeat("projector", "a", TTL) == 1
    assert await leases.heartbeat("projector", "b", 150) == 2
    assert await leases.members("projector") == ["a", "b"]
    await asyncio.sleep(0.25)
    assert await leases.members("projector") == ["a"]
    assert await leases.heartbeat("projector", "a", TTL) == 1
    await leases.leave("projector", "a")
    assert await leases.members("projector") == []


async def test_lease_shares_split_the_partitions_fairly_and_hand_them_over(store: Any) -> None:
    a = LeaseShare(store.leases, "projector", "a", P, TTL)
    b = LeaseShare(store.leases, "projector", "b", P, TTL)
    first = await a.tick()
    assert first.target == P and sorted(first.gained) == list(range(P))
    joined = await b.tick()
    assert joined.live == 2 and joined.gained == {}  # nothing free yet
    round_a = await a.tick()
    assert round_a.target == 2 and len(round_a.surplus) == 2
    for p in round_a.surplus:
        await a.release(p)
    round_b = await b.tick()
    assert sorted(round_b.gained) == sorted(round_a.surplus)
    assert set(a.held).isdisjoint(b.held) and len(a.held) == len(b.held) == 2
    # a partition taken over behind a's back is reported lost
    p = next(iter(a.held))
    await store.leases.release("projector", p, "a")
    await store.leases.acquire("projector", p, "c", TTL)
    assert p in (await a.tick(acquire=False)).lost and p not in a.held
    await b.release_all()
    assert await store.leases.members("projector") == ["a"]


# --------------------------------------------------------------------------- sending commands


async def test_send_waits_for_the_outcome_and_keeps_the_order_of_sends(store: Any) -> None:
    actor, sid = actor_in(1)
    async with responder(store, 1) as seen:
        await store.commands.start()
        outs = await asyncio.gather(
            *(
                store.commands.send(
                    actor,
                    sid,
                    RefreshSession(at=1, user_id="u"),
                    command_id=f"s{i}",
                    wait=i % 2 == 0,
                    timeout=5,
                )
                for i in range(10)
            )
        )
        assert [o.command_id if o else None for o in outs] == [
            f"s{i}" if i % 2 == 0 else None for i in range(10)
        ]
        await eventually(lambda: _true(len(seen) == 10))
        assert seen == [f"s{i}" for i in range(10)]
        again = await store.commands.send(
            actor, sid, RefreshSession(at=1, user_id="u"), command_id="s0", timeout=5
        )
        assert again == outs[0]  # a settled id keeps its first outcome
        assert await store.commands.outcome(sid, "s2") == outs[2]


async def test_send_reads_the_stored_outcome_when_the_reply_is_missed(store: Any) -> None:
    actor, sid = actor_in(2)
    writer = await owner_of(store, 2)
    sender = store.command_sender("deaf")
    sender.recheck_s = 0.1
    try:
        waiting = asyncio.ensure_future(
            sender.send(actor, sid, RefreshSession(at=1, user_id="u"), command_id="m", timeout=5)
        )
        (entry,) = await read_n(writer, 1)
        batch = writer.new_batch()  # the outcome is stored but published to no one
        batch.append(
            entry[0],
            "m",
            batch.actor(actor),
            0,
            "",
            outcome("m", actor, 1, 1),
            [event(actor, 1, 2)],
            [],
            [],
            [],
            None,
        )
        await writer.append(batch)
        got = await asyncio.wait_for(waiting, 5)
        assert got is not None and got.command_id == "m" and got.version == 1
    finally:
        await sender.close()


async def test_send_without_a_worker_is_store_unavailable_after_the_timeout(store: Any) -> None:
    actor, sid = actor_in(0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no outcome"):
        await store.commands.send(actor, sid, RefreshSession(at=1, user_id="u"), timeout=0.3)
    assert time.monotonic() - started < 2
    assert await store.commands.outcome(sid, "never") is None


# --------------------------------------------------------------------------- change feed


async def test_the_change_feed_reaches_the_sessions_subscribers_and_broadcasts_all(
    store: Any,
) -> None:
    changes: list[tuple[str, bytes]] = []
    broadcasts: list[bytes] = []
    quiet: list[tuple[str, bytes]] = []
    sub = store.feed.subscriber(
        lambda s, d: changes.append((s, d)), on_broadcast=broadcasts.append, name="t-feed"
    )
    other = store.feed.subscriber(lambda s, d: quiet.append((s, d)))
    try:
        await sub.start()
        await other.start()
        await sub.subscribe("s1")
        assert await store.feed.publish("s1", b"one") == 1
        assert await store.feed.publish("s2", b"nobody") == 0
        assert await store.feed.publish("s1", b"two") == 1
        assert await store.feed.broadcast(b"hello") == 1  # `other` has no broadcast handler
        await eventually(lambda: _true(len(changes) == 2 and len(broadcasts) == 1))
        assert changes == [("s1", b"one"), ("s1", b"two")] and broadcasts == [b"hello"]
        await sub.unsubscribe("s1")
        assert await store.feed.publish("s1", b"three") == 0
        assert quiet == []
    finally:
        await sub.close()
        await other.close()


async def test_a_subscription_comes_back_after_a_lost_connection(store: Any, harness: Any) -> None:
    changes: list[bytes] = []
    reconnected = asyncio.Event()
    sub = store.feed.subscriber(
        lambda s, d: changes.append(d), on_reconnect=reconnected.set, name="t-reconnect"
    )
    try:
        await sub.start()
        await sub.subscribe("s9")
        await harness.drop_subscribers()
        await asyncio.wait_for(reconnected.wait(), 10)
        assert sub.reconnects == 1
        assert await store.feed.publish("s9", b"after") == 1
        await eventually(lambda: _true(changes == [b"after"]))
    finally:
        await sub.close()


# --------------------------------------------------------------------------- registries


async def test_the_connection_registry_lists_live_connections_per_gateway(store: Any) -> None:
    reg = store.connections
    await reg.announce("g1")
    await reg.register("g1", "c1", b'{"a":1}', 60)
    await reg.register("g1", "c2", b'{"a":2}', 60)
    await reg.register("g2", "c3", b'{"a":3}', 1)
    await reg.announce("g2")
    await reg.unregister("g1", "c2")
    assert sorted(await reg.connections()) == [("g1", "c1", b'{"a":1}'), ("g2", "c3", b'{"a":3}')]
    await asyncio.sleep(1.2)  # g2 did not refresh its TTL
    assert await reg.connections() == [("g1", "c1", b'{"a":1}')]
    await reg.refresh("g1", 60)
    await reg.remove_gateway("g1")
    assert await reg.connections() == []


async def test_the_device_index_is_claimed_once_and_overwritten_on_purpose(store: Any) -> None:
    devices = store.devices
    assert await devices.get("u", "d") is None
    assert await devices.claim("u", "d", "s1", 60)
    assert not await devices.claim("u", "d", "s2", 60)
    assert await devices.get("u", "d") == "s1"
    await devices.put("u", "d", "s3", 60)
    assert await devices.get("u", "d") == "s3"
    assert await devices.get("other", "d") is None


async def test_market_data_streams_are_capped_read_together_and_marked_per_session(
    store: Any,
) -> None:
    md = store.market_data
    assert await md.latest("sim1") is None
    await md.publish([("sim1", b'{"p":1}'), ("sim2", b'{"p":2}'), ("sim1", b'{"p":3}')], 1000)
    latest = await md.latest("sim1")
    assert latest is not None and latest[1] == b'{"p":3}'
    assert await md.length("sim1") == 2
    reader = md.reader("t-ticks")
    try:
        got = await reader.read({"sim1": START, "sim2": START, "sim3": START}, 10, 50)
        assert {k: [d for _, d in v] for k, v in got.items()} == {
            "sim1": [b'{"p":1}', b'{"p":3}'],
            "sim2": [b'{"p":2}'],
        }
        reading = asyncio.ensure_future(reader.read({"sim1": latest[0]}, 10, 3000))
        await asyncio.sleep(0.05)
        await md.publish([("sim1", b'{"p":4}')], 1000)
        assert [d for _, d in (await asyncio.wait_for(reading, 3))["sim1"]] == [b'{"p":4}']
    finally:
        await reader.close()
    await md.publish([("big", b"%d" % i) for i in range(300)], 10)
    assert 10 <= await md.length("big") < 300  # capped to about maxlen
    await md.mark_active("s1", "sim1", 60_000)
    assert await md.active_simulator("s1") == "sim1"
    await md.unmark_active("s1", "other")
    assert await md.active_simulator("s1") == "sim1"
    await md.unmark_active("s1", "sim1")
    assert await md.active_simulator("s1") is None


async def test_simulator_hosts_register_take_requests_and_answer_them(store: Any) -> None:
    hosts = store.simulator_hosts
    await hosts.register("h1", 60_000, 2)
    await hosts.register("h2", 100, 0)
    assert sorted(await hosts.live()) == ["h1", "h2"]
    assert await hosts.loads(["h1", "h2", "h3"]) == {"h1": 2, "h2": 0, "h3": 0}
    await asyncio.sleep(0.2)
    assert await hosts.live() == ["h1"]
    assert await hosts.placement("sim") is None
    await hosts.place("sim", "h1", 60)
    assert await hosts.placement("sim") == "h1"
    reader = hosts.control_reader("h1")
    try:
        await hosts.request("h1", b"start-1")
        ((pos, payload),) = await reader.read(START, 10, 100)
        assert payload == b"start-1"
        await reader.remove(pos)
        assert await reader.read(START, 10, 50) == []
        waiting = asyncio.ensure_future(hosts.wait_ack("req-1", 3))
        await asyncio.sleep(0.05)
        await hosts.acknowledge("req-1", b"ok", "h1", 3, 60)
        assert await asyncio.wait_for(waiting, 4) == b"ok"
        assert await hosts.loads(["h1"]) == {"h1": 3}
        assert await hosts.wait_ack("req-2", 0.1) is None
    finally:
        await reader.close()
    await hosts.unplace("sim")
    assert await hosts.placement("sim") is None
    await hosts.deregister("h1")
    assert await hosts.live() == []


async def test_status_records_are_kept_per_role_and_owner_until_they_expire(store: Any) -> None:
    board = store.statuses
    await board.put("projector", "p1", b'{"ok":1}', 60_000)
    await board.put("projector", "p2", b'{"ok":2}', 100)
    assert await board.get("projector", ["p1", "p2", "p3"]) == {
        "p1": b'{"ok":1}',
        "p2": b'{"ok":2}',
        "p3": None,
    }
    await asyncio.sleep(0.2)
    assert (await board.get("projector", ["p2"]))["p2"] is None
    await board.delete("projector", "p1")
    assert (await board.get("projector", ["p1"]))["p1"] is None


async def test_the_store_answers_pings(store: Any) -> None:
    await store.ping()


async def test_connect_says_whether_it_found_a_single_node_or_a_cluster(
    store: Any, harness: Any
) -> None:
    said = await store.connect()
    expected = {"redis": "single node (", "cluster": "cluster: ", "memory": "memory"}
    assert said.startswith(expected[harness.backend]), said
    assert await store.connect() == said  # found out once


async def test_placements_name_each_partitions_slot_and_the_node_serving_it(
    store: Any, harness: Any
) -> None:
    placements = await store.placements()
    assert sorted(placements) == list(range(P))
    assert [pl.slot for pl in placements.values()] == [partition_slot(p) for p in range(P)]
    nodes = {pl.node for pl in placements.values()}
    assert len(nodes) == (3 if harness.backend == "cluster" else 1)
