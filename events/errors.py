"""The one exception root of sessiond, and the stable error codes clients see.

Deciders raise `DomainError`s (a rejected request: the caller did something the actor's state
does not allow). Adapters raise `InfraError`s (the outside world failed us). The gateway turns
both into ``{"error": {"code", "message"}}``; the code is the contract, the message is for people.
Nothing here does I/O, so the deciders and the edge can share it.

The tree::

    SessiondError                  code, message
    ├── DomainError                a refused command (CODES: code -> HTTP status)
    ├── InfraError                 the outside world failed (503)
    │   ├── StoreUnavailable       Redis (infra.store), and DatabaseUnavailable (infra.postgres)
    │   └── Fenced                 a write with a stale lease epoch
    ├── ApiError                   the edge's refusals, with their HTTP status (gateway.errors):
    │   ├── InvalidInput           input the stores cannot hold (gateway.validate)
    │   └── ProtocolError          a WebSocket message the gateway cannot read (gateway.protocol)
    └── ConfigError                a configuration value missing or unsafe
"""

from __future__ import annotations

__all__ = [
    "CODES",
    "DomainError",
    "Fenced",
    "InfraError",
    "SessiondError",
    "StoreUnavailable",
]

#: Every domain error code, with the HTTP status the edge answers it with.
CODES: dict[str, int] = {
    "INVALID_COMMAND": 400,
    "INVALID_ARGUMENT": 400,
    "SESSION_NOT_FOUND": 404,
    "SESSION_EXPIRED": 410,
    "SESSION_ENDED": 410,
    "SESSION_FORBIDDEN": 403,
    "ROUTER_MISMATCH": 403,
    "VERSION_CONFLICT": 409,
    "STATE_TOO_LARGE": 413,
    "DEVICE_NOT_FOUND": 404,
    "HANDOFF_NOT_FOUND": 404,
    "HANDOFF_EXPIRED": 410,
    "HANDOFF_ALREADY_USED": 409,
    "HANDOFF_WRONG_DEVICE": 403,
    "SIMULATOR_ALREADY_ACTIVE": 409,
    "SIMULATOR_NOT_FOUND": 404,
    "SIMULATOR_NOT_ACTIVE": 409,
    "INVALID_TRANSITION": 409,
    "TOO_MANY_CONNECTIONS": 429,
    "TOO_MANY_DEVICES": 429,
}


class SessiondError(Exception):
    """Root of every error sessiond raises on purpose."""

    code: str = "INTERNAL"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class DomainError(SessiondError):
    """A command the actor refuses; the state is unchanged and the caller gets `code`."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        if code not in CODES:
            raise ValueError(f"unknown domain error code {code!r}")
        super().__init__(message, code)
        self.details = details

    @property
    def http_status(self) -> int:
        return CODES[self.code]


class InfraError(SessiondError):
    """Something outside the domain failed (store down, lease lost); retrying may help."""

    code = "UNAVAILABLE"


class StoreUnavailable(InfraError):
    code = "STORE_UNAVAILABLE"


class Fenced(InfraError):
    """A newer owner holds the partition: this process must stop writing to it."""

    code = "FENCED"
