"""The one small interface every simulator provisioner implements, and its errors.

`provision` creates whatever runs the simulator and returns once it is ready to start, with the
endpoint it answers at; `deprovision` removes it (idempotent: removing nothing is fine); `status`
says what the provisioner sees now.

Errors: `ProvisionFailed` is final (the platform refused or the workload failed: retrying will
not help, the reason goes to the simulator actor as is); `ProvisionerUnavailable` is transient
(the platform could not be reached) and is retried with backoff by the circuit breaker.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable

import msgspec

from events.errors import InfraError
from infra.exchange.control import EngineSpec

__all__ = [
    "CircuitOpen",
    "ProvisionFailed",
    "ProvisionState",
    "Provisioner",
    "ProvisionerError",
    "ProvisionerStatus",
    "ProvisionerUnavailable",
    "SimulatorSpec",
]

#: What a provisioner is asked to run (the same shape the local engine takes).
SimulatorSpec = EngineSpec


class ProvisionState(StrEnum):
    ABSENT = "ABSENT"
    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"


class ProvisionerStatus(msgspec.Struct, frozen=True, kw_only=True):
    state: ProvisionState
    endpoint: str = ""
    reason: str = ""


class ProvisionerError(InfraError):
    code = "PROVISIONER_ERROR"


class ProvisionFailed(ProvisionerError):
    """Final: the simulator cannot be provisioned; `message` is the platform's reason."""

    code = "PROVISION_FAILED"


class ProvisionerUnavailable(ProvisionerError):
    """Transient: the platform did not answer (connection refused, timeout, 5xx)."""

    code = "PROVISIONER_UNAVAILABLE"


class CircuitOpen(ProvisionerUnavailable):
    """The breaker is open: recent calls kept failing, so we fail fast without calling."""

    code = "PROVISIONER_CIRCUIT_OPEN"


@runtime_checkable
class Provisioner(Protocol):
    name: str

    async def provision(self, spec: SimulatorSpec) -> str: ...

    async def deprovision(self, simulator_id: str) -> None: ...

    async def status(self, simulator_id: str) -> ProvisionerStatus: ...

    async def close(self) -> None: ...
