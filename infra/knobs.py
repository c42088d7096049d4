"""The configuration's knobs: which environment variables set which field, parsed and checked how.

One row per knob of `infra.config.Settings` that a variable (or a command-line option) can set,
addressed by its path (``"partitions"``, ``"gateway.port"``). The loader (`infra.config`) walks
this table; `sessiond config` shows its variables; docs/configuration.md lists the same. Defaults
are not here: each knob's one default is its field's in `infra.sections` / `Settings`.

Parsers turn the text into the value or raise `ValueError` saying what was expected; a `Check`
then states a range. Durations in ``*_MS`` variables are milliseconds or a duration with units
(`parse_duration_ms`); the gateway's timings are seconds or a duration with units (`seconds`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from infra.sections import MAX_JSON_DEPTH

__all__ = [
    "EXTRA_VARIABLES",
    "KNOBS",
    "Check",
    "Knob",
    "host_port",
    "knob_at",
    "parse_duration_ms",
    "variables_of",
]

# --------------------------------------------------------------------------- parsers

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration_ms(text: str) -> int:
    """``"7d"`` -> 604800000, ``"1h30m"`` -> 5400000, ``"250"`` -> 250 (bare numbers are ms)."""
    raw = text.strip().lower().replace(" ", "")
    if raw.isdigit():
        return int(raw)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS_MS[match.group(2)]
        pos = match.end()
    if not raw or pos != len(raw):
        raise ValueError("expected milliseconds or a duration such as 30s, 15m, 7d")
    return round(total)


millis = parse_duration_ms


def seconds(text: str) -> float:
    """Seconds: ``"2.5"`` -> 2.5, or a duration with units (``"500ms"``, ``"1m"``)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration_ms(text) / 1000
    except ValueError:
        raise ValueError("expected seconds or a duration such as 500ms, 30s, 2m") from None


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected an integer") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number") from None


def text(value: str) -> str:
    return value


def present(value: str) -> bool:
    """Set to anything (not empty): true (``NO_COLOR``, ``KUBERNETES_SERVICE_HOST``)."""
    return True


def choice(*options: str, upper: bool = False) -> Callable[[str], str]:
    def parse(value: str) -> str:
        chosen = value.upper() if upper else value.lower()
        if chosen not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return chosen

    return parse


_ENV_ALIASES = {"development": "dev", "production": "prod"}


def env_name(value: str) -> str:
    """dev, test or prod; ``development`` and ``production`` are accepted as their aliases."""
    name = value.lower()
    if name in ("dev", "test", "prod"):
        return name
    if name in _ENV_ALIASES:
        return _ENV_ALIASES[name]
    raise ValueError("expected dev, test or prod (development and production are aliases)")


def origins(value: str) -> tuple[str, ...]:
    found = tuple(o.strip() for o in value.split(",") if o.strip())
    if not found:
        raise ValueError("expected a comma-separated list of origins, or *")
    return found


def pem(value: str) -> str:
    """PEM text, or the path of a file holding it."""
    if "-----BEGIN" in value:
        return value
    try:
        content = Path(value).read_text()
    except OSError:
        raise ValueError("expected PEM text or the path of a readable PEM file") from None
    if "-----BEGIN" not in content:
        raise ValueError("expected PEM text or the path of a PEM file")
    return content


def address(value: str) -> str:
    """``host:port`` (``:port`` listens on 127.0.0.1), as gRPC's listen address spells it."""
    host, port = host_port(value, "127.0.0.1")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not value.startswith(tuple(f"{s}://" for s in schemes)):
            raise ValueError(f"expected a {', '.join(s + '://' for s in schemes)} URL")
        return value

    return parse


def listen_addr(value: str) -> str:
    """``host:port`` to listen on; a bare ``:port`` (or ``port``) is loopback."""
    raw = value.strip()
    host, port = host_port(raw if ":" in raw else f":{raw}", "127.0.0.1")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_port(value: str, default_host: str) -> tuple[str, int]:
    """``"host:port"``, ``":port"`` (`default_host`) or ``"[::1]:port"``."""
    host, sep, port = value.strip().rpartition(":")
    if not sep:
        host, port = value.strip(), ""
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port with a port in 1..65535")
    return host, int(port)


# --------------------------------------------------------------------------- checks


class Check(NamedTuple):
    """A range a parsed value must be in, and how the error message says it."""

    test: Callable[[Any], bool]
    expect: str


def at_least(minimum: float, what: str = "") -> Check:
    return Check(lambda v: v >= minimum, f"at least {minimum:g}{what}")


def between(low: int, high: int) -> Check:
    return Check(lambda v: low <= v <= high, f"{low}..{high}")


POSITIVE = Check(lambda v: v > 0, "a positive number")
SECONDS = Check(lambda v: v > 0, "a positive number of seconds")
WAIT = Check(lambda v: v >= 0, "seconds, 0 or more")
LIMIT = Check(lambda v: v >= 0, "not negative (0 = no limit)")


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Knob:
    """One setting: where it lives (`path`), the variables that set it (a later one wins), how
    its text is parsed and checked. `secret`: its value is never shown. A knob with no variable
    is set by a command-line option (`infra.cli.add_knob_option`) or derived."""

    path: str
    names: tuple[str, ...] = ()
    parse: Callable[[str], Any] = text
    check: Check | None = None
    secret: bool = False


def _k(
    path: str,
    names: str = "",
    parse: Callable[[str], Any] = text,
    check: Check | None = None,
    secret: bool = False,
) -> Knob:
    return Knob(path, tuple(names.split()), parse, check, secret)


def _ms(path: str, names: str = "", minimum: int = 1) -> Knob:
    return _k(path, names, millis, at_least(minimum, " ms"))


def _sim(field: str, minimum: int = 0) -> Knob:
    """A simulators count whose variable is its field's name: SIMULATOR_<FIELD>."""
    return _k(f"simulators.{field}", f"SIMULATOR_{field.upper()}", integer, at_least(minimum))


KNOBS: tuple[Knob, ...] = (
    # shared deployment values (REDIS_ADDR & co: see infra.config)
    _k("env", "SESSIOND_ENV", env_name),
    _k("redis_url", "REDIS_URL", url("redis", "rediss", "unix"), secret=True),
    _k("database_url", "DATABASE_URL", url("postgres", "postgresql"), secret=True),
    _k("partitions", "SESSIOND_PARTITIONS", integer, between(1, 16384)),
    _ms("lease_ttl_ms", "LEASE_TTL_MS", minimum=100),
    _k("data_dir", "SESSIOND_DATA_DIR"),
    _ms("session_ttl_ms", "SESSION_TTL SESSION_TTL_MS"),
    _k("redis_appendfsync", "REDIS_APPENDFSYNC", choice("always", "everysec", "no")),
    _k("log_level", "SESSIOND_LOG_LEVEL", choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True)),
    _k("log_format", "SESSIOND_LOG_FORMAT", choice("json", "text")),
    _k("no_color", "NO_COLOR", present),
    _k("metrics_addr", "SESSIOND_METRICS_ADDR", listen_addr),
    _k("otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", url("http", "https")),
    # the gateway (SERVER_ADDR sets host and port first: see infra.config)
    _k("gateway.host", "GATEWAY_HOST"),
    _k("gateway.port", "GATEWAY_PORT", integer, between(1, 65535)),
    _k("gateway.grpc_addr", "GRPC_ADDR", address),
    _k("gateway.gateway_id", "GATEWAY_ID"),
    _k("gateway.pod_name", "POD_NAME"),
    _k("gateway.jwt_algorithm", "JWT_ALGORITHM", choice("HS256", "RS256", upper=True)),
    _k("gateway.jwt_secret", "JWT_SECRET", secret=True),
    _k("gateway.jwt_refresh_secret", "JWT_REFRESH_SECRET", secret=True),
    _k("gateway.jwt_public_key", "JWT_PUBLIC_KEY", pem),
    _k("gateway.jwt_private_key", "JWT_PRIVATE_KEY", pem, secret=True),
    _k("gateway.allowed_origins", "ALLOWED_ORIGINS SESSIOND_ORIGINS", origins),
    _k("gateway.drain_timeout_s", "GATEWAY_DRAIN_TIMEOUT", seconds, WAIT),
    _k("gateway.heartbeat_interval_s", "GATEWAY_HEARTBEAT_INTERVAL", seconds, SECONDS),
    _k("gateway.idle_timeout_s", "GATEWAY_IDLE_TIMEOUT", seconds, SECONDS),
    _k("gateway.touch_interval_s", "GATEWAY_TOUCH_INTERVAL", seconds, SECONDS),
    _k("gateway.command_timeout_s", "GATEWAY_COMMAND_TIMEOUT", seconds, SECONDS),
    _k("gateway.health_max_lag_s", "GATEWAY_HEALTH_MAX_LAG_S", seconds, SECONDS),
    _k("gateway.rate_per_s", "GATEWAY_RATE_PER_S", number, POSITIVE),
    _k("gateway.rate_burst", "GATEWAY_RATE_BURST", number, at_least(1)),
    _k("gateway.max_outgoing_bytes", "GATEWAY_MAX_OUTGOING_BYTES", integer, at_least(1)),
    _k("gateway.max_json_depth", "GATEWAY_MAX_JSON_DEPTH", integer, between(2, MAX_JSON_DEPTH)),
    _k("gateway.max_id_chars", "GATEWAY_MAX_ID_LENGTH", integer, at_least(1)),
    _k("gateway.rest_rate_per_s", "GATEWAY_REST_RATE_PER_S", number, LIMIT),
    _k("gateway.rest_rate_burst", "GATEWAY_REST_RATE_BURST", number, LIMIT),
    _k("gateway.max_connections_per_user", "GATEWAY_MAX_CONNECTIONS_PER_USER", integer, LIMIT),
    _k(
        "gateway.max_connections_per_session", "GATEWAY_MAX_CONNECTIONS_PER_SESSION", integer, LIMIT
    ),
    _k("gateway.max_devices_per_session", "GATEWAY_MAX_DEVICES_PER_SESSION", integer, LIMIT),
    _k("gateway.device_retention_s", "GATEWAY_DEVICE_RETENTION", seconds, LIMIT),
    _k("gateway.token_grace_s", "GATEWAY_TOKEN_GRACE", seconds, LIMIT),
    _k("gateway.retry_after_s", "GATEWAY_RETRY_AFTER", integer, LIMIT),
    # the worker runtime (lease_ttl_ms: LEASE_TTL_MS, or `sessiond worker --lease-ttl-ms`)
    _ms("runtime.lease_ttl_ms", minimum=100),
    _ms("runtime.renew_interval_ms", "SESSIOND_LEASE_RENEW_MS", minimum=0),
    _k("runtime.batch_size", "SESSIOND_BATCH_SIZE", integer, at_least(1)),
    _ms("runtime.block_ms", "SESSIOND_BLOCK_MS", minimum=0),
    _k("runtime.snapshot_every", "SESSIOND_SNAPSHOT_EVERY", integer, at_least(1)),
    _k("runtime.cache_max_actors", "SESSIOND_CACHE_MAX_ACTORS", integer, at_least(1)),
    _ms("runtime.passivate_after_ms", "SESSIOND_PASSIVATE_AFTER_MS"),
    _ms("runtime.timer_poll_ms", "SESSIOND_TIMER_POLL_MS"),
    _ms("runtime.outcome_ttl_ms", "SESSIOND_OUTCOME_TTL_MS"),
    # projections (lease_ttl_ms: LEASE_TTL_MS unless its own variable is set)
    _ms("projector.lease_ttl_ms", "SESSIOND_PROJECTOR_LEASE_TTL_MS", minimum=100),
    _k("projector.batch_size", "SESSIOND_PROJECTOR_BATCH", integer, at_least(1)),
    _ms("projector.block_ms", "SESSIOND_PROJECTOR_BLOCK_MS", minimum=0),
    _k("projector.cache_sessions", "SESSIOND_PROJECTOR_CACHE_SESSIONS", integer, at_least(0)),
    _k("projector.pool_size", "SESSIOND_PROJECTOR_POOL", integer, at_least(1)),
    _ms("projector.round_min_ms", "SESSIOND_PROJECTOR_ROUND_MIN_MS", minimum=0),
    _k("projector.rebuild_workers", "SESSIOND_REBUILD_WORKERS", integer, at_least(1)),
    _ms("projector.housekeeping_interval_ms", "SESSIOND_HOUSEKEEPING_INTERVAL_MS", minimum=0),
    _k("projector.retention_keep", "SESSIOND_RETENTION_KEEP", integer, at_least(1)),
    # simulators
    _k("simulators.provisioner", "SIMULATOR_PROVISIONER", choice("local", "kubernetes")),
    _k("simulators.tick_hz", "SIMULATOR_TICK_HZ", number, POSITIVE),
    _ms("simulators.heartbeat_interval_ms", "SIMULATOR_HEARTBEAT_INTERVAL_MS"),
    _sim("md_maxlen", minimum=1),
    _ms("simulators.host_ttl_ms", "SIMULATOR_HOST_TTL_MS"),
    _ms("simulators.ack_timeout_ms", "SIMULATOR_ACK_TIMEOUT_MS"),
    _sim("breaker_failures", minimum=1),
    _ms("simulators.breaker_reset_ms", "SIMULATOR_BREAKER_RESET_MS"),
    _sim("retries"),
    _ms("simulators.backoff_base_ms", "SIMULATOR_BACKOFF_BASE_MS"),
    _ms("simulators.backoff_max_ms", "SIMULATOR_BACKOFF_MAX_MS"),
    _ms("simulators.activity_interval_ms", "SIMULATOR_ACTIVITY_INTERVAL_MS"),
    _k("simulators.k8s_namespace", "SIMULATOR_K8S_NAMESPACE"),
    _k("simulators.k8s_image", "SIMULATOR_K8S_IMAGE"),
    _k("simulators.k8s_kubeconfig", "SIMULATOR_K8S_KUBECONFIG"),
    _k("simulators.k8s_context", "SIMULATOR_K8S_CONTEXT"),
    _ms("simulators.k8s_ready_timeout_ms", "SIMULATOR_K8S_READY_TIMEOUT_MS"),
    _ms("simulators.k8s_poll_ms", "SIMULATOR_K8S_POLL_MS"),
    _k("simulators.k8s_in_cluster", "KUBERNETES_SERVICE_HOST", present),
    _ms("simulators.idle_timeout_ms", "SIMULATOR_IDLE_TIMEOUT"),
    _ms("simulators.heartbeat_timeout_ms", "SIMULATOR_HEARTBEAT_TIMEOUT"),
    _k("simulators.spec", "SIMULATOR_SPEC"),
)

_BY_PATH = {k.path: k for k in KNOBS}

#: Variables that set a knob through a rule of their own in `infra.config`, not a row here.
EXTRA_VARIABLES = {
    "redis_url": ("REDIS_ADDR", "REDIS_PASSWORD", "REDIS_DB"),
    "gateway.host": ("SERVER_ADDR",),
    "gateway.port": ("SERVER_ADDR",),
}


def knob_at(path: str) -> Knob | None:
    return _BY_PATH.get(path)


def variables_of(path: str) -> tuple[str, ...]:
    """The environment variables that can set the knob at `path`."""
    found = _BY_PATH.get(path)
    return (found.names if found else ()) + EXTRA_VARIABLES.get(path, ())
