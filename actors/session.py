"""The session actor: a pure decider (no I/O, no clock, no randomness).

A session lives from `SessionCreated` until it is ended or expires. It holds the session's
devices and their connections, the shared state with its version, pending handoffs, and the
single simulator slot seed 002 allows. Time arrives in each command's `at`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec.structs import replace

from actors.decider import Decider, Routed, Timer
from events.errors import DomainError
from events.ids import simulator_actor
from events.session import (
    AcceptHandoff,
    ApplyStateChanges,
    ChangeConnectionQuality,
    ConflictResolved,
    ConflictStrategy,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionQuality,
    ConnectionQualityChanged,
    CreateSession,
    DeviceForgotten,
    DeviceJoined,
    DeviceLeft,
    DevicesSeen,
    DisconnectDevice,
    EndSession,
    ExpireHandoff,
    ExpireSession,
    ForgetDevice,
    HandoffAccepted,
    HandoffExpired,
    HandoffStarted,
    JoinDevice,
    LeaveDevice,
    MetadataUpdated,
    RecordSimulatorStatus,
    RefreshSession,
    ReplaceState,
    ReserveSimulator,
    ResolveConflict,
    SessionCreated,
    SessionEnded,
    SessionExpired,
    SessionRefreshed,
    SimulatorReserved,
    SimulatorStatusRecorded,
    StartHandoff,
    StateChanged,
    StateReplaced,
    TimeOutDevice,
    TouchDevices,
    Transport,
    UpdateMetadata,
    ValidateSession,
)
from events.simulator import ACTIVE_STATUSES, CreateSimulator, SimulatorStatus, StopSimulator

__all__ = [
    "Active",
    "Device",
    "Ended",
    "Handoff",
    "NotStarted",
    "SessionState",
    "SimulatorSlot",
    "deadlines",
    "decide",
    "decider",
    "evolve",
    "is_terminal",
    "react",
]


# --------------------------------------------------------------------------- state


class Device(msgspec.Struct, frozen=True):
    """A device of the session. It is online while it holds at least one connection; once
    offline it is forgotten `retention_ms` after it was last seen (0: kept)."""

    device_id: str
    device_type: str = ""
    device_name: str = ""
    os: str = ""
    connections: dict[str, Transport] = {}
    joined_at: int = 0
    last_seen: int = 0
    pod_name: str = ""
    ip_address: str = ""
    retention_ms: int = 0

    @property
    def online(self) -> bool:
        return bool(self.connections)

    @property
    def forget_at(self) -> int | None:
        """When an offline device is forgotten (None: online, or kept)."""
        if self.connections or not self.retention_ms:
            return None
        return self.last_seen + self.retention_ms


class Handoff(msgspec.Struct, frozen=True):
    token: str
    source_device: str
    target_device: str
    state: dict[str, Any]
    state_version: int
    expires_at: int
    accepted: bool = False


class SimulatorSlot(msgspec.Struct, frozen=True):
    """The session's simulator as last reported; it holds the slot while its status is active."""

    simulator_id: str
    status: str = SimulatorStatus.CREATING.value
    endpoint: str = ""
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES  # a StrEnum set: plain strings match


class NotStarted(msgspec.Struct, frozen=True, tag="NotStarted"):
    pass


class Active(msgspec.Struct, frozen=True, tag="Active"):
    session_id: str
    user_id: str
    created_at: int
    last_active: int
    expires_at: int
    ttl_ms: int
    presence_timeout_ms: int
    device_id: str = ""
    router_id: str = ""
    pod_name: str = ""
    ip_address: str = ""
    token: str = ""
    quality: ConnectionQuality = ConnectionQuality.GOOD
    metadata: dict[str, Any] = {}
    devices: dict[str, Device] = {}
    state: dict[str, Any] = {}
    state_version: int = 0
    handoffs: dict[str, Handoff] = {}
    simulator: SimulatorSlot | None = None


class Ended(msgspec.Struct, frozen=True, tag="Ended"):
    """Ended (`reason` ended/restarted/...) or expired (`reason` == "expired")."""

    session_id: str
    user_id: str
    ended_at: int
    reason: str
    simulator: SimulatorSlot | None = None


SessionState = NotStarted | Active | Ended


# --------------------------------------------------------------------------- decide


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DomainError("INVALID_ARGUMENT", message)


def _authorize(state: Active | Ended, user_id: str) -> None:
    """A user reaches only their own sessions; "" is the system (timers, reactors, admins)."""
    if user_id and user_id != state.user_id:
        raise DomainError("SESSION_FORBIDDEN", "this session belongs to another user")


def _live(state: SessionState, user_id: str, at: int) -> Active:
    """The session, if it is live and `user_id` may use it; otherwise the reason why not."""
    match state:
        case NotStarted():
            raise DomainError("SESSION_NOT_FOUND", "no such session")
        case Ended(reason="expired"):
            _authorize(state, user_id)
            raise DomainError("SESSION_EXPIRED", "the session has expired")
        case Ended():
            _authorize(state, user_id)
            raise DomainError("SESSION_ENDED", "the session has ended")
        case Active():
            _authorize(state, user_id)
            if at >= state.expires_at:
                raise DomainError("SESSION_EXPIRED", "the session has expired")
            return state
    raise AssertionError(state)  # pragma: no cover


def _created(command: CreateSession | ReplaceState, ttl_ms: int) -> SessionCreated:
    _require(bool(command.session_id), "session_id is required")
    _require(bool(command.user_id), "user_id is required to create a session")
    _require(ttl_ms > 0, "ttl_ms must be positive")
    fields: dict[str, Any] = {}
    if isinstance(command, CreateSession):
        _require(command.presence_timeout_ms > 0, "presence_timeout_ms must be positive")
        fields = {
            "device_id": command.device_id,
            "router_id": command.router_id,
            "pod_name": command.pod_name,
            "ip_address": command.ip_address,
            "token": command.token,
            "presence_timeout_ms": command.presence_timeout_ms,
        }
    elif command.device_id:
        fields = {"device_id": command.device_id}
    return SessionCreated(
        at=command.at,
        session_id=command.session_id,
        user_id=command.user_id,
        expires_at=command.at + ttl_ms,
        ttl_ms=ttl_ms,
        **fields,
    )


def _active_simulator(state: Active) -> str:
    """The simulator that must stop when this session ends, if any."""
    slot = state.simulator
    return slot.simulator_id if slot is not None and slot.active else ""


def _create(command: CreateSession, state: SessionState) -> list[Any]:
    match state:
        case NotStarted():
            return [_created(command, command.ttl_ms)]
        case Ended():
            _authorize(state, command.user_id)
            return [_created(command, command.ttl_ms)]
        case Active():
            _authorize(state, command.user_id)
            if command.at >= state.expires_at:
                return [
                    SessionExpired(at=command.at, simulator_id=_active_simulator(state)),
                    _created(command, command.ttl_ms),
                ]
            if command.restart:
                return [
                    SessionEnded(
                        at=command.at, reason="restarted", simulator_id=_active_simulator(state)
                    ),
                    _created(command, command.ttl_ms),
                ]
            return []
    raise AssertionError(state)  # pragma: no cover


def _check_connections(command: JoinDevice, state: Active) -> None:
    """A new connection is refused once the session holds `max_connections` (every one of
    them gets every change of the session: fan-out grows with their number)."""
    cap = command.max_connections
    if cap and sum(len(d.connections) for d in state.devices.values()) >= cap:
        raise DomainError(
            "TOO_MANY_CONNECTIONS", f"this session already has {cap} open connections"
        )


def _make_room(command: JoinDevice, state: Active) -> list[Any]:
    """A new device beyond `max_devices`: forget the least recently seen offline devices, or
    refuse it when every device is online."""
    cap = command.max_devices
    excess = len(state.devices) + 1 - cap
    if not cap or excess <= 0:
        return []
    offline = sorted(
        (d for d in state.devices.values() if not d.online),
        key=lambda d: (d.last_seen, d.device_id),
    )
    if len(offline) < excess:
        raise DomainError("TOO_MANY_DEVICES", f"this session already has {cap} devices online")
    return [
        DeviceForgotten(at=command.at, device_id=d.device_id, reason="evicted")
        for d in offline[:excess]
    ]


def _join(command: JoinDevice, state: Active) -> list[Any]:
    _require(bool(command.device_id), "device_id is required")
    _require(bool(command.connection_id), "connection_id is required")
    device = state.devices.get(command.device_id)
    if device is not None and command.connection_id in device.connections:
        return []
    _check_connections(command, state)
    if device is not None and device.online:
        return [
            ConnectionOpened(
                at=command.at,
                device_id=command.device_id,
                connection_id=command.connection_id,
                transport=command.transport,
                pod_name=command.pod_name,
            )
        ]
    return [
        *(_make_room(command, state) if device is None else ()),
        DeviceJoined(
            at=command.at,
            device_id=command.device_id,
            connection_id=command.connection_id,
            transport=command.transport,
            device_type=command.device_type,
            device_name=command.device_name,
            os=command.os,
            pod_name=command.pod_name,
            ip_address=command.ip_address,
            retention_ms=command.retention_ms,
        ),
    ]


def _leave(command: LeaveDevice, state: SessionState) -> list[Any]:
    """Leaving never fails: the gateway reports closed connections whatever the session did."""
    if not isinstance(state, Active):
        return []
    device = state.devices.get(command.device_id)
    if device is None or command.connection_id not in device.connections:
        return []
    if len(device.connections) == 1:
        return [DeviceLeft(at=command.at, device_id=command.device_id, reason="left")]
    return [
        ConnectionClosed(
            at=command.at, device_id=command.device_id, connection_id=command.connection_id
        )
    ]


def _replace_state(command: ReplaceState, state: SessionState) -> list[Any]:
    created: list[Any] = []
    if isinstance(state, NotStarted):
        created = [_created(command, command.ttl_ms)]
        current = 0
    else:
        current = _live(state, command.user_id, command.at).state_version
    if command.version is not None and command.version != current + 1:
        raise DomainError(
            "VERSION_CONFLICT",
            f"snapshot version {command.version} does not follow the current version {current}",
            current_version=current,
        )
    return [
        *created,
        StateReplaced(
            at=command.at,
            state=command.state,
            state_version=current + 1,
            device_id=command.device_id,
            app_version=command.app_version,
        ),
    ]


def _apply_changes(command: ApplyStateChanges, state: Active) -> list[Any]:
    if command.base_version is not None and command.base_version != state.state_version:
        raise DomainError(
            "VERSION_CONFLICT",
            f"base_version {command.base_version} is not the current version {state.state_version}",
            current_version=state.state_version,
        )
    if not command.changes and not command.deleted_keys:
        return []
    return [
        StateChanged(
            at=command.at,
            changes=command.changes,
            deleted_keys=command.deleted_keys,
            state_version=state.state_version + 1,
            device_id=command.device_id,
        )
    ]


def _resolve(command: ResolveConflict, state: Active) -> list[Any]:
    match command.strategy:
        case ConflictStrategy.SERVER_WINS:
            resolved, version = state.state, state.state_version
        case ConflictStrategy.CLIENT_WINS:
            resolved, version = command.client_state, state.state_version + 1
        case ConflictStrategy.MERGE:
            resolved = {**state.state, **command.client_state}
            version = state.state_version + 1
    return [
        ConflictResolved(
            at=command.at,
            strategy=command.strategy,
            state=resolved,
            state_version=version,
            client_version=command.client_version,
        )
    ]


def _start_handoff(command: StartHandoff, state: Active) -> list[Any]:
    _require(bool(command.token), "token is required")
    _require(bool(command.source_device), "source_device is required")
    _require(bool(command.target_device), "target_device is required")
    _require(command.source_device != command.target_device, "source and target must differ")
    _require(command.ttl_ms > 0, "ttl_ms must be positive")
    if command.token in state.handoffs:
        return []
    return [
        HandoffStarted(
            at=command.at,
            token=command.token,
            source_device=command.source_device,
            target_device=command.target_device,
            state=state.state,
            state_version=state.state_version,
            expires_at=command.at + command.ttl_ms,
        )
    ]


def _accept_handoff(command: AcceptHandoff, state: Active) -> list[Any]:
    handoff = state.handoffs.get(command.token)
    if handoff is None:
        raise DomainError("HANDOFF_NOT_FOUND", "unknown or expired handoff token")
    if command.at >= handoff.expires_at:
        raise DomainError("HANDOFF_EXPIRED", "the handoff token has expired")
    if handoff.accepted:
        raise DomainError("HANDOFF_ALREADY_USED", "the handoff token was already used")
    if command.device_id and command.device_id != handoff.target_device:
        raise DomainError("HANDOFF_WRONG_DEVICE", "this handoff is for another device")
    return [
        HandoffAccepted(
            at=command.at,
            token=handoff.token,
            source_device=handoff.source_device,
            target_device=handoff.target_device,
        )
    ]


def _reserve_simulator(command: ReserveSimulator, state: Active) -> list[Any]:
    if state.simulator is not None and state.simulator.active:
        raise DomainError(
            "SIMULATOR_ALREADY_ACTIVE",
            f"simulator {state.simulator.simulator_id} is already active for this session",
            simulator_id=state.simulator.simulator_id,
        )
    _require(bool(command.simulator_id), "simulator_id is required")
    _require(bool(command.initial_symbols), "initial_symbols must name at least one symbol")
    _require(all(s.strip() for s in command.initial_symbols), "symbols must be non-empty")
    _require(command.initial_cash > 0, "initial_cash must be positive")
    return [
        SimulatorReserved(
            at=command.at,
            simulator_id=command.simulator_id,
            user_id=state.user_id,
            initial_symbols=command.initial_symbols,
            initial_cash=command.initial_cash,
            heartbeat_timeout_ms=command.heartbeat_timeout_ms,
            idle_timeout_ms=command.idle_timeout_ms,
        )
    ]


def _record_simulator(command: RecordSimulatorStatus, state: SessionState) -> list[Any]:
    """Ended sessions keep listening: their simulator still holds the slot until it stops."""
    if isinstance(state, NotStarted) or state.simulator is None:
        return []
    slot = state.simulator
    if slot.simulator_id != command.simulator_id:
        return []  # a report about an older simulator of this session
    if (slot.status, slot.endpoint, slot.reason) == (
        command.status,
        command.endpoint or slot.endpoint,
        command.reason,
    ):
        return []
    return [
        SimulatorStatusRecorded(
            at=command.at,
            simulator_id=command.simulator_id,
            status=command.status,
            endpoint=command.endpoint or slot.endpoint,
            reason=command.reason,
        )
    ]


def decide(command: Any, state: SessionState) -> list[Any]:
    """The events `command` causes in `state`, or a `DomainError` saying why it is refused."""
    match command:
        case CreateSession():
            return _create(command, state)
        case ReplaceState():
            return _replace_state(command, state)
        case LeaveDevice():
            return _leave(command, state)
        case ExpireSession():
            if isinstance(state, Active) and command.at >= state.expires_at:
                return [SessionExpired(at=command.at, simulator_id=_active_simulator(state))]
            return []
        case TimeOutDevice():
            if not isinstance(state, Active):
                return []
            device = state.devices.get(command.device_id)
            if device is None or not device.online:
                return []
            if command.at < device.last_seen + state.presence_timeout_ms:
                return []
            return [DeviceLeft(at=command.at, device_id=command.device_id, reason="timeout")]
        case ForgetDevice():
            if not isinstance(state, Active):
                return []
            device = state.devices.get(command.device_id)
            due = device.forget_at if device is not None else None
            if due is None or command.at < due:
                return []
            return [DeviceForgotten(at=command.at, device_id=command.device_id)]
        case ExpireHandoff():
            if isinstance(state, Active) and command.token in state.handoffs:
                if command.at >= state.handoffs[command.token].expires_at:
                    return [HandoffExpired(at=command.at, token=command.token)]
            return []
        case TouchDevices():
            if not isinstance(state, Active):
                return []
            seen = [d for d in command.device_ids if d in state.devices and state.devices[d].online]
            return [DevicesSeen(at=command.at, device_ids=seen)] if seen else []
        case RecordSimulatorStatus():
            return _record_simulator(command, state)
        case EndSession():
            if isinstance(state, NotStarted):
                raise DomainError("SESSION_NOT_FOUND", "no such session")
            _authorize(state, command.user_id)
            if isinstance(state, Ended):
                return []
            return [
                SessionEnded(
                    at=command.at,
                    reason=command.reason or "ended",
                    simulator_id=_active_simulator(state),
                )
            ]
    live = _live(state, command.user_id, command.at)
    match command:
        case ValidateSession():
            return []
        case RefreshSession():
            return [SessionRefreshed(at=command.at, expires_at=command.at + live.ttl_ms)]
        case ChangeConnectionQuality():
            if command.quality == live.quality:
                return []
            return [
                ConnectionQualityChanged(
                    at=command.at,
                    quality=command.quality,
                    rtt_ms=command.rtt_ms,
                    device_id=command.device_id,
                )
            ]
        case UpdateMetadata():
            return [MetadataUpdated(at=command.at, values=command.values)] if command.values else []
        case JoinDevice():
            return _join(command, live)
        case DisconnectDevice():
            device = live.devices.get(command.device_id)
            if device is None:
                raise DomainError("DEVICE_NOT_FOUND", f"device {command.device_id!r} is unknown")
            if not device.online:
                return []
            return [DeviceLeft(at=command.at, device_id=command.device_id, reason=command.reason)]
        case ApplyStateChanges():
            return _apply_changes(command, live)
        case ResolveConflict():
            return _resolve(command, live)
        case StartHandoff():
            return _start_handoff(command, live)
        case AcceptHandoff():
            return _accept_handoff(command, live)
        case ReserveSimulator():
            return _reserve_simulator(command, live)
    raise DomainError(
        "INVALID_COMMAND", f"a session does not accept {type(command).__name__} commands"
    )


# --------------------------------------------------------------------------- evolve


def _with_device(state: Active, device: Device) -> Active:
    return replace(state, devices={**state.devices, device.device_id: device})


def evolve(state: SessionState, event: Any) -> SessionState:
    """The state after `event`. Never mutates `state`."""
    match event:
        case SessionCreated():
            # a simulator of the previous incarnation that is still stopping keeps the slot
            previous = None if isinstance(state, NotStarted) else state.simulator
            return Active(
                simulator=previous if previous is not None and previous.active else None,
                session_id=event.session_id,
                user_id=event.user_id,
                created_at=event.at,
                last_active=event.at,
                expires_at=event.expires_at,
                ttl_ms=event.ttl_ms,
                presence_timeout_ms=event.presence_timeout_ms,
                device_id=event.device_id,
                router_id=event.router_id,
                pod_name=event.pod_name,
                ip_address=event.ip_address,
                token=event.token,
            )
        case SessionEnded() | SessionExpired() if isinstance(state, Active):
            reason = "expired" if isinstance(event, SessionExpired) else event.reason
            return Ended(
                session_id=state.session_id,
                user_id=state.user_id,
                ended_at=event.at,
                reason=reason,
                simulator=state.simulator,
            )
    if isinstance(event, SimulatorStatusRecorded) and not isinstance(state, NotStarted):
        slot = SimulatorSlot(
            simulator_id=event.simulator_id,
            status=event.status,
            endpoint=event.endpoint,
            reason=event.reason,
        )
        return replace(state, simulator=slot)
    if not isinstance(state, Active):
        return state
    match event:
        case SessionRefreshed():
            return replace(state, last_active=event.at, expires_at=event.expires_at)
        case ConnectionQualityChanged():
            return replace(state, quality=event.quality)
        case MetadataUpdated():
            merged = {**state.metadata, **event.values}
            return replace(state, metadata={k: v for k, v in merged.items() if v is not None})
        case DeviceJoined():
            old = state.devices.get(event.device_id)
            return _with_device(
                state,
                Device(
                    device_id=event.device_id,
                    device_type=event.device_type or (old.device_type if old else ""),
                    device_name=event.device_name or (old.device_name if old else ""),
                    os=event.os or (old.os if old else ""),
                    connections={event.connection_id: event.transport},
                    joined_at=event.at,
                    last_seen=event.at,
                    pod_name=event.pod_name,
                    ip_address=event.ip_address,
                    retention_ms=event.retention_ms,
                ),
            )
        case DeviceForgotten():
            return replace(
                state, devices={k: v for k, v in state.devices.items() if k != event.device_id}
            )
        case ConnectionOpened():
            device = state.devices[event.device_id]
            connections = {**device.connections, event.connection_id: event.transport}
            return _with_device(state, replace(device, connections=connections, last_seen=event.at))
        case ConnectionClosed():
            device = state.devices[event.device_id]
            connections = {k: v for k, v in device.connections.items() if k != event.connection_id}
            return _with_device(state, replace(device, connections=connections))
        case DeviceLeft():
            device = state.devices[event.device_id]
            return _with_device(state, replace(device, connections={}, last_seen=event.at))
        case DevicesSeen():
            devices = dict(state.devices)
            for device_id in event.device_ids:
                devices[device_id] = replace(devices[device_id], last_seen=event.at)
            return replace(state, devices=devices)
        case StateReplaced():
            return replace(state, state=event.state, state_version=event.state_version)
        case StateChanged():
            new_state = {k: v for k, v in state.state.items() if k not in event.deleted_keys}
            new_state.update(event.changes)
            return replace(state, state=new_state, state_version=event.state_version)
        case ConflictResolved():
            return replace(state, state=event.state, state_version=event.state_version)
        case HandoffStarted():
            handoff = Handoff(
                token=event.token,
                source_device=event.source_device,
                target_device=event.target_device,
                state=event.state,
                state_version=event.state_version,
                expires_at=event.expires_at,
            )
            return replace(state, handoffs={**state.handoffs, event.token: handoff})
        case HandoffAccepted():
            accepted = replace(state.handoffs[event.token], accepted=True)
            return replace(state, handoffs={**state.handoffs, event.token: accepted})
        case HandoffExpired():
            return replace(
                state, handoffs={k: v for k, v in state.handoffs.items() if k != event.token}
            )
        case SimulatorReserved():
            return replace(state, simulator=SimulatorSlot(simulator_id=event.simulator_id))
    return state


# --------------------------------------------------------------------------- timers, policy


def deadlines(state: SessionState) -> list[Timer]:
    """Expiry, each online device's presence timeout, each offline device's retention, each
    handoff token's expiry."""
    if not isinstance(state, Active):
        return []
    timers = [Timer("expiry", state.expires_at, ExpireSession(at=state.expires_at))]
    for device in state.devices.values():
        if device.online:
            due = device.last_seen + state.presence_timeout_ms
            timers.append(
                Timer(
                    f"presence:{device.device_id}",
                    due,
                    TimeOutDevice(at=due, device_id=device.device_id),
                )
            )
        elif (forget_at := device.forget_at) is not None:
            timers.append(
                Timer(
                    f"forget:{device.device_id}",
                    forget_at,
                    ForgetDevice(at=forget_at, device_id=device.device_id),
                )
            )
    for handoff in state.handoffs.values():
        timers.append(
            Timer(
                f"handoff:{handoff.token}",
                handoff.expires_at,
                ExpireHandoff(at=handoff.expires_at, token=handoff.token),
            )
        )
    return timers


def is_terminal(state: SessionState) -> bool:
    return isinstance(state, Ended)


def react(state: SessionState, event: Any) -> list[Routed]:
    """Policy: a granted slot creates the simulator; an ended session stops its simulator."""
    match event:
        case SimulatorReserved() if isinstance(state, Active):
            return [
                Routed(
                    simulator_actor(event.simulator_id),
                    CreateSimulator(
                        at=event.at,
                        simulator_id=event.simulator_id,
                        session_id=state.session_id,
                        owner_id=event.user_id,
                        initial_symbols=event.initial_symbols,
                        initial_cash=event.initial_cash,
                        heartbeat_timeout_ms=event.heartbeat_timeout_ms,
                        idle_timeout_ms=event.idle_timeout_ms,
                    ),
                )
            ]
        case SessionEnded() | SessionExpired() if event.simulator_id:
            reason = "session expired" if isinstance(event, SessionExpired) else "session ended"
            stop = StopSimulator(at=event.at, reason=reason)
            return [Routed(simulator_actor(event.simulator_id), stop)]
    return []


decider: Decider[SessionState] = Decider(
    kind="session",
    initial_state=NotStarted(),
    decide=decide,
    evolve=evolve,
    is_terminal=is_terminal,
    deadlines=deadlines,
    react=react,
)
