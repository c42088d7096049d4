"""The session's shared state (seed 004): a full snapshot, incremental changes, a conflict
resolved, and the snapshot read back.

Writes are commands to the session actor, which authorizes them, checks the versions and
answers the new state version in its outcome; the state a client sends is checked here first
for what the stores can hold (64-bit integers, `GATEWAY_MAX_STATE_BYTES`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from events.session import ApplyStateChanges, ConflictStrategy, ReplaceState, ResolveConflict
from gateway.auth import Claims
from gateway.errors import ApiError
from gateway.operations.access import check_stated_user
from gateway.operations.commands import WriteResult, idempotency, now_ms, send, written
from gateway.operations.reads import (
    SessionSnapshot,
    authorize_read,
    snapshot_row,
)

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "ConflictResolution",
    "Resolved",
    "SnapshotRead",
    "SnapshotWrite",
    "StateChanges",
    "StateWritten",
    "apply_changes",
    "read_snapshot",
    "resolve_conflict",
    "save_snapshot",
]

_json = msgspec.json.Encoder()


class SnapshotWrite(msgspec.Struct, frozen=True, kw_only=True):
    """A full snapshot; `version`, when given, must be the current state version + 1. It
    creates the session when it does not exist (seed 004). `user_id`, when given, must be the
    caller's."""

    session_id: str
    state: dict[str, Any]
    version: int | None = None
    device_id: str = ""
    app_version: str = ""
    user_id: str = ""
    idempotency_key: str | None = None


class StateChanges(msgspec.Struct, frozen=True, kw_only=True):
    """Keys set and keys deleted; `base_version`, when given, must be the current version."""

    session_id: str
    changes: dict[str, Any] = {}
    deleted_keys: list[str] = []
    base_version: int | None = None
    device_id: str = ""
    user_id: str = ""
    idempotency_key: str | None = None


class ConflictResolution(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    client_state: dict[str, Any]
    strategy: ConflictStrategy = ConflictStrategy.SERVER_WINS
    client_version: int = 0
    user_id: str = ""
    idempotency_key: str | None = None


class SnapshotRead(msgspec.Struct, frozen=True, kw_only=True):
    """Every read already reflects every acknowledged write; `min_version` (a session version
    the client saw elsewhere) is waited for, bounded, then refused with 409
    VERSION_NOT_REACHED rather than answered with an older state."""

    session_id: str
    min_version: int | None = None


class StateWritten(WriteResult, frozen=True, kw_only=True):
    """`state_version`: the state's version after the write."""

    state_version: int


class Resolved(WriteResult, frozen=True, kw_only=True):
    """The state the strategy kept, and its version."""

    state: dict[str, Any]
    state_version: int


def check_state(ctx: Context, state: Any, what: str) -> None:
    """Refuse a state the stores cannot hold: integers beyond 64 bits (msgpack), or more
    than `max_state_bytes` of JSON (413 STATE_TOO_LARGE)."""
    try:
        msgspec.msgpack.encode(state)
    except OverflowError:
        raise ApiError(400, "INVALID_ARGUMENT", f"{what}: integers must fit in 64 bits") from None
    limit = ctx.config.max_state_bytes
    if len(_json.encode(state)) > limit:
        raise ApiError(413, "STATE_TOO_LARGE", f"{what} is limited to {limit} bytes")


async def save_snapshot(ctx: Context, claims: Claims, req: SnapshotWrite) -> StateWritten:
    check_stated_user(claims, req.user_id)
    check_state(ctx, req.state, "state_data")
    key = idempotency(
        claims,
        req.session_id,
        "save_snapshot",
        req.idempotency_key,
        req.state,
        req.version,
        req.app_version,
    )
    outcome = await send(
        ctx,
        req.session_id,
        ReplaceState(
            at=now_ms(),
            user_id=claims.user_id,
            admin=claims.is_admin,
            session_id=req.session_id,
            state=req.state,
            version=req.version,
            device_id=req.device_id,
            app_version=req.app_version,
            ttl_ms=ctx.config.session_ttl_ms,
        ),
        idempotency=key,
    )
    answer = outcome.result if outcome is not None else {}
    return StateWritten(
        **written(outcome, key), state_version=answer.get("state_version", req.version or 0)
    )


async def apply_changes(ctx: Context, claims: Claims, req: StateChanges) -> StateWritten:
    check_stated_user(claims, req.user_id)
    check_state(ctx, req.changes, "changes")
    key = idempotency(
        claims,
        req.session_id,
        "apply_changes",
        req.idempotency_key,
        req.changes,
        req.deleted_keys,
        req.base_version,
    )
    outcome = await send(
        ctx,
        req.session_id,
        ApplyStateChanges(
            at=now_ms(),
            user_id=claims.user_id,
            admin=claims.is_admin,
            changes=req.changes,
            deleted_keys=req.deleted_keys,
            base_version=req.base_version,
            device_id=req.device_id,
        ),
        idempotency=key,
    )
    answer = outcome.result if outcome is not None else {}
    return StateWritten(
        **written(outcome, key), state_version=answer.get("state_version", req.base_version or 0)
    )


async def resolve_conflict(ctx: Context, claims: Claims, req: ConflictResolution) -> Resolved:
    check_stated_user(claims, req.user_id)
    check_state(ctx, req.client_state, "client_state")
    key = idempotency(
        claims,
        req.session_id,
        "resolve_conflict",
        req.idempotency_key,
        req.client_state,
        req.strategy,
        req.client_version,
    )
    outcome = await send(
        ctx,
        req.session_id,
        ResolveConflict(
            at=now_ms(),
            user_id=claims.user_id,
            admin=claims.is_admin,
            client_state=req.client_state,
            strategy=req.strategy,
            client_version=req.client_version,
        ),
        idempotency=key,
    )
    answer = outcome.result if outcome is not None else {}
    return Resolved(
        **written(outcome, key),
        state=answer.get("state", {}),
        state_version=answer.get("state_version", 0),
    )


async def read_snapshot(ctx: Context, claims: Claims, req: SnapshotRead) -> SessionSnapshot:
    await authorize_read(ctx, claims, req.session_id)
    return await snapshot_row(ctx, req.session_id, req.min_version or 0)
