"""How the reactor's `local` provisioner and the `simulators` processes find each other in Redis.

- `sd:sim:hosts` (ZSET): host id -> ms until which the host is alive (it re-registers every
  couple of seconds; a killed host simply stops renewing).
- `sd:sim:load` (HASH): host id -> simulators it runs (placement picks the least loaded).
- `sd:sim:control:<host>` (stream): start / stop requests for that host, field `r` = msgpack
  `ControlRequest`.
- `sd:sim:where:<simulator>`: the host a simulator was placed on.
- `sd:sim:ack:<request>` (list): the host pushes the outcome of a request there (the provisioner
  waits with BLPOP).
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ACK_TTL_S",
    "HOSTS_KEY",
    "LOAD_KEY",
    "ControlReply",
    "ControlRequest",
    "EngineSpec",
    "ack_key",
    "control_stream",
    "placement_key",
]

HOSTS_KEY = "sd:sim:hosts"
LOAD_KEY = "sd:sim:load"
ACK_TTL_S = 60


def control_stream(host_id: str) -> str:
    return f"sd:sim:control:{host_id}"


def placement_key(simulator_id: str) -> str:
    return f"sd:sim:where:{simulator_id}"


def ack_key(request_id: str) -> str:
    return f"sd:sim:ack:{request_id}"


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
