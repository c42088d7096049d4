"""The session actor: a pure decider (no I/O, no clock, no randomness).

A session lives from `SessionCreated` until it is ended or expires. It holds the session's
devices and their connections, the shared state with its version, pending handoffs, and the
single simulator slot seed 002 allows. Time arrives in each command's `at`.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

import msgspec
from msgspec.structs import replace

from actors.decider import Decider, Routed, Timer
from events.base import Command
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
)
from events.simulator import ACTIVE_STATUSES, CreateSimulator, SimulatorStatus, StopSimulator

__all__ = [
    "REFRESH_EVERY_MS",
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
    "result",
]

V = TypeVar("V")


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


#: Commands that are activity of the session's users: seed 002, "update session activity:
#: prevents expiration for active users". State writes, device joins and the gateway's presence
#: reports (its heartbeats, coalesced per touch interval) move the expiry one TTL past now.
_ACTIVITY = (
    JoinDevice,
    TouchDevices,
    ReplaceState,
    ApplyStateChanges,
    ResolveConflict,
    StartHandoff,
    AcceptHandoff,
    UpdateMetadata,
)

#: Activity moves the expiry at most this often (then by at least this much), so it costs no
#: event per write or heartbeat: one `SessionRefreshed` a minute at most for a busy session.
REFRESH_EVERY_MS = 60_000


def decide(command: Any, state: SessionState) -> list[Any]:
    """The events `command` causes in `state`, or a `DomainError` saying why it is refused.

    Each handler checks its guards first. A client's request passes `_live` (an unknown, ended,
    expired or foreign session is refused alike); timers and the gateway's reports never fail.
    Activity (`_ACTIVITY`) that changed something also pushes the expiry (`_kept_alive`)."""
    events = _decide(command, state)
    if events and isinstance(command, _ACTIVITY):
        return _kept_alive(command, state, events)
    return events


def _kept_alive(command: Any, state: SessionState, events: list[Any]) -> list[Any]:
    """`events`, and a `SessionRefreshed` to one TTL past now when that moves the expiry by
    `REFRESH_EVERY_MS` at least (a quarter of the TTL for TTLs under four minutes): the
    refreshes of a session in constant use are coalesced to about one a minute."""
    after = state
    for event in events:
        after = evolve(after, event)
    if not isinstance(after, Active):
        return events
    due = command.at + after.ttl_ms
    if due - after.expires_at < min(REFRESH_EVERY_MS, after.ttl_ms // 4):
        return events
    return [*events, SessionRefreshed(at=command.at, expires_at=due)]


def _decide(command: Any, state: SessionState) -> list[Any]:
    match command:
        case CreateSession():
            return _create(command, state)
        case EndSession():
            return _end(command, state)
        case RefreshSession():
            return _refresh(command, state)
        case ExpireSession():
            return _expire(command, state)
        case ChangeConnectionQuality():
            return _change_quality(command, state)
        case UpdateMetadata():
            return _update_metadata(command, state)
        case JoinDevice():
            return _join(command, state)
        case LeaveDevice():
            return _leave(command, state)
        case DisconnectDevice():
            return _disconnect(command, state)
        case TouchDevices():
            return _touch(command, state)
        case TimeOutDevice():
            return _time_out_device(command, state)
        case ForgetDevice():
            return _forget_device(command, state)
        case ReplaceState():
            return _replace_state(command, state)
        case ApplyStateChanges():
            return _apply_changes(command, state)
        case ResolveConflict():
            return _resolve(command, state)
        case StartHandoff():
            return _start_handoff(command, state)
        case AcceptHandoff():
            return _accept_handoff(command, state)
        case ExpireHandoff():
            return _expire_handoff(command, state)
        case ReserveSimulator():
            return _reserve_simulator(command, state)
        case RecordSimulatorStatus():
            return _record_simulator(command, state)
        case _:
            _refuse(command, state)


# ------------------------------------------------------------- decide: guards


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DomainError("INVALID_ARGUMENT", message)


def _authorize(state: Active | Ended, command: Command) -> None:
    """A user reaches only their own sessions, an admin every one; "" is the system (timers,
    reactors). This is the one authorization of a write: the edge does not check first."""
    if command.user_id and command.user_id != state.user_id and not command.admin:
        raise DomainError("SESSION_FORBIDDEN", "this session belongs to another user")


def _live(state: SessionState, command: Command) -> Active:
    """The session, if it is live and the command's user may use it; otherwise the reason why
    not. Expiry is checked against the command's time, so a session past `expires_at` is
    refused even before its expiry timer fires."""
    match state:
        case NotStarted():
            raise DomainError("SESSION_NOT_FOUND", "no such session")
        case Ended(reason="expired"):
            _authorize(state, command)
            raise DomainError("SESSION_EXPIRED", "the session has expired")
        case Ended():
            _authorize(state, command)
            raise DomainError("SESSION_ENDED", "the session has ended")
        case Active():
            _authorize(state, command)
            if command.at >= state.expires_at:
                raise DomainError("SESSION_EXPIRED", "the session has expired")
            return state
    raise AssertionError(state)  # pragma: no cover


def _refuse(command: Command, state: SessionState) -> NoReturn:
    """A command of another actor kind. The liveness guard runs first, as for every client
    request, so an unknown session answers SESSION_NOT_FOUND whatever was sent to it."""
    _live(state, command)
    raise DomainError(
        "INVALID_COMMAND", f"a session does not accept {type(command).__name__} commands"
    )


# ------------------------------------------------------------- decide: lifecycle


def _create(command: CreateSession, state: SessionState) -> list[Any]:
    """Creating a live session again is an idempotent no-op (a retried login), unless the
    client asks for a fresh one; a session past its expiry is expired first, so that its
    projection and its simulator see the old incarnation end before the new one starts."""
    match state:
        case NotStarted():
            return [_created(command)]
        case Ended():
            _authorize(state, command)
            return [_created(command)]
        case Active():
            _authorize(state, command)
            if command.at >= state.expires_at:
                return [
                    SessionExpired(at=command.at, simulator_id=_active_simulator(state)),
                    _created(command),
                ]
            if command.restart:
                return [
                    SessionEnded(
                        at=command.at, reason="restarted", simulator_id=_active_simulator(state)
                    ),
                    _created(command),
                ]
            return []
    raise AssertionError(state)  # pragma: no cover


def _require_new_session(command: CreateSession | ReplaceState) -> None:
    """What every session is born with, whichever command starts it."""
    _require(bool(command.session_id), "session_id is required")
    _require(bool(command.user_id), "user_id is required to create a session")
    _require(command.ttl_ms > 0, "ttl_ms must be positive")


def _created(command: CreateSession) -> SessionCreated:
    """A session started by a login: it records where the client connected from."""
    _require_new_session(command)
    _require(command.presence_timeout_ms > 0, "presence_timeout_ms must be positive")
    return SessionCreated(
        at=command.at,
        session_id=command.session_id,
        user_id=command.user_id,
        expires_at=command.at + command.ttl_ms,
        ttl_ms=command.ttl_ms,
        device_id=command.device_id,
        router_id=command.router_id,
        pod_name=command.pod_name,
        ip_address=command.ip_address,
        token=command.token,
        presence_timeout_ms=command.presence_timeout_ms,
    )


def _created_by_snapshot(command: ReplaceState) -> SessionCreated:
    """A session started by a state snapshot (seed 004: `POST /session/snapshot` creates or
    updates): only the device that sent it is known."""
    _require_new_session(command)
    return SessionCreated(
        at=command.at,
        session_id=command.session_id,
        user_id=command.user_id,
        expires_at=command.at + command.ttl_ms,
        ttl_ms=command.ttl_ms,
        device_id=command.device_id,
    )


def _active_simulator(state: Active) -> str:
    """The simulator that must stop when this session ends, if any."""
    slot = state.simulator
    return slot.simulator_id if slot is not None and slot.active else ""


def _end(command: EndSession, state: SessionState) -> list[Any]:
    """Ending an ended session is a no-op, so that a retried or raced end never fails; ending
    one that never existed is the caller's mistake."""
    if isinstance(state, NotStarted):
        raise DomainError("SESSION_NOT_FOUND", "no such session")
    _authorize(state, command)
    if isinstance(state, Ended):
        return []
    if command.router_id and state.router_id and command.router_id != state.router_id:
        raise DomainError("ROUTER_MISMATCH", f"the session was started on router {state.router_id}")
    return [
        SessionEnded(
            at=command.at, reason=command.reason or "ended", simulator_id=_active_simulator(state)
        )
    ]


def _refresh(command: RefreshSession, state: SessionState) -> list[Any]:
    """Activity pushes the expiry one whole TTL past now."""
    live = _live(state, command)
    return [SessionRefreshed(at=command.at, expires_at=command.at + live.ttl_ms)]


def _expire(command: ExpireSession, state: SessionState) -> list[Any]:
    """The expiry timer: a no-op when a refresh moved the expiry past it or the session ended."""
    if isinstance(state, Active) and command.at >= state.expires_at:
        return [SessionExpired(at=command.at, simulator_id=_active_simulator(state))]
    return []


def _change_quality(command: ChangeConnectionQuality, state: SessionState) -> list[Any]:
    """Recorded only when the quality changes, so heartbeats do not flood the log."""
    live = _live(state, command)
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


def _update_metadata(command: UpdateMetadata, state: SessionState) -> list[Any]:
    """A merge (a None value deletes its key, in `evolve`); an empty one records nothing."""
    _live(state, command)
    return [MetadataUpdated(at=command.at, values=command.values)] if command.values else []


# ------------------------------------------------------------- decide: devices


def _join(command: JoinDevice, state: SessionState) -> list[Any]:
    """A device's first connection makes it join (making room for a new device), later ones
    open more connections; a connection already known is a retry."""
    live = _live(state, command)
    _require(bool(command.device_id), "device_id is required")
    _require(bool(command.connection_id), "connection_id is required")
    device = live.devices.get(command.device_id)
    if device is not None and command.connection_id in device.connections:
        return []
    _check_connections(command, live)
    if device is not None and device.online:
        return [_connection_opened(command)]
    room = _make_room(command, live) if device is None else []
    return [*room, _device_joined(command)]


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


def _connection_opened(command: JoinDevice) -> ConnectionOpened:
    return ConnectionOpened(
        at=command.at,
        device_id=command.device_id,
        connection_id=command.connection_id,
        transport=command.transport,
        pod_name=command.pod_name,
    )


def _device_joined(command: JoinDevice) -> DeviceJoined:
    return DeviceJoined(
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
    )


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


def _disconnect(command: DisconnectDevice, state: SessionState) -> list[Any]:
    """A forced disconnect names a device the caller must know; one already offline is a
    no-op, so a repeated disconnect does not fail."""
    live = _live(state, command)
    device = live.devices.get(command.device_id)
    if device is None:
        raise DomainError("DEVICE_NOT_FOUND", f"device {command.device_id!r} is unknown")
    if not device.online:
        return []
    return [DeviceLeft(at=command.at, device_id=command.device_id, reason=command.reason)]


def _touch(command: TouchDevices, state: SessionState) -> list[Any]:
    """The gateway's periodic presence report: it races with leaves, so only the devices still
    online are seen, and a report about a gone session is no error."""
    if not isinstance(state, Active):
        return []
    seen = [d for d in command.device_ids if d in state.devices and state.devices[d].online]
    return [DevicesSeen(at=command.at, device_ids=seen)] if seen else []


def _time_out_device(command: TimeOutDevice, state: SessionState) -> list[Any]:
    """The presence timer: a no-op when the device was seen since it was set, or is gone."""
    if not isinstance(state, Active):
        return []
    device = state.devices.get(command.device_id)
    if device is None or not device.online:
        return []
    if command.at < device.last_seen + state.presence_timeout_ms:
        return []
    return [DeviceLeft(at=command.at, device_id=command.device_id, reason="timeout")]


def _forget_device(command: ForgetDevice, state: SessionState) -> list[Any]:
    """The retention timer: a no-op when the device came back online or is kept for good."""
    if not isinstance(state, Active):
        return []
    device = state.devices.get(command.device_id)
    due = device.forget_at if device is not None else None
    if due is None or command.at < due:
        return []
    return [DeviceForgotten(at=command.at, device_id=command.device_id)]


# ------------------------------------------------------------- decide: shared state


def _replace_state(command: ReplaceState, state: SessionState) -> list[Any]:
    """A snapshot of a session the server does not know yet starts it (seed 004's snapshot
    endpoint creates or updates)."""
    if isinstance(state, NotStarted):
        return [_created_by_snapshot(command), _state_replaced(command, 0)]
    return [_state_replaced(command, _live(state, command).state_version)]


def _state_replaced(command: ReplaceState, current: int) -> StateReplaced:
    """The snapshot becomes the next version; a client that names its version must name that
    one, or it would overwrite a change it has not seen."""
    if command.version is not None and command.version != current + 1:
        raise DomainError(
            "VERSION_CONFLICT",
            f"snapshot version {command.version} does not follow the current version {current}",
            current_version=current,
        )
    return StateReplaced(
        at=command.at,
        state=command.state,
        state_version=current + 1,
        device_id=command.device_id,
        app_version=command.app_version,
    )


def _apply_changes(command: ApplyStateChanges, state: SessionState) -> list[Any]:
    """Changes on a stated base version are refused if it is not the current one (the client
    resolves the conflict); without one, the last writer wins."""
    live = _live(state, command)
    if command.base_version is not None and command.base_version != live.state_version:
        raise DomainError(
            "VERSION_CONFLICT",
            f"base_version {command.base_version} is not the current version {live.state_version}",
            current_version=live.state_version,
        )
    if not command.changes and not command.deleted_keys:
        return []
    return [
        StateChanged(
            at=command.at,
            changes=command.changes,
            deleted_keys=command.deleted_keys,
            state_version=live.state_version + 1,
            device_id=command.device_id,
        )
    ]


def _resolve(command: ResolveConflict, state: SessionState) -> list[Any]:
    """The outcome is recorded even when the server wins, so the client learns the answer."""
    live = _live(state, command)
    resolved, version = _resolution(command, live)
    return [
        ConflictResolved(
            at=command.at,
            strategy=command.strategy,
            state=resolved,
            state_version=version,
            client_version=command.client_version,
        )
    ]


def _resolution(command: ResolveConflict, state: Active) -> tuple[dict[str, Any], int]:
    """The state a strategy keeps, and its version: the server's own state keeps its version,
    a client's or a merged state is the next one."""
    match command.strategy:
        case ConflictStrategy.SERVER_WINS:
            return state.state, state.state_version
        case ConflictStrategy.CLIENT_WINS:
            return command.client_state, state.state_version + 1
        case ConflictStrategy.MERGE:
            return {**state.state, **command.client_state}, state.state_version + 1
    raise AssertionError(command.strategy)  # pragma: no cover


# ------------------------------------------------------------- decide: handoffs


def _start_handoff(command: StartHandoff, state: SessionState) -> list[Any]:
    """The handoff carries the state as it is now; starting the same token again is a retry."""
    live = _live(state, command)
    _require(bool(command.token), "token is required")
    _require(bool(command.source_device), "source_device is required")
    _require(bool(command.target_device), "target_device is required")
    _require(command.source_device != command.target_device, "source and target must differ")
    _require(command.ttl_ms > 0, "ttl_ms must be positive")
    if command.token in live.handoffs:
        return []
    return [
        HandoffStarted(
            at=command.at,
            token=command.token,
            source_device=command.source_device,
            target_device=command.target_device,
            state=live.state,
            state_version=live.state_version,
            expires_at=command.at + command.ttl_ms,
        )
    ]


def _accept_handoff(command: AcceptHandoff, state: SessionState) -> list[Any]:
    """A token is good once, before it expires, and only for the device it was made for."""
    live = _live(state, command)
    handoff = live.handoffs.get(command.token)
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


def _expire_handoff(command: ExpireHandoff, state: SessionState) -> list[Any]:
    """The token's timer: a no-op once the session or the token is gone."""
    if not isinstance(state, Active) or command.token not in state.handoffs:
        return []
    if command.at < state.handoffs[command.token].expires_at:
        return []
    return [HandoffExpired(at=command.at, token=command.token)]


# ------------------------------------------------------------- decide: simulator slot


def _reserve_simulator(command: ReserveSimulator, state: SessionState) -> list[Any]:
    """Seed 002 allows one active simulator per session: the slot is taken here, in the
    session's own decision, so two concurrent requests cannot both win."""
    live = _live(state, command)
    if live.simulator is not None and live.simulator.active:
        raise DomainError(
            "SIMULATOR_ALREADY_ACTIVE",
            f"simulator {live.simulator.simulator_id} is already active for this session",
            simulator_id=live.simulator.simulator_id,
        )
    _require(bool(command.simulator_id), "simulator_id is required")
    _require(bool(command.initial_symbols), "initial_symbols must name at least one symbol")
    _require(all(s.strip() for s in command.initial_symbols), "symbols must be non-empty")
    _require(command.initial_cash > 0, "initial_cash must be positive")
    return [
        SimulatorReserved(
            at=command.at,
            simulator_id=command.simulator_id,
            user_id=live.user_id,
            initial_symbols=command.initial_symbols,
            initial_cash=command.initial_cash,
            heartbeat_timeout_ms=command.heartbeat_timeout_ms,
            idle_timeout_ms=command.idle_timeout_ms,
        )
    ]


def _record_simulator(command: RecordSimulatorStatus, state: SessionState) -> list[Any]:
    """Ended sessions keep listening: their simulator still holds the slot until it stops.
    A report that changes nothing is not recorded (the simulator repeats itself on retries)."""
    if isinstance(state, NotStarted) or state.simulator is None:
        return []
    slot = state.simulator
    if slot.simulator_id != command.simulator_id:
        return []  # a report about an older simulator of this session
    recorded = SimulatorStatusRecorded(
        at=command.at,
        simulator_id=command.simulator_id,
        status=command.status,
        endpoint=command.endpoint or slot.endpoint,
        reason=command.reason,
    )
    return [] if _reported_slot(recorded) == slot else [recorded]


# --------------------------------------------------------------------------- evolve


def evolve(state: SessionState, event: Any) -> SessionState:
    """The state after `event`. Never mutates `state`.

    Matched on the pair: an event changes only the kinds of state it names (a session starts
    from any state, an ended one still mirrors its simulator, everything else needs it live);
    any other pair leaves the state as it is.
    """
    match state, event:
        case _, SessionCreated():
            return _on_created(state, event)
        case Active(), SessionEnded() | SessionExpired():
            return _on_ended(state, event)
        case Active(), SessionRefreshed():
            return replace(state, last_active=event.at, expires_at=event.expires_at)
        case Active(), ConnectionQualityChanged():
            return replace(state, quality=event.quality)
        case Active(), MetadataUpdated():
            return _on_metadata_updated(state, event)
        case Active(), DeviceJoined():
            return _on_device_joined(state, event)
        case Active(), ConnectionOpened():
            return _on_connection_opened(state, event)
        case Active(), ConnectionClosed():
            return _on_connection_closed(state, event)
        case Active(), DeviceLeft():
            return _on_device_left(state, event)
        case Active(), DevicesSeen():
            return _on_devices_seen(state, event)
        case Active(), DeviceForgotten():
            return replace(state, devices=_without(state.devices, event.device_id))
        case Active(), StateReplaced() | ConflictResolved():
            return replace(state, state=event.state, state_version=event.state_version)
        case Active(), StateChanged():
            return _on_state_changed(state, event)
        case Active(), HandoffStarted():
            return _on_handoff_started(state, event)
        case Active(), HandoffAccepted():
            return _with_handoff(state, replace(state.handoffs[event.token], accepted=True))
        case Active(), HandoffExpired():
            return replace(state, handoffs=_without(state.handoffs, event.token))
        case Active(), SimulatorReserved():
            return replace(state, simulator=SimulatorSlot(simulator_id=event.simulator_id))
        case Active() | Ended(), SimulatorStatusRecorded():
            return replace(state, simulator=_reported_slot(event))
    return state


def _without(items: dict[str, V], key: str) -> dict[str, V]:
    return {k: v for k, v in items.items() if k != key}


def _with_device(state: Active, device: Device) -> Active:
    return replace(state, devices={**state.devices, device.device_id: device})


def _with_handoff(state: Active, handoff: Handoff) -> Active:
    return replace(state, handoffs={**state.handoffs, handoff.token: handoff})


def _on_created(state: SessionState, event: SessionCreated) -> Active:
    """Every incarnation starts empty, except that a simulator of the previous one that is
    still stopping keeps the slot (seed 002: one active simulator per session)."""
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


def _on_ended(state: Active, event: SessionEnded | SessionExpired) -> Ended:
    """An ended session keeps its owner (a restart is still checked against it) and its
    simulator slot (it still hears that simulator's reports until it stops)."""
    reason = "expired" if isinstance(event, SessionExpired) else event.reason
    return Ended(
        session_id=state.session_id,
        user_id=state.user_id,
        ended_at=event.at,
        reason=reason,
        simulator=state.simulator,
    )


def _on_metadata_updated(state: Active, event: MetadataUpdated) -> Active:
    """A merge in which a None value deletes its key."""
    merged = {**state.metadata, **event.values}
    return replace(state, metadata={k: v for k, v in merged.items() if v is not None})


def _on_device_joined(state: Active, event: DeviceJoined) -> Active:
    """A device that comes back keeps what it said about itself before, unless it says more."""
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


def _on_connection_opened(state: Active, event: ConnectionOpened) -> Active:
    device = state.devices[event.device_id]
    connections = {**device.connections, event.connection_id: event.transport}
    return _with_device(state, replace(device, connections=connections, last_seen=event.at))


def _on_connection_closed(state: Active, event: ConnectionClosed) -> Active:
    device = state.devices[event.device_id]
    connections = _without(device.connections, event.connection_id)
    return _with_device(state, replace(device, connections=connections))


def _on_device_left(state: Active, event: DeviceLeft) -> Active:
    """The device stays known, offline, seen last now: its retention counts from here."""
    device = state.devices[event.device_id]
    return _with_device(state, replace(device, connections={}, last_seen=event.at))


def _on_devices_seen(state: Active, event: DevicesSeen) -> Active:
    seen = {d: replace(state.devices[d], last_seen=event.at) for d in event.device_ids}
    return replace(state, devices={**state.devices, **seen})


def _on_state_changed(state: Active, event: StateChanged) -> Active:
    kept = {k: v for k, v in state.state.items() if k not in event.deleted_keys}
    return replace(state, state={**kept, **event.changes}, state_version=event.state_version)


def _on_handoff_started(state: Active, event: HandoffStarted) -> Active:
    handoff = Handoff(
        token=event.token,
        source_device=event.source_device,
        target_device=event.target_device,
        state=event.state,
        state_version=event.state_version,
        expires_at=event.expires_at,
    )
    return _with_handoff(state, handoff)


def _reported_slot(event: SimulatorStatusRecorded) -> SimulatorSlot:
    """The slot as the simulator last reported it: the session mirrors it for its feed."""
    return SimulatorSlot(
        simulator_id=event.simulator_id,
        status=event.status,
        endpoint=event.endpoint,
        reason=event.reason,
    )


# --------------------------------------------------------------------------- timers, policy


def deadlines(state: SessionState) -> list[Timer]:
    """Expiry, each online device's presence timeout, each offline device's retention, each
    handoff token's expiry."""
    if not isinstance(state, Active):
        return []
    device_timers = (_device_timer(d, state.presence_timeout_ms) for d in state.devices.values())
    return [
        Timer("expiry", state.expires_at, ExpireSession(at=state.expires_at)),
        *(timer for timer in device_timers if timer is not None),
        *(_handoff_timer(handoff) for handoff in state.handoffs.values()),
    ]


def _device_timer(device: Device, presence_timeout_ms: int) -> Timer | None:
    """An online device times out unless seen; an offline one is forgotten after its
    retention (None: kept for good)."""
    if device.online:
        due = device.last_seen + presence_timeout_ms
        return Timer(
            f"presence:{device.device_id}", due, TimeOutDevice(at=due, device_id=device.device_id)
        )
    forget_at = device.forget_at
    if forget_at is None:
        return None
    return Timer(
        f"forget:{device.device_id}",
        forget_at,
        ForgetDevice(at=forget_at, device_id=device.device_id),
    )


def _handoff_timer(handoff: Handoff) -> Timer:
    due = handoff.expires_at
    return Timer(f"handoff:{handoff.token}", due, ExpireHandoff(at=due, token=handoff.token))


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


def result(command: Any, events: list[Any], state: SessionState) -> dict[str, Any]:
    """What the sender's answer needs from the events `command` caused (`state`: after them):
    the new state version of a state write, the resolved state, a handoff's token, or the
    state a handoff carries. Stored in the command's outcome, so a retry gets it too."""
    match command:
        case ReplaceState() | ApplyStateChanges():
            written = _last_of(events, StateReplaced | StateChanged)
            return {} if written is None else {"state_version": written.state_version}
        case ResolveConflict():
            resolved = _last_of(events, ConflictResolved)
            if resolved is None:
                return {}
            return {"state": resolved.state, "state_version": resolved.state_version}
        case StartHandoff():
            started = _last_of(events, HandoffStarted)
            return (
                {}
                if started is None
                else {"token": started.token, "expires_at": started.expires_at}
            )
        case AcceptHandoff() if isinstance(state, Active) and command.token in state.handoffs:
            handoff = state.handoffs[command.token]
            return {
                "source_device": handoff.source_device,
                "target_device": handoff.target_device,
                "state": handoff.state,
                "state_version": handoff.state_version,
            }
    return {}


def _last_of(events: list[Any], kind: Any) -> Any:
    """The last event of `kind` (a type or a union of types), or None."""
    for event in reversed(events):
        if isinstance(event, kind):
            return event
    return None


decider: Decider[SessionState] = Decider(
    kind="session",
    initial_state=NotStarted(),
    decide=decide,
    evolve=evolve,
    is_terminal=is_terminal,
    deadlines=deadlines,
    react=react,
    result=result,
)
