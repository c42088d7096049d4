"""An actor's whole history: what Redis still holds, preceded by the archive for what was trimmed.

Used by `sessiond events` (archive fallback), `sessiond replay` and `sessiond export`. Also the
pure folding helpers replay prints (state at a version or time, and per-step differences).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis

from events import session as se
from events.codec import AnyEvent, decode_event, decode_event_envelope, encode, envelope_to_json
from events.envelope import EventEnvelope
from events.ids import actor_kind, actor_uuid
from infra.store.layout import event_stream
from infra.store.routing import partition_of

__all__ = [
    "archived_events",
    "diff_states",
    "envelope_from_json",
    "fold_steps",
    "prepend_archived",
    "read_history",
    "session_simulators",
    "state_json",
]

_event_json = msgspec.json.Decoder(AnyEvent)


def _from_archive(r: asyncpg.Record) -> EventEnvelope:
    event = _event_json.decode(r["data"])
    return EventEnvelope(event_id=r["event_id"], actor_id=r["actor_id"], version=r["version"],
                         partition=r["partition"], ts=r["ts"], command_id=r["command_id"],
                         correlation_id=r["correlation_id"], causation_id=r["causation_id"],
                         type=r["type"], data=msgspec.Raw(encode(event)))


async def archived_events(conn: asyncpg.Connection, actor_id: str, since: int = 0,
                          before: int | None = None) -> list[EventEnvelope]:
    """Archived events of `actor_id` with since < version (< before), oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM events.archive WHERE actor_id = $1 AND version > $2"
        " AND ($3::bigint IS NULL OR version < $3) ORDER BY version",
        actor_id, since, before)
    return [_from_archive(r) for r in rows]


async def _partition(redis: Redis, conn: asyncpg.Connection | None, actor_id: str,
                     partitions: int, session_id: str | None) -> int | None:
    if actor_kind(actor_id) == "session":
        return partition_of(actor_uuid(actor_id), partitions)
    if session_id:
        return partition_of(session_id, partitions)
    if conn is not None:
        p = await conn.fetchval("SELECT partition FROM projection.actor_versions"
                                " WHERE actor_id = $1", actor_id)
        if p is not None:
            return int(p)
    pipe = redis.pipeline(transaction=False)
    for p in range(partitions):
        pipe.exists(event_stream(p, actor_id))
    for p, exists in enumerate(await pipe.execute()):
        if exists:
            return p
    return None


async def read_history(redis: Redis, conn: asyncpg.Connection | None, actor_id: str,
                       partitions: int, since: int = 0, session_id: str | None = None
                       ) -> list[EventEnvelope]:
    """Every event of `actor_id` after `since`, oldest first, gap-free where the stores allow:
    Redis first; the versions Redis no longer holds (trimmed) come from the archive."""
    p = await _partition(redis, conn, actor_id, partitions, session_id)
    live: list[EventEnvelope] = []
    if p is not None:
        entries = await redis.xrange(event_stream(p, actor_id), f"{since + 1}-0", "+")
        live = [decode_event_envelope(fields[b"e"]) for _, fields in entries]
    first = live[0].version if live else None
    if conn is not None and (first is None or first > since + 1):
        older = await archived_events(conn, actor_id, since, first)
        return older + live
    return live


def session_simulators(events: Iterable[tuple[EventEnvelope, Any]]) -> list[str]:
    """Simulator actor ids a session's events name, in first-seen order."""
    out: dict[str, None] = {}
    for _, ev in events:
        if isinstance(ev, se.SimulatorReserved | se.SimulatorStatusRecorded):
            out[f"simulator:{ev.simulator_id}"] = None
    return list(out)


def envelope_from_json(doc: dict[str, Any]) -> EventEnvelope:
    """Inverse of `events.codec.envelope_to_json` (an exported line back into an envelope)."""
    body = {"type": doc["type"], **doc["data"]}
    event = msgspec.convert(body, AnyEvent)
    return EventEnvelope(
        event_id=doc["event_id"], actor_id=doc["actor_id"], version=doc["version"],
        partition=doc["partition"], ts=doc["ts"], command_id=doc.get("command_id", ""),
        correlation_id=doc.get("correlation_id", ""), causation_id=doc.get("causation_id", ""),
        type=doc["type"], data=msgspec.Raw(encode(event)))


def state_json(state: Any) -> Any:
    """A decider state as plain JSON-able data (tag included)."""
    return msgspec.to_builtins(state)


def fold_steps(decider: Any, envelopes: Iterable[EventEnvelope]
               ) -> Iterator[tuple[EventEnvelope, Any]]:
    """(envelope, state after it) for each event, folding with the decider's `evolve`."""
    state = decider.initial_state
    for env in envelopes:
        state = decider.evolve(state, decode_event(env.data, env.type))
        yield env, state


def diff_states(before: Any, after: Any, path: str = "") -> dict[str, list[Any]]:
    """path -> [old, new] for every leaf that differs (dicts compared key by key)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: dict[str, list[Any]] = {}
        for key in {**before, **after}:
            sub = f"{path}.{key}" if path else str(key)
            if key not in after:
                out[sub] = [before[key], None]
            elif key not in before:
                out[sub] = [None, after[key]]
            elif before[key] != after[key]:
                out.update(diff_states(before[key], after[key], sub))
        return out
    return {} if before == after else {path or ".": [before, after]}


def envelope_json(env: EventEnvelope) -> dict[str, Any]:
    return envelope_to_json(env)


async def prepend_archived(envs: list[EventEnvelope], actor_id: str, since: int,
                           database_url: str | None) -> list[EventEnvelope]:
    """`envs` (what Redis still holds after `since`) preceded by the archived versions Redis no
    longer has. Without a database, or when it is unreachable, `envs` unchanged."""
    first = envs[0].version if envs else None
    if not database_url or (first is not None and first <= since + 1):
        return envs
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError):
        return envs
    try:
        return await archived_events(conn, actor_id, since, first) + envs
    except asyncpg.UndefinedTableError:  # not migrated: no archive yet
        return envs
    finally:
        await conn.close()
