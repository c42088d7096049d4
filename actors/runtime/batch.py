"""Deciding a batch of commands in memory and laying it out for the append script.

This module does no I/O: `plan` takes the parsed commands of one partition and the actors'
current `(version, state)`, runs the deciders sequentially (commands of one actor see each
other's effects), and returns the KEYS/ARGV of one `scripts.APPEND` call plus what to commit to
the cache once Redis has confirmed. `settle` reads the script's answer back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec

from actors import keys
from actors.decider import Decider, Timer
from actors.runtime.cache import ActorCache, CachedActor
from events.codec import encode, type_name
from events.envelope import CommandEnvelope, EventEnvelope, Outcome
from events.errors import DomainError

__all__ = [
    "Item",
    "Round",
    "command_field",
    "fenced_key",
    "new_event_id",
    "parse_entry",
    "plan",
    "settle",
    "timer_envelope",
    "timer_member",
]

log = logging.getLogger("sessiond.runtime")

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


# --------------------------------------------------------------------------- RESP framing
# The append script's arguments are framed as RESP bulk strings while planning (see resp.py:
# redis-py's per-argument packing was the hot path's largest cost).


_TAGS: dict[type, str] = {}


def _tag(message: Any) -> str:
    cls = message.__class__
    tag = _TAGS.get(cls)
    if tag is None:
        tag = _TAGS[cls] = type_name(message)
    return tag


def _frame(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


_SMALL_INTS = [_frame(b"%d" % i) for i in range(-2, 1025)]
_EMPTY = _frame(b"")


def _fint(n: int) -> bytes:
    return _SMALL_INTS[n + 2] if -2 <= n <= 1024 else _frame(b"%d" % n)


def _fstr(text: str) -> bytes:
    return _frame(text.encode())


def unframe(chunks: list[bytes]) -> list[bytes]:
    """The plain arguments of framed chunks (for tests and debugging)."""
    data = b"".join(chunks)
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        assert data[pos : pos + 1] == b"$"
        end = data.index(b"\r\n", pos)
        size = int(data[pos + 1 : end])
        out.append(data[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return out


def fenced_key(partition: int) -> str:
    """Counter of writes refused because a newer owner held the partition (stale workers)."""
    return f"{keys.lease_key(partition)}:fenced"


def timer_member(actor_id: str, key: str) -> str:
    return f"{actor_id}|{key}"


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


def command_field(fields: Any) -> bytes | None:
    """The `c` field of a stream entry, from a redis-py dict or a raw [field, value, ...] list."""
    if isinstance(fields, dict):
        return fields.get(b"c")
    if fields and fields[0] == b"c":
        return fields[1]
    for i in range(0, len(fields or ()) - 1, 2):
        if fields[i] == b"c":
            return fields[i + 1]
    return None


def parse_entry(
    entry_id: bytes,
    raw: bytes | None,
    partition: int,
    decode_envelope: Callable[[bytes], CommandEnvelope],
    decode_command: Callable[[Any], Any],
    decider_for: Callable[[str], Decider[Any]],
) -> Item:
    """Decode one stream entry's `c` field. Never raises: a bad entry becomes an item with an
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
    """An actor's state as this round assumes it, until the script confirms."""

    __slots__ = ("actor", "index", "snap_version", "state", "timers", "version")

    def __init__(self, actor: CachedActor, index: int) -> None:
        self.actor = actor
        self.index = index
        self.version = actor.version
        self.state = actor.state
        self.snap_version = actor.snap_version
        self.timers = actor.deadlines()


class Round:
    """One append-script call: its arguments and what each item would mean once confirmed."""

    __slots__ = ("actor_keys", "argv", "items", "out_keys", "outcomes", "tentative")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.outcomes: list[bytes] = []  # per item: the outcome we would store ('' = none)
        self.tentative: dict[str, _Tentative] = {}
        self.actor_keys: list[bytes] = []  # per actor: its stream and snapshot keys, framed
        self.out_keys: list[str] = []
        self.argv: list[Any] = []

    def keys(self, partition: int) -> list[str]:
        """Every key the script touches (`actor_keys` and `out_keys` are kept RESP-framed)."""
        return [
            keys.epoch_key(partition),
            keys.partition_log(partition),
            keys.command_stream(partition),
            keys.timers_key(partition),
            fenced_key(partition),
            *(k.decode() for k in unframe(self.actor_keys)),
            *(k.decode() for k in unframe(self.out_keys)),
        ]

    def packed(self, sha: str, partition: int, epoch: int, group: str, ttl_ms: int) -> bytes:
        """The whole EVALSHA of `scripts.APPEND`, RESP-framed."""
        fixed = (
            keys.epoch_key(partition),
            keys.partition_log(partition),
            keys.command_stream(partition),
            keys.timers_key(partition),
            fenced_key(partition),
        )
        n_keys = len(fixed) + 2 * len(self.actor_keys) + len(self.out_keys)
        argc = 3 + n_keys + 5 + len(self.argv)
        head = [b"*%d\r\n" % argc, _frame(b"EVALSHA"), _fstr(sha), _fint(n_keys)]
        head.extend(_fstr(k) for k in fixed)
        head.extend(self.actor_keys)
        head.extend(self.out_keys)
        head.extend(
            (_fint(epoch), _fstr(group), _fint(ttl_ms), _fint(len(self.tentative)),
             _fint(len(self.items)))
        )  # fmt: skip
        head.extend(self.argv)
        return b"".join(head)


_NOOP_TAIL = (_SMALL_INTS[2], _SMALL_INTS[2], _SMALL_INTS[2], _SMALL_INTS[2], _EMPTY)
_NONE = _SMALL_INTS[2]
_NO_CHECK = _SMALL_INTS[1]
_REPEAT = _SMALL_INTS[0]


def plan(
    items: list[Item],
    actors: dict[str, CachedActor],
    partition: int,
    snapshot_every: int,
) -> Round:
    """Decide `items` in order against `actors` (every item's actor must be present).

    Returns the round; nothing in `actors` is modified (the cache is updated by `settle`).
    """
    rnd = Round()
    argv = rnd.argv
    out_keys = rnd.out_keys
    tentative = rnd.tentative
    seen: set[str] = set()
    out_prefix = keys.outcome_key(partition, "")
    dummy_out = _fstr(out_prefix)
    for item in items:
        env = item.env
        rnd.items.append(item)
        if env is None:
            out_keys.append(dummy_out)
            rnd.outcomes.append(b"")
            argv.extend((_frame(item.entry_id), _NONE, _NO_CHECK, _EMPTY, _EMPTY, *_NOOP_TAIL))
            continue
        okey = (out_prefix + env.command_id).encode()
        out_keys.append(b"$%d\r\n%b\r\n" % (len(okey), okey))
        if env.command_id in seen:
            item.repeat = True
            rnd.outcomes.append(b"")
            argv.extend(
                (_frame(item.entry_id), _NONE, _REPEAT, _fstr(env.reply_to), _EMPTY, *_NOOP_TAIL)
            )
            continue
        seen.add(env.command_id)
        if item.error is not None:
            code, message = item.error
            outcome = _encode(
                Outcome(
                    command_id=env.command_id,
                    actor_id=env.actor_id,
                    ok=False,
                    error_code=code,
                    error_message=message,
                    fingerprint=env.fingerprint,
                )
            )
            rnd.outcomes.append(outcome)
            argv.extend(
                (_frame(item.entry_id), _NONE, _NO_CHECK, _fstr(env.reply_to), _frame(outcome),
                 *_NOOP_TAIL)
            )  # fmt: skip
            continue
        tent = tentative.get(env.actor_id)
        if tent is None:
            tent = _Tentative(actors[env.actor_id], len(tentative) + 1)
            tentative[env.actor_id] = tent
            actor = tent.actor
            if actor.framed_keys is None:
                actor.framed_keys = _fstr(keys.event_stream(partition, actor.actor_id)) + _fstr(
                    keys.snapshot_key(partition, actor.actor_id)
                )
            rnd.actor_keys.append(actor.framed_keys)
        _decide_one(item, env, tent, partition, snapshot_every, rnd)
    return rnd


def _decide_one(
    item: Item,
    env: CommandEnvelope,
    tent: _Tentative,
    partition: int,
    snapshot_every: int,
    rnd: Round,
) -> None:
    decider = item.decider
    assert decider is not None
    argv = rnd.argv
    expected = tent.version
    state = tent.state
    try:
        events = decider.decide(item.command, state)
    except DomainError as exc:
        events = None
        error = (exc.code, exc.message)
    except Exception as exc:  # a decider bug must not wedge the partition: refuse, log, go on
        log.exception("decider %s failed on %s", decider.kind, env.command_id)
        events = None
        error = ("INTERNAL", f"{type(exc).__name__} while deciding")
    reply = env.reply_to
    entry_id = item.entry_id
    head = (
        b"$%d\r\n%b\r\n" % (len(entry_id), entry_id), _fint(tent.index), _fint(expected),
        _fstr(reply) if reply else _EMPTY,
    )  # fmt: skip
    if not events:
        if events is None:
            outcome = _encode(
                Outcome(
                    command_id=env.command_id,
                    actor_id=env.actor_id,
                    ok=False,
                    version=expected,
                    error_code=error[0],
                    error_message=error[1],
                    fingerprint=env.fingerprint,
                )
            )
        else:
            outcome = _encode(
                Outcome(
                    command_id=env.command_id,
                    actor_id=env.actor_id,
                    ok=True,
                    version=expected,
                    fingerprint=env.fingerprint,
                )
            )
        rnd.outcomes.append(outcome)
        argv.extend(head)
        argv.append(_frame(outcome))
        argv.extend(_NOOP_TAIL)
        return
    n = len(events)
    actor_id = env.actor_id
    command_id = env.command_id
    correlation = env.correlation_id or command_id
    evolve = decider.evolve
    react = decider.react
    routed_out: list[bytes] = []
    argv.extend(head)
    outcome_at = len(argv)
    argv.append(_EMPTY)  # the outcome, filled in below
    argv.append(_fint(n))
    version = expected
    for event in events:
        version += 1
        event_id = new_event_id()
        data = _encode(
            EventEnvelope(
                event_id=event_id,
                actor_id=actor_id,
                version=version,
                partition=partition,
                ts=event.at,
                command_id=command_id,
                correlation_id=correlation,
                causation_id=command_id,
                type=_tag(event),
                data=_Raw(_encode(event)),
            )
        )
        argv.append(b"$%d\r\n%b\r\n" % (len(data), data))
        state = evolve(state, event)
        for i, routed in enumerate(react(state, event)):
            cmd = routed.command
            routed_out.append(
                _frame(
                    _encode(
                        CommandEnvelope(
                            command_id=f"{event_id}/{i}",
                            actor_id=routed.actor_id,
                            partition=partition,
                            ts=cmd.at,
                            type=_tag(cmd),
                            data=_Raw(_encode(cmd)),
                            correlation_id=correlation,
                            causation_id=event_id,
                        )
                    )
                )
            )
    argv.append(_fint(len(routed_out)))
    argv.extend(routed_out)
    # timers: upsert what changed, remove what is no longer a deadline
    # The ZSET holds (member, due) only; the command is taken from the deadlines when the
    # timer fires, so a timer needs an upsert only when its due moved.
    old = tent.timers
    new: dict[str, Timer] = {}
    upserts = []
    for t in decider.deadlines(state):
        new[t.key] = t
        before = old.get(t.key)
        if before is None or before.due != t.due:
            upserts.append(t)
    removals = old.keys() - new.keys() if old else ()
    argv.append(_fint(len(upserts)))
    for t in upserts:
        member = f"{actor_id}|{t.key}".encode()
        due = b"%d" % t.due
        argv.append(b"$%d\r\n%b\r\n" % (len(member), member))
        argv.append(b"$%d\r\n%b\r\n" % (len(due), due))
    argv.append(_fint(len(removals)))
    argv.extend(_fstr(timer_member(actor_id, k)) for k in removals)
    if version - tent.snap_version >= snapshot_every:
        argv.append(_frame(_encode((version, state))))
        tent.snap_version = version
    else:
        argv.append(_EMPTY)
    outcome = _encode(
        Outcome(
            command_id=command_id,
            actor_id=actor_id,
            ok=True,
            version=version,
            events=n,
            fingerprint=env.fingerprint,
        )
    )
    argv[outcome_at] = b"$%d\r\n%b\r\n" % (len(outcome), outcome)
    rnd.outcomes.append(outcome)
    tent.version = version
    tent.state = state
    tent.timers = new


class Settled:
    """What a round's script call meant."""

    __slots__ = ("appended", "duplicates", "events", "outcomes", "retry", "stale_actors")

    def __init__(self) -> None:
        self.appended = 0  # items whose outcome was stored by this call
        self.duplicates = 0  # items answered with an earlier stored outcome
        self.events = 0
        self.retry: list[Item] = []  # conflicts and unsettled repeats: decide again
        self.stale_actors: set[str] = set()  # reload before deciding again
        self.outcomes: list[tuple[Item, bytes]] = []  # (item, outcome bytes) settled


def settle(rnd: Round, results: list[Any], cache: ActorCache) -> Settled:
    """Apply the script's answer: commit confirmed actors to `cache`, collect what to retry."""
    done = Settled()
    stale = done.stale_actors
    for item, result, outcome in zip(rnd.items, results, rnd.outcomes, strict=True):
        env = item.env
        if result == 1:
            done.appended += 1
            done.outcomes.append((item, outcome))
        elif isinstance(result, bytes):
            done.duplicates += 1
            done.outcomes.append((item, result))
            # our tentative decision was not applied; if it had events the cache would lie
            if env is not None and env.actor_id in rnd.tentative and not item.repeat:
                stale.add(env.actor_id)
        elif result == 0:
            done.retry.append(item)
        else:  # conflict: -(actual version + 1)
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
