"""What the reactor's `local` provisioner and the `simulators` processes say to each other.

They meet in the event store (`SimulatorHosts`): live hosts with their load, one control stream
per host carrying `ControlRequest`s (msgpack), one `ControlReply` per request (the provisioner
waits for it), and where each simulator was placed.
"""

from __future__ import annotations

import msgspec

__all__ = ["ACK_TTL_S", "ControlReply", "ControlRequest", "EngineSpec"]

#: How long a host's answer to a request is kept for the provisioner waiting for it.
ACK_TTL_S = 60


class EngineSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What an engine needs to run one simulator."""

    simulator_id: str
    session_id: str
    owner_id: str = ""
    initial_symbols: list[str] = []
    initial_cash: float = 100_000.0


class ControlRequest(msgspec.Struct, frozen=True, kw_only=True):
    op: str  # "start" | "stop"
    request_id: str
    simulator_id: str
    spec: EngineSpec | None = None


class ControlReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    endpoint: str = ""
    reason: str = ""
