"""Commands to and events of the simulator actor (`simulator:<uuid>`).

Statuses follow seed 002: CREATING -> STARTING -> RUNNING -> STOPPING -> STOPPED, or ERROR.
The simulator lives in its session's partition (the partition key is the session id).
"""

from __future__ import annotations

from enum import StrEnum

from events.base import Command, Event

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_HEARTBEAT_TIMEOUT_MS",
    "DEFAULT_IDLE_TIMEOUT_MS",
    "CheckActivity",
    "CheckHeartbeat",
    "CreateSimulator",
    "RecordActivity",
    "RecordHeartbeat",
    "RecordProvisionFailed",
    "RecordProvisioned",
    "RecordStopped",
    "SimulatorActivityRecorded",
    "SimulatorCommand",
    "SimulatorEvent",
    "SimulatorFailed",
    "SimulatorHeartbeatRecorded",
    "SimulatorProvisioned",
    "SimulatorRequested",
    "SimulatorRunning",
    "SimulatorStatus",
    "SimulatorStopped",
    "SimulatorStopping",
    "StopSimulator",
]

DEFAULT_HEARTBEAT_TIMEOUT_MS = 30_000
DEFAULT_IDLE_TIMEOUT_MS = 3600 * 1000  # seed 002: inactive for one hour -> stopped


class SimulatorStatus(StrEnum):
    CREATING = "CREATING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    ERROR = "ERROR"


#: A simulator in one of these holds its session's single slot.
ACTIVE_STATUSES = frozenset(
    {
        SimulatorStatus.CREATING,
        SimulatorStatus.STARTING,
        SimulatorStatus.RUNNING,
        SimulatorStatus.STOPPING,
    }
)


# --------------------------------------------------------------------------- commands


class CreateSimulator(Command, frozen=True, tag="CreateSimulator"):
    """Sent by the session's policy once the session granted the slot."""

    simulator_id: str
    session_id: str
    owner_id: str
    initial_symbols: list[str]
    initial_cash: float = 100000.0
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS


class RecordProvisioned(Command, frozen=True, tag="RecordProvisioned"):
    """The provisioner created the simulator's resources; it is starting at `endpoint`."""

    endpoint: str


class RecordProvisionFailed(Command, frozen=True, tag="RecordProvisionFailed"):
    reason: str


class RecordHeartbeat(Command, frozen=True, tag="RecordHeartbeat"):
    """The engine is alive; the first heartbeat after provisioning means RUNNING."""


class RecordActivity(Command, frozen=True, tag="RecordActivity"):
    """A client used the simulator: pushes the inactivity stop out."""


class StopSimulator(Command, frozen=True, tag="StopSimulator"):
    reason: str = "requested"


class RecordStopped(Command, frozen=True, tag="RecordStopped"):
    """The provisioner removed the simulator's resources."""


class CheckHeartbeat(Command, frozen=True, tag="CheckHeartbeat"):
    """Timer: no heartbeat within the timeout means the engine is gone."""


class CheckActivity(Command, frozen=True, tag="CheckActivity"):
    """Timer: no client activity within the idle timeout means stop it (seed 002)."""


SimulatorCommand = (
    CreateSimulator
    | RecordProvisioned
    | RecordProvisionFailed
    | RecordHeartbeat
    | RecordActivity
    | StopSimulator
    | RecordStopped
    | CheckHeartbeat
    | CheckActivity
)


# --------------------------------------------------------------------------- events


class SimulatorRequested(Event, frozen=True, tag="SimulatorRequested"):
    """CREATING: the reactor should provision it."""

    simulator_id: str
    session_id: str
    owner_id: str
    initial_symbols: list[str]
    initial_cash: float = 100000.0
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS


class SimulatorProvisioned(Event, frozen=True, tag="SimulatorProvisioned"):
    """STARTING."""

    endpoint: str


class SimulatorRunning(Event, frozen=True, tag="SimulatorRunning"):
    """RUNNING: first heartbeat arrived."""


class SimulatorHeartbeatRecorded(Event, frozen=True, tag="SimulatorHeartbeatRecorded"):
    pass


class SimulatorActivityRecorded(Event, frozen=True, tag="SimulatorActivityRecorded"):
    pass


class SimulatorStopping(Event, frozen=True, tag="SimulatorStopping"):
    """STOPPING: the reactor should remove its resources."""

    reason: str = "requested"


class SimulatorStopped(Event, frozen=True, tag="SimulatorStopped"):
    """STOPPED."""


class SimulatorFailed(Event, frozen=True, tag="SimulatorFailed"):
    """ERROR with a reason (provisioning failed, heartbeat lost)."""

    reason: str


SimulatorEvent = (
    SimulatorRequested
    | SimulatorProvisioned
    | SimulatorRunning
    | SimulatorHeartbeatRecorded
    | SimulatorActivityRecorded
    | SimulatorStopping
    | SimulatorStopped
    | SimulatorFailed
)
