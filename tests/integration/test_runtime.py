"""The worker runtime on real Redis: append, dedup, conflicts, poison, policies, timers,
snapshots and fencing, first with a toy counter actor, then with the real deciders."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from actors.decider import Decider, Routed, Timer
from actors.runtime.worker import Worker
from events.base import Command, Event
from events.codec import decode_event_envelope, decode_outcome, encode
from events.envelope import EventEnvelope
from events.errors import DomainError
from events.ids import session_actor, simulator_actor
from infra.store import CommandSender, build_envelope, layout, open_store
from infra.store.routing import partition_of
from tests.rediskit import connect

pytestmark = pytest.mark.anyio

P = 4

# --------------------------------------------------------------------------- a toy actor


class Add(Command, frozen=True, tag="Add"):
    n: int


class Ping(Command, frozen=True, tag="Ping"):
    target: str


class Arm(Command, frozen=True, tag="Arm"):
    due: int


class Ring(Command, frozen=True, tag="Ring"):
    pass


class Added(Event, frozen=True, tag="Added"):
    n: int


class Pinged(Event, frozen=True, tag="Pinged"):
    target: str


class Armed(Event, frozen=True, tag="Armed"):
    due: int


class Rang(Event, frozen=True, tag="Rang"):
    pass


class Counter(msgspec.Struct, frozen=True):
    total: int = 0
    alarm: int = 0  # due of the armed alarm, 0 = none
    rings: int = 0


ToyCommand = Add | Ping | Arm | Ring
ToyEvent = Added | Pinged | Armed | Rang
_commands = msgspec.msgpack.Decoder(ToyCommand)
_events = msgspec.msgpack.Decoder(ToyEvent)


def _decide(command: Any, state: Counter) -> list[Any]:
    match command:
        case Add(n=n) if n < 0:
            raise DomainError("INVALID_ARGUMENT", "n must not be negative")
        case Add():
            return [Added(at=command.at, n=command.n)]
        case Ping():
            return [Pinged(at=command.at, target=command.target)]
        case Arm():
            return [Armed(at=command.at, due=command.due)]
        case Ring():
            return [Rang(at=command.at)] if state.alarm and command.at >= state.alarm else []
    raise DomainError("INVALID_COMMAND", "unknown")


def _evolve(state: Counter, event: Any) -> Counter:
    match event:
        case Added():
            return msgspec.structs.replace(state, total=state.total + event.n)
        case Armed():
            return msgspec.structs.replace(state, alarm=event.due)
        case Rang():
            return msgspec.structs.replace(state, alarm=0, rings=state.rings + 1)
    return state


def _deadlines(state: Counter) -> list[Timer]:
    return [Timer("alarm", state.alarm, Ring(at=state.alarm))] if state.alarm else []


def _react(state: Counter, event: Any) -> list[Routed]:
    if isinstance(event, Pinged):
        return [Routed(event.target, Add(at=event.at, n=1))]
    return []


TOY = Decider(
    kind="toy",
    initial_state=Counter(),
    decide=_decide,
    evolve=_evolve,
    is_terminal=lambda s: False,
    deadlines=_deadlines,
    react=_react,
)


def toy_worker(url: str, **kw: Any) -> Worker:
    kw.setdefault("lease_ttl_ms", 2000)
    kw.setdefault("timer_poll_ms", 50)
    return Worker(
        open_store(url, P),
        worker_id=kw.pop("worker_id", "toy"),
        decider_for=lambda actor_id: TOY,
        decode_command=_commands.decode,
        decode_event=lambda data, type_: _events.decode(data),
        **kw,
    )


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 10)
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)
        await worker.store.aclose()


@contextlib.asynccontextmanager
async def bus_for(url: str) -> AsyncIterator[tuple[Any, CommandSender]]:
    redis = connect(url)
    store = open_store(url, P)
    bus = store.commands
    await bus.start()
    try:
        yield redis, bus
    finally:
        await store.aclose()
        await redis.aclose()


def now_ms() -> int:
    return int(time.time() * 1000)


def new_actor() -> tuple[str, str]:
    sid = str(uuid.uuid4())
    return f"toy:{sid}", sid


async def stream(redis: Any, sid: str, actor_id: str) -> list[EventEnvelope]:
    p = partition_of(sid, P)
    entries = await redis.xrange(layout.event_stream(p, actor_id))
    envs = [decode_event_envelope(f[b"e"]) for _, f in entries]
    assert [e for e, _ in entries] == [f"{env.version}-0".encode() for env in envs]
    return envs


async def eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- toy tests


async def test_command_appends_events_with_version_ids_and_replies(redis_url: str) -> None:
    actor, sid = new_actor()
    async with running(toy_worker(redis_url)), bus_for(redis_url) as (redis, bus):
        first = await bus.send(actor, sid, Add(at=now_ms(), n=5), command_id="c1")
        second = await bus.send(actor, sid, Add(at=now_ms(), n=2), command_id="c2")
        assert first is not None and first.ok and first.version == 1 and first.events == 1
        assert second is not None and second.ok and second.version == 2
        envs = await stream(redis, sid, actor)
        assert [(e.version, e.type, e.command_id) for e in envs] == [
            (1, "Added", "c1"),
            (2, "Added", "c2"),
        ]
        p = partition_of(sid, P)
        log = await redis.xrange(layout.partition_log(p))
        assert [decode_event_envelope(f[b"e"]).event_id for _, f in log] == [
            e.event_id for e in envs
        ]
        stored = decode_outcome(await redis.get(layout.outcome_key(p, "c1")))
        assert stored == first
        assert 0 < await redis.pttl(layout.outcome_key(p, "c1")) <= 24 * 3600 * 1000


async def test_retried_command_returns_first_outcome_and_appends_nothing(redis_url: str) -> None:
    actor, sid = new_actor()
    async with running(toy_worker(redis_url)), bus_for(redis_url) as (redis, bus):
        first = await bus.send(actor, sid, Add(at=now_ms(), n=5), command_id="same")
        again = await bus.send(actor, sid, Add(at=now_ms(), n=7), command_id="same")
        assert again == first
        # a retry queued twice in the same batch, and once more after
        for _ in range(3):
            await bus.send(actor, sid, Add(at=now_ms(), n=9), command_id="twice", wait=False)
        last = await bus.send(actor, sid, Add(at=now_ms(), n=9), command_id="twice")
        assert last is not None and last.ok and last.version == 2
        envs = await stream(redis, sid, actor)
        assert [e.command_id for e in envs] == ["same", "twice"]
        assert await redis.xlen(layout.partition_log(partition_of(sid, P))) == 2


async def test_domain_error_is_stored_and_replayed_without_events(redis_url: str) -> None:
    actor, sid = new_actor()
    async with running(toy_worker(redis_url)), bus_for(redis_url) as (redis, bus):
        refused = await bus.send(actor, sid, Add(at=now_ms(), n=-1), command_id="bad")
        assert refused is not None and not refused.ok
        assert refused.error_code == "INVALID_ARGUMENT"
        assert await bus.send(actor, sid, Add(at=now_ms(), n=1), command_id="bad") == refused
        assert await stream(redis, sid, actor) == []


async def test_poison_entries_are_acked_and_never_block_the_partition(redis_url: str) -> None:
    actor, sid = new_actor()
    p = partition_of(sid, P)
    cmd_stream = layout.command_stream(p)
    async with bus_for(redis_url) as (redis, bus):
        await redis.xadd(cmd_stream, {"c": b"\xc1not msgpack"})
        await redis.xadd(cmd_stream, {"x": b"no c field"})
        env = build_envelope(actor, sid, Add(at=now_ms(), n=1), partitions=P, command_id="junk")
        bad = msgspec.structs.replace(env, data=msgspec.Raw(encode({"type": "Nope"})))
        await redis.xadd(cmd_stream, {"c": encode(bad)})
        async with running(toy_worker(redis_url)):
            ok = await bus.send(actor, sid, Add(at=now_ms(), n=3))
            assert ok is not None and ok.ok and ok.version == 1
            junk = decode_outcome(await redis.get(layout.outcome_key(p, "junk")))
            assert not junk.ok and junk.error_code == "INVALID_COMMAND"
            pending = await redis.xpending(cmd_stream, layout.COMMAND_GROUP)
            assert pending["pending"] == 0


async def test_commands_of_one_actor_in_one_batch_see_each_other(redis_url: str) -> None:
    actor, sid = new_actor()
    other = f"{actor}-other"  # same session id: same partition, interleaved in the batch
    async with bus_for(redis_url) as (redis, bus):
        for i in range(60):  # queued before any worker runs: one batch
            await bus.send(actor, sid, Add(at=now_ms(), n=1), command_id=f"a{i}", wait=False)
            await bus.send(other, sid, Add(at=now_ms(), n=2), wait=False)
        async with running(toy_worker(redis_url)):
            last = await bus.send(actor, sid, Add(at=now_ms(), n=0), command_id="last")
            assert last is not None and last.version == 61
            envs = await stream(redis, sid, actor)
            assert [e.version for e in envs] == list(range(1, 62))
            assert [e.command_id for e in envs[:60]] == [f"a{i}" for i in range(60)]
            assert len(await stream(redis, sid, other)) == 60


async def test_version_conflict_reloads_and_decides_again(redis_url: str) -> None:
    actor, sid = new_actor()
    p = partition_of(sid, P)
    worker = toy_worker(redis_url)
    async with running(worker), bus_for(redis_url) as (redis, bus):
        await bus.send(actor, sid, Add(at=now_ms(), n=1))
        assert worker.cache.get(actor) is not None  # cached at version 1
        # another writer appends version 2 behind the worker's back
        foreign = EventEnvelope(
            event_id=str(uuid.uuid4()), actor_id=actor, version=2, partition=p, ts=now_ms(),
            command_id="foreign", correlation_id="foreign", causation_id="foreign",
            type="Added", data=msgspec.Raw(encode(Added(at=now_ms(), n=100))),
        )  # fmt: skip
        await redis.xadd(layout.event_stream(p, actor), {"e": encode(foreign)}, id="2-0")
        out = await bus.send(actor, sid, Add(at=now_ms(), n=1), command_id="after")
        assert out is not None and out.ok and out.version == 3
        envs = await stream(redis, sid, actor)
        assert [e.command_id for e in envs] == [envs[0].command_id, "foreign", "after"]
        assert worker.cache.get(actor).state.total == 102  # type: ignore[union-attr]


async def test_policy_routes_commands_to_another_actor_atomically(redis_url: str) -> None:
    sid = str(uuid.uuid4())
    a, b = f"toy:{sid}", f"toy:{sid}-b"  # same partition: the session id decides
    async with running(toy_worker(redis_url)), bus_for(redis_url) as (redis, bus):
        out = await bus.send(a, sid, Ping(at=now_ms(), target=b))
        assert out is not None and out.ok

        async def b_events() -> list[EventEnvelope]:
            return await stream(redis, sid, b)

        envs = await eventually(b_events)
        pinged = (await stream(redis, sid, a))[0]
        assert [(e.type, e.command_id, e.causation_id) for e in envs] == [
            ("Added", f"{pinged.event_id}/0", f"{pinged.event_id}/0")
        ]
        assert envs[0].correlation_id == pinged.correlation_id


async def test_timer_fires_once_and_a_refire_is_deduplicated(redis_url: str) -> None:
    actor, sid = new_actor()
    p = partition_of(sid, P)
    due = now_ms() + 300
    async with running(toy_worker(redis_url)), bus_for(redis_url) as (redis, bus):
        await bus.send(actor, sid, Arm(at=now_ms(), due=due))
        member = layout.timer_member(actor, "alarm")
        assert await redis.zscore(layout.timers_key(p), member) == due

        async def rang() -> list[EventEnvelope]:
            return [e for e in await stream(redis, sid, actor) if e.type == "Rang"]

        fired = await eventually(rang)
        assert len(fired) == 1
        timer_cid = f"timer:{actor}:alarm:{due}"
        assert fired[0].command_id == timer_cid
        assert await redis.zcard(layout.timers_key(p)) == 0
        # the same timer command arrives a second time (a re-fire): deduplicated by its id
        env = build_envelope(actor, sid, Ring(at=due), partitions=P, command_id=timer_cid)
        again = await bus.send(actor, sid, Ring(at=due), command_id=timer_cid)
        assert again is not None and again.version == fired[0].version
        await redis.xadd(layout.command_stream(p), {"c": encode(env)})
        # a stale timer entry (the actor no longer has that deadline) is dropped, not fired
        await redis.zadd(layout.timers_key(p), {member: due})
        await eventually(lambda: _zero(redis.zcard(layout.timers_key(p))))
        await asyncio.sleep(0.3)
        assert len(await rang()) == 1


async def _zero(awaitable: Any) -> bool:
    return await awaitable == 0


async def test_timers_missed_during_downtime_fire_once(redis_url: str) -> None:
    actors = [new_actor() for _ in range(5)]
    async with bus_for(redis_url) as (redis, bus):
        async with running(toy_worker(redis_url, timer_poll_ms=60_000)):
            for actor, sid in actors:
                await bus.send(actor, sid, Arm(at=now_ms(), due=now_ms() + 200))
                await bus.send(actor, sid, Add(at=now_ms(), n=1))  # re-upserts nothing new
        await asyncio.sleep(0.8)  # every timer falls due while no worker runs
        async with running(toy_worker(redis_url, worker_id="second")):

            async def all_rang() -> bool:
                for actor, sid in actors:
                    if not any(e.type == "Rang" for e in await stream(redis, sid, actor)):
                        return False
                return True

            assert await eventually(all_rang)
            await asyncio.sleep(0.3)
            for actor, sid in actors:
                types = [e.type for e in await stream(redis, sid, actor)]
                assert types == ["Armed", "Added", "Rang"]


async def test_snapshots_every_n_events_and_load_from_them(redis_url: str) -> None:
    actor, sid = new_actor()
    p = partition_of(sid, P)
    async with bus_for(redis_url) as (redis, bus):
        async with running(toy_worker(redis_url, snapshot_every=5)):
            for _ in range(12):
                await bus.send(actor, sid, Add(at=now_ms(), n=1))
        version, state = msgspec.msgpack.decode(
            await redis.get(layout.snapshot_key(p, actor)), type=tuple[int, Counter]
        )
        assert (version, state.total) == (10, 10)
        # history below the snapshot is gone: a cold worker must start from the snapshot
        await redis.xtrim(layout.event_stream(p, actor), minid="11-0")
        worker = toy_worker(redis_url, worker_id="cold", snapshot_every=5)
        async with running(worker):
            out = await bus.send(actor, sid, Add(at=now_ms(), n=1))
            assert out is not None and out.version == 13
            cached = worker.cache.get(actor)
            assert cached is not None and cached.state.total == 13


async def test_stale_worker_append_is_fenced_then_recovers_once(redis_url: str) -> None:
    actor, sid = new_actor()
    p = partition_of(sid, P)
    worker = toy_worker(redis_url, lease_ttl_ms=1000)
    async with running(worker), bus_for(redis_url) as (redis, bus):
        await bus.send(actor, sid, Add(at=now_ms(), n=1))
        old_epoch = worker.runners[p].epoch
        await redis.incr(layout.epoch_key(p))  # a newer owner exists now
        out = await bus.send(actor, sid, Add(at=now_ms(), n=1), command_id="x", timeout=10)
        # refused at the sink, then re-driven once the worker re-acquired with a newer epoch
        assert out is not None and out.ok and out.version == 2
        assert worker.runners[p].epoch > old_epoch + 1
        envs = await stream(redis, sid, actor)
        assert [e.version for e in envs] == [1, 2] and envs[1].command_id == "x"


async def test_rejects_a_write_with_an_old_epoch_without_writing(redis_url: str) -> None:
    """The fencing check itself, driven directly: nothing of a fenced batch lands."""
    from events.errors import Fenced

    actor, sid = new_actor()
    p = partition_of(sid, P)
    worker = toy_worker(redis_url, lease_ttl_ms=60_000)
    async with running(worker), bus_for(redis_url) as (redis, bus):
        await bus.send(actor, sid, Add(at=now_ms(), n=1))
        runner = worker.runners[p]
        await redis.incr(layout.epoch_key(p))
        env = build_envelope(actor, sid, Add(at=now_ms(), n=5), partitions=P, command_id="late")
        with pytest.raises(Fenced):
            await runner.process([(b"0-1", encode(env))])
        assert len(await stream(redis, sid, actor)) == 1
        assert await redis.get(layout.outcome_key(p, "late")) is None
        assert int(await redis.get(layout.fenced_key(p))) >= 1  # the refusal is counted


# --------------------------------------------------------------------------- real deciders


async def test_real_session_lifecycle_with_expiry_timer(redis_url: str) -> None:
    from events.session import CreateSession, JoinDevice, RefreshSession

    sid = str(uuid.uuid4())
    actor = session_actor(sid)
    worker = Worker(open_store(redis_url, P), lease_ttl_ms=2000, timer_poll_ms=50)
    async with running(worker), bus_for(redis_url) as (redis, bus):
        t = now_ms()
        created = await bus.send(
            actor, sid, CreateSession(at=t, user_id="u", session_id=sid, ttl_ms=600)
        )
        assert created is not None and created.ok
        joined = await bus.send(
            actor, sid, JoinDevice(at=t + 1, user_id="u", device_id="d1", connection_id="c1")
        )
        assert joined is not None and joined.ok
        refused = await bus.send(actor, sid, RefreshSession(at=t + 2, user_id="mallory"))
        assert refused is not None and refused.error_code == "SESSION_FORBIDDEN"

        async def expired() -> bool:
            return any(e.type == "SessionExpired" for e in await stream(redis, sid, actor))

        assert await eventually(expired)
        types = [e.type for e in await stream(redis, sid, actor)]
        assert types == ["SessionCreated", "DeviceJoined", "SessionExpired"]
        late = await bus.send(actor, sid, RefreshSession(at=now_ms(), user_id="u"))
        assert late is not None and late.error_code == "SESSION_EXPIRED"


async def test_real_simulator_reservation_routes_create_to_the_simulator(redis_url: str) -> None:
    from events.session import CreateSession, ReserveSimulator

    sid, sim = str(uuid.uuid4()), str(uuid.uuid4())
    actor = session_actor(sid)
    worker = Worker(open_store(redis_url, P), lease_ttl_ms=2000)
    async with running(worker), bus_for(redis_url) as (redis, bus):
        t = now_ms()
        await bus.send(actor, sid, CreateSession(at=t, user_id="u", session_id=sid))
        out = await bus.send(
            actor,
            sid,
            ReserveSimulator(at=t + 1, user_id="u", simulator_id=sim, initial_symbols=["AAPL"]),
        )
        assert out is not None and out.ok, out

        async def sim_events() -> list[EventEnvelope]:
            return await stream(redis, sid, simulator_actor(sim))

        envs = await eventually(sim_events)
        assert envs[0].type == "SimulatorRequested"
        again = await bus.send(
            actor,
            sid,
            ReserveSimulator(at=t + 2, user_id="u", simulator_id=str(uuid.uuid4()),
                             initial_symbols=["MSFT"]),
        )  # fmt: skip
        assert again is not None and again.error_code == "SIMULATOR_ALREADY_ACTIVE"


async def test_workers_rebalance_as_they_come_and_go(redis_url: str) -> None:
    a = toy_worker(redis_url, worker_id="a", lease_ttl_ms=900)
    b = toy_worker(redis_url, worker_id="b", lease_ttl_ms=900)
    actors = [new_actor() for _ in range(8)]
    async with running(a), bus_for(redis_url) as (_, bus):
        assert a.owned == set(range(P))

        async def split() -> bool:
            return len(a.owned) == len(b.owned) == P // 2 and not a.owned & b.owned

        async with running(b):
            assert await eventually(split, 15)
            for actor, sid in actors:
                out = await bus.send(actor, sid, Add(at=now_ms(), n=1))
                assert out is not None and out.version == 1

        async def a_has_all() -> bool:  # b released its leases when it stopped
            return a.owned == set(range(P))

        assert await eventually(a_has_all, 15)
        for actor, sid in actors:
            out = await bus.send(actor, sid, Add(at=now_ms(), n=1))
            assert out is not None and out.version == 2


async def test_real_session_conflict_reloads_and_decides_on_the_new_state(redis_url: str) -> None:
    from events.session import CreateSession, EndSession, RefreshSession, SessionEnded

    sid = str(uuid.uuid4())
    actor = session_actor(sid)
    p = partition_of(sid, P)
    worker = Worker(open_store(redis_url, P), lease_ttl_ms=2000)
    async with running(worker), bus_for(redis_url) as (redis, bus):
        t = now_ms()
        await bus.send(actor, sid, CreateSession(at=t, user_id="u", session_id=sid))
        # another writer ended the session behind the worker's cached copy
        ended = EventEnvelope(
            event_id=str(uuid.uuid4()), actor_id=actor, version=2, partition=p, ts=t + 1,
            command_id="foreign", correlation_id="foreign", causation_id="foreign",
            type="SessionEnded", data=msgspec.Raw(encode(SessionEnded(at=t + 1))),
        )  # fmt: skip
        await redis.xadd(layout.event_stream(p, actor), {"e": encode(ended)}, id="2-0")
        out = await bus.send(actor, sid, RefreshSession(at=t + 2, user_id="u"))
        # decided again on the reloaded (ended) state, not on the stale cached one
        assert out is not None and (out.ok, out.error_code, out.version) == (
            False, "SESSION_ENDED", 2,
        )  # fmt: skip
        again = await bus.send(actor, sid, EndSession(at=t + 3, user_id="u"))
        assert again is not None and again.ok and again.events == 0
        assert [e.type for e in await stream(redis, sid, actor)] == [
            "SessionCreated", "SessionEnded",
        ]  # fmt: skip


async def test_reading_ahead_processes_each_command_once_across_redrives_and_stops(
    redis_url: str,
) -> None:
    """The runner sends its next read with each append; re-drives (XAUTOCLAIM, which also takes
    the runner's own pending entries) and a stop while a read is out must neither process a
    command twice nor strand one."""
    actors = [new_actor() for _ in range(6)]
    sent = 0

    async def flow(bus: CommandSender, seconds: float) -> None:
        nonlocal sent
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for actor, sid in actors:
                await bus.send(actor, sid, Add(at=now_ms(), n=1), wait=False)
                sent += 1
            await asyncio.sleep(0.003)

    first = toy_worker(redis_url, worker_id="first", lease_ttl_ms=600)  # re-drive every 0.6 s
    async with bus_for(redis_url) as (redis, bus):
        async with running(first):
            await flow(bus, 2.0)
        # stopped mid-flow: what it read ahead it processed, or left pending for the next owner
        await flow(bus, 0.3)  # queued while no worker runs
        second = toy_worker(redis_url, worker_id="second", lease_ttl_ms=600)
        async with running(second):
            await flow(bus, 1.0)

            async def all_appended() -> bool:
                versions = [len(await stream(redis, sid, actor)) for actor, sid in actors]
                return sum(versions) == sent

            assert await eventually(all_appended, 15), "some commands were never appended"
        assert first.processed + second.processed == sent  # none processed twice
        for actor, sid in actors:
            envs = await stream(redis, sid, actor)
            assert len({e.command_id for e in envs}) == len(envs)


async def test_a_log_line_about_a_command_carries_its_correlation_session_actor_and_partition(
    redis_url: str,
) -> None:
    import dataclasses
    import io
    import json

    from infra.logging import setup_logging

    def explode_on_13(command: Any, state: Counter) -> list[Any]:
        if isinstance(command, Add) and command.n == 13:
            raise RuntimeError("a decider bug")
        return _decide(command, state)

    buggy = dataclasses.replace(TOY, decide=explode_on_13)
    sid = str(uuid.uuid4())
    actor = session_actor(sid)
    lines = io.StringIO()
    setup_logging("INFO", service="worker", stream=lines)
    worker = Worker(
        open_store(redis_url, P),
        worker_id="logs",
        decider_for=lambda actor_id: buggy,
        decode_command=_commands.decode,
        decode_event=lambda data, type_: _events.decode(data),
        lease_ttl_ms=2000,
    )
    try:
        async with running(worker), bus_for(redis_url) as (_, bus):
            out = await bus.send(actor, sid, Add(at=now_ms(), n=13), command_id="c-13",
                                 correlation_id="corr-13")  # fmt: skip
            assert out is not None and out.error_code == "INTERNAL"
    finally:
        setup_logging("WARNING")
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    failed = [r for r in records if r["msg"].startswith("decider toy failed")]
    assert len(failed) == 1, records
    line = failed[0]
    assert line["correlation_id"] == "corr-13"
    assert line["command_id"] == "c-13"
    assert line["session_id"] == sid
    assert line["actor"] == actor
    assert line["partition"] == partition_of(sid, P)
    assert "RuntimeError: a decider bug" in line["exc"]
    # the partition runner's own lines carry its partition, and no command's fields
    acquired = [r for r in records if r["msg"].startswith("acquired partition")]
    assert acquired and all("actor" not in r for r in acquired)
