"""sessiond's Python client: seed 003's session functions returning `(result, error)`, the
state, handoff, device and simulator calls, retries that are safe (idempotency keys), and a
watch of a session's changes that resumes by itself without a gap.

`SessiondClient` blocks; `AsyncSessiondClient` is the same API for asyncio.
"""

from sessiond_client._clients import AsyncSessiondClient, SessiondClient, WatchError
from sessiond_client._core import CALLS, ClientError, RetryPolicy, correlated
from sessiond_client.types import (
    Change,
    ConflictResolved,
    Device,
    DeviceDisconnected,
    Devices,
    HandoffAccepted,
    HandoffIssued,
    Message,
    SessionStarted,
    Simulator,
    Snapshot,
    StateWritten,
)

__all__ = [
    "CALLS",
    "AsyncSessiondClient",
    "Change",
    "ClientError",
    "ConflictResolved",
    "Device",
    "DeviceDisconnected",
    "Devices",
    "HandoffAccepted",
    "HandoffIssued",
    "Message",
    "RetryPolicy",
    "SessionStarted",
    "SessiondClient",
    "Simulator",
    "Snapshot",
    "StateWritten",
    "WatchError",
    "correlated",
]
