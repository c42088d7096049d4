"""The projector's health, as the rest of the system reads it.

Every projector keeps a small status record in the event store's `StatusBoard` (role
"projector", JSON, with a TTL of a few publish periods, so a dead projector's record goes away
by itself): whether it reaches PostgreSQL (and since when it does not), which partitions it
leases and which it is projecting, how far behind it is, dead letters. The live projectors are
the live members of the role's leases (`Leases.members`). The gateway's `/health` and
`sessiond projections status` read them; the same `ProjectorStatus` is what a projector's own
health endpoint will serve.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from infra.store import StatusBoard, Store

__all__ = ["ROLE", "ProjectorStatus", "as_dict", "describe", "publish_status", "read_statuses"]

#: The projectors' role in the store's leases and status records.
ROLE = "projector"


class ProjectorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One projector's view of itself. Times are ms since the epoch."""

    owner: str
    host: str = ""
    pid: int = 0
    started_at: int = 0
    updated_at: int = 0
    postgres: str = "ok"  # "ok" | "unreachable"
    postgres_down_since: int = 0  # when it stopped reaching PostgreSQL (0: it reaches it)
    last_error: str = ""
    leases: list[int] = []  # partitions it holds the projector lease of
    projecting: list[int] = []  # of those, the ones it reads and commits (checkpoint claimed)
    unclaimed: list[int] = []  # leased, but claiming the checkpoint failed (PostgreSQL down)
    lag_seconds: float = 0.0  # age of the oldest log entry it has not projected yet
    events_projected: int = 0  # since it started
    dead_letters: int = 0  # recorded since it started

    @property
    def healthy(self) -> bool:
        return self.postgres == "ok" and not self.unclaimed


_decode = msgspec.json.Decoder(ProjectorStatus)


def describe(status: ProjectorStatus) -> str:
    """One line for people: 'ok', or what is wrong and since when."""
    if status.postgres != "ok":
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(status.postgres_down_since / 1000))
        return f"cannot reach PostgreSQL since {since}"
    if status.unclaimed:
        return f"leases partitions {status.unclaimed} but cannot claim their checkpoints"
    return "ok"


async def publish_status(board: StatusBoard, status: ProjectorStatus, ttl_ms: int) -> None:
    await board.put(ROLE, status.owner, msgspec.json.encode(status), ttl_ms)


async def read_statuses(store: Store) -> list[ProjectorStatus]:
    """The records of every live projector (the live members of the role), ordered by owner;
    a live projector without a record is listed as unknown."""
    owners = await store.leases.members(ROLE)
    if not owners:
        return []
    records = await store.statuses.get(ROLE, owners)
    out: list[ProjectorStatus] = []
    for owner in owners:
        raw = records.get(owner)
        try:
            out.append(
                _decode.decode(raw)
                if raw
                else ProjectorStatus(owner=owner, last_error="no status record (yet)")
            )
        except msgspec.DecodeError:
            out.append(ProjectorStatus(owner=owner, last_error="unreadable status record"))
    return out


def as_dict(status: ProjectorStatus) -> dict[str, Any]:
    return {**msgspec.structs.asdict(status), "status": describe(status)}
