"""`gateway.validate`: what the edge refuses, and why, before anything reaches a store."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError
from gateway.protocol import ProtocolError, decode_inbound
from gateway.validate import (
    InvalidInput,
    Limits,
    check_identifiers,
    decode_json,
    identifier,
    version_param,
)
from infra.config import load_settings


def _code(fn, *args: Any, **kw: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        fn(*args, **kw)
    assert info.value.status == 400
    return info.value.code


@pytest.mark.parametrize(
    "text, path",
    [
        ('{"a\\u0000b": 1}', '$["a\\u0000b"]'),
        ('{"a": [1, {"b": "x\\u0000"}]}', "$.a[1].b"),
        ('["\\u0000"]', "$[0]"),
        ('{"k y": {"\\u0000": 0}}', '$["k y"]["\\u0000"]'),
    ],
)
def test_a_nul_anywhere_is_refused_naming_where(text: str, path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_json(text)
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.message.startswith(f"{path}: ") and "NUL" in info.value.message


def test_an_escaped_backslash_before_u0000_is_plain_text() -> None:
    assert decode_json('{"a": "\\\\u0000"}') == {"a": "\\u0000"}


@pytest.mark.parametrize("text", ['"\\ud800"', '"\\udc00"', '{"\\udfff": 1}', '"\\ud800\\u0041"'])
def test_lone_surrogates_are_refused_as_text_that_cannot_be_stored(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_json(text)
    assert info.value.code == "INVALID_ARGUMENT" and "surrogate" in info.value.message


def test_a_surrogate_pair_is_one_character() -> None:
    assert decode_json('"\\ud83d\\ude00"') == "\U0001f600"


def test_nesting_is_limited_and_never_a_recursion_error() -> None:
    limits = Limits(max_json_depth=8)
    assert decode_json("[" * 8 + "]" * 8, limits) is not None
    for depth in (9, 1000, 100_000):
        assert _code(decode_json, "[" * depth + "]" * depth, limits) == "NESTING_TOO_DEEP"
    assert _code(decode_json, '{"a":' * 9 + "1" + "}" * 9, limits) == "NESTING_TOO_DEEP"
    # brackets inside strings do not count
    assert decode_json('["' + "[" * 50 + '"]', limits) == ["[" * 50]


def test_integers_must_fit_msgpack_and_floats_a_double() -> None:
    assert decode_json(str(2**64 - 1)) == 2**64 - 1
    assert decode_json(str(-(2**63))) == -(2**63)
    for text in (str(2**64), str(-(2**63) - 1), "[" + "9" * 5000 + "]", '{"x": 1e400}'):
        assert _code(decode_json, text) == "INVALID_ARGUMENT", text


@pytest.mark.parametrize(
    "data, code",
    [
        (b'{"a": "\xff"}', "MALFORMED_JSON"),
        (b"{nope", "MALFORMED_JSON"),
        (b'{"a": "\x00"}', "MALFORMED_JSON"),  # a raw control character is not JSON
    ],
)
def test_undecodable_documents_are_malformed(data: bytes, code: str) -> None:
    assert _code(decode_json, data) == code


def test_identifiers_are_bounded_printable_strings() -> None:
    limits = Limits(max_id_chars=5)
    assert identifier("phone", "device_id", limits) == "phone"
    assert identifier("", "device_id", limits) == ""
    assert identifier("ïPhö", "device_id", limits) == "ïPhö"
    for bad in ("phones", "a\x00", "a\tb", "a\x7f", "a\x85"):
        assert _code(identifier, bad, "device_id", limits) == "INVALID_ARGUMENT", bad
    assert _code(identifier, "", "device_id", limits, required=True) == "INVALID_ARGUMENT"
    assert _code(identifier, 5, "device_id", limits) == "INVALID_ARGUMENT"
    with pytest.raises(InvalidInput, match="device_id is limited to 5 characters"):
        identifier("phones", "device_id", limits)


def test_identifier_fields_are_checked_where_they_are_strings() -> None:
    check_identifiers({"device_id": "ok", "changes": {"device_id": "\x00"}, "os": 3})
    with pytest.raises(InvalidInput, match="app_version"):
        check_identifiers({"app_version": "x" * 201})
    with pytest.raises(InvalidInput, match=r"initial_symbols\[1\]"):
        check_identifiers({"initial_symbols": ["AAPL", "A\x00"]})


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("", None),
        ("0", 0),
        ("42", 42),
        (7, 7),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_versions_are_ascii_digits(value: Any, expected: int | None) -> None:
    assert version_param(value, "since") == expected


@pytest.mark.parametrize(
    "value",
    [
        "²",
        "\u0661",
        "-1",
        " 1",
        "1_0",
        "1e3",
        "0x10",
        str(2**63),
        "9" * 5000,
        -1,
        True,
        1.0,
        [],
    ],
)
def test_anything_else_is_not_a_version(value: Any) -> None:
    with pytest.raises(InvalidInput, match="since"):
        version_param(value, "since")


def test_ws_messages_are_validated_with_their_correlation_id() -> None:
    frame = '{"type":"state_update","correlation_id":"c1","payload":{"changes":{"\\u0000":1}}}'
    with pytest.raises(ProtocolError) as info:
        decode_inbound(frame)
    assert (info.value.code, info.value.correlation_id) == ("INVALID_ARGUMENT", "c1")
    with pytest.raises(ProtocolError) as info:
        decode_inbound(b'{"type":1,"payload":{"x":"\xff"}}')
    assert info.value.code == "MALFORMED_JSON"
    with pytest.raises(ProtocolError) as info:
        decode_inbound('{"type":1,"payload":' + "[" * 1000 + "]" * 1000 + "}")
    assert info.value.code == "NESTING_TOO_DEEP"
    with pytest.raises(ProtocolError) as info:
        decode_inbound('{"type":7,"payload":{"token":"t","device_id":"' + "d" * 201 + '"}}')
    assert info.value.code == "INVALID_ARGUMENT"


def test_the_limits_come_from_the_gateway_environment() -> None:
    cfg = load_settings({"GATEWAY_MAX_JSON_DEPTH": "16", "GATEWAY_MAX_ID_LENGTH": "40"}).gateway
    assert (cfg.max_json_depth, cfg.max_id_chars) == (16, 40)
    assert (load_settings({}).gateway.max_json_depth, load_settings({}).gateway.max_id_chars) == (
        64,
        200,
    )
    for env in (
        {"GATEWAY_MAX_JSON_DEPTH": "1"},
        {"GATEWAY_MAX_JSON_DEPTH": "600"},
        {"GATEWAY_MAX_ID_LENGTH": "0"},
        {"GATEWAY_MAX_ID_LENGTH": "many"},
    ):
        with pytest.raises(ConfigError):
            load_settings(env)


# ------------------------------------------------------------------ against an oracle
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8") | st.sampled_from("\x00[{")),
)
_docs = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(st.characters(codec="utf-8") | st.just("\x00"), max_size=3), inner, max_size=3
        )
    ),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _storable(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_storable, value))
    if type(value) is int:
        return -(2**63) <= value < 2**64
    return True


@settings(max_examples=400, deadline=None, derandomize=True)
@given(doc=_docs, depth=st.integers(2, 6))
def test_decode_json_refuses_exactly_what_the_stores_cannot_hold(doc: Any, depth: int) -> None:
    text = json.dumps(doc)  # ASCII: NUL as \u0000
    limits = Limits(max_json_depth=depth)
    ok = _storable(doc) and _depth(doc) <= depth
    try:
        got = decode_json(text, limits)
    except InvalidInput as exc:
        assert not ok, (text, exc.message)
        return
    assert ok, text
    assert msgspec.json.encode(got) == msgspec.json.encode(doc)


def test_a_ws_correlation_id_or_idempotency_key_is_an_identifier() -> None:
    """Both are archived with the events they cause: bounded, no control characters."""
    for field in ("correlation_id", "idempotency_key"):
        for bad in ("x" * 201, "a\tb", "a\u0085b"):
            message = {"type": "state_update", field: bad, "payload": {"key": "k", "value": 1}}
            with pytest.raises(ProtocolError) as caught:
                decode_inbound(json.dumps(message))
            assert caught.value.code == "INVALID_ARGUMENT" and field in caught.value.message
        ok = {"type": "state_update", field: "c-1", "payload": {"key": "k", "value": 1}}
        assert getattr(decode_inbound(json.dumps(ok)), field) == "c-1"


@pytest.mark.anyio
async def test_a_redis_failure_outside_the_command_path_is_a_503_not_a_500() -> None:
    """The store turns an unreachable Redis into StoreUnavailable; the edge answers 503."""
    import socket

    from events.errors import StoreUnavailable
    from gateway.errors import from_exception
    from infra.store import open_store

    with socket.socket() as s:  # a free port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = open_store(f"redis://127.0.0.1:{port}/0", 4)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.devices.get("u", "d")
    finally:
        await store.aclose()
    err = from_exception(caught.value)
    assert (err.status, err.code) == (503, "STORE_UNAVAILABLE")
    assert err.headers == {"Retry-After": "1"}
