"""The gateway's pure limit pieces: idempotency keys (scope, fingerprint, reuse), token buckets
(WS messages, REST requests per user), the limits' configuration and the error shape that
carries a key or a `Retry-After`."""

from __future__ import annotations

import json

import pytest

from gateway.config import ConfigError, GatewayConfig
from gateway.errors import ApiError, error_response
from gateway.idempotency import check_key, fingerprint, outcome_unknown, reused, scoped
from gateway.ratelimit import KeyedLimiter, TokenBucket
from gateway.slots import ConnectionSlots
from infra.config import load_settings

# ------------------------------------------------------------------ idempotency keys


def test_a_key_is_scoped_to_the_user_the_session_and_the_operation() -> None:
    base = scoped("http", "u", "s1", "post_snapshot", "k", {"a": 1})
    assert base.command_id == "http:u:s1:post_snapshot:k" and not base.generated
    others = [
        scoped("http", "u", "s2", "post_snapshot", "k", {"a": 1}),
        scoped("http", "u", "s1", "post_incremental", "k", {"a": 1}),
        scoped("http", "v", "s1", "post_snapshot", "k", {"a": 1}),
        scoped("ws", "u", "s1", "post_snapshot", "k", {"a": 1}),
    ]
    assert len({base.command_id, *(o.command_id for o in others)}) == 5


def test_the_fingerprint_ignores_key_order_but_not_values() -> None:
    a = fingerprint("op", {"x": 1, "y": {"b": 2, "a": [1, 2]}})
    assert a == fingerprint("op", {"y": {"a": [1, 2], "b": 2}, "x": 1})
    assert a != fingerprint("op", {"x": 1, "y": {"b": 2, "a": [2, 1]}})
    assert a != fingerprint("op", {"x": 1.0, "y": {"b": 2, "a": [1, 2]}})
    assert a != fingerprint("other", {"x": 1, "y": {"b": 2, "a": [1, 2]}})


def test_a_stored_outcome_of_another_request_is_a_reuse_and_of_the_same_a_retry() -> None:
    first = scoped("http", "u", "s", "op", "k", {"v": 1})
    assert not reused(first, scoped("http", "u", "s", "op", "k", {"v": 1}).fingerprint)
    assert reused(first, scoped("http", "u", "s", "op", "k", {"v": 2}).fingerprint)
    assert not reused(first, "")  # stored before fingerprints existed


def test_a_write_without_a_key_gets_a_fresh_one() -> None:
    a, b = scoped("ws", "u", "s", "op", None, {}), scoped("ws", "u", "s", "op", None, {})
    assert a.generated and b.generated and a.key != b.key and a.command_id.endswith(a.key)


@pytest.mark.parametrize("key", ["", "x" * 201, "has space", "nul\x00", "é"])
def test_keys_that_cannot_go_into_a_command_id_are_refused(key: str) -> None:
    with pytest.raises(ApiError) as info:
        check_key(key)
    assert (info.value.status, info.value.code) == (400, "INVALID_ARGUMENT")
    assert check_key("order-42_A.b~") == "order-42_A.b~"


def test_outcome_unknown_carries_the_key_to_retry_with_in_body_and_headers() -> None:
    key = scoped("http", "u", "s", "op", None, {})
    err = outcome_unknown(key, 2)
    response = error_response(err.status, err.code, err.message, err.headers, err.extra)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.headers["idempotency-key"] == key.key
    body = json.loads(response.body)["error"]
    assert body["code"] == "OUTCOME_UNKNOWN" and body["idempotency_key"] == key.key
    assert body["retry_after"] == 2


# ------------------------------------------------------------------ token buckets


def test_a_bucket_allows_the_burst_then_the_rate_and_keeps_debt() -> None:
    bucket = TokenBucket(3, now=0.0)
    assert [bucket.take(0.0, rate=1.0, burst=3) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s(1.0) == pytest.approx(2.0)  # one token of debt, one to take
    assert not bucket.take(1.0, 1.0, 3)  # still in debt: hammering keeps it limited
    assert bucket.take(4.0, 1.0, 3)
    assert bucket.full(100.0, 1.0, 3) and not bucket.full(4.0, 1.0, 3)


def test_the_keyed_limiter_limits_each_key_on_its_own_and_says_how_long_to_wait() -> None:
    limiter = KeyedLimiter(rate=2.0, burst=2.0)
    assert [limiter.check("a", 0.0) for _ in range(3)] == [0, 0, 1]
    assert limiter.check("b", 0.0) == 0
    assert limiter.check("a", 0.0) == 2  # two tokens of debt now at 2/s: wait a second, round up
    assert limiter.check("a", 3.0) == 0
    assert KeyedLimiter(rate=0.0, burst=1.0).check("a", 0.0) == 0  # 0 = no limit


def test_the_keyed_limiter_forgets_quiet_keys_when_it_grows() -> None:
    limiter = KeyedLimiter(rate=1.0, burst=1.0, max_keys=2)
    limiter.check("a", 0.0)
    limiter.check("b", 0.0)
    limiter.check("c", 10.0)  # a and b refilled long ago: forgotten
    assert set(limiter.buckets) == {"c"}
    limiter.check("d", 10.0)
    limiter.check("e", 10.0)  # c and d are busy: the table grows instead
    assert set(limiter.buckets) == {"c", "d", "e"} and limiter.max_keys >= 4


def test_connection_slots_are_capped_per_user_and_given_back() -> None:
    slots = ConnectionSlots(cap=2)
    assert [slots.take("a"), slots.take("a"), slots.take("a")] == [True, True, False]
    assert slots.take("b")
    slots.give_back("a")
    assert slots.take("a") and not slots.take("a")
    for _ in range(3):
        slots.give_back("b")  # more than held: never negative
    assert "b" not in slots.held and all(ConnectionSlots(0).take("x") for _ in range(5))


# ------------------------------------------------------------------ configuration


def test_the_limits_are_read_from_the_environment() -> None:
    cfg = load_settings(
        {
            "GATEWAY_REST_RATE_PER_S": "5",
            "GATEWAY_REST_RATE_BURST": "7",
            "GATEWAY_MAX_CONNECTIONS_PER_USER": "3",
            "GATEWAY_MAX_CONNECTIONS_PER_SESSION": "4",
            "GATEWAY_MAX_DEVICES_PER_SESSION": "6",
            "GATEWAY_DEVICE_RETENTION": "90",
            "GATEWAY_TOKEN_GRACE": "0",
            "GATEWAY_RETRY_AFTER": "3",
        }
    ).gateway
    assert (cfg.rest_rate_per_s, cfg.rest_rate_burst) == (5.0, 7.0)
    assert (cfg.max_connections_per_user, cfg.max_connections_per_session) == (3, 4)
    assert (cfg.max_devices_per_session, cfg.device_retention_s) == (6, 90.0)
    assert (cfg.token_grace_s, cfg.retry_after_s) == (0.0, 3)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_MAX_CONNECTIONS_PER_USER", "-1"),
        ("GATEWAY_DEVICE_RETENTION", "-5"),
        ("GATEWAY_REST_RATE_BURST", "0.5"),
        ("GATEWAY_RETRY_AFTER", "soon"),
    ],
)
def test_bad_limits_are_refused_with_their_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_the_origin_allow_list() -> None:
    cfg = GatewayConfig(allowed_origins=("http://ok.example",))
    assert cfg.origin_allowed("http://ok.example") and cfg.origin_allowed(None)
    assert not cfg.origin_allowed("http://evil.example")
    assert GatewayConfig(allowed_origins=("*",)).origin_allowed("http://evil.example")
