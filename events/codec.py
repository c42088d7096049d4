"""Encoding of commands, events and envelopes: msgpack inside Redis, JSON at the edge.

Encoders and decoders are built once here and reused (msgspec's advice). Old event shapes are
upcast on read by `UPCASTERS`, never rewritten in the store.

Large bodies (an event or an actor snapshot carrying a big shared state, seed 004) are stored
compressed: `deflate` turns a msgpack body above `COMPRESS_ABOVE` bytes into a msgpack `bin` of
its zlib stream, and `inflate` undoes it. A body is otherwise always a msgpack map or array,
never a `bin`, so the marker needs no flag and old entries read unchanged.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import msgspec

from events.base import Command, Event
from events.envelope import CommandEnvelope, EventEnvelope, Outcome
from events.session import SessionCommand, SessionEvent
from events.simulator import SimulatorCommand, SimulatorEvent

__all__ = [
    "COMMAND_TYPES",
    "COMPRESS_ABOVE",
    "EVENT_TYPES",
    "UPCASTERS",
    "AnyCommand",
    "AnyEvent",
    "decode_command",
    "decode_command_envelope",
    "decode_event",
    "decode_event_envelope",
    "decode_outcome",
    "deflate",
    "encode",
    "envelope_to_json",
    "inflate",
    "type_name",
]

AnyCommand = SessionCommand | SimulatorCommand
AnyEvent = SessionEvent | SimulatorEvent


def _tags(union: Any) -> dict[str, type]:
    return {t.__struct_config__.tag: t for t in union.__args__}


COMMAND_TYPES: dict[str, type] = _tags(AnyCommand)
EVENT_TYPES: dict[str, type] = _tags(AnyEvent)

#: type tag -> function turning an old stored shape (a dict) into the current one.
UPCASTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(AnyCommand)
_event_decoder = msgspec.msgpack.Decoder(AnyEvent)
_event_env_decoder = msgspec.msgpack.Decoder(EventEnvelope)
_command_env_decoder = msgspec.msgpack.Decoder(CommandEnvelope)
_outcome_decoder = msgspec.msgpack.Decoder(Outcome)


def type_name(message: Command | Event) -> str:
    """The stable tag of a command or event (never the class name, which may be renamed)."""
    return type(message).__struct_config__.tag  # type: ignore[return-value]


def encode(obj: Any) -> bytes:
    """msgpack, for anything that goes into Redis."""
    return _encoder.encode(obj)


#: Bodies larger than this (bytes of msgpack) are stored zlib-compressed (level 1: measured
#: on a 200 KiB state, see docs/store.md).
COMPRESS_ABOVE = 16 * 1024
_BIN = frozenset({0xC4, 0xC5, 0xC6})  # msgpack bin 8 / 16 / 32


def deflate(body: bytes) -> bytes:
    """`body`, or above `COMPRESS_ABOVE` its zlib stream as a msgpack `bin`."""
    if len(body) <= COMPRESS_ABOVE:
        return body
    return _encoder.encode(zlib.compress(body, 1))


def inflate(data: bytes | msgspec.Raw) -> bytes | msgspec.Raw:
    """A body as `deflate` stored it -> the msgpack body (unchanged when not compressed)."""
    view = memoryview(data)
    if view.nbytes and view[0] in _BIN:
        return zlib.decompress(msgspec.msgpack.decode(view))
    return data


def decode_event(data: bytes | msgspec.Raw, type_: str = "") -> Any:
    """Decode an event body (stored compressed or not), upcasting an old shape when an
    upcaster is registered."""
    data = inflate(data)
    if type_ in UPCASTERS:
        raw = msgspec.msgpack.decode(data)
        return msgspec.convert(UPCASTERS[type_](raw), AnyEvent)
    return _event_decoder.decode(data)


def decode_command(data: bytes | msgspec.Raw) -> Any:
    return _command_decoder.decode(data)


def decode_event_envelope(data: bytes) -> EventEnvelope:
    return _event_env_decoder.decode(data)


def decode_command_envelope(data: bytes) -> CommandEnvelope:
    return _command_env_decoder.decode(data)


def decode_outcome(data: bytes) -> Outcome:
    return _outcome_decoder.decode(data)


def envelope_to_json(env: EventEnvelope) -> dict[str, Any]:
    """An event envelope as plain data for exports and the CLI (the body decoded, named fields)."""
    body = msgspec.to_builtins(decode_event(env.data, env.type))
    body.pop("type", None)
    return {
        "event_id": env.event_id,
        "actor_id": env.actor_id,
        "version": env.version,
        "partition": env.partition,
        "ts": env.ts,
        "command_id": env.command_id,
        "correlation_id": env.correlation_id,
        "causation_id": env.causation_id,
        "type": env.type,
        "data": body,
    }
