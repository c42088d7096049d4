"""Command envelopes and command ids, as every sender builds them (backend-neutral).

A command travels in a `CommandEnvelope`; its partition follows from the session id
(`routing.partition_of`), its `command_id` is the idempotency key.
"""

from __future__ import annotations

import itertools
import os

import msgspec

from events.base import Command
from events.codec import encode, type_name
from events.envelope import CommandEnvelope
from infra.store.routing import DEFAULT_PARTITIONS, partition_of

__all__ = ["build_envelope", "new_command_id"]


class _CommandIds:
    """UUID-shaped command ids: a random per-process prefix (74 random bits, re-drawn in a
    forked child) and a counter. Globally unique like `uuid4`, without a `urandom` call each."""

    def __init__(self) -> None:
        self._reseed()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        h = os.urandom(10).hex()
        variant = "89ab"[int(h[15], 16) & 3]
        self.prefix = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{variant}{h[16:19]}-"
        self.counter = itertools.count(int(h[19], 16) << 40)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


#: A new globally unique command id (UUID-shaped).
new_command_id = _CommandIds()


def build_envelope(
    actor_id: str,
    session_id: str,
    command: Command,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    command_id: str | None = None,
    correlation_id: str = "",
    causation_id: str = "",
    reply_to: str = "",
    fingerprint: str = "",
    traceparent: str = "",
) -> CommandEnvelope:
    """The envelope of `command` for `actor_id`; the partition follows from the session id.
    `fingerprint` (a digest of what the sender asked for) comes back in the outcome, so a
    sender reusing a command id for another request can tell. `traceparent`: the sender's
    trace context (`infra.tracing`)."""
    cid = command_id or new_command_id()
    return CommandEnvelope(
        command_id=cid,
        actor_id=actor_id,
        partition=partition_of(session_id, partitions),
        ts=command.at,
        type=type_name(command),
        data=msgspec.Raw(encode(command)),
        correlation_id=correlation_id or cid,
        causation_id=causation_id,
        reply_to=reply_to,
        fingerprint=fingerprint,
        traceparent=traceparent,
    )
