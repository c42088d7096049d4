"""Deciding a batch of commands in memory and filling the store's append batch with the result.

This module does no I/O: `plan` takes the parsed commands of one partition, the actors' current
`(version, state)` and an empty `AppendBatch` from the partition's writer; it runs the deciders
sequentially (commands of one actor see each other's effects) and adds each command's outcome,
events, routed commands, timer changes and snapshot to the batch, which the writer appends in
one fenced step. `settle` reads the append's results back and commits confirmed actors to the
cache. How the batch is laid out for Redis is the store's business, not the planner's.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from actors.decider import Decider, Routed, Timer
from actors.runtime.cache import ActorCache, CachedActor
from events.codec import deflate, encode, type_name
from events.envelope import CommandEnvelope, EventEnvelope, Outcome
from events.errors import DomainError
from infra.logging import bind_log_source, unbind_log_source
from infra.store.api import APPENDED, UNSETTLED, AppendBatch, AppendResult, Snapshot

__all__ = [
    "Item",
    "LiveView",
    "Round",
    "Settled",
    "new_event_id",
    "parse_entry",
    "plan",
    "settle",
    "timer_command_id",
    "timer_envelope",
]

log = logging.getLogger("sessiond.runtime")

#: The live view of an append, injected by whoever wires the worker (`sessiond worker` passes
#: `projections.changes.live_change`; the runtime imports nothing of `projections/`): one
#: command's appended events (envelopes, decoded events) -> (session id, change message) to
#: publish with the append, or None when no client watches them.
LiveView = Callable[[list[EventEnvelope], list[Any]], "tuple[str, bytes] | None"]

_encode = encode
_Raw = msgspec.Raw
_last_ms = 0
_prefix = ""
_seq = 0
_base = random.getrandbits(62)
_count = 0
_M48 = (1 << 48) - 1
_M62 = (1 << 62) - 1


def new_event_id(now_ms: int | None = None) -> str:
    """A time-ordered UUID (version 7 layout): ms timestamp, a per-ms sequence, then 62 bits
    that are a random per-process base plus a counter (unique within the process)."""
    global _last_ms, _prefix, _seq, _count
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if ms <= _last_ms:
        _seq += 1
        if _seq > 0xFFF:  # 4096 ids in one ms: borrow the next ms
            _last_ms += 1
            _prefix = f"{_last_ms >> 16:08x}-{_last_ms & 0xFFFF:04x}-7"
            _seq = 0
    else:
        _last_ms = ms
        _prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
        _seq = 0
    _count += 1
    rb = (_base + _count) & _M62
    return f"{_prefix}{_seq:03x}-{0x8000 | (rb >> 48):04x}-{rb & _M48:012x}"


_TAGS: dict[type, str] = {}


def _tag(message: Any) -> str:
    cls = message.__class__
    tag = _TAGS.get(cls)
    if tag is None:
        tag = _TAGS[cls] = type_name(message)
    return tag


def timer_command_id(actor_id: str, key: str, due: int) -> str:
    """Deterministic: a timer that fires twice (or is re-armed unchanged) deduplicates."""
    return f"timer:{actor_id}:{key}:{due}"


def timer_envelope(actor_id: str, partition: int, timer: Timer) -> bytes:
    """The command a due timer sends to its actor (encoded `CommandEnvelope`)."""
    cid = timer_command_id(actor_id, timer.key, timer.due)
    command = timer.command
    return _encode(
        CommandEnvelope(
            command_id=cid,
            actor_id=actor_id,
            partition=partition,
            ts=timer.due,
            type=_tag(command),
            data=_Raw(_encode(command)),
            correlation_id=cid,
        )
    )


class Item:
    """One command read from the partition's stream."""

    __slots__ = ("command", "decider", "entry_id", "env", "error", "repeat")

    def __init__(self, entry_id: bytes, env: CommandEnvelope | None) -> None:
        self.entry_id = entry_id
        self.env = env
        self.command: Any = None
        self.decider: Decider[Any] | None = None
        self.error: tuple[str, str] | None = None  # (code, message): refused before deciding
        self.repeat = False  # same command id as an earlier item of this batch


def parse_entry(
    entry_id: bytes,
    raw: bytes | None,
    partition: int,
    decode_envelope: Callable[[bytes], CommandEnvelope],
    decode_command: Callable[[Any], Any],
    decider_for: Callable[[str], Decider[Any]],
) -> Item:
    """Decode one stream entry's command. Never raises: a bad entry becomes an item with an
    error."""
    try:
        env = decode_envelope(raw)  # type: ignore[arg-type]
    except Exception as exc:  # poison: nobody to answer, nothing to dedupe on
        log.warning("undecodable command entry %s on p%d: %s", entry_id, partition, exc)
        item = Item(entry_id, None)
        item.error = ("INVALID_COMMAND", "undecodable command envelope")
        return item
    item = Item(entry_id, env)
    if not env.command_id or not env.actor_id:
        item.error = ("INVALID_COMMAND", "command_id and actor_id are required")
        return item
    if env.partition != partition:
        item.error = (
            "INVALID_COMMAND",
            f"command for partition {env.partition} sent to partition {partition}",
        )
        return item
    try:
        item.decider = decider_for(env.actor_id)
    except DomainError as exc:
        item.error = (exc.code, exc.message)
        return item
    except Exception as exc:
        item.error = ("INVALID_COMMAND", f"no actor kind for {env.actor_id!r}: {exc}")
        return item
    try:
        item.command = decode_command(env.data)
    except Exception as exc:
        item.error = ("INVALID_COMMAND", f"invalid {env.type or 'command'}: {exc}")
    return item


class _Tentative:
    """An actor's state as this round assumes it, until the append confirms."""

    __slots__ = ("actor", "slot", "snap_version", "state", "timers", "version")

    def __init__(self, actor: CachedActor, slot: int) -> None:
        self.actor = actor
        self.slot = slot  # the actor's slot in the append batch
        self.version = actor.version
        self.state = actor.state
        self.snap_version = actor.snap_version
        self.timers = actor.deadlines()


class Round:
    """One append: the batch the store writes, and what each item would mean once confirmed."""

    __slots__ = ("batch", "items", "outcomes", "tentative")

    def __init__(self, batch: AppendBatch) -> None:
        self.batch = batch
        self.items: list[Item] = []
        self.outcomes: list[bytes] = []  # per item: the outcome we would store (b"" = none)
        self.tentative: dict[str, _Tentative] = {}


def plan(
    items: list[Item],
    actors: dict[str, CachedActor],
    partition: int,
    snapshot_every: int,
    batch: AppendBatch,
    live: LiveView | None = None,
) -> Round:
    """Decide `items` in order against `actors` (every item's actor must be present) and fill
    `batch` (empty, from the partition's writer). Nothing in `actors` is modified (the cache is
    updated by `settle`). With `live`, each command's events also carry their change message,
    which the append publishes if it accepts them."""
    rnd = Round(batch)
    seen: set[str] = set()
    for item in items:
        rnd.items.append(item)
        rnd.outcomes.append(_plan_one(item, seen, actors, partition, snapshot_every, rnd, live))
    return rnd


def _plan_one(
    item: Item,
    seen: set[str],
    actors: dict[str, CachedActor],
    partition: int,
    snapshot_every: int,
    rnd: Round,
    live: LiveView | None,
) -> bytes:
    """Add one item to the batch; returns the outcome it would store (b"" = none)."""
    env, batch = item.env, rnd.batch
    if env is None:
        batch.acknowledge(item.entry_id)
        return b""
    if env.command_id in seen:
        item.repeat = True
        batch.repeat(item.entry_id, env.command_id, env.reply_to)
        return b""
    seen.add(env.command_id)
    if item.error is not None:
        outcome = _outcome(env, version=0, error=item.error)
        batch.refuse(item.entry_id, env.command_id, env.reply_to, outcome)
        return outcome
    tent = rnd.tentative.get(env.actor_id)
    if tent is None:
        actor = actors[env.actor_id]
        tent = rnd.tentative[env.actor_id] = _Tentative(actor, batch.actor(env.actor_id))
    token = bind_log_source(command_log_fields, env)
    try:
        return _decide_one(item, env, tent, partition, snapshot_every, batch, live)
    finally:
        unbind_log_source(token)


def command_log_fields(env: CommandEnvelope) -> dict[str, Any]:
    """What a log line about this command carries (`infra.logging.log_context`)."""
    kind, _, key = env.actor_id.partition(":")
    return {
        "correlation_id": env.correlation_id or env.command_id,
        "command_id": env.command_id,
        "actor": env.actor_id,
        "session_id": key if kind == "session" else "",
        "partition": env.partition,
    }


def _decide_one(
    item: Item,
    env: CommandEnvelope,
    tent: _Tentative,
    partition: int,
    snapshot_every: int,
    batch: AppendBatch,
    live: LiveView | None,
) -> bytes:
    """Decide one command on its actor's tentative state, add the result to the batch and
    advance the tentative state; returns the outcome."""
    decider = item.decider
    assert decider is not None
    expected = tent.version
    events, error = _decide(decider, item.command, tent.state, env.command_id)
    if not events:
        outcome = _outcome(env, version=expected, error=error)
        batch.settle(item.entry_id, env.command_id, tent.slot, expected, env.reply_to, outcome)
        return outcome
    envelopes, routed, state = _record(decider, env, events, expected, tent.state, partition)
    change = live(envelopes, events) if live is not None else None
    version = expected + len(events)
    timers, upserts, removals = _timer_changes(tent.timers, decider.deadlines(state))
    snapshot = _snapshot_due(tent, version, state, snapshot_every)
    answer = decider.result(item.command, events, state) if decider.result is not None else None
    outcome = _outcome(env, version=version, events=len(events), result=answer)
    batch.append(
        item.entry_id,
        env.command_id,
        tent.slot,
        expected,
        env.reply_to,
        outcome,
        [_encode(e) for e in envelopes],
        routed,
        upserts,
        removals,
        snapshot,
        change,
    )
    tent.version, tent.state, tent.timers = version, state, timers
    return outcome


def _decide(
    decider: Decider[Any], command: Any, state: Any, command_id: str
) -> tuple[list[Any] | None, tuple[str, str] | None]:
    """(events, None), or (None, (code, message)) when the command is refused. A decider bug
    refuses that command only: the partition must not wedge."""
    try:
        return decider.decide(command, state), None
    except DomainError as exc:
        return None, (exc.code, exc.message)
    except Exception as exc:
        log.exception("decider %s failed on %s", decider.kind, command_id)
        return None, ("INTERNAL", f"{type(exc).__name__} while deciding")


def _record(
    decider: Decider[Any],
    env: CommandEnvelope,
    events: list[Any],
    expected: int,
    state: Any,
    partition: int,
) -> tuple[list[EventEnvelope], list[bytes], Any]:
    """The events' envelopes (versions after `expected`), the commands the actor's policy
    routes because of them, and the state after them."""
    correlation = env.correlation_id or env.command_id
    evolve, react = decider.evolve, decider.react
    encoded: list[EventEnvelope] = []
    routed: list[bytes] = []
    version = expected
    for event in events:
        version += 1
        event_id = new_event_id()
        encoded.append(_event_envelope(env, event, event_id, version, partition, correlation))
        state = evolve(state, event)
        reactions = react(state, event)
        if reactions:
            routed.extend(_routed(reactions, event_id, partition, correlation))
    return encoded, routed, state


def _event_envelope(
    env: CommandEnvelope,
    event: Any,
    event_id: str,
    version: int,
    partition: int,
    correlation: str,
) -> EventEnvelope:
    return EventEnvelope(
        event_id=event_id,
        actor_id=env.actor_id,
        version=version,
        partition=partition,
        ts=event.at,
        command_id=env.command_id,
        correlation_id=correlation,
        causation_id=env.command_id,
        type=_tag(event),
        data=_Raw(deflate(_encode(event))),
        traceparent=env.traceparent,
    )


def _routed(
    reactions: list[Routed], event_id: str, partition: int, correlation: str
) -> list[bytes]:
    """Encoded envelopes of a policy's commands; the id `<event_id>/<i>` makes a re-decided
    event route the same commands (deduplicated)."""
    return [
        _encode(
            CommandEnvelope(
                command_id=f"{event_id}/{i}",
                actor_id=routed.actor_id,
                partition=partition,
                ts=routed.command.at,
                type=_tag(routed.command),
                data=_Raw(_encode(routed.command)),
                correlation_id=correlation,
                causation_id=event_id,
            )
        )
        for i, routed in enumerate(reactions)
    ]


def _timer_changes(
    old: dict[str, Timer], deadlines: Iterable[Timer]
) -> tuple[dict[str, Timer], list[tuple[str, int]], list[str]]:
    """The actor's deadlines by key, the (key, due) upserts and the removed keys. The store
    keeps (key, due) only (the command is taken from the deadlines when the timer fires), so a
    timer needs an upsert only when its due moved."""
    new: dict[str, Timer] = {}
    upserts: list[tuple[str, int]] = []
    for t in deadlines:
        new[t.key] = t
        before = old.get(t.key)
        if before is None or before.due != t.due:
            upserts.append((t.key, t.due))
    removals = [k for k in old if k not in new] if old else []
    return new, upserts, removals


def _snapshot_due(tent: _Tentative, version: int, state: Any, every: int) -> Snapshot | None:
    """A snapshot when `every` events passed since the last one (noted in `tent`)."""
    if version - tent.snap_version < every:
        return None
    tent.snap_version = version
    return Snapshot(version, deflate(_encode(state)))


def _outcome(
    env: CommandEnvelope,
    *,
    version: int,
    events: int = 0,
    error: tuple[str, str] | None = None,
    result: dict[str, Any] | None = None,
) -> bytes:
    if error is not None:
        return _encode(
            Outcome(
                command_id=env.command_id,
                actor_id=env.actor_id,
                ok=False,
                version=version,
                error_code=error[0],
                error_message=error[1],
                fingerprint=env.fingerprint,
            )
        )
    return _encode(
        Outcome(
            command_id=env.command_id,
            actor_id=env.actor_id,
            ok=True,
            version=version,
            events=events,
            fingerprint=env.fingerprint,
            result=result or {},
        )
    )


class Settled:
    """What a round's append meant."""

    __slots__ = ("appended", "duplicates", "events", "outcomes", "retry", "stale_actors")

    def __init__(self) -> None:
        self.appended = 0  # items whose outcome was stored by this append
        self.duplicates = 0  # items answered with an earlier stored outcome
        self.events = 0
        self.retry: list[Item] = []  # conflicts and unsettled repeats: decide again
        self.stale_actors: set[str] = set()  # reload before deciding again
        self.outcomes: list[tuple[Item, bytes]] = []  # (item, outcome bytes) settled


def settle(rnd: Round, results: list[AppendResult], cache: ActorCache) -> Settled:
    """Apply the append's results: commit confirmed actors to `cache`, collect what to retry."""
    done = Settled()
    stale = done.stale_actors
    for item, result, outcome in zip(rnd.items, results, rnd.outcomes, strict=True):
        env = item.env
        if result == APPENDED:
            done.appended += 1
            done.outcomes.append((item, outcome))
        elif isinstance(result, bytes):
            done.duplicates += 1
            done.outcomes.append((item, result))
            # our tentative decision was not applied; if it had events the cache would lie
            if env is not None and env.actor_id in rnd.tentative and not item.repeat:
                stale.add(env.actor_id)
        elif result == UNSETTLED:
            done.retry.append(item)
        else:  # a version conflict
            done.retry.append(item)
            if env is not None:
                stale.add(env.actor_id)
    for actor_id, tent in rnd.tentative.items():
        if actor_id in stale:
            cache.discard(actor_id)
            continue
        actor = tent.actor
        done.events += tent.version - actor.version
        actor.version = tent.version
        actor.state = tent.state
        actor.snap_version = tent.snap_version
        actor.timers = tent.timers
        if actor.decider.is_terminal(actor.state):
            cache.discard(actor_id)  # nothing more will happen to it; reload if it does
        else:
            cache.put(actor)
    return done
