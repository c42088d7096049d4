"""What the gateway pushes to clients: one `Push` per change, encoded once per wire form.

A change of the session (an event of its actor at `version`) becomes the client message seed 004
or seed 000 names for it: STATE_UPDATE, DEVICE_JOINED / DEVICE_LEFT, connection_state,
simulator_status, ... `push_for_event` is pure: the live feed and the catch-up after a reconnect
use the same function on the same events, so a resumed client sees exactly what a connected one saw.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.protocol import Form, MessageType, encode_outbound, name_of

__all__ = ["Push", "push_for_event", "session_closed_by"]

_json = msgspec.json.Encoder()


class Push:
    """One outgoing message for every client of a session. `version` is the session's event
    version for changes (None for messages outside the ordered history: ticks, broadcasts)."""

    __slots__ = ("_frames", "_sse", "mtype", "payload", "session_id", "timestamp", "version")

    def __init__(
        self,
        mtype: MessageType,
        payload: Any,
        *,
        session_id: str = "",
        version: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        self.mtype = mtype
        self.payload = payload
        self.session_id = session_id
        self.version = version
        self.timestamp = int(time.time()) if timestamp is None else timestamp
        self._frames: list[str | None] = [None, None]
        self._sse: bytes | None = None

    def frame(self, form: Form) -> str:
        """The WebSocket text frame for a client of `form` (encoded once per form)."""
        cached = self._frames[form]
        if cached is None:
            cached = encode_outbound(
                form,
                self.mtype,
                self.payload,
                session_id=self.session_id,
                version=self.version,
                timestamp=self.timestamp,
            ).decode()
            self._frames[form] = cached
        return cached

    def sse(self) -> bytes:
        """The Server-Sent Events record: `id` is the version (for Last-Event-ID resume)."""
        if self._sse is None:
            head = f"id: {self.version}\n" if self.version is not None else ""
            data = self.frame(Form.NAMES)
            self._sse = f"{head}event: {name_of(self.mtype)}\ndata: {data}\n\n".encode()
        return self._sse


def _state(event: str, body: dict[str, Any]) -> tuple[MessageType, dict[str, Any]]:
    op = {"StateReplaced": "REPLACE", "StateChanged": "PATCH", "ConflictResolved": "RESOLVE"}[event]
    return MessageType.STATE_UPDATE, {"operation": op, **body}


_SIMPLE: dict[str, MessageType] = {
    "DeviceJoined": MessageType.DEVICE_JOINED,
    "DeviceLeft": MessageType.DEVICE_LEFT,
    "ConnectionOpened": MessageType.CONNECTION_STATE,
    "ConnectionClosed": MessageType.CONNECTION_STATE,
    "ConnectionQualityChanged": MessageType.CONNECTION_STATE,
    "SessionCreated": MessageType.SESSION_UPDATE,
    "SessionRefreshed": MessageType.SESSION_UPDATE,
    "SessionEnded": MessageType.SESSION_UPDATE,
    "SessionExpired": MessageType.SESSION_UPDATE,
    "MetadataUpdated": MessageType.SESSION_UPDATE,
    "HandoffStarted": MessageType.HANDOFF,
    "HandoffAccepted": MessageType.HANDOFF,
    "HandoffExpired": MessageType.HANDOFF,
    "SimulatorReserved": MessageType.SIMULATOR_STATUS,
    "SimulatorStatusRecorded": MessageType.SIMULATOR_STATUS,
}
_STATUS = {
    "SessionCreated": "ACTIVE",
    "SessionRefreshed": "ACTIVE",
    "SessionEnded": "ENDED",
    "SessionExpired": "EXPIRED",
}
#: Events clients do not need to see (bookkeeping): no push, the version just moves on.
_SILENT = frozenset({"DevicesSeen"})
_PRIVATE = ("token",)  # never pushed: SessionCreated.token is the creator's auth token


def push_for_event(
    session_id: str, version: int, event_type: str, body: dict[str, Any], ts: int = 0
) -> Push | None:
    """The client message for the session event `event_type` (its fields in `body`) recorded at
    `version`; None for events clients do not see."""
    if event_type in _SILENT:
        return None
    body = {k: v for k, v in body.items() if k not in _PRIVATE and k not in ("type", "at")}
    if event_type in ("StateReplaced", "StateChanged", "ConflictResolved"):
        mtype, payload = _state(event_type, body)
    elif event_type in _SIMPLE:
        mtype = _SIMPLE[event_type]
        payload = body
        if event_type in _STATUS:
            payload = {"status": _STATUS[event_type], **body}
        elif event_type == "SimulatorReserved":
            payload = {"status": "CREATING", **body}
        elif event_type == "ConnectionOpened":
            payload = {"state": "opened", **body}
        elif event_type == "ConnectionClosed":
            payload = {"state": "closed", **body}
        elif event_type.startswith("Handoff"):
            payload = {"state": event_type.removeprefix("Handoff").lower(), **body}
    else:
        mtype, payload = MessageType.SESSION_UPDATE, body
    payload["event"] = event_type
    payload["version"] = version
    if ts:
        payload["ts"] = ts  # the event's time (ms)
    return Push(
        mtype,
        payload,
        session_id=session_id,
        version=version,
        timestamp=(ts // 1000) if ts else None,
    )


def session_closed_by(push: Push) -> str | None:
    """The close reason (`SESSION_ENDED` / `SESSION_EXPIRED`) when `push` ends its session's
    connections, else None; an end that is a restart's first half does not. One rule for the
    live feed and for a catch-up that reads the end from history (a client that attached just
    as its session ended)."""
    payload = push.payload if isinstance(push.payload, dict) else {}
    event = payload.get("event")
    if event == "SessionExpired":
        return "SESSION_EXPIRED"
    if event == "SessionEnded" and payload.get("reason") != "restarted":
        return "SESSION_ENDED"
    return None
