"""The envelopes that wrap every command and event on a Redis stream.

An envelope carries routing and tracing (who, which version, which partition, what caused it);
the body (`data`) stays as raw msgpack until someone needs it, so the worker and the projector
can route millions of messages without decoding bodies they only pass along.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["CommandEnvelope", "EventEnvelope", "Outcome"]


class EventEnvelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One fact in an actor's history; `version` (1, 2, 3... per actor) is its stream id.

    Only `traceparent` has a default (and is left out of the encoding when empty), so events
    without a trace encode exactly as before it existed."""

    event_id: str
    actor_id: str
    version: int
    partition: int
    ts: int  # ms since the epoch, taken from the command that caused it
    command_id: str
    correlation_id: str
    causation_id: str
    type: str
    data: msgspec.Raw
    #: W3C trace context of the worker's span that appended it (`infra.tracing`); "" untraced
    traceparent: str = ""


class CommandEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """A request to one actor. `command_id` is the idempotency key: a retry reuses it."""

    command_id: str
    actor_id: str
    partition: int
    ts: int
    type: str
    data: msgspec.Raw
    correlation_id: str = ""
    causation_id: str = ""
    reply_to: str = ""  # a pub/sub channel the outcome is published on, if anyone waits
    # What the sender asked for, digested (e.g. an idempotency key's request body): stored in
    # the outcome, so a later command reusing this command id with another request is told.
    fingerprint: str = ""
    #: W3C trace context of the sender's span (`infra.tracing`); "" when not traced
    traceparent: str = ""


class Outcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What became of a command: stored under its id (for retries) and published to `reply_to`.

    `version` is the actor's version after the command (unchanged when it emitted nothing).
    `result` is what the caller's answer needs from the events the command caused (a new
    state version, a handoff token...), filled by the actor kind's `result` function, so an
    answer never reads the events back; {} when the kind has nothing to say.
    """

    command_id: str
    actor_id: str
    ok: bool
    version: int = 0
    events: int = 0
    error_code: str = ""
    error_message: str = ""
    fingerprint: str = ""  # the fingerprint of the command that settled this command id
    result: dict[str, Any] = {}
