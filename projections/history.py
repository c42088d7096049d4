"""An actor's whole history through the event store: what Redis still holds, preceded by the
archive (`projections.archive`, set as the store's archive) for what was trimmed.

Used by `sessiond export` (and the tests). Also the pure folding helpers replay prints (state at
a version or time, and per-step differences).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from events import session as se
from events.codec import AnyEvent, decode_event, encode, envelope_to_json
from events.envelope import EventEnvelope
from infra.store import Store

__all__ = [
    "diff_states",
    "envelope_from_json",
    "envelope_json",
    "fold_steps",
    "read_history",
    "session_simulators",
    "state_json",
]


async def read_history(
    store: Store, actor_id: str, since: int = 0, session_id: str | None = None
) -> list[EventEnvelope]:
    """Every event of `actor_id` after `since`, oldest first, gap-free where the stores allow:
    Redis first; the versions Redis no longer holds come from the store's archive (also every
    version, when Redis holds nothing of the actor)."""
    p = await store.actors.find_partition(actor_id, session_id)
    if p is not None:
        return await store.actors.read(p, actor_id, after=since)
    if store.archive is not None:
        return await store.archive.events(actor_id, since, None)
    return []


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
        event_id=doc["event_id"],
        actor_id=doc["actor_id"],
        version=doc["version"],
        partition=doc["partition"],
        ts=doc["ts"],
        command_id=doc.get("command_id", ""),
        correlation_id=doc.get("correlation_id", ""),
        causation_id=doc.get("causation_id", ""),
        type=doc["type"],
        data=msgspec.Raw(encode(event)),
    )


def state_json(state: Any) -> Any:
    """A decider state as plain JSON-able data (tag included)."""
    return msgspec.to_builtins(state)


def fold_steps(
    decider: Any, envelopes: Iterable[EventEnvelope]
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
