"""A hub connection kept in memory, for tests of the gateway's hub and maintenance."""

from __future__ import annotations

import json

from gateway.hub import Connection, ConnState
from projections.changes import Change, encode_changes


class MemConn(Connection):
    """Records every frame written to it (decoded) and its close."""

    __slots__ = ("frames",)

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.frames: list[dict] = []

    async def write(self, data: str) -> None:
        self.frames.append(json.loads(data))

    async def abort(self, code: int, reason: str) -> None:
        self.state = ConnState.CLOSED
        self.frames.append({"closed": code, "reason": reason})

    def versions(self) -> list[int]:
        return [f["version"] for f in self.frames if f.get("version") is not None]


def changes_message(session_id: str, *versions: int) -> bytes:
    """A change-feed message with one StateChanged change per version."""
    return encode_changes(
        [
            Change(
                session_id=session_id,
                version=v,
                type="StateChanged",
                data={"changes": {"v": v}, "deleted_keys": [], "state_version": v},
                ts=0,
            )
            for v in versions
        ]
    )
