"""Idempotency keys: what a client's key protects, and how its reuse is told apart from a retry.

A client write becomes a command whose id is the client's idempotency key *scoped to what it
protects*: the transport, the user, the session and the operation
(`http:<user>:<session>:<operation>:<key>`, `ws:...`). The same key on another session, or for
another operation, names another command: both are written, nothing is silently dropped.

Within that scope the request itself is digested (`fingerprint`: BLAKE2b of its canonical JSON,
dict keys sorted, so key order and whitespace do not matter) and sent in the command envelope;
the worker stores it in the command's outcome. A later request with the same scoped key gets the
stored outcome back (the command id is the actor runtime's deduplication key), and the gateway
compares fingerprints: the same request is a retry and gets the first outcome (nothing appended
twice); another request is refused with 422 `IDEMPOTENCY_KEY_REUSED` (nothing was written for
it), as Stripe answers a key reused with other parameters.

A write sent without a key gets one generated here, so that when its outcome is unknown (the
store or the worker did not answer in time: 503 `OUTCOME_UNKNOWN`) the client can be told which
key to retry with, and that retry is idempotent too.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import msgspec

from gateway.errors import ApiError

__all__ = [
    "MAX_KEY_LENGTH",
    "IdempotencyKey",
    "check_key",
    "fingerprint",
    "new_key",
    "outcome_unknown",
    "reused",
    "scoped",
]

MAX_KEY_LENGTH = 200

_canonical = msgspec.json.Encoder(order="deterministic")


class IdempotencyKey(msgspec.Struct, frozen=True, kw_only=True):
    """One write's key: `key` is what the client sends again to retry it (its own, or the one
    generated for it), `command_id` the scoped command id, `fingerprint` the request's digest."""

    key: str
    command_id: str
    fingerprint: str
    generated: bool = False


def check_key(key: str, field: str = "Idempotency-Key") -> str:
    """`key` if it is 1..200 visible ASCII characters; else a 400 naming `field`. (It becomes
    part of a command id, which is stored with every event the command causes.)"""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not all("!" <= c <= "~" for c in key):
        raise ApiError(
            400, "INVALID_ARGUMENT", f"{field} must be 1..{MAX_KEY_LENGTH} visible ASCII characters"
        )
    return key


def new_key() -> str:
    """A fresh key for a write sent without one (128 random bits)."""
    return secrets.token_hex(16)


def fingerprint(*parts: Any) -> str:
    """The digest of a request: its parts as canonical JSON (dict keys sorted)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(_canonical.encode(part))
        digest.update(b"\x00")
    return digest.hexdigest()


def scoped(
    transport: str, user_id: str, session_id: str, operation: str, key: str | None, *request: Any
) -> IdempotencyKey:
    """The key of one write: the client's `key` (None: a generated one), scoped to the user,
    the session and the operation; `request` (the body, path parameters...) is fingerprinted."""
    generated = key is None
    if key is None:
        key = new_key()
    return IdempotencyKey(
        key=key,
        command_id=f"{transport}:{user_id}:{session_id}:{operation}:{key}",
        fingerprint=fingerprint(operation, *request),
        generated=generated,
    )


def reused(idem: IdempotencyKey, stored_fingerprint: str) -> bool:
    """Whether a stored outcome answered another request than `idem`'s (an outcome stored
    before fingerprints existed carries none: taken as the same request)."""
    return bool(stored_fingerprint) and stored_fingerprint != idem.fingerprint


def outcome_unknown(idem: IdempotencyKey, retry_after_s: int) -> ApiError:
    """503 OUTCOME_UNKNOWN: the write may or may not have been applied (it may still be); the
    error carries the key to retry with, so that the retry is applied at most once."""
    return ApiError(
        503,
        "OUTCOME_UNKNOWN",
        "the write was sent but its outcome is unknown (it may have been applied, or may still "
        "be): retry with the same idempotency key, never a new one",
        headers={"Retry-After": str(retry_after_s), "Idempotency-Key": idem.key},
        extra={"idempotency_key": idem.key, "retry_after": retry_after_s},
    )
