"""Commands to and events of the session actor (`session:<uuid>`).

Schemas only grow: add fields last with defaults, never change a type, never reuse a tag.
Retired tags (never to be reused): `ValidateSession` (a question asked as a command; the edge
reads the session's state instead). A queued command with a retired tag is refused by the
worker as INVALID_COMMAND, as any undecodable command is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from events.base import Command, Event
from events.simulator import DEFAULT_HEARTBEAT_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS

__all__ = [
    "DEFAULT_HANDOFF_TTL_MS",
    "DEFAULT_PRESENCE_TIMEOUT_MS",
    "DEFAULT_SESSION_TTL_MS",
    "AcceptHandoff",
    "ApplyStateChanges",
    "ChangeConnectionQuality",
    "ConflictResolved",
    "ConflictStrategy",
    "ConnectionClosed",
    "ConnectionOpened",
    "ConnectionQuality",
    "ConnectionQualityChanged",
    "CreateSession",
    "DeviceForgotten",
    "DeviceJoined",
    "DeviceLeft",
    "DevicesSeen",
    "DisconnectDevice",
    "EndSession",
    "ExpireHandoff",
    "ExpireSession",
    "ForgetDevice",
    "HandoffAccepted",
    "HandoffExpired",
    "HandoffStarted",
    "JoinDevice",
    "LeaveDevice",
    "MetadataUpdated",
    "RecordSimulatorStatus",
    "RefreshSession",
    "ReplaceState",
    "ReserveSimulator",
    "ResolveConflict",
    "SessionCommand",
    "SessionCreated",
    "SessionEnded",
    "SessionEvent",
    "SessionExpired",
    "SessionRefreshed",
    "SimulatorReserved",
    "SimulatorStatusRecorded",
    "StartHandoff",
    "StateChanged",
    "StateReplaced",
    "TimeOutDevice",
    "TouchDevices",
    "Transport",
    "UpdateMetadata",
]

DEFAULT_SESSION_TTL_MS = 7 * 24 * 3600 * 1000  # seed 004: 7-day TTL
DEFAULT_PRESENCE_TIMEOUT_MS = 2 * 60 * 1000  # seed 004: presence times out after 2 minutes
DEFAULT_HANDOFF_TTL_MS = 5 * 60 * 1000  # seed 004: handoff token valid 5 minutes


class ConnectionQuality(StrEnum):
    GOOD = "GOOD"
    DEGRADED = "DEGRADED"
    POOR = "POOR"


class ConflictStrategy(StrEnum):
    SERVER_WINS = "server_wins"
    CLIENT_WINS = "client_wins"
    MERGE = "merge"


class Transport(StrEnum):
    WS = "ws"
    SSE = "sse"


# --------------------------------------------------------------------------- commands


class CreateSession(Command, frozen=True, tag="CreateSession"):
    """Start the session (seed 000 / 003). `restart` ends a live one and starts it afresh."""

    session_id: str
    device_id: str = ""
    router_id: str = ""
    pod_name: str = ""
    ip_address: str = ""
    token: str = ""
    ttl_ms: int = DEFAULT_SESSION_TTL_MS
    presence_timeout_ms: int = DEFAULT_PRESENCE_TIMEOUT_MS
    restart: bool = False


class RefreshSession(Command, frozen=True, tag="RefreshSession"):
    """Record activity: `last_active` = now, `expires_at` = now + TTL."""


class EndSession(Command, frozen=True, tag="EndSession"):
    """`router_id` (seed 003's end), when given, must be the router the session started on."""

    reason: str = "ended"
    router_id: str = ""


class ExpireSession(Command, frozen=True, tag="ExpireSession"):
    """Timer: fired at `expires_at`; a refresh since then makes it a no-op."""


class ChangeConnectionQuality(Command, frozen=True, tag="ChangeConnectionQuality"):
    quality: ConnectionQuality
    rtt_ms: float = 0.0
    device_id: str = ""


class UpdateMetadata(Command, frozen=True, tag="UpdateMetadata"):
    values: dict[str, Any]


class JoinDevice(Command, frozen=True, tag="JoinDevice"):
    """A device opened a connection (WS or SSE) through a gateway.

    The gateway's limits come with it (0 = none): at most `max_connections` open connections
    in the session, at most `max_devices` known devices (a new device first makes the least
    recently seen offline ones forgotten; refused when all are online), and the device is
    forgotten `retention_ms` after it went offline."""

    device_id: str
    connection_id: str
    transport: Transport = Transport.WS
    device_type: str = ""
    device_name: str = ""
    os: str = ""
    pod_name: str = ""
    ip_address: str = ""
    max_connections: int = 0
    max_devices: int = 0
    retention_ms: int = 0


class LeaveDevice(Command, frozen=True, tag="LeaveDevice"):
    """A connection closed; the device leaves when its last connection does."""

    device_id: str
    connection_id: str


class TouchDevices(Command, frozen=True, tag="TouchDevices"):
    """A gateway still holds these devices' connections: push their presence deadline out."""

    device_ids: list[str]


class TimeOutDevice(Command, frozen=True, tag="TimeOutDevice"):
    """Timer: the device was not seen for the presence timeout (e.g. its gateway died)."""

    device_id: str


class ForgetDevice(Command, frozen=True, tag="ForgetDevice"):
    """Timer: the device has been offline for its retention period."""

    device_id: str


class DisconnectDevice(Command, frozen=True, tag="DisconnectDevice"):
    """Force a device off (seed 004 `DELETE /session/{id}/device/{device_id}`)."""

    device_id: str
    reason: str = "disconnected"


class ReplaceState(Command, frozen=True, tag="ReplaceState"):
    """Full snapshot (seed 004). `version`, when given, must be the current version + 1.

    On a session that does not exist yet this creates it, as seed 004's snapshot API does.
    """

    session_id: str
    state: dict[str, Any]
    version: int | None = None
    device_id: str = ""
    app_version: str = ""
    ttl_ms: int = DEFAULT_SESSION_TTL_MS


class ApplyStateChanges(Command, frozen=True, tag="ApplyStateChanges"):
    """Incremental update (seed 004). `base_version`, when given, must equal the current one."""

    changes: dict[str, Any]
    deleted_keys: list[str] = []
    base_version: int | None = None
    device_id: str = ""


class ResolveConflict(Command, frozen=True, tag="ResolveConflict"):
    client_state: dict[str, Any]
    strategy: ConflictStrategy = ConflictStrategy.SERVER_WINS
    client_version: int = 0


class StartHandoff(Command, frozen=True, tag="StartHandoff"):
    """Issue a handoff `token` (made by the caller) carrying the current state."""

    token: str
    source_device: str
    target_device: str
    ttl_ms: int = DEFAULT_HANDOFF_TTL_MS


class AcceptHandoff(Command, frozen=True, tag="AcceptHandoff"):
    """The target device validates the token, once."""

    token: str
    device_id: str = ""


class ExpireHandoff(Command, frozen=True, tag="ExpireHandoff"):
    """Timer: the handoff token's 5 minutes are over."""

    token: str


class ReserveSimulator(Command, frozen=True, tag="ReserveSimulator"):
    """Claim the session's single simulator slot for a new simulator."""

    simulator_id: str
    initial_symbols: list[str]
    initial_cash: float = 100000.0
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS


class RecordSimulatorStatus(Command, frozen=True, tag="RecordSimulatorStatus"):
    """Mirror of the simulator actor's status, so the session's feed carries it in order."""

    simulator_id: str
    status: str
    endpoint: str = ""
    reason: str = ""


SessionCommand = (
    CreateSession
    | RefreshSession
    | EndSession
    | ExpireSession
    | ChangeConnectionQuality
    | UpdateMetadata
    | JoinDevice
    | LeaveDevice
    | TouchDevices
    | TimeOutDevice
    | DisconnectDevice
    | ForgetDevice
    | ReplaceState
    | ApplyStateChanges
    | ResolveConflict
    | StartHandoff
    | AcceptHandoff
    | ExpireHandoff
    | ReserveSimulator
    | RecordSimulatorStatus
)


# --------------------------------------------------------------------------- events


class SessionCreated(Event, frozen=True, tag="SessionCreated"):
    session_id: str
    user_id: str
    expires_at: int
    ttl_ms: int
    device_id: str = ""
    router_id: str = ""
    pod_name: str = ""
    ip_address: str = ""
    token: str = ""
    presence_timeout_ms: int = DEFAULT_PRESENCE_TIMEOUT_MS


class SessionRefreshed(Event, frozen=True, tag="SessionRefreshed"):
    expires_at: int


class SessionEnded(Event, frozen=True, tag="SessionEnded"):
    """`simulator_id` names the still-active simulator that must stop with the session."""

    reason: str = "ended"
    simulator_id: str = ""


class SessionExpired(Event, frozen=True, tag="SessionExpired"):
    simulator_id: str = ""


class ConnectionQualityChanged(Event, frozen=True, tag="ConnectionQualityChanged"):
    quality: ConnectionQuality
    rtt_ms: float = 0.0
    device_id: str = ""


class MetadataUpdated(Event, frozen=True, tag="MetadataUpdated"):
    values: dict[str, Any]


class DeviceJoined(Event, frozen=True, tag="DeviceJoined"):
    """A device came online with its first connection. Once offline, it is forgotten after
    `retention_ms` (0: kept)."""

    device_id: str
    connection_id: str
    transport: Transport = Transport.WS
    device_type: str = ""
    device_name: str = ""
    os: str = ""
    pod_name: str = ""
    ip_address: str = ""
    retention_ms: int = 0


class ConnectionOpened(Event, frozen=True, tag="ConnectionOpened"):
    """An online device opened one more connection."""

    device_id: str
    connection_id: str
    transport: Transport = Transport.WS
    pod_name: str = ""


class ConnectionClosed(Event, frozen=True, tag="ConnectionClosed"):
    """One of several connections of a device closed; the device stays online."""

    device_id: str
    connection_id: str


class DeviceLeft(Event, frozen=True, tag="DeviceLeft"):
    """A device went offline: `left` (last connection closed), `timeout`, or `disconnected`."""

    device_id: str
    reason: str = "left"


class DeviceForgotten(Event, frozen=True, tag="DeviceForgotten"):
    """An offline device is no longer one of the session's devices: its `retention` period
    passed, or it was `evicted` to make room for a new device (the session's device limit)."""

    device_id: str
    reason: str = "retention"


class DevicesSeen(Event, frozen=True, tag="DevicesSeen"):
    device_ids: list[str]


class StateReplaced(Event, frozen=True, tag="StateReplaced"):
    state: dict[str, Any]
    state_version: int
    device_id: str = ""
    app_version: str = ""


class StateChanged(Event, frozen=True, tag="StateChanged"):
    changes: dict[str, Any]
    deleted_keys: list[str]
    state_version: int
    device_id: str = ""


class ConflictResolved(Event, frozen=True, tag="ConflictResolved"):
    """The resolved state is `state`; for server_wins it is the server's, unchanged."""

    strategy: ConflictStrategy
    state: dict[str, Any]
    state_version: int
    client_version: int = 0


class HandoffStarted(Event, frozen=True, tag="HandoffStarted"):
    token: str
    source_device: str
    target_device: str
    state: dict[str, Any]
    state_version: int
    expires_at: int


class HandoffAccepted(Event, frozen=True, tag="HandoffAccepted"):
    token: str
    source_device: str
    target_device: str


class HandoffExpired(Event, frozen=True, tag="HandoffExpired"):
    token: str


class SimulatorReserved(Event, frozen=True, tag="SimulatorReserved"):
    simulator_id: str
    user_id: str
    initial_symbols: list[str]
    initial_cash: float = 100000.0
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS


class SimulatorStatusRecorded(Event, frozen=True, tag="SimulatorStatusRecorded"):
    """The simulator's status as seen by its session; STOPPED or ERROR frees the slot."""

    simulator_id: str
    status: str
    endpoint: str = ""
    reason: str = ""


SessionEvent = (
    SessionCreated
    | SessionRefreshed
    | SessionEnded
    | SessionExpired
    | ConnectionQualityChanged
    | MetadataUpdated
    | DeviceJoined
    | ConnectionOpened
    | ConnectionClosed
    | DeviceLeft
    | DevicesSeen
    | StateReplaced
    | StateChanged
    | ConflictResolved
    | HandoffStarted
    | HandoffAccepted
    | HandoffExpired
    | SimulatorReserved
    | SimulatorStatusRecorded
    | DeviceForgotten
)
