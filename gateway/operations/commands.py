"""Sending a write to its actor: the one command path of every operation, and the one place a
client's idempotency key becomes a command id.

A write is a command to an actor of the session's partition, answered by its `Outcome`. A
refusal becomes the `ApiError` its code maps to (the decider's code and message, unchanged); a
store that does not answer becomes 503 (OUTCOME_UNKNOWN with the key to retry with, when the
write had one). The answer's fields come from the outcome (`Outcome.result`), never from the
events read back.

Idempotency (see gateway/idempotency.py for the rules): the client's key, or one generated for
it, scoped to the user, the session and the operation, whatever the transport (a retry may come
back over another one); the fingerprint digests what the write asks for, as each operation lists
it (`idempotency`), not how it was spelled on the wire.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec

from events.envelope import Outcome
from events.errors import StoreUnavailable
from events.ids import session_actor
from gateway.auth import Claims
from gateway.errors import ApiError, from_outcome
from gateway.idempotency import IdempotencyKey, check_key, outcome_unknown, reused, scoped

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "KEY_SCOPE",
    "WriteResult",
    "correlated",
    "idempotency",
    "now_ms",
    "send",
    "written",
]

#: The scope of client keys in command ids (`client:<user>:<session>:<operation>:<key>`).
KEY_SCOPE = "client"


#: The correlation id a client gave its request (REST `X-Correlation-ID`, gRPC
#: `x-correlation-id` metadata); the command's events, and the commands and events they cause
#: on other actors, carry it, so `sessiond events --correlation-id` and the console find them
#: by the id the client knows. Without one, the command id correlates.
_request_correlation: ContextVar[str] = ContextVar("request_correlation", default="")


@contextlib.contextmanager
def correlated(correlation_id: str) -> Iterator[None]:
    """Every command sent in this context carries `correlation_id` (checked: 1..200 visible
    ASCII characters, as it is stored with every event; else a 400)."""
    if not correlation_id:
        yield
        return
    check_key(correlation_id, "correlation id")
    token = _request_correlation.set(correlation_id)
    try:
        yield
    finally:
        _request_correlation.reset(token)


def now_ms() -> int:
    """The time a command carries (deciders never read a clock)."""
    return int(time.time() * 1000)


def idempotency(
    claims: Claims, session_id: str, operation: str, key: str | None, *request: Any
) -> IdempotencyKey:
    """The key of one write: the client's `key` (None: a generated one), scoped to the user,
    the session and `operation`; `request` is what the write asks for (fingerprinted)."""
    if key is not None:
        check_key(key, "idempotency key")
    return scoped(KEY_SCOPE, claims.user_id, session_id, operation, key, *request)


async def send(
    ctx: Context,
    session_id: str,
    command: Any,
    *,
    actor_id: str | None = None,
    command_id: str | None = None,
    correlation_id: str = "",
    wait: bool = True,
    idempotency: IdempotencyKey | None = None,
) -> Outcome | None:
    """Send `command` to the session (or to `actor_id` of its partition) and, with `wait`,
    return its outcome; a refusal raises the ApiError its code maps to, a store problem a 503.

    A client's write comes with its `idempotency` key (its command id and the request's
    fingerprint): a stored outcome of another request under that key is 422
    IDEMPOTENCY_KEY_REUSED, and a store problem is 503 OUTCOME_UNKNOWN carrying the key to
    retry with (the command may have been queued: it may be applied later)."""
    config, metrics = ctx.config, ctx.metrics
    started = time.perf_counter()
    if idempotency is not None:
        command_id = idempotency.command_id
    try:
        outcome = await ctx.sender.send(
            actor_id or session_actor(session_id),
            session_id,
            command,
            command_id=command_id,
            correlation_id=correlation_id or _request_correlation.get(),
            wait=wait,
            timeout=config.command_timeout_s,
            fingerprint=idempotency.fingerprint if idempotency is not None else "",
        )
    except (StoreUnavailable, TimeoutError, ConnectionError):
        if idempotency is not None:
            metrics.command_errors.labels("OUTCOME_UNKNOWN").inc()
            raise outcome_unknown(idempotency, config.retry_after_s) from None
        metrics.command_errors.labels("UNAVAILABLE").inc()
        raise ApiError(
            503, "STORE_UNAVAILABLE", "the session store did not answer in time, retry later"
        ) from None
    if wait:
        metrics.command_seconds.observe(time.perf_counter() - started)
    metrics.commands.labels(type(command).__name__).inc()
    if outcome is None:
        return None
    if idempotency is not None and reused(idempotency, outcome.fingerprint):
        metrics.command_errors.labels("IDEMPOTENCY_KEY_REUSED").inc()
        raise ApiError(
            422,
            "IDEMPOTENCY_KEY_REUSED",
            "this idempotency key was already used for another request; "
            "nothing was written for this one (use a new key)",
        )
    if not outcome.ok:
        metrics.command_errors.labels(outcome.error_code).inc()
        raise from_outcome(outcome.error_code, outcome.error_message)
    return outcome


class WriteResult(msgspec.Struct, frozen=True, kw_only=True):
    """What every write answers with, whatever else it says: the session's version after it
    (`session_version`, what a client resumes from; 0 when nothing waited for it) and the key
    it was sent under (`idempotency_key`; `key_generated` when the client sent none)."""

    session_version: int
    idempotency_key: str
    key_generated: bool


def written(outcome: Outcome | None, key: IdempotencyKey) -> dict[str, Any]:
    """The `WriteResult` fields of a write, from its outcome and key."""
    return {
        "session_version": outcome.version if outcome is not None else 0,
        "idempotency_key": key.key,
        "key_generated": key.generated,
    }
