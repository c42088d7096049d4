"""The Python client's pure parts: the SSE parser, where a watch resumes, the retry policy,
the error value."""

from __future__ import annotations

import base64
import json

from sessiond_client import ClientError, RetryPolicy
from sessiond_client._core import Resume, SseParser, token_subject


def feed(parser: SseParser, text: str) -> list:
    return [c for line in text.split("\n") if (c := parser.feed(line)) is not None]


def test_sse_records_become_changes_and_comments_are_skipped() -> None:
    frame = {
        "type": "state_update",
        "session_id": "s",
        "timestamp": 5,
        "payload": {"version": 7, "changes": {"a": 1}},
    }
    text = f": keep-alive\n\nid: 7\nevent: state_update\ndata: {json.dumps(frame)}\n\n"
    [change] = feed(SseParser(), text)
    assert (change.type, change.version, change.payload["changes"]) == ("state_update", 7, {"a": 1})
    assert (change.session_id, change.timestamp) == ("s", 5)


def test_resume_drops_what_it_delivered_and_follows_resets() -> None:
    parser, resume = SseParser(), Resume(None)
    hello = {"type": "connected", "payload": {"version": 3}}
    [connected] = feed(parser, f"event: connected\ndata: {json.dumps(hello)}\n\n")
    assert resume.accept(connected) and resume.since == 3

    def change(v: int, kind: str = "state_update") -> object:
        [c] = feed(parser, f"data: {json.dumps({'type': kind, 'payload': {'version': v}})}\n\n")
        return c

    assert not resume.accept(change(3))
    assert resume.accept(change(4)) and resume.query("d") == {"since": "4", "device_id": "d"}
    assert resume.accept(change(2, "reset")) and resume.since == 2


def test_resume_is_over_when_the_session_ends_but_not_on_a_restart() -> None:
    resume = Resume(0)
    parser = SseParser()
    restarted = {
        "type": "session_update",
        "payload": {"version": 1, "status": "ENDED", "reason": "restarted"},
    }
    ended = {"type": "session_update", "payload": {"version": 2, "status": "ENDED"}}
    for frame, over in ((restarted, False), (ended, True)):
        [c] = feed(parser, f"data: {json.dumps(frame)}\n\n")
        resume.accept(c)
        assert resume.over is over


def test_retry_policy_retries_only_what_may_succeed() -> None:
    policy = RetryPolicy(attempts=3, backoff_s=0.1, max_backoff_s=1)
    offline = ClientError("CONNECTION_ERROR", "reset")
    assert 0.05 <= policy.delay(0, offline, write=True) <= 0.1
    assert policy.delay(2, offline, write=True) is None  # attempts spent
    unknown = ClientError("OUTCOME_UNKNOWN", "x", 503, idempotency_key="k", retry_after=2)
    assert policy.delay(0, unknown, write=True) == 2
    for status in (400, 401, 403, 404, 409, 410, 422):
        assert policy.delay(0, ClientError("NO", "x", status), write=True) is None


def test_a_client_error_is_the_text_seed_003_prints() -> None:
    body = json.dumps(
        {"error": {"code": "OUTCOME_UNKNOWN", "message": "retry", "idempotency_key": "k1"}}
    ).encode()
    err = ClientError.from_answer(503, body, {"retry-after": "2"})
    assert err == "OUTCOME_UNKNOWN: retry" and isinstance(err, str)
    assert (err.code, err.status, err.idempotency_key, err.retry_after) == (
        "OUTCOME_UNKNOWN",
        503,
        "k1",
        2.0,
    )
    assert ClientError.from_answer(502, b"<html>", {}).code == "HTTP_502"


def test_token_subject_reads_the_unverified_sub_claim() -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "alice"}).encode()).rstrip(b"=")
    assert token_subject(f"h.{claims.decode()}.s") == "alice"
    assert token_subject("garbage") is None
