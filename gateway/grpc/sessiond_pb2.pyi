from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConflictStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVER_WINS: _ClassVar[ConflictStrategy]
    CLIENT_WINS: _ClassVar[ConflictStrategy]
    MERGE: _ClassVar[ConflictStrategy]
SERVER_WINS: ConflictStrategy
CLIENT_WINS: ConflictStrategy
MERGE: ConflictStrategy

class WriteAck(_message.Message):
    __slots__ = ("session_version", "idempotency_key", "key_generated")
    SESSION_VERSION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_GENERATED_FIELD_NUMBER: _ClassVar[int]
    session_version: int
    idempotency_key: str
    key_generated: bool
    def __init__(self, session_version: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., key_generated: _Optional[bool] = ...) -> None: ...

class StartSessionRequest(_message.Message):
    __slots__ = ("session_id", "router_id", "restart", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    router_id: str
    restart: bool
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., router_id: _Optional[str] = ..., restart: _Optional[bool] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session_id", "router_id", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    router_id: str
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., router_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class RefreshSessionRequest(_message.Message):
    __slots__ = ("session_id", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id", "min_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    min_version: int
    def __init__(self, session_id: _Optional[str] = ..., min_version: _Optional[int] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "user_id", "status", "state_json", "version", "session_version", "device_id", "app_version", "created_at", "updated_at", "expires_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    APP_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user_id: str
    status: str
    state_json: str
    version: int
    session_version: int
    device_id: str
    app_version: str
    created_at: str
    updated_at: str
    expires_at: str
    def __init__(self, session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[str] = ..., state_json: _Optional[str] = ..., version: _Optional[int] = ..., session_version: _Optional[int] = ..., device_id: _Optional[str] = ..., app_version: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., expires_at: _Optional[str] = ...) -> None: ...

class SaveSnapshotRequest(_message.Message):
    __slots__ = ("session_id", "state_json", "version", "device_id", "app_version", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    APP_VERSION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state_json: str
    version: int
    device_id: str
    app_version: str
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., state_json: _Optional[str] = ..., version: _Optional[int] = ..., device_id: _Optional[str] = ..., app_version: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ApplyChangesRequest(_message.Message):
    __slots__ = ("session_id", "changes_json", "deleted_keys", "base_version", "device_id", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_JSON_FIELD_NUMBER: _ClassVar[int]
    DELETED_KEYS_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    changes_json: str
    deleted_keys: _containers.RepeatedScalarFieldContainer[str]
    base_version: int
    device_id: str
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., changes_json: _Optional[str] = ..., deleted_keys: _Optional[_Iterable[str]] = ..., base_version: _Optional[int] = ..., device_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StateWritten(_message.Message):
    __slots__ = ("ack", "state_version")
    ACK_FIELD_NUMBER: _ClassVar[int]
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ack: WriteAck
    state_version: int
    def __init__(self, ack: _Optional[_Union[WriteAck, _Mapping]] = ..., state_version: _Optional[int] = ...) -> None: ...

class ResolveConflictRequest(_message.Message):
    __slots__ = ("session_id", "client_state_json", "strategy", "client_version", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    client_state_json: str
    strategy: ConflictStrategy
    client_version: int
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., client_state_json: _Optional[str] = ..., strategy: _Optional[_Union[ConflictStrategy, str]] = ..., client_version: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class Resolved(_message.Message):
    __slots__ = ("ack", "state_json", "state_version")
    ACK_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ack: WriteAck
    state_json: str
    state_version: int
    def __init__(self, ack: _Optional[_Union[WriteAck, _Mapping]] = ..., state_json: _Optional[str] = ..., state_version: _Optional[int] = ...) -> None: ...

class StartHandoffRequest(_message.Message):
    __slots__ = ("session_id", "source_device", "target_device", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DEVICE_FIELD_NUMBER: _ClassVar[int]
    TARGET_DEVICE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    source_device: str
    target_device: str
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., source_device: _Optional[str] = ..., target_device: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class HandoffIssued(_message.Message):
    __slots__ = ("ack", "token", "source_device", "target_device", "expires_at", "expires_in")
    ACK_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DEVICE_FIELD_NUMBER: _ClassVar[int]
    TARGET_DEVICE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    ack: WriteAck
    token: str
    source_device: str
    target_device: str
    expires_at: int
    expires_in: int
    def __init__(self, ack: _Optional[_Union[WriteAck, _Mapping]] = ..., token: _Optional[str] = ..., source_device: _Optional[str] = ..., target_device: _Optional[str] = ..., expires_at: _Optional[int] = ..., expires_in: _Optional[int] = ...) -> None: ...

class AcceptHandoffRequest(_message.Message):
    __slots__ = ("session_id", "token", "device_id", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    token: str
    device_id: str
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., token: _Optional[str] = ..., device_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class HandoffAccepted(_message.Message):
    __slots__ = ("ack", "token", "source_device", "target_device", "state_json", "state_version")
    ACK_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DEVICE_FIELD_NUMBER: _ClassVar[int]
    TARGET_DEVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ack: WriteAck
    token: str
    source_device: str
    target_device: str
    state_json: str
    state_version: int
    def __init__(self, ack: _Optional[_Union[WriteAck, _Mapping]] = ..., token: _Optional[str] = ..., source_device: _Optional[str] = ..., target_device: _Optional[str] = ..., state_json: _Optional[str] = ..., state_version: _Optional[int] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("device_id", "device_type", "device_name", "os", "status", "online", "connections", "ws_connections", "sse_connections", "pod_name", "joined_at", "last_seen", "left_reason")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    WS_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    SSE_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    JOINED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LEFT_REASON_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    device_type: str
    device_name: str
    os: str
    status: str
    online: bool
    connections: int
    ws_connections: int
    sse_connections: int
    pod_name: str
    joined_at: str
    last_seen: str
    left_reason: str
    def __init__(self, device_id: _Optional[str] = ..., device_type: _Optional[str] = ..., device_name: _Optional[str] = ..., os: _Optional[str] = ..., status: _Optional[str] = ..., online: _Optional[bool] = ..., connections: _Optional[int] = ..., ws_connections: _Optional[int] = ..., sse_connections: _Optional[int] = ..., pod_name: _Optional[str] = ..., joined_at: _Optional[str] = ..., last_seen: _Optional[str] = ..., left_reason: _Optional[str] = ...) -> None: ...

class DeviceList(_message.Message):
    __slots__ = ("session_id", "devices")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, session_id: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class DisconnectDeviceRequest(_message.Message):
    __slots__ = ("session_id", "device_id", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    device_id: str
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., device_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StartSimulatorRequest(_message.Message):
    __slots__ = ("session_id", "initial_symbols", "initial_cash", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INITIAL_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CASH_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    initial_symbols: _containers.RepeatedScalarFieldContainer[str]
    initial_cash: float
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., initial_symbols: _Optional[_Iterable[str]] = ..., initial_cash: _Optional[float] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SimulatorStarted(_message.Message):
    __slots__ = ("ack", "simulator_id", "initial_symbols", "initial_cash")
    ACK_FIELD_NUMBER: _ClassVar[int]
    SIMULATOR_ID_FIELD_NUMBER: _ClassVar[int]
    INITIAL_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CASH_FIELD_NUMBER: _ClassVar[int]
    ack: WriteAck
    simulator_id: str
    initial_symbols: _containers.RepeatedScalarFieldContainer[str]
    initial_cash: float
    def __init__(self, ack: _Optional[_Union[WriteAck, _Mapping]] = ..., simulator_id: _Optional[str] = ..., initial_symbols: _Optional[_Iterable[str]] = ..., initial_cash: _Optional[float] = ...) -> None: ...

class StopSimulatorRequest(_message.Message):
    __slots__ = ("session_id", "simulator_id", "idempotency_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SIMULATOR_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    simulator_id: str
    idempotency_key: str
    def __init__(self, session_id: _Optional[str] = ..., simulator_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SimulatorStopped(_message.Message):
    __slots__ = ("ack", "simulator_id")
    ACK_FIELD_NUMBER: _ClassVar[int]
    SIMULATOR_ID_FIELD_NUMBER: _ClassVar[int]
    ack: WriteAck
    simulator_id: str
    def __init__(self, ack: _Optional[_Union[WriteAck, _Mapping]] = ..., simulator_id: _Optional[str] = ...) -> None: ...

class GetSimulatorRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class Simulator(_message.Message):
    __slots__ = ("simulator_id", "session_id", "status", "user_id", "endpoint", "created_at", "last_active", "initial_symbols", "initial_cash")
    SIMULATOR_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CASH_FIELD_NUMBER: _ClassVar[int]
    simulator_id: str
    session_id: str
    status: str
    user_id: str
    endpoint: str
    created_at: str
    last_active: str
    initial_symbols: _containers.RepeatedScalarFieldContainer[str]
    initial_cash: float
    def __init__(self, simulator_id: _Optional[str] = ..., session_id: _Optional[str] = ..., status: _Optional[str] = ..., user_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., created_at: _Optional[str] = ..., last_active: _Optional[str] = ..., initial_symbols: _Optional[_Iterable[str]] = ..., initial_cash: _Optional[float] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("session_id", "since")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    since: int
    def __init__(self, session_id: _Optional[str] = ..., since: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("session_id", "type", "version", "timestamp", "payload_json")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    type: str
    version: int
    timestamp: int
    payload_json: str
    def __init__(self, session_id: _Optional[str] = ..., type: _Optional[str] = ..., version: _Optional[int] = ..., timestamp: _Optional[int] = ..., payload_json: _Optional[str] = ...) -> None: ...
