"""Edge errors as gRPC statuses: the code follows the HTTP status, the stable error code and
the error body travel in the trailing metadata."""

from __future__ import annotations

import grpc
import msgspec
import pytest

from events.errors import CODES
from gateway.errors import ApiError, from_outcome
from gateway.grpc.status import close_status, status_of, trailers_of
from gateway.idempotency import outcome_unknown, scoped

S = grpc.StatusCode


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("SESSION_NOT_FOUND", S.NOT_FOUND),
        ("SESSION_FORBIDDEN", S.PERMISSION_DENIED),
        ("SESSION_ENDED", S.FAILED_PRECONDITION),
        ("VERSION_CONFLICT", S.FAILED_PRECONDITION),
        ("STATE_TOO_LARGE", S.RESOURCE_EXHAUSTED),
        ("TOO_MANY_CONNECTIONS", S.RESOURCE_EXHAUSTED),
        ("INVALID_ARGUMENT", S.INVALID_ARGUMENT),
    ],
)
def test_a_domain_refusal_maps_by_its_http_status(code: str, expected: grpc.StatusCode) -> None:
    assert status_of(from_outcome(code, "no")) is expected


def test_every_domain_code_has_a_status_other_than_unknown() -> None:
    for code in CODES:
        assert status_of(from_outcome(code, "no")) not in (S.UNKNOWN, S.OK, S.INTERNAL)


def test_edge_refusals_map_too() -> None:
    assert status_of(ApiError(401, "TOKEN_EXPIRED", "x")) is S.UNAUTHENTICATED
    assert status_of(ApiError(429, "RATE_LIMITED", "x")) is S.RESOURCE_EXHAUSTED
    assert status_of(ApiError(503, "STORE_UNAVAILABLE", "x")) is S.UNAVAILABLE
    assert status_of(ApiError(500, "INTERNAL", "x")) is S.INTERNAL
    assert status_of(ApiError(418, "ODD", "x")) is S.INVALID_ARGUMENT
    assert status_of(ApiError(502, "ODD", "x")) is S.UNAVAILABLE


def test_outcome_unknown_carries_the_key_to_retry_with() -> None:
    err = outcome_unknown(scoped("client", "u", "s", "op", "key-1"), 2)
    trailers = dict(trailers_of(err))
    assert status_of(err) is S.UNAVAILABLE
    assert trailers["sessiond-error-code"] == "OUTCOME_UNKNOWN"
    assert trailers["retry-after"] == "2"
    body = msgspec.json.decode(trailers["sessiond-error-bin"])
    assert body["error"]["idempotency_key"] == "key-1"
    assert body["error"]["code"] == "OUTCOME_UNKNOWN"


def test_a_watch_closed_by_the_hub_ends_by_why() -> None:
    assert close_status(4410) is None  # the session ended: the stream is complete
    assert close_status(1012) is S.UNAVAILABLE  # draining: resume elsewhere
    assert close_status(4401) is S.UNAUTHENTICATED
    assert close_status(1008) is S.RESOURCE_EXHAUSTED
    assert close_status(4999) is S.UNAVAILABLE
