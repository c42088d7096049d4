"""Who the caller is, and what they may do before any session is involved.

Adapters find the token where their transport carries it (a bearer header, a `token` query
parameter, an AUTH message, gRPC metadata) and call `authenticate`; a request-per-call
transport also takes `rate_limit`. Session ownership is not decided here: writes are
authorized by the deciders (the command carries the caller), reads by `reads.authorize_read`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from gateway.auth import SSE_TICKET_TTL_S, Claims
from gateway.errors import ApiError
from gateway.operations import reads

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "SseTicket",
    "TokenPair",
    "authenticate",
    "authenticate_sse",
    "check_stated_user",
    "mint_sse_ticket",
    "rate_limit",
    "reauthenticate",
    "refresh_tokens",
    "require_admin",
]


class TokenPair(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


def authenticate(ctx: Context, token: str | None) -> Claims:
    """The claims of an access token, or a 401 saying what is wrong with it."""
    return ctx.tokens.verify(token)


class SseTicket(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    ticket: str
    expires_in: int
    url: str


async def mint_sse_ticket(ctx: Context, claims: Claims, session_id: str) -> SseTicket:
    """A short-lived ticket that opens `session_id`'s SSE stream, for a browser's EventSource
    (it cannot send the access token in a header). Only for a session the caller may read."""
    await reads.authorize_read(ctx, claims, session_id)
    ticket = ctx.tokens.issue_ticket(claims, session_id)
    return SseTicket(
        session_id=session_id,
        ticket=ticket,
        expires_in=SSE_TICKET_TTL_S,
        url=f"/api/sessions/{session_id}/events?ticket={ticket}",
    )


def authenticate_sse(ctx: Context, ticket: str | None, session_id: str) -> Claims:
    """The caller of an SSE stream opened with a ticket: 401 if it is expired, not an SSE
    ticket, or another session's."""
    return ctx.tokens.verify_ticket(ticket, session_id)


def rate_limit(ctx: Context, claims: Claims) -> None:
    """One request of the caller: 429 RATE_LIMITED (with `Retry-After`) when their bucket is
    empty (`GATEWAY_REST_RATE_PER_S` sustained, `GATEWAY_REST_RATE_BURST` at once)."""
    wait = ctx.rest_limiter.check(claims.user_id, time.monotonic())
    if wait:
        raise ApiError(
            429,
            "RATE_LIMITED",
            f"more than {ctx.config.rest_rate_per_s:g} requests/s for this user",
            headers={"Retry-After": str(wait)},
            extra={"retry_after": wait},
        )


def require_admin(claims: Claims) -> None:
    """403 ADMIN_REQUIRED unless the caller holds the admin role."""
    if not claims.is_admin:
        raise ApiError(403, "ADMIN_REQUIRED", "this needs the admin role")


def check_stated_user(claims: Claims, user_id: str) -> None:
    """A request that names its user (seed 004's bodies do) must name the caller, unless the
    caller is an admin."""
    if user_id and user_id != claims.user_id and not claims.is_admin:
        raise ApiError(403, "SESSION_FORBIDDEN", "user_id does not match the token's user")


def refresh_tokens(ctx: Context, refresh_token: str) -> TokenPair:
    """A new access / refresh pair for a valid refresh token."""
    claims = ctx.tokens.verify(refresh_token, "refresh")
    return TokenPair(**ctx.tokens.issue_pair(claims.user_id, claims.roles))


def reauthenticate(ctx: Context, user_id: str, token: object) -> Claims:
    """A new token for an open connection of `user_id`: it must be that user's (the
    connection lives until the new token expires)."""
    if not isinstance(token, str):
        raise ApiError(401, "TOKEN_MISSING", "AUTH payload needs a `token` string")
    claims = ctx.tokens.verify(token)
    if claims.user_id != user_id:
        raise ApiError(
            403,
            "AUTH_USER_MISMATCH",
            "a connection re-authenticates with a token of its own user only",
        )
    return claims
