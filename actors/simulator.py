"""The simulator actor: a pure decider for one exchange simulator's lifecycle (seed 002).

CREATING -> STARTING -> RUNNING -> STOPPING -> STOPPED, or ERROR. The reactor does the actual
provisioning and reports back with commands; heartbeats and client activity arrive as commands;
the two timeouts are durable timers, so a simulator whose engine died is noticed even if no
process that knew about it survives.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec.structs import replace

from actors.decider import Decider, Routed, Timer
from events.errors import DomainError
from events.ids import session_actor
from events.session import RecordSimulatorStatus
from events.simulator import (
    CheckActivity,
    CheckHeartbeat,
    CreateSimulator,
    RecordActivity,
    RecordHeartbeat,
    RecordProvisioned,
    RecordProvisionFailed,
    RecordStopped,
    SimulatorActivityRecorded,
    SimulatorFailed,
    SimulatorHeartbeatRecorded,
    SimulatorProvisioned,
    SimulatorRequested,
    SimulatorRunning,
    SimulatorStatus,
    SimulatorStopped,
    SimulatorStopping,
    StopSimulator,
)

__all__ = [
    "NoSimulator",
    "Simulator",
    "SimulatorState",
    "deadlines",
    "decide",
    "decider",
    "evolve",
    "is_terminal",
    "react",
]

S = SimulatorStatus


class NoSimulator(msgspec.Struct, frozen=True, tag="NoSimulator"):
    pass


class Simulator(msgspec.Struct, frozen=True, tag="Simulator"):
    simulator_id: str
    session_id: str
    owner_id: str
    status: SimulatorStatus
    initial_symbols: list[str]
    initial_cash: float
    created_at: int
    last_active: int
    last_heartbeat: int
    heartbeat_timeout_ms: int
    idle_timeout_ms: int
    endpoint: str = ""
    reason: str = ""


SimulatorState = NoSimulator | Simulator


def _existing(state: SimulatorState, command: Any) -> Simulator:
    """The simulator, if it exists and the command's user may act on it: its owner or an
    admin ("" is the system: the session's policy, the reactor, timers)."""
    if isinstance(state, NoSimulator):
        raise DomainError("SIMULATOR_NOT_FOUND", "no such simulator")
    if command.user_id and command.user_id != state.owner_id and not command.admin:
        raise DomainError("SESSION_FORBIDDEN", "this simulator belongs to another user")
    return state


def _create(command: CreateSimulator, state: SimulatorState) -> list[Any]:
    if isinstance(state, Simulator):
        return []  # the policy's retry of the same creation
    if not command.simulator_id or not command.session_id or not command.owner_id:
        raise DomainError("INVALID_ARGUMENT", "simulator_id, session_id and owner_id are required")
    if not command.initial_symbols:
        raise DomainError("INVALID_ARGUMENT", "initial_symbols must name at least one symbol")
    if command.heartbeat_timeout_ms <= 0 or command.idle_timeout_ms <= 0:
        raise DomainError("INVALID_ARGUMENT", "timeouts must be positive")
    return [
        SimulatorRequested(
            at=command.at,
            simulator_id=command.simulator_id,
            session_id=command.session_id,
            owner_id=command.owner_id,
            initial_symbols=command.initial_symbols,
            initial_cash=command.initial_cash,
            heartbeat_timeout_ms=command.heartbeat_timeout_ms,
            idle_timeout_ms=command.idle_timeout_ms,
        )
    ]


def decide(command: Any, state: SimulatorState) -> list[Any]:
    """The events `command` causes. Late reports about an outdated status are no-ops."""
    if isinstance(command, CreateSimulator):
        return _create(command, state)
    if isinstance(command, CheckHeartbeat | CheckActivity) and isinstance(state, NoSimulator):
        return []
    sim = _existing(state, command)
    status = sim.status
    match command:
        case RecordProvisioned():
            if status is S.CREATING:
                return [SimulatorProvisioned(at=command.at, endpoint=command.endpoint)]
            return []
        case RecordProvisionFailed():
            if status in (S.CREATING, S.STARTING):
                return [SimulatorFailed(at=command.at, reason=command.reason)]
            return []
        case RecordHeartbeat():
            if status is S.STARTING:
                return [SimulatorRunning(at=command.at)]
            if status is S.RUNNING:
                return [SimulatorHeartbeatRecorded(at=command.at)]
            return []
        case RecordActivity():
            if status in (S.CREATING, S.STARTING, S.RUNNING):
                return [SimulatorActivityRecorded(at=command.at)]
            return []
        case StopSimulator():
            if status in (S.CREATING, S.STARTING, S.RUNNING):
                return [SimulatorStopping(at=command.at, reason=command.reason or "requested")]
            return []
        case RecordStopped():
            if status is S.STOPPING:
                return [SimulatorStopped(at=command.at)]
            return []
        case CheckHeartbeat():
            due = sim.last_heartbeat + sim.heartbeat_timeout_ms
            if status in (S.STARTING, S.RUNNING) and command.at >= due:
                seconds = sim.heartbeat_timeout_ms / 1000
                return [SimulatorFailed(at=command.at, reason=f"no heartbeat for {seconds:g} s")]
            return []
        case CheckActivity():
            due = sim.last_active + sim.idle_timeout_ms
            if status in (S.CREATING, S.STARTING, S.RUNNING) and command.at >= due:
                return [SimulatorStopping(at=command.at, reason="inactive")]
            return []
    raise DomainError(
        "INVALID_COMMAND", f"a simulator does not accept {type(command).__name__} commands"
    )


def evolve(state: SimulatorState, event: Any) -> SimulatorState:
    """The state after `event`. Never mutates `state`.

    Matched on the pair, as the session's: a request starts the simulator, every other event
    changes only an existing one, and any other pair leaves the state as it is.
    """
    match state, event:
        case _, SimulatorRequested():
            return _requested(event)
        case Simulator(), SimulatorProvisioned():
            # the heartbeat clock starts when the engine is up, not when it was requested
            return replace(
                state, status=S.STARTING, endpoint=event.endpoint, last_heartbeat=event.at
            )
        case Simulator(), SimulatorRunning():
            return replace(state, status=S.RUNNING, last_heartbeat=event.at)
        case Simulator(), SimulatorHeartbeatRecorded():
            return replace(state, last_heartbeat=event.at)
        case Simulator(), SimulatorActivityRecorded():
            return replace(state, last_active=event.at)
        case Simulator(), SimulatorStopping():
            return replace(state, status=S.STOPPING, reason=event.reason)
        case Simulator(), SimulatorStopped():
            return replace(state, status=S.STOPPED)
        case Simulator(), SimulatorFailed():
            return replace(state, status=S.ERROR, reason=event.reason)
    return state


def _requested(event: SimulatorRequested) -> Simulator:
    """A new simulator: both of its clocks start at the request."""
    return Simulator(
        simulator_id=event.simulator_id,
        session_id=event.session_id,
        owner_id=event.owner_id,
        status=S.CREATING,
        initial_symbols=event.initial_symbols,
        initial_cash=event.initial_cash,
        created_at=event.at,
        last_active=event.at,
        last_heartbeat=event.at,
        heartbeat_timeout_ms=event.heartbeat_timeout_ms,
        idle_timeout_ms=event.idle_timeout_ms,
    )


def deadlines(state: SimulatorState) -> list[Timer]:
    """Heartbeat timeout while the engine should be alive; inactivity stop while it is active."""
    if not isinstance(state, Simulator):
        return []
    timers = []
    if state.status in (S.STARTING, S.RUNNING):
        due = state.last_heartbeat + state.heartbeat_timeout_ms
        timers.append(Timer("heartbeat", due, CheckHeartbeat(at=due)))
    if state.status in (S.CREATING, S.STARTING, S.RUNNING):
        due = state.last_active + state.idle_timeout_ms
        timers.append(Timer("idle", due, CheckActivity(at=due)))
    return timers


def is_terminal(state: SimulatorState) -> bool:
    return isinstance(state, Simulator) and state.status in (S.STOPPED, S.ERROR)


_STATUS_OF: dict[type[Any], SimulatorStatus] = {
    SimulatorRequested: S.CREATING,
    SimulatorProvisioned: S.STARTING,
    SimulatorRunning: S.RUNNING,
    SimulatorStopping: S.STOPPING,
    SimulatorStopped: S.STOPPED,
    SimulatorFailed: S.ERROR,
}


def react(state: SimulatorState, event: Any) -> list[Routed]:
    """Policy: every status change is reported to the session, which mirrors it for its feed."""
    status = _STATUS_OF.get(type(event))
    if status is None or not isinstance(state, Simulator):
        return []
    report = RecordSimulatorStatus(
        at=event.at,
        simulator_id=state.simulator_id,
        status=status.value,
        endpoint=state.endpoint,
        reason=getattr(event, "reason", ""),
    )
    return [Routed(session_actor(state.session_id), report)]


decider: Decider[SimulatorState] = Decider(
    kind="simulator",
    initial_state=NoSimulator(),
    decide=decide,
    evolve=evolve,
    is_terminal=is_terminal,
    deadlines=deadlines,
    react=react,
)
