"""The change a session's clients see for each event of the session actor.

A pure function of one event envelope, so the worker (whose append publishes the changes of the
events it appends on the session's change feed: `live_change`, the inline projection) and the
gateway (which rebuilds the changes a client missed from the session's Redis stream) always
agree. `version` is the session actor's event
version: consecutive for one session, with no holes, so a client resuming with `since=V` knows it
got everything after V.

Published message on a session's change feed: a JSON array of `Change` objects (one command may
append several events of a session), in version order.
"""

from __future__ import annotations

from typing import Any

import msgspec

from events.codec import decode_event
from events.envelope import EventEnvelope
from events.ids import actor_kind, actor_uuid

__all__ = [
    "HIDDEN_FIELDS",
    "Change",
    "change_for",
    "change_from_event",
    "decode_changes",
    "encode_changes",
    "live_change",
    "raw_change",
]

#: Event fields never sent to clients (secrets), by event type.
HIDDEN_FIELDS: dict[str, frozenset[str]] = {
    "SessionCreated": frozenset({"token"}),
}


class Change(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One fact of a session, as its clients receive it.

    `type` is the event's stable tag (e.g. "DeviceJoined", "StateChanged"); `data` the event's
    fields as JSON (including its `type` tag and `at`, minus secrets); `ts` the event time (ms).
    `traceparent`: the trace context of the worker's span whose append published it (for the
    gateway's push span; not sent to clients, left out when empty).
    """

    session_id: str
    version: int
    type: str
    data: dict[str, Any]
    ts: int
    traceparent: str = ""


class _RawChange(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """`Change` with its data already encoded (the projector's path: no re-encoding)."""

    session_id: str
    version: int
    type: str
    data: msgspec.Raw
    ts: int
    traceparent: str = ""


_decoder = msgspec.json.Decoder(list[Change])
_encoder = msgspec.json.Encoder()


def _data(env_type: str, event: Any) -> dict[str, Any]:
    data = msgspec.to_builtins(event)
    for field in HIDDEN_FIELDS.get(env_type, ()):
        data.pop(field, None)
    return data


def change_from_event(env: EventEnvelope, event: Any) -> Change | None:
    """Like `change_for`, with the body already decoded (the projector decodes it once)."""
    if actor_kind(env.actor_id) != "session":
        return None
    return Change(
        session_id=actor_uuid(env.actor_id),
        version=env.version,
        type=env.type,
        data=_data(env.type, event),
        ts=env.ts,
    )


def raw_change(env: EventEnvelope, event: Any, event_json: bytes) -> _RawChange:
    """The projector's fast path: `event_json` is `msgspec.json.encode(event)`. Encodes to the
    same JSON as `change_from_event` (for a session actor's event)."""
    if env.type in HIDDEN_FIELDS:
        event_json = _encoder.encode(_data(env.type, event))
    return _RawChange(
        session_id=env.actor_id.partition(":")[2],
        version=env.version,
        type=env.type,
        data=msgspec.Raw(event_json),
        ts=env.ts,
        traceparent=env.traceparent,
    )


def live_change(envs: list[EventEnvelope], events: list[Any]) -> tuple[str, bytes] | None:
    """The live view of one command's appended events (`envs`, and `events` decoded): the
    session they belong to and the change message its clients receive; None for another
    actor's events. The worker runtime's `LiveView`, injected by `sessiond worker`."""
    if not envs or actor_kind(envs[0].actor_id) != "session":
        return None
    changes = [
        raw_change(env, event, _encoder.encode(event))
        for env, event in zip(envs, events, strict=True)
    ]
    return changes[0].session_id, _encoder.encode(changes)


def change_for(env: EventEnvelope) -> Change | None:
    """The change clients see for `env`; None for events of other actors (e.g. simulators,
    whose status reaches the session's clients through `SimulatorStatusRecorded`)."""
    if actor_kind(env.actor_id) != "session":
        return None
    return change_from_event(env, decode_event(env.data, env.type))


def encode_changes(changes: list[Change] | list[_RawChange]) -> bytes:
    """The message published on a session's change channel: a JSON array of changes."""
    return _encoder.encode(changes)


def decode_changes(data: bytes | str) -> list[Change]:
    return _decoder.decode(data)
