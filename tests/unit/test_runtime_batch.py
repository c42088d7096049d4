"""The pure parts of the runtime: batch planning and settling, the actor cache, RESP framing,
event ids and the runtime config. No Redis here (the integration tests cover the script)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
import pytest

from actors import keys
from actors.client import build_envelope
from actors.decider import Decider, Routed, Timer
from actors.runtime.batch import Item, new_event_id, parse_entry, plan, settle, unframe
from actors.runtime.cache import ActorCache, CachedActor
from actors.runtime.config import load_runtime_config
from actors.runtime.resp import pack
from events.base import Command, Event
from events.codec import decode_command_envelope, decode_event_envelope, decode_outcome, encode
from events.errors import DomainError


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
PART = keys.partition_of(SID)


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


def fields(rnd: Any) -> list[bytes]:
    return unframe(rnd.argv)


def test_plan_lays_out_events_with_consecutive_versions_and_timers() -> None:
    rnd = plan([item(3), item(4)], actors(version=5), PART, snapshot_every=100)
    args = fields(rnd)
    # first command: entry, actor 1, expected 5, no reply, outcome, 1 event
    assert args[:3] == [b"1-0", b"1", b"5"]
    assert decode_outcome(args[4]).version == 6
    assert args[5] == b"1"
    event = decode_event_envelope(args[6])
    assert (event.version, event.type, event.actor_id) == (6, "UPutDone", ACTOR)
    assert args[7:13] == [b"0", b"1", f"{ACTOR}|t".encode(), b"1003", b"0", b""]
    # second command expects the first's version and replaces the timer
    assert args[13:16] == [b"1-0", b"1", b"6"]
    assert decode_event_envelope(args[19]).version == 7
    assert rnd.tentative[ACTOR].version == 7
    assert rnd.keys(PART)[5:7] == [keys.event_stream(PART, ACTOR), keys.snapshot_key(PART, ACTOR)]


def test_plan_refuses_domain_errors_without_events_but_checks_the_version() -> None:
    rnd = plan([item(-1)], actors(version=2), PART, snapshot_every=100)
    args = fields(rnd)
    assert args[2] == b"2"  # the refusal was decided on version 2
    outcome = decode_outcome(args[4])
    assert (outcome.ok, outcome.error_code, outcome.version) == (False, "INVALID_ARGUMENT", 2)
    assert args[5:] == [b"0", b"0", b"0", b"0", b""]


def test_plan_marks_a_repeated_command_id_and_routes_policy_commands() -> None:
    rnd = plan([item(7, "same"), item(7, "same")], actors(), PART, snapshot_every=100)
    args = fields(rnd)
    routed = decode_command_envelope(args[8])
    assert args[7] == b"1" and routed.actor_id == "box:other"
    assert routed.causation_id == decode_event_envelope(args[6]).event_id
    assert routed.command_id == f"{routed.causation_id}/0"
    assert rnd.items[1].repeat
    assert args[-10:-7] == [b"1-0", b"0", b"-2"]


def test_every_outcome_carries_the_fingerprint_of_its_command() -> None:
    """The gateway compares it with a retry's: the same command id for another request."""
    rnd = plan(
        [
            item(3, fingerprint="f-ok"),
            item(3, fingerprint="f-noop"),
            item(-1, fingerprint="f-refused"),
        ],
        actors(),
        PART,
        snapshot_every=100,
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
    assert decode_outcome(plan([bad], {}, PART + 1, 100).outcomes[0]).fingerprint == "f-misrouted"


def test_plan_snapshots_when_enough_events_passed() -> None:
    rnd = plan([item(1), item(2), item(3)], actors(version=8), PART, snapshot_every=10)
    snaps = [a for a in fields(rnd) if a.startswith(b"\x92")]
    assert [msgspec.msgpack.decode(s, type=tuple[int, Box]) for s in snaps] == [(10, Box(n=2))]


def test_undecodable_and_misrouted_entries_become_errors() -> None:
    bad = parse_entry(b"1-0", b"\xc1", PART, decode_command_envelope, _commands.decode,
                      lambda a: BOX)  # fmt: skip
    assert bad.env is None and bad.error is not None
    env = build_envelope(ACTOR, SID, Put(at=1, n=1))
    wrong = parse_entry(b"1-0", encode(env), PART + 1, decode_command_envelope,
                        _commands.decode, lambda a: BOX)  # fmt: skip
    assert wrong.error is not None and wrong.error[0] == "INVALID_COMMAND"
    rnd = plan([bad, wrong], {}, PART, 100)
    assert decode_outcome(fields(rnd)[14]).error_code == "INVALID_COMMAND"


def test_settle_commits_confirmed_actors_and_retries_conflicts() -> None:
    cache = ActorCache(10)
    base = actors(version=1, n=1)
    rnd = plan([item(5), item(6)], base, PART, 100)
    done = settle(rnd, [1, 1], cache)
    assert (done.appended, done.retry, done.events) == (2, [], 2)
    assert cache.get(ACTOR).version == 3  # type: ignore[union-attr]
    rnd = plan([item(8), item(9)], actors(version=3, n=6), PART, 100)
    done = settle(rnd, [1, -6], cache)  # the second expected version 4, the stream was at 5
    assert [i.env.command_id for i in done.retry] == [rnd.items[1].env.command_id]  # type: ignore[union-attr]
    assert ACTOR in done.stale_actors and cache.get(ACTOR) is None


def test_settle_treats_a_stored_outcome_as_a_duplicate() -> None:
    cache = ActorCache(10)
    rnd = plan([item(5, "dup")], actors(), PART, 100)
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


def test_pack_frames_a_command_in_resp() -> None:
    assert (
        pack(["SET", "k", b"v\r\n", 12])
        == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\n12\r\n"
    )


def test_runtime_config_reads_the_environment_and_names_bad_variables() -> None:
    config = load_runtime_config(
        {"SESSIOND_BATCH_SIZE": "50", "SESSIOND_LOCAL_LEASE_CHECK": "0"}, lease_ttl_ms=1500
    )
    assert (config.batch_size, config.local_lease_check, config.lease_ttl_ms) == (50, False, 1500)
    assert config.renew_every_s == 0.5
    with pytest.raises(ValueError, match="SESSIOND_SNAPSHOT_EVERY"):
        load_runtime_config({"SESSIOND_SNAPSHOT_EVERY": "often"})
