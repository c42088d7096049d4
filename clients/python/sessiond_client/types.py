"""What the calls answer, as msgspec Structs (decoded and checked on arrival).

Field names are the gateway's JSON names (seed 003's answers, seed 004's, seed 000's); fields
the client does not need are ignored, so a gateway that adds fields does not break it.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "Change",
    "ConflictResolved",
    "Device",
    "DeviceDisconnected",
    "Devices",
    "HandoffAccepted",
    "HandoffIssued",
    "Message",
    "SessionStarted",
    "Simulator",
    "Snapshot",
    "StateWritten",
]


class SessionStarted(msgspec.Struct, frozen=True, kw_only=True):
    """Seed 003's `start_session` answer."""

    session_id: str
    router_reachable: bool
    infrastructure_ready: bool
    message: str


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Seed 003's `end_session` / `refresh_session` answer."""

    message: str


class StateWritten(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot or an incremental change written: the state's new `version`, and the
    session's (`session_version`: what `watch(since=...)` and `get_session(min_version=...)`
    take)."""

    session_id: str
    version: int
    session_version: int


class ConflictResolved(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    resolution_strategy: str
    resolved_state: dict[str, Any]
    version: int
    session_version: int


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The session and its shared state (seed 004)."""

    session_id: str
    user_id: str
    status: str
    state_data: dict[str, Any]
    version: int
    session_version: int
    device_id: str = ""
    app_version: str = ""
    created_at: str | None = None
    updated_at: str | None = None
    expires_at: str | None = None


class HandoffIssued(msgspec.Struct, frozen=True, kw_only=True):
    token: str
    session_id: str
    source_device: str
    target_device: str
    expires_at: int  # ms since the epoch
    expires_in: int  # seconds


class HandoffAccepted(msgspec.Struct, frozen=True, kw_only=True):
    valid: bool
    session_id: str
    token: str
    source_device: str
    target_device: str
    state_data: dict[str, Any]
    state_version: int


class Device(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    status: str
    online: bool
    connections: int = 0
    device_type: str = ""
    device_name: str = ""
    os: str = ""
    joined_at: str | None = None
    last_seen: str | None = None
    left_reason: str | None = None


class Devices(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    devices: list[Device]
    count: int


class DeviceDisconnected(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    device_id: str
    disconnected: bool
    message: str


class Simulator(msgspec.Struct, frozen=True, kw_only=True):
    """The session's exchange simulator (seed 000 / 002)."""

    simulator_id: str
    session_id: str
    status: str
    user_id: str = ""
    endpoint: str | None = None
    created_at: str | None = None
    last_active: str | None = None
    initial_symbols: list[str] = []
    initial_cash: float = 0.0


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a session's stream (`watch`), as WS and SSE clients receive it: `type`
    is its name ("state_update", "device_joined", "reset", ...), `version` the session version
    of a change (None for messages outside the ordered history: heartbeats, broadcasts)."""

    type: str
    version: int | None
    payload: dict[str, Any]
    session_id: str = ""
    timestamp: int = 0
