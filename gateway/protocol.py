"""The WebSocket message codec: seed 004's numeric envelope and seed 000's named messages.

Every message is a JSON object ``{type, session_id, user_id, device_id, timestamp, payload,
correlation_id}`` (seed 004). `type` is a number (seed 004's Go const block, 0..14) or a name
("heartbeat", "state_update", seed 000's "connected", "reconnect", ...). A client that speaks
names gets names back, one that speaks numbers gets numbers: the connection remembers the form of
the last message it received. Messages seed 004 has no number for get numbers from 100 up.

A client's write may add ``idempotency_key`` (sessiond's own): the correlation id only
correlates an answer with its request.

Pure: no I/O, so it is unit-tested on its own.
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Any

import msgspec

from gateway.errors import ApiError
from gateway.validate import (
    DEFAULT_LIMITS,
    InputLimits,
    InvalidInput,
    check_document,
    check_identifiers,
    parse_json,
)

__all__ = [
    "ALIASES",
    "Form",
    "Inbound",
    "MessageType",
    "ProtocolError",
    "decode_inbound",
    "encode_outbound",
    "name_of",
]


class MessageType(IntEnum):
    # seed 004 (iota order)
    UNKNOWN = 0
    HEARTBEAT = 1
    HEARTBEAT_ACK = 2
    SNAPSHOT_REQUEST = 3
    SNAPSHOT_RESPONSE = 4
    STATE_UPDATE = 5
    ERROR = 6
    AUTH = 7
    AUTH_SUCCESS = 8
    AUTH_FAILURE = 9
    DEVICE_JOINED = 10
    DEVICE_LEFT = 11
    DEVICE_LIST = 12
    BROADCAST = 13
    ADMIN_UPDATE = 14
    # seed 000 messages, and sessiond's own, which seed 004 has no number for
    CONNECTED = 100
    RECONNECT = 101
    CONNECTION_STATE = 102
    SIMULATOR_STATUS = 103
    EXCHANGE_DATA = 104
    RESET = 105
    START_SIMULATOR = 106
    STOP_SIMULATOR = 107
    SESSION_UPDATE = 108
    HANDOFF = 109


class Form(IntEnum):
    NAMES = 0
    NUMBERS = 1


_NAMES = {t: t.name.lower() for t in MessageType}
_BY_NAME = {name: t for t, name in _NAMES.items()}
#: Other spellings clients use for the same messages.
ALIASES: dict[str, MessageType] = {
    "ping": MessageType.HEARTBEAT,
    "pong": MessageType.HEARTBEAT_ACK,
    "snapshot": MessageType.SNAPSHOT_REQUEST,
    "get_snapshot": MessageType.SNAPSHOT_REQUEST,
    "update": MessageType.STATE_UPDATE,
    "state": MessageType.STATE_UPDATE,
    "devices": MessageType.DEVICE_LIST,
    "list_devices": MessageType.DEVICE_LIST,
    "simulator_start": MessageType.START_SIMULATOR,
    "simulator_stop": MessageType.STOP_SIMULATOR,
    "get_simulator_status": MessageType.SIMULATOR_STATUS,
}
_KNOWN_CODES = frozenset(int(t) for t in MessageType)


class ProtocolError(ApiError):
    """A message the gateway cannot accept (a 400); `code` is what the client's ERROR carries,
    echoing the message's `correlation_id` when it could be read."""

    def __init__(self, code: str, message: str, correlation_id: str = "") -> None:
        super().__init__(400, code, message)
        self.correlation_id = correlation_id


class _Wire(msgspec.Struct, kw_only=True):
    type: int | str
    session_id: str = ""
    user_id: str = ""
    device_id: str = ""
    timestamp: int | float = 0
    payload: dict[str, Any] | None = None
    correlation_id: str = ""
    idempotency_key: str = ""


class Inbound(msgspec.Struct, frozen=True, kw_only=True):
    type: MessageType
    form: Form
    payload: dict[str, Any]
    session_id: str = ""
    device_id: str = ""
    correlation_id: str = ""
    idempotency_key: str = ""


_wire_decoder = msgspec.json.Decoder(_Wire)
_encoder = msgspec.json.Encoder()


def name_of(t: MessageType) -> str:
    return _NAMES[t]


def decode_inbound(data: str | bytes, limits: InputLimits = DEFAULT_LIMITS) -> Inbound:
    """Parse one client frame; raise ProtocolError with MALFORMED_JSON / INVALID_MESSAGE /
    UNKNOWN_TYPE, or `gateway.validate`'s codes (INVALID_ARGUMENT, NESTING_TOO_DEEP) for what
    the stores cannot hold, with a message a person can act on."""
    try:
        wire = parse_json(data, limits, "the message", _wire_decoder)
    except InvalidInput as exc:
        raise ProtocolError(exc.code, exc.message) from None
    except msgspec.ValidationError as exc:
        try:  # a number out of range is not a schema error: say so
            parse_json(data, limits, "the message")
        except InvalidInput as invalid:
            raise ProtocolError(invalid.code, invalid.message) from None
        raise ProtocolError("INVALID_MESSAGE", f"invalid message: {exc}") from None
    try:
        fields = msgspec.structs.asdict(wire)
        check_document(data, fields, limits)
        check_identifiers(fields, limits)
        if wire.payload:
            check_identifiers(wire.payload, limits)
    except InvalidInput as exc:
        raise ProtocolError(exc.code, exc.message, wire.correlation_id) from None
    t = wire.type
    if isinstance(t, bool):  # pragma: no cover - msgspec never gives bool for int | str
        raise ProtocolError("INVALID_MESSAGE", "`type` must be a number or a name")
    if isinstance(t, int):
        if t not in _KNOWN_CODES or t == 0:
            raise ProtocolError("UNKNOWN_TYPE", f"unknown message type {t}", wire.correlation_id)
        mtype, form = MessageType(t), Form.NUMBERS
    else:
        key = t.strip().lower()
        mtype = _BY_NAME.get(key) or ALIASES.get(key)  # type: ignore[assignment]
        if mtype is None or mtype is MessageType.UNKNOWN:
            raise ProtocolError("UNKNOWN_TYPE", f"unknown message type {t!r}", wire.correlation_id)
        form = Form.NAMES
    return Inbound(
        type=mtype,
        form=form,
        payload=wire.payload or {},
        session_id=wire.session_id,
        device_id=wire.device_id,
        correlation_id=wire.correlation_id,
        idempotency_key=wire.idempotency_key,
    )


def encode_outbound(
    form: Form,
    mtype: MessageType,
    payload: Any,
    *,
    session_id: str = "",
    user_id: str = "",
    device_id: str = "",
    correlation_id: str = "",
    version: int | None = None,
    timestamp: int | None = None,
) -> bytes:
    """One server message in the client's form. `version` (the session's event version) is
    present on every message that carries a change, so a client can resume with `since`."""
    msg: dict[str, Any] = {
        "type": int(mtype) if form is Form.NUMBERS else _NAMES[mtype],
        "session_id": session_id,
        "user_id": user_id,
        "device_id": device_id,
        "timestamp": int(time.time()) if timestamp is None else timestamp,
        "payload": payload,
        "correlation_id": correlation_id,
    }
    if version is not None:
        msg["version"] = version
    return _encoder.encode(msg)
