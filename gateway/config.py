"""Gateway configuration: environment variables validated into one frozen Struct.

Seed 004's variables (`SERVER_ADDR`, `REDIS_ADDR`, `REDIS_PASSWORD`, `REDIS_DB`, `JWT_SECRET`,
`JWT_REFRESH_SECRET`) work as it documents them, beside `REDIS_URL` / `DATABASE_URL` (which win
when both are set). `infra.config.load_settings` is used for the shared fields when present.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import msgspec

from events.errors import SessiondError
from events.session import DEFAULT_PRESENCE_TIMEOUT_MS

__all__ = [
    "DEV_JWT_REFRESH_SECRET",
    "DEV_JWT_SECRET",
    "DEV_SECRETS",
    "MAX_JSON_DEPTH",
    "ConfigError",
    "GatewayConfig",
    "load_gateway_config",
]

DEV_JWT_SECRET = "sessiond-dev-access-secret-not-for-production"
DEV_JWT_REFRESH_SECRET = "sessiond-dev-refresh-secret-not-for-production"
#: Secrets that are public knowledge (ours and the ones printed in seed 004): refused in production.
DEV_SECRETS = frozenset(
    {
        DEV_JWT_SECRET,
        DEV_JWT_REFRESH_SECRET,
        "harmony-flow-secret-key",
        "harmony-flow-refresh-secret-key",
    }
)

#: The deepest nesting GATEWAY_MAX_JSON_DEPTH may allow.
MAX_JSON_DEPTH = 512


class ConfigError(SessiondError):
    """A configuration value is missing or unsafe; the message says which and why."""

    code = "CONFIG"


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = ""
    partitions: int = 16
    simulator_heartbeat_timeout_ms: int = 30_000
    simulator_idle_timeout_ms: int = 3_600_000
    env: str = "development"
    gateway_id: str = ""
    pod_name: str = ""
    # auth
    jwt_algorithm: str = "HS256"  # or RS256
    jwt_secret: str = DEV_JWT_SECRET
    jwt_refresh_secret: str = DEV_JWT_REFRESH_SECRET
    jwt_public_key: str = ""  # PEM, RS256 verification
    jwt_private_key: str = ""  # PEM, RS256 minting (optional: only `sessiond token` and refresh)
    access_ttl_s: int = 15 * 60
    refresh_ttl_s: int = 7 * 24 * 3600
    # limits
    max_ws_message: int = 64 * 1024
    max_state_bytes: int = 256 * 1024
    max_body_bytes: int = 512 * 1024
    rate_per_s: float = 50.0
    rate_burst: float = 100.0
    max_outgoing_bytes: int = 1024 * 1024
    max_json_depth: int = 64  # arrays/objects nested in one REST body or WS message
    max_id_chars: int = 200  # device ids, device names, app versions, symbols (gateway.validate)
    allowed_origins: tuple[str, ...] = ("*",)
    rest_rate_per_s: float = 50.0  # per user and gateway process; 0 = no limit
    rest_rate_burst: float = 100.0
    max_connections_per_user: int = 500  # per gateway process; 0 = no limit
    max_connections_per_session: int = 100  # the session actor counts them; 0 = no limit
    max_devices_per_session: int = 100  # offline ones are forgotten first; 0 = no limit
    device_retention_s: float = 24 * 3600.0  # an offline device is forgotten after; 0 = never
    token_grace_s: float = 5.0  # a token is accepted (and a connection kept) until exp + this
    retry_after_s: int = 2  # `Retry-After` of OUTCOME_UNKNOWN
    # timing
    heartbeat_interval_s: float = 15.0
    idle_timeout_s: float = 60.0
    auth_timeout_s: float = 10.0
    touch_interval_s: float = 30.0
    registry_ttl_s: int = 45
    command_timeout_s: float = 5.0
    drain_timeout_s: float = 10.0
    # RTT thresholds (ms): below good -> GOOD, below poor -> DEGRADED, else POOR
    rtt_good_ms: float = 150.0
    rtt_poor_ms: float = 500.0
    # /health reports `degraded` when the projection is further behind than this
    health_max_lag_s: float = 30.0

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a browser request from `origin` may be served (no Origin: not a browser)."""
        allowed = self.allowed_origins
        return not origin or "*" in allowed or origin in allowed

    def check(self) -> GatewayConfig:
        """Refuse configurations that are unsafe for `env` (the dev secret in production)."""
        if self.jwt_algorithm not in ("HS256", "RS256"):
            raise ConfigError(f"JWT_ALGORITHM must be HS256 or RS256, not {self.jwt_algorithm!r}")
        if self.jwt_algorithm == "RS256" and not self.jwt_public_key:
            raise ConfigError("JWT_ALGORITHM=RS256 needs JWT_PUBLIC_KEY (PEM text or a file path)")
        for name, value in (("GATEWAY_HEARTBEAT_INTERVAL", self.heartbeat_interval_s),
                            ("GATEWAY_TOUCH_INTERVAL", self.touch_interval_s)):
            if not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value}")
        for name, value in _LIMITS.items():
            if not getattr(self, value) >= 0:
                raise ConfigError(f"{name} must not be negative (0 = no limit), not "
                                  f"{getattr(self, value)}")
        if self.rest_rate_per_s > 0 and self.rest_rate_burst < 1:
            raise ConfigError("GATEWAY_REST_RATE_BURST must be at least 1")
        # a device's first touch comes within two intervals of its joining (gateway.rotation)
        if self.touch_interval_s * 2 >= DEFAULT_PRESENCE_TIMEOUT_MS / 1000:
            raise ConfigError(
                f"GATEWAY_TOUCH_INTERVAL must be under half the presence timeout "
                f"({DEFAULT_PRESENCE_TIMEOUT_MS // 2000} s), not {self.touch_interval_s:g} s")
        # a deeper limit would let msgspec's own recursion guard answer first (about 1000)
        if not 2 <= self.max_json_depth <= MAX_JSON_DEPTH:
            raise ConfigError(f"GATEWAY_MAX_JSON_DEPTH must be 2..{MAX_JSON_DEPTH},"
                              f" not {self.max_json_depth}")
        if self.max_id_chars < 1:
            raise ConfigError(f"GATEWAY_MAX_ID_LENGTH must be positive, not {self.max_id_chars}")
        if self.env in ("production", "prod"):
            if self.jwt_algorithm == "HS256" and (
                self.jwt_secret in DEV_SECRETS or self.jwt_refresh_secret in DEV_SECRETS
            ):
                raise ConfigError(
                    "SESSIOND_ENV=production refuses the development JWT secret: "
                    "set JWT_SECRET and JWT_REFRESH_SECRET"
                )
            if self.jwt_algorithm == "HS256" and len(self.jwt_secret) < 32:
                raise ConfigError("SESSIOND_ENV=production needs a JWT_SECRET of 32+ characters")
        return self


#: The limits' variables and fields (each >= 0, 0 = no limit).
_LIMITS = {
    "GATEWAY_REST_RATE_PER_S": "rest_rate_per_s",
    "GATEWAY_REST_RATE_BURST": "rest_rate_burst",
    "GATEWAY_MAX_CONNECTIONS_PER_USER": "max_connections_per_user",
    "GATEWAY_MAX_CONNECTIONS_PER_SESSION": "max_connections_per_session",
    "GATEWAY_MAX_DEVICES_PER_SESSION": "max_devices_per_session",
    "GATEWAY_DEVICE_RETENTION": "device_retention_s",
    "GATEWAY_TOKEN_GRACE": "token_grace_s",
    "GATEWAY_RETRY_AFTER": "retry_after_s",
}


def _pem(value: str) -> str:
    if value and "-----BEGIN" not in value and os.path.exists(value):
        with open(value) as f:
            return f.read()
    return value


def load_gateway_config(env: Mapping[str, str] | None = None, **overrides: object) -> GatewayConfig:
    """The gateway's settings: the shared `infra.config.Settings` (seed 004's variables,
    REDIS_URL, DATABASE_URL, SESSIOND_ENV, origins) plus the gateway's own GATEWAY_* knobs."""
    from infra.config import load_settings

    env = os.environ if env is None else env
    s = load_settings(env)
    kw: dict[str, object] = {
        "host": s.server_host,
        "port": s.server_port,
        "redis_url": s.redis_url or "redis://127.0.0.1:6379/0",
        "database_url": s.database_url or "",
        "partitions": s.partitions,
        "simulator_heartbeat_timeout_ms": s.simulator_heartbeat_timeout_ms,
        "simulator_idle_timeout_ms": s.simulator_idle_timeout_ms,
        "env": "production" if s.env == "prod" else s.env,
        "jwt_secret": s.jwt_secret,
        "jwt_refresh_secret": s.jwt_refresh_secret,
        "allowed_origins": tuple(s.origins) or ("*",),
    }
    if s.jwt_public_key:
        kw["jwt_public_key"] = _pem(s.jwt_public_key)
        kw["jwt_algorithm"] = "RS256"
    simple = {
        "JWT_ALGORITHM": ("jwt_algorithm", str),
        "GATEWAY_HOST": ("host", str),
        "GATEWAY_ID": ("gateway_id", str),
        "POD_NAME": ("pod_name", str),
        "GATEWAY_DRAIN_TIMEOUT": ("drain_timeout_s", float),
        "GATEWAY_HEARTBEAT_INTERVAL": ("heartbeat_interval_s", float),
        "GATEWAY_IDLE_TIMEOUT": ("idle_timeout_s", float),
        "GATEWAY_RATE_PER_S": ("rate_per_s", float),
        "GATEWAY_RATE_BURST": ("rate_burst", float),
        "GATEWAY_TOUCH_INTERVAL": ("touch_interval_s", float),
        "GATEWAY_COMMAND_TIMEOUT": ("command_timeout_s", float),
        "GATEWAY_MAX_OUTGOING_BYTES": ("max_outgoing_bytes", int),
        "GATEWAY_REST_RATE_PER_S": ("rest_rate_per_s", float),
        "GATEWAY_REST_RATE_BURST": ("rest_rate_burst", float),
        "GATEWAY_MAX_CONNECTIONS_PER_USER": ("max_connections_per_user", int),
        "GATEWAY_MAX_CONNECTIONS_PER_SESSION": ("max_connections_per_session", int),
        "GATEWAY_MAX_DEVICES_PER_SESSION": ("max_devices_per_session", int),
        "GATEWAY_DEVICE_RETENTION": ("device_retention_s", float),
        "GATEWAY_TOKEN_GRACE": ("token_grace_s", float),
        "GATEWAY_RETRY_AFTER": ("retry_after_s", int),
        "GATEWAY_MAX_JSON_DEPTH": ("max_json_depth", int),
        "GATEWAY_MAX_ID_LENGTH": ("max_id_chars", int),
        "GATEWAY_HEALTH_MAX_LAG_S": ("health_max_lag_s", float),
    }
    for name, (field, conv) in simple.items():
        if env.get(name):
            try:
                kw[field] = conv(env[name])
            except ValueError as exc:
                raise ConfigError(f"{name}={env[name]!r}: {exc}") from None
    if env.get("JWT_PRIVATE_KEY"):
        kw["jwt_private_key"] = _pem(env["JWT_PRIVATE_KEY"])
    kw.update(overrides)
    if not kw.get("gateway_id"):
        kw["gateway_id"] = f"{socket.gethostname()}-{os.getpid()}"
    if not kw.get("pod_name"):
        kw["pod_name"] = str(kw["gateway_id"])
    return GatewayConfig(**kw).check()  # type: ignore[arg-type]
