"""Request and response bodies of the REST API, as msgspec Structs.

They validate what enters (types, required fields, unknown fields refused on commands from
clients) and generate `/openapi.json` (msgspec.json.schema_components). Field names follow the
seeds verbatim: seed 003's camelCase `sessionId` / `routerId`, seed 004's snake_case.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from gateway.operations.access import TokenPair
from gateway.operations.reads import Device
from gateway.operations.simulators import DEFAULT_CASH, DEFAULT_SYMBOLS

__all__ = [
    "BroadcastRequest",
    "BroadcastResponse",
    "ConflictRequest",
    "ConflictResponse",
    "CreateSessionRequest",
    "CreateSessionResponse",
    "Device",
    "DevicesResponse",
    "DisconnectResponse",
    "ErrorDetailSchema",
    "ErrorSchema",
    "HandoffRequest",
    "HandoffResponse",
    "HandoffValidation",
    "HealthMetrics",
    "HealthResponse",
    "IncrementalRequest",
    "IncrementalResponse",
    "MessageResponse",
    "ReadyResponse",
    "RefreshRequest",
    "SessionEndRequest",
    "SessionRefreshRequest",
    "SessionStartRequest",
    "SessionStartResponse",
    "SimulatorInfo",
    "SnapshotRequest",
    "SnapshotResponse",
    "SnapshotWriteResponse",
    "StartSimulatorRequest",
    "TokenPair",
    "UUIDStr",
]

#: A UUID as text (validated by the handlers, which answer 400 with the field's name).
UUIDStr = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uuid"})]


class _Req(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


# ------------------------------------------------------------------ seed 000
class CreateSessionRequest(_Req):
    device_id: str = ""
    deviceId: str = ""


class CreateSessionResponse(msgspec.Struct, kw_only=True):
    session_id: str
    user_id: str
    device_id: str
    created: bool
    status: str = "ACTIVE"


class StartSimulatorRequest(_Req):
    initial_symbols: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    initial_cash: float = DEFAULT_CASH


class SimulatorInfo(msgspec.Struct, kw_only=True):
    simulator_id: str
    session_id: str
    status: str
    user_id: str = ""
    endpoint: str | None = None
    created_at: str | None = None
    last_active: str | None = None
    initial_symbols: list[str] = []
    initial_cash: float = 100000.0


# ------------------------------------------------------------------ seed 003 (verbatim)
class SessionStartRequest(_Req):
    sessionId: str
    routerId: str
    restart: bool = False


class SessionStartResponse(msgspec.Struct, kw_only=True):
    session_id: str
    router_reachable: bool
    infrastructure_ready: bool
    message: str


class SessionEndRequest(_Req):
    sessionId: str
    routerId: str


class SessionRefreshRequest(_Req):
    sessionId: str


class MessageResponse(msgspec.Struct, kw_only=True):
    message: str


# ------------------------------------------------------------------ seed 004
class SnapshotRequest(_Req):
    session_id: UUIDStr
    state_data: dict[str, Any]
    user_id: str = ""
    device_id: str = ""
    app_version: str = ""
    version: int | None = None


class SnapshotWriteResponse(msgspec.Struct, kw_only=True):
    session_id: str
    user_id: str
    version: int
    session_version: int
    device_id: str
    app_version: str
    message: str = "Snapshot saved"


class SnapshotResponse(msgspec.Struct, kw_only=True):
    session_id: str
    user_id: str
    status: str
    state_data: dict[str, Any]
    version: int
    session_version: int
    device_id: str
    app_version: str
    created_at: str | None
    updated_at: str | None
    expires_at: str | None


class IncrementalRequest(_Req):
    session_id: UUIDStr
    changes: dict[str, Any] = {}
    deleted_keys: list[str] = []
    user_id: str = ""
    device_id: str = ""
    base_version: int | None = None


class IncrementalResponse(msgspec.Struct, kw_only=True):
    session_id: str
    version: int
    session_version: int
    applied_changes: int
    deleted_keys: list[str]
    message: str = "Incremental update applied"


class ConflictRequest(_Req):
    session_id: UUIDStr
    client_state: dict[str, Any]
    client_version: int = 0
    resolution_strategy: Literal["server_wins", "client_wins", "merge"] = "server_wins"
    user_id: str = ""


class ConflictResponse(msgspec.Struct, kw_only=True):
    session_id: str
    resolution_strategy: str
    resolved_state: dict[str, Any]
    version: int
    session_version: int


class DevicesResponse(msgspec.Struct, kw_only=True):
    session_id: str
    devices: list[Device]
    count: int


class HandoffRequest(_Req):
    source_device: str
    target_device: str


class HandoffResponse(msgspec.Struct, kw_only=True):
    token: str
    session_id: str
    source_device: str
    target_device: str
    expires_at: int
    expires_in: int


class HandoffValidation(msgspec.Struct, kw_only=True):
    valid: bool
    session_id: str
    token: str
    source_device: str
    target_device: str
    state_data: dict[str, Any]
    state_version: int


class DisconnectResponse(msgspec.Struct, kw_only=True):
    session_id: str
    device_id: str
    disconnected: bool
    message: str


class BroadcastRequest(_Req):
    message: str
    type: str = "notification"


class BroadcastResponse(msgspec.Struct, kw_only=True):
    message: str
    type: str
    gateways: int
    status: str = "sent"


class RefreshRequest(_Req):
    refresh_token: str


class HealthMetrics(msgspec.Struct, kw_only=True):
    snapshot_ttl_hours: int | float  # SESSION_TTL
    multi_device_enabled: bool
    versioning_enabled: bool


class HealthResponse(msgspec.Struct, kw_only=True):
    """Seed 004's health shape; `checks` (one object per dependency, each with a `status`) is
    ours, added last."""

    status: str
    timestamp: str
    version: str
    uptime: str
    active_connections: int
    metrics: HealthMetrics
    checks: dict[str, dict[str, Any]] = {}


class ReadyResponse(msgspec.Struct, kw_only=True):
    ready: bool
    draining: bool
    checks: dict[str, str]


class ErrorDetailSchema(msgspec.Struct):
    code: str
    message: str


class ErrorSchema(msgspec.Struct):
    error: ErrorDetailSchema
