"""The edge's one error shape: ``{"error": {"code", "message"}}`` with the right HTTP status.

`ApiError` is the edge's branch of the one exception tree (`events.errors.SessiondError`): a
refusal with a stable code and the HTTP status it is answered with (the WebSocket and gRPC
adapters map the same code to their own close codes and statuses). Domain rejections keep their
stable codes (events.errors.CODES gives the status); infrastructure failures become 503 without
internals, with a Retry-After header (PostgreSQL unreachable: DATABASE_UNAVAILABLE); anything
unexpected becomes a 500 with a generic message (the detail goes to the log, never to the
client). Errors are values at the edges: every adapter turns an exception into its error
message with `from_exception`, never lets one through.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import msgspec
from starlette.responses import Response

from events.errors import CODES, DomainError, InfraError, SessiondError
from infra.postgres import DatabaseUnavailable, unreachable

__all__ = [
    "DATABASE_RETRY_AFTER_S",
    "RETRY_AFTER_S",
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


#: Seconds a client is asked to wait (Retry-After) before retrying a 503, and after a
#: PostgreSQL outage (about what a restarted server and the reconnect take).
RETRY_AFTER_S = 1
DATABASE_RETRY_AFTER_S = 2


class ApiError(SessiondError):
    """Raised anywhere in the gateway to answer a request (or a WS message) with an error.

    A 503 carries `retry_after` (seconds; RETRY_AFTER_S unless given), sent as `Retry-After`;
    other `headers` go on an HTTP answer too; `extra` fields join `code` and `message` in the
    error object, on every transport (e.g. the key to retry with)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, code)
        self.status = status
        self.extra = extra
        self._headers = headers
        self.retry_after = RETRY_AFTER_S if retry_after is None and status == 503 else retry_after

    @property
    def headers(self) -> dict[str, str] | None:
        """HTTP headers of the answer: the given ones, and Retry-After of a 503."""
        if self.retry_after is None:
            return self._headers
        return {"Retry-After": str(self.retry_after), **(self._headers or {})}


def error_body(code: str, message: str, extra: dict[str, Any] | None = None) -> bytes:
    if extra:
        return _encoder.encode({"error": {"code": code, "message": message, **extra}})
    return _encoder.encode(ErrorBody(ErrorDetail(code, message)))


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    return Response(
        error_body(code, message, extra),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def from_exception(exc: BaseException) -> ApiError:
    """Translate any exception into the ApiError a client may see."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DomainError):
        return ApiError(exc.http_status, exc.code, exc.message)
    if isinstance(exc, DatabaseUnavailable) or (
        isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) and unreachable(exc)
    ):
        return ApiError(
            503,
            DatabaseUnavailable.code,
            "the database is unavailable, retry later",
            retry_after=DATABASE_RETRY_AFTER_S,
        )
    if isinstance(exc, InfraError):  # e.g. the event store failed outside the command path
        return ApiError(503, exc.code, "the service is temporarily unavailable, retry later")
    if isinstance(exc, TimeoutError):
        return ApiError(503, "TIMEOUT", "the service did not answer in time, retry later")
    if isinstance(exc, OverflowError):
        return ApiError(
            400, "INVALID_ARGUMENT", "a number is out of range: integers must fit in 64 bits"
        )
    if isinstance(exc, msgspec.ValidationError):
        return ApiError(400, "INVALID_ARGUMENT", str(exc))
    if isinstance(exc, msgspec.DecodeError):
        return ApiError(400, "MALFORMED_JSON", f"the body is not valid JSON: {exc}")
    log.exception("unexpected error at the edge", exc_info=exc)
    return ApiError(500, "INTERNAL", "internal error")


def from_outcome(code: str, message: str) -> ApiError:
    """An actor's refusal (Outcome.ok False) as the ApiError it maps to."""
    return ApiError(CODES.get(code, 400 if code.startswith("INVALID") else 409), code, message)
