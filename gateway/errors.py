"""The edge's one error shape: ``{"error": {"code", "message"}}`` with the right HTTP status.

Domain rejections keep their stable codes (events.errors.CODES gives the status); infrastructure
failures become 503 without internals; anything unexpected becomes a 500 with a generic message
(the detail goes to the log, never to the client).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.responses import Response

from events.errors import CODES, DomainError, InfraError

__all__ = [
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "error_body",
    "error_response",
    "from_exception",
    "from_outcome",
]

log = logging.getLogger("sessiond.gateway")

_encoder = msgspec.json.Encoder()


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class ApiError(Exception):
    """Raised anywhere in the gateway to answer a request (or a WS message) with an error.

    `headers` go on an HTTP answer (e.g. `Retry-After`); `extra` fields join `code` and
    `message` in the error object, on every transport (e.g. the key to retry with)."""

    def __init__(self, status: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra


def error_body(code: str, message: str, extra: dict[str, Any] | None = None) -> bytes:
    if extra:
        return _encoder.encode({"error": {"code": code, "message": message, **extra}})
    return _encoder.encode(ErrorBody(ErrorDetail(code, message)))


def error_response(status: int, code: str, message: str, headers: dict | None = None,
                   extra: dict[str, Any] | None = None) -> Response:
    return Response(
        error_body(code, message, extra), status_code=status, media_type="application/json",
        headers=headers,
    )


def from_exception(exc: BaseException) -> ApiError:
    """Translate any exception into the ApiError a client may see."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DomainError):
        return ApiError(exc.http_status, exc.code, exc.message)
    if isinstance(exc, InfraError):
        return ApiError(503, exc.code, "the service is temporarily unavailable, retry later")
    if isinstance(exc, TimeoutError):
        return ApiError(503, "TIMEOUT", "the service did not answer in time, retry later")
    if isinstance(exc, OverflowError):
        return ApiError(400, "INVALID_ARGUMENT",
                        "a number is out of range: integers must fit in 64 bits")
    if isinstance(exc, msgspec.ValidationError):
        return ApiError(400, "INVALID_ARGUMENT", str(exc))
    if isinstance(exc, msgspec.DecodeError):
        return ApiError(400, "MALFORMED_JSON", f"the body is not valid JSON: {exc}")
    log.exception("unexpected error at the edge", exc_info=exc)
    return ApiError(500, "INTERNAL", "internal error")


def from_outcome(code: str, message: str) -> ApiError:
    """An actor's refusal (Outcome.ok False) as the ApiError it maps to."""
    return ApiError(CODES.get(code, 400 if code.startswith("INVALID") else 409), code, message)
