"""The pure parts of the runtime: batch planning (into the store's append batch) and settling,
the actor cache, event ids and the runtime config. No Redis here (the contract suite covers the
append itself, tests/unit/test_store_redis_batch.py its Redis layout)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
import pytest

from actors.decider import Decider, Routed, Timer
from actors.runtime.batch import Item, new_event_id, parse_entry, plan, settle
from actors.runtime.cache import ActorCache, CachedActor
from events.base import Command, Event
from events.codec import decode_command_envelope, decode_event_envelope, decode_outcome, encode
from events.errors import DomainError
from infra.config import ConfigError, load_settings
from infra.store import APPENDED, UNSETTLED, Snapshot, build_envelope, partition_of


class Put(Command, frozen=True, tag="UPut"):
    n: int


class Put_(Event, frozen=True, tag="UPutDone"):
    n: int


class Box(msgspec.Struct, frozen=True):
    n: int = 0


def _decide(command: Any, state: Box) -> list[Any]:
    if command.n < 0:
        raise DomainError("INVALID_ARGUMENT", "negative")
    return [] if command.n == state.n else [Put_(at=command.at, n=command.n)]


BOX = Decider(
    kind="box",
    initial_state=Box(),
    decide=_decide,
    evolve=lambda s, e: Box(n=e.n),
    is_terminal=lambda s: False,
    deadlines=lambda s: [Timer("t", 1000 + s.n, Put(at=1000 + s.n, n=0))] if s.n else [],
    react=lambda s, e: [Routed("box:other", Put(at=e.at, n=e.n))] if e.n == 7 else [],
)
_commands = msgspec.msgpack.Decoder(Put)
SID = "s-1"
ACTOR = "box:s-1"
PART = partition_of(SID)


class Recorded(msgspec.Struct):
    """One command as the planner put it in the batch."""

    kind: str
    entry_id: bytes
    command_id: str = ""
    actor: int = 0
    expected: int = -1
    reply_to: str = ""
    outcome: bytes = b""
    events: list[bytes] = []
    routed: list[bytes] = []
    timers_set: list[tuple[str, int]] = []
    timers_removed: list[str] = []
    snapshot: Snapshot | None = None
    change: tuple[str, bytes] | None = None


class RecordingBatch:
    """The `AppendBatch` protocol, recording plain values."""

    def __init__(self) -> None:
        self.actors: list[str] = []
        self.commands: list[Recorded] = []

    def __len__(self) -> int:
        return len(self.commands)

    def actor(self, actor_id: str) -> int:
        if actor_id not in self.actors:
            self.actors.append(actor_id)
        return self.actors.index(actor_id) + 1

    def acknowledge(self, entry_id: bytes) -> None:
        self.commands.append(Recorded("acknowledge", entry_id))

    def repeat(self, entry_id: bytes, command_id: str, reply_to: str) -> None:
        self.commands.append(
            Recorded("repeat", entry_id, command_id, expected=-2, reply_to=reply_to)
        )

    def refuse(self, entry_id: bytes, command_id: str, reply_to: str, outcome: bytes) -> None:
        self.commands.append(
            Recorded("refuse", entry_id, command_id, reply_to=reply_to, outcome=outcome)
        )

    def settle(
        self,
        entry_id: bytes,
        command_id: str,
        actor: int,
        expected: int,
        reply_to: str,
        outcome: bytes,
    ) -> None:
        self.commands.append(
            Recorded("settle", entry_id, command_id, actor, expected, reply_to, outcome)
        )

    def append(
        self,
        entry_id: bytes,
        command_id: str,
        actor: int,
        expected: int,
        reply_to: str,
        outcome: bytes,
        events: Any,
        routed: Any,
        timers_set: Any,
        timers_removed: Any,
        snapshot: Snapshot | None,
        change: tuple[str, bytes] | None = None,
    ) -> None:
        self.commands.append(
            Recorded(
                "append",
                entry_id,
                command_id,
                actor,
                expected,
                reply_to,
                outcome,
                list(events),
                list(routed),
                list(timers_set),
                list(timers_removed),
                snapshot,
                change,
            )
        )


def item(
    n: int, command_id: str | None = None, entry: bytes = b"1-0", fingerprint: str = ""
) -> Item:
    env = build_envelope(
        ACTOR,
        SID,
        Put(at=10, n=n),
        command_id=command_id or str(uuid.uuid4()),
        fingerprint=fingerprint,
    )
    return parse_entry(
        entry, encode(env), PART, decode_command_envelope, _commands.decode, lambda a: BOX
    )


def actors(version: int = 0, n: int = 0) -> dict[str, CachedActor]:
    return {ACTOR: CachedActor(ACTOR, PART, BOX, version, Box(n=n))}


def planned(
    items: list[Item],
    cached: dict[str, CachedActor],
    partition: int = PART,
    snapshot_every: int = 100,
) -> tuple[Any, RecordingBatch]:
    batch = RecordingBatch()
    return plan(items, cached, partition, snapshot_every, batch), batch


def test_plan_adds_events_with_consecutive_versions_and_timers() -> None:
    rnd, batch = planned([item(3), item(4)], actors(version=5))
    first, second = batch.commands
    assert (first.kind, first.entry_id, first.actor, first.expected) == ("append", b"1-0", 1, 5)
    assert decode_outcome(first.outcome).version == 6
    (event,) = [decode_event_envelope(e) for e in first.events]
    assert (event.version, event.type, event.actor_id) == (6, "UPutDone", ACTOR)
    assert (first.routed, first.timers_set, first.timers_removed, first.snapshot) == (
        [],
        [("t", 1003)],
        [],
        None,
    )
    # the second command expects the first's version and moves the timer
    assert (second.actor, second.expected) == (1, 6)
    assert decode_event_envelope(second.events[0]).version == 7
    assert second.timers_set == [("t", 1004)]
    assert rnd.tentative[ACTOR].version == 7
    assert batch.actors == [ACTOR]


def test_plan_gives_each_appending_command_the_live_change_of_its_own_events() -> None:
    seen: list[list[int]] = []

    def live(envs: list[Any], events: list[Any]) -> tuple[str, bytes]:
        seen.append([e.version for e in envs])
        return "s", b"%d" % envs[-1].version

    batch = RecordingBatch()
    plan([item(3), item(-1), item(4)], actors(version=5), PART, 100, batch, live)
    first, refused, second = batch.commands
    assert (first.change, second.change) == (("s", b"6"), ("s", b"7"))
    assert refused.kind == "settle" and seen == [[6], [7]]  # no events: no change
    _, without = planned([item(3)], actors(version=5))
    assert without.commands[0].change is None


def test_plan_refuses_domain_errors_without_events_but_checks_the_version() -> None:
    _, batch = planned([item(-1)], actors(version=2))
    (refused,) = batch.commands
    assert (refused.kind, refused.actor, refused.expected) == ("settle", 1, 2)
    outcome = decode_outcome(refused.outcome)
    assert (outcome.ok, outcome.error_code, outcome.version) == (False, "INVALID_ARGUMENT", 2)


def test_plan_marks_a_repeated_command_id_and_routes_policy_commands() -> None:
    rnd, batch = planned([item(7, "same"), item(7, "same")], actors())
    first, again = batch.commands
    (routed,) = [decode_command_envelope(r) for r in first.routed]
    assert routed.actor_id == "box:other"
    assert routed.causation_id == decode_event_envelope(first.events[0]).event_id
    assert routed.command_id == f"{routed.causation_id}/0"
    assert rnd.items[1].repeat
    assert (again.kind, again.command_id, again.expected) == ("repeat", "same", -2)


def test_a_timer_that_is_no_longer_a_deadline_is_removed() -> None:
    _, batch = planned([item(3), item(0)], actors())
    assert batch.commands[1].timers_removed == ["t"]
    assert batch.commands[1].timers_set == []


def test_every_outcome_carries_the_fingerprint_of_its_command() -> None:
    """The gateway compares it with a retry's: the same command id for another request."""
    rnd, _ = planned(
        [
            item(3, fingerprint="f-ok"),
            item(3, fingerprint="f-noop"),
            item(-1, fingerprint="f-refused"),
        ],
        actors(),
    )
    outcomes = [decode_outcome(o) for o in rnd.outcomes]
    assert [o.fingerprint for o in outcomes] == ["f-ok", "f-noop", "f-refused"]
    assert [o.ok for o in outcomes] == [True, True, False]
    bad = parse_entry(
        b"1-0",
        encode(build_envelope(ACTOR, SID, Put(at=1, n=1), fingerprint="f-misrouted")),
        PART + 1,
        decode_command_envelope,
        _commands.decode,
        lambda a: BOX,
    )
    rnd, _ = planned([bad], {}, PART + 1)
    assert decode_outcome(rnd.outcomes[0]).fingerprint == "f-misrouted"


def test_an_outcome_carries_the_result_its_kind_draws_from_the_decided_events() -> None:
    """The edge answers from the outcome (a new state version, a handoff token...) instead of
    reading the events back; a kind without a `result` function leaves it empty."""
    import dataclasses

    def answer(command: Any, events: list[Any], state: Box) -> dict[str, Any]:
        return {"n": state.n, "events": len(events)}

    counting = dataclasses.replace(BOX, result=answer)
    items = [item(3), item(3), item(-1)]  # a change, a no-op, a refusal
    for it in items:
        it.decider = counting
    rnd, _ = planned(items, {ACTOR: CachedActor(ACTOR, PART, counting, 0, Box())})
    assert [decode_outcome(o).result for o in rnd.outcomes] == [{"n": 3, "events": 1}, {}, {}]
    rnd, _ = planned([item(4)], actors())
    assert decode_outcome(rnd.outcomes[0]).result == {}


def test_plan_snapshots_when_enough_events_passed() -> None:
    _, batch = planned([item(1), item(2), item(3)], actors(version=8), snapshot_every=10)
    snaps = [c.snapshot for c in batch.commands if c.snapshot is not None]
    assert [(s.version, msgspec.msgpack.decode(s.state, type=Box)) for s in snaps] == [
        (10, Box(n=2))
    ]


def test_undecodable_and_misrouted_entries_become_errors() -> None:
    bad = parse_entry(b"1-0", b"\xc1", PART, decode_command_envelope, _commands.decode,
                      lambda a: BOX)  # fmt: skip
    assert bad.env is None and bad.error is not None
    env = build_envelope(ACTOR, SID, Put(at=1, n=1))
    wrong = parse_entry(b"1-0", encode(env), PART + 1, decode_command_envelope,
                        _commands.decode, lambda a: BOX)  # fmt: skip
    assert wrong.error is not None and wrong.error[0] == "INVALID_COMMAND"
    _, batch = planned([bad, wrong], {})
    assert [c.kind for c in batch.commands] == ["acknowledge", "refuse"]
    assert decode_outcome(batch.commands[1].outcome).error_code == "INVALID_COMMAND"


def test_settle_commits_confirmed_actors_and_retries_conflicts() -> None:
    cache = ActorCache(10)
    base = actors(version=1, n=1)
    rnd, _ = planned([item(5), item(6)], base)
    done = settle(rnd, [APPENDED, APPENDED], cache)
    assert (done.appended, done.retry, done.events) == (2, [], 2)
    assert cache.get(ACTOR).version == 3  # type: ignore[union-attr]
    rnd, _ = planned([item(8), item(9)], actors(version=3, n=6))
    done = settle(rnd, [APPENDED, -6], cache)  # the second expected version 4, the stream was at 5
    assert [i.env.command_id for i in done.retry] == [rnd.items[1].env.command_id]  # type: ignore[union-attr]
    assert ACTOR in done.stale_actors and cache.get(ACTOR) is None


def test_settle_treats_a_stored_outcome_as_a_duplicate() -> None:
    cache = ActorCache(10)
    rnd, _ = planned([item(5, "dup")], actors())
    stored = encode({"x": 1})
    done = settle(rnd, [stored], cache)
    assert done.duplicates == 1 and done.outcomes[0][1] == stored
    assert cache.get(ACTOR) is None  # our decision was not applied: reload next time


def test_actor_cache_is_bounded_and_passivates_idle_actors() -> None:
    cache = ActorCache(2)
    for i in range(3):
        cache.put(CachedActor(f"box:{i}", i % 2, BOX, 0, Box()))
    assert [a.actor_id for a in cache] == ["box:1", "box:2"]
    cache.get("box:1")
    assert cache.passivate(0, now=time.monotonic() + 1) == 2 and len(cache) == 0
    cache.put(CachedActor("box:a", 0, BOX, 0, Box()))
    cache.put(CachedActor("box:b", 1, BOX, 0, Box()))
    assert cache.drop_partition(0) == 1 and [a.actor_id for a in cache] == ["box:b"]


def test_event_ids_are_time_ordered_uuid7() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) - time.time() * 1000) < 5000


def test_settle_retries_a_repeat_whose_original_was_not_stored() -> None:
    cache = ActorCache(10)
    rnd, _ = planned([item(5, "r"), item(5, "r")], actors())
    done = settle(rnd, [-1, UNSETTLED], cache)
    assert [i.repeat for i in done.retry] == [False, True]


def test_runtime_config_reads_the_environment_and_names_bad_variables() -> None:
    config = load_settings({"SESSIOND_BATCH_SIZE": "50", "LEASE_TTL_MS": "1500"}).runtime
    assert (config.batch_size, config.lease_ttl_ms) == (50, 1500)
    assert config.renew_every_s == 0.5
    with pytest.raises(ConfigError, match="SESSIOND_SNAPSHOT_EVERY"):
        load_settings({"SESSIOND_SNAPSHOT_EVERY": "often"})
