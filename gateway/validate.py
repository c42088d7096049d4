"""What the edge accepts: client text and numbers the stores can hold, checked before any write.

Everything a client sends ends up in msgpack (Redis streams) and in PostgreSQL (`text`, `json`,
`jsonb` columns). One bad string must not reach them: PostgreSQL refuses a NUL (U+0000) in any
text, and the projector cannot skip what it cannot write. So REST bodies, WebSocket messages
and the query strings of WS and SSE all pass through this one module:

- JSON documents (`decode_json`): valid UTF-8, valid JSON, no lone UTF-16 surrogate escape, at
  most `max_json_depth` nested arrays/objects (`NESTING_TOO_DEEP`), no NUL in any key or string,
  integers within 64 bits (msgpack's range: -2**63 .. 2**64 - 1). Floats need nothing: JSON
  cannot spell a non-finite one (msgspec refuses `1e400`).
- Identifiers (`identifier`, `check_identifiers`): device ids, device names, app versions,
  handoff devices, simulator symbols: at most `max_id_chars` characters, no control character.
- Numbers in query strings and headers (`version_param`): ASCII digits only (`str.isdigit()`
  accepts "²", which `int()` then refuses), within a PostgreSQL bigint.

Every refusal is an `InvalidInput` (an `ApiError`) with a stable code and a message naming the
field and the reason; the edge answers it as 400 (REST, SSE) or a WS error message (the
connection is kept; a refused handshake closes with 4400). Pure: no I/O.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from gateway.errors import ApiError

__all__ = [
    "DEFAULT_LIMITS",
    "IDENTIFIER_FIELDS",
    "IDENTIFIER_LIST_FIELDS",
    "InputLimits",
    "InvalidInput",
    "Limits",
    "check_document",
    "check_identifiers",
    "decode_json",
    "identifier",
    "parse_json",
    "parse_uuid",
    "version_param",
]

#: Fields that hold an identifier wherever they appear at the top level of a REST body, a WS
#: message or a WS payload (the edge's names for devices, versions and handoff ends).
IDENTIFIER_FIELDS = (
    "device_id",
    "deviceId",
    "user_id",
    "app_version",
    "device_type",
    "device_name",
    "os",
    "source_device",
    "target_device",
    "correlation_id",  # archived with every event it causes (a TEXT column)
    "idempotency_key",
)
#: Fields that hold a list of identifiers (a simulator's symbols).
IDENTIFIER_LIST_FIELDS = ("initial_symbols", "symbols")
_ID_FIELDS = frozenset(IDENTIFIER_FIELDS + IDENTIFIER_LIST_FIELDS)

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1  # msgpack's uint64
_BIGINT_MAX = (1 << 63) - 1  # versions are PostgreSQL bigints
_NUL_ESCAPE = "\\u0000"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_ASCII_DIGITS = re.compile("[0-9]+")
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


class InvalidInput(ApiError):
    """Client input the edge refuses before anything is written (always a 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


class InputLimits(Protocol):
    """The limits this module applies (`GatewayConfig` has them, from the environment)."""

    @property
    def max_json_depth(self) -> int: ...

    @property
    def max_id_chars(self) -> int: ...


class Limits(msgspec.Struct, frozen=True):
    """The default limits (tests and tools without a gateway configuration)."""

    max_json_depth: int = 64
    max_id_chars: int = 200


DEFAULT_LIMITS = Limits()


def _nesting_error(max_depth: int) -> InvalidInput:
    return InvalidInput(
        "NESTING_TOO_DEEP",
        f"JSON may nest at most {max_depth} arrays/objects (GATEWAY_MAX_JSON_DEPTH)",
    )


def decode_json(
    data: bytes | str, limits: InputLimits = DEFAULT_LIMITS, what: str = "the body"
) -> Any:
    """Decode one JSON document a client sent and `check_document` it; every failure is an
    `InvalidInput` (MALFORMED_JSON, INVALID_ARGUMENT, NESTING_TOO_DEEP), never a crash."""
    value = parse_json(data, limits, what)
    check_document(data, value, limits)
    return value


def parse_json(
    data: bytes | str,
    limits: InputLimits = DEFAULT_LIMITS,
    what: str = "the body",
    decoder: msgspec.json.Decoder | None = None,
) -> Any:
    """`decode_json` without `check_document` (the caller checks what it decoded). With a typed
    `decoder` (the WS envelope: msgspec's speed), its `ValidationError`s are the caller's."""
    try:
        return msgspec.json.decode(data) if decoder is None else decoder.decode(data)
    except UnicodeDecodeError:
        raise InvalidInput("MALFORMED_JSON", f"{what} is not valid UTF-8") from None
    except RecursionError:  # nested ~1000 deep: msgspec stops before the stack does
        raise _nesting_error(limits.max_json_depth) from None
    except msgspec.ValidationError as exc:  # untyped: only a number beyond float or int range
        if decoder is not None:
            raise
        raise InvalidInput(
            "INVALID_ARGUMENT",
            f"{what}: a number is out of range ({exc}): integers must fit in"
            " 64 bits, floats in a double",
        ) from None
    except msgspec.DecodeError as exc:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        if _LONE_SURROGATE.search(text):
            raise InvalidInput(
                "INVALID_ARGUMENT",
                f"{what} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its"
                " pair): it is not text and cannot be stored",
            ) from None
        raise InvalidInput("MALFORMED_JSON", f"{what} is not valid JSON: {exc}") from None


def check_document(raw: bytes | str, value: Any, limits: InputLimits = DEFAULT_LIMITS) -> None:
    """Refuse a decoded document (`value`, decoded from `raw`) with a NUL in a key or string,
    nesting deeper than the limit, or an integer beyond 64 bits. Cheap checks first: a NUL needs
    the escape `\\u0000` in the raw text, nesting deeper than the limit needs more brackets than
    the limit, and msgpack itself finds an integer it cannot hold; only then does a walk name
    the path of what is refused."""
    nul = _NUL_ESCAPE in raw if isinstance(raw, str) else _NUL_ESCAPE.encode() in raw
    if nul:
        _walk(value, "$", 0, limits.max_json_depth)
    brackets = (
        raw.count("[") + raw.count("{")
        if isinstance(raw, str)
        else (raw.count(b"[") + raw.count(b"{"))
    )
    if brackets > limits.max_json_depth and _too_deep(value, limits.max_json_depth):
        raise _nesting_error(limits.max_json_depth)
    try:
        msgspec.msgpack.encode(value)
    except OverflowError:
        _walk(value, "$", 0, limits.max_json_depth)


def _too_deep(value: Any, max_depth: int) -> bool:
    """Whether containers nest deeper than `max_depth`, level by level (a wide document of
    many small containers costs one pass over them, no recursion)."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(max_depth):
        below = []
        for container in level:
            for item in container.values() if type(container) is dict else container:
                if type(item) is dict or type(item) is list:
                    below.append(item)
        if not below:
            return False
        level = below
    return bool(level)


def _walk(value: Any, path: str, depth: int, max_depth: int) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise _nul(path)
    elif isinstance(value, dict):
        if depth >= max_depth:
            raise _nesting_error(max_depth)
        for key, item in value.items():
            sub = _child(path, key)
            if "\x00" in key:
                raise _nul(sub, "key")
            _walk(item, sub, depth + 1, max_depth)
    elif isinstance(value, list):
        if depth >= max_depth:
            raise _nesting_error(max_depth)
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", depth + 1, max_depth)
    elif type(value) is int and not _INT_MIN <= value <= _INT_MAX:
        raise InvalidInput(
            "INVALID_ARGUMENT", f"{path}: integers must fit in 64 bits (-2**63 .. 2**64-1)"
        )


def _child(path: str, key: str) -> str:
    if key.isidentifier() and key.isascii():
        return f"{path}.{key}"
    return f"{path}[{msgspec.json.encode(key).decode()}]"


def _nul(path: str, what: str = "text") -> InvalidInput:
    return InvalidInput(
        "INVALID_ARGUMENT",
        f"{path}: the {what} contains a NUL character (U+0000), which cannot be stored",
    )


def identifier(
    value: Any, field: str, limits: InputLimits = DEFAULT_LIMITS, *, required: bool = False
) -> str:
    """`value` as an identifier (a device id, a device name, a symbol...): a string of at most
    `max_id_chars` characters without control characters; "" only when not `required`."""
    if not isinstance(value, str):
        raise InvalidInput("INVALID_ARGUMENT", f"{field} must be a string")
    if not value:
        if required:
            raise InvalidInput(
                "INVALID_ARGUMENT",
                f"{field} is required (at most {limits.max_id_chars} characters)",
            )
        return value
    if len(value) > limits.max_id_chars:
        raise InvalidInput(
            "INVALID_ARGUMENT",
            f"{field} is limited to {limits.max_id_chars} characters (GATEWAY_MAX_ID_LENGTH)",
        )
    bad = _CONTROL.search(value)
    if bad is not None:
        raise InvalidInput(
            "INVALID_ARGUMENT",
            f"{field} must not contain control characters"
            f" (U+{ord(bad.group()):04X} at position {bad.start()})",
        )
    return value


def check_identifiers(fields: Mapping[str, Any], limits: InputLimits = DEFAULT_LIMITS) -> None:
    """Check the identifier fields present (as strings) at the top level of a body or payload;
    other types are left to the schema, which names what it expected."""
    for name in _ID_FIELDS.intersection(fields):
        value = fields[name]
        if isinstance(value, str):
            identifier(value, name, limits)
        elif name in IDENTIFIER_LIST_FIELDS and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    identifier(item, f"{name}[{i}]", limits)


def version_param(value: Any, field: str) -> int | None:
    """A version or count from a query string, a header or a JSON field: a non-negative integer
    (ASCII digits when text) within a PostgreSQL bigint; None when absent or empty."""
    if value is None or value == "":
        return None
    if type(value) is int:
        number = value
    elif isinstance(value, str) and _ASCII_DIGITS.fullmatch(value):
        number = int(value) if len(value) <= 19 else _BIGINT_MAX + 1
    else:
        raise InvalidInput(
            "INVALID_ARGUMENT", f"{field} must be a non-negative integer (ASCII digits)"
        )
    if not 0 <= number <= _BIGINT_MAX:
        raise InvalidInput("INVALID_ARGUMENT", f"{field} must be between 0 and 2**63-1")
    return number


def parse_uuid(value: Any, field: str) -> str:
    """`value` as a canonical UUID string (a session id), or a 400 INVALID_ARGUMENT naming
    `field`."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, "INVALID_ARGUMENT", f"{field} is required and must be a UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"{field} must be a UUID, got {value!r}") from None
