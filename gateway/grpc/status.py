"""How an edge error (`gateway.errors.ApiError`) becomes a gRPC status: pure, no I/O.

The status code follows the error's HTTP status, so every transport refuses the same request
the same way; the stable error code (VERSION_CONFLICT, OUTCOME_UNKNOWN, ...) travels in the
trailing metadata, where a client branches on it (`sessiond-error-code`), with the whole REST
error body as JSON (`sessiond-error-bin`: the key to retry with rides there too) and
`retry-after` when waiting helps.
"""

from __future__ import annotations

import grpc
import msgspec

from gateway.errors import ApiError

__all__ = [
    "CODE_KEY",
    "ERROR_KEY",
    "RETRY_AFTER_KEY",
    "close_status",
    "status_of",
    "trailers_of",
]

CODE_KEY = "sessiond-error-code"
ERROR_KEY = "sessiond-error-bin"  # "-bin": the value is bytes (JSON, any text in it)
RETRY_AFTER_KEY = "retry-after"

_BY_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.FAILED_PRECONDITION,  # versions, handoffs used, simulator active
    410: grpc.StatusCode.FAILED_PRECONDITION,  # ended, expired: the state says no
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,  # a state or body over its limit
    422: grpc.StatusCode.FAILED_PRECONDITION,  # an idempotency key already used for another
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

#: Why the hub closed a watch (its WebSocket close code) -> how the stream ends; None: OK,
#: the stream is over (the session ended or expired: nothing more will come).
_CLOSES: dict[int, grpc.StatusCode | None] = {
    4410: None,
    4401: grpc.StatusCode.UNAUTHENTICATED,  # the token expired: reconnect with a new one
    1008: grpc.StatusCode.RESOURCE_EXHAUSTED,  # SLOW_CLIENT: it read too slowly
    1012: grpc.StatusCode.UNAVAILABLE,  # SERVER_DRAINING: resume on another gateway
}


def status_of(err: ApiError) -> grpc.StatusCode:
    """The status code of an edge error (by its HTTP status class when not listed)."""
    found = _BY_HTTP.get(err.status)
    if found is not None:
        return found
    if err.status >= 500:
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INVALID_ARGUMENT


def trailers_of(err: ApiError) -> tuple[tuple[str, str | bytes], ...]:
    """The trailing metadata of an edge error: its code, its error body, `retry-after`."""
    body = {"code": err.code, "message": err.message, **(err.extra or {})}
    trailers: list[tuple[str, str | bytes]] = [
        (CODE_KEY, err.code),
        (ERROR_KEY, msgspec.json.encode({"error": body})),
    ]
    retry_after = (err.headers or {}).get("Retry-After")  # as the HTTP answer says it
    if retry_after is not None:
        trailers.append((RETRY_AFTER_KEY, retry_after))
    return tuple(trailers)


def close_status(code: int) -> grpc.StatusCode | None:
    """How a watch closed by the hub with `code` ends (None: OK)."""
    return _CLOSES.get(code, grpc.StatusCode.UNAVAILABLE)
