"""Device handoff (seed 004): one device issues a token carrying the session's state, another
device accepts it, once, within five minutes.

The token is made here (random, never chosen by a client); the session actor records it with
the state as it is, checks its acceptance, and answers both in its outcome (`Outcome.result`):
a retry of a start gets the first request's token, an acceptance the state the token carries.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import msgspec

from events.session import DEFAULT_HANDOFF_TTL_MS, AcceptHandoff, StartHandoff
from gateway.auth import Claims
from gateway.errors import ApiError
from gateway.operations.commands import WriteResult, idempotency, now_ms, send, written

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "HandoffAcceptance",
    "HandoffIssued",
    "HandoffStart",
    "HandoffValidated",
    "accept_handoff",
    "start_handoff",
]

#: How long a handoff token is good for (seconds): the session actor's default.
HANDOFF_TTL_S = DEFAULT_HANDOFF_TTL_MS // 1000


class HandoffStart(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    source_device: str
    target_device: str
    idempotency_key: str | None = None


class HandoffAcceptance(msgspec.Struct, frozen=True, kw_only=True):
    """`device_id`, when given, must be the handoff's target device."""

    session_id: str
    token: str
    device_id: str = ""
    idempotency_key: str | None = None


class HandoffIssued(WriteResult, frozen=True, kw_only=True):
    token: str
    source_device: str
    target_device: str
    expires_at: int  # ms since the epoch
    expires_in: int  # seconds


class HandoffValidated(WriteResult, frozen=True, kw_only=True):
    token: str
    source_device: str
    target_device: str
    state: dict[str, Any]
    state_version: int


async def start_handoff(ctx: Context, claims: Claims, req: HandoffStart) -> HandoffIssued:
    key = idempotency(
        claims,
        req.session_id,
        "start_handoff",
        req.idempotency_key,
        req.source_device,
        req.target_device,
    )
    token = secrets.token_urlsafe(24)
    outcome = await send(
        ctx,
        req.session_id,
        StartHandoff(
            at=now_ms(),
            user_id=claims.user_id,
            admin=claims.is_admin,
            token=token,
            source_device=req.source_device,
            target_device=req.target_device,
        ),
        idempotency=key,
    )
    answer = outcome.result if outcome is not None else {}
    return HandoffIssued(
        **written(outcome, key),
        token=answer.get("token", token),
        source_device=req.source_device,
        target_device=req.target_device,
        expires_at=answer.get("expires_at", now_ms() + DEFAULT_HANDOFF_TTL_MS),
        expires_in=HANDOFF_TTL_S,
    )


async def accept_handoff(ctx: Context, claims: Claims, req: HandoffAcceptance) -> HandoffValidated:
    key = idempotency(
        claims, req.session_id, "accept_handoff", req.idempotency_key, req.token, req.device_id
    )
    outcome = await send(
        ctx,
        req.session_id,
        AcceptHandoff(
            at=now_ms(),
            user_id=claims.user_id,
            admin=claims.is_admin,
            token=req.token,
            device_id=req.device_id,
        ),
        idempotency=key,
    )
    answer = outcome.result if outcome is not None else {}
    if "state" not in answer:  # an outcome stored before outcomes carried results
        raise ApiError(404, "HANDOFF_NOT_FOUND", "unknown handoff token")
    return HandoffValidated(
        **written(outcome, key),
        token=req.token,
        source_device=answer["source_device"],
        target_device=answer["target_device"],
        state=answer["state"],
        state_version=answer["state_version"],
    )
