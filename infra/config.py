"""Process configuration: environment variables validated once into a frozen `Settings`.

Call `load_settings()` at start-up (CLI entry points, app factories) and pass the result down;
nothing else in sessiond reads ``os.environ`` for these values. Every problem is reported at once
in one `ConfigError` whose message names the variable, the bad value and what is expected.

Durations (``SESSION_TTL``, ``LEASE_TTL_MS``, ``SIMULATOR_*_TIMEOUT``) accept plain milliseconds
(``604800000``) or a number with a unit: ``ms``, ``s``, ``m``, ``h``, ``d`` (``7d``, ``30s``,
``1h30m``).

Redis durability (``REDIS_APPENDFSYNC``) configures the *embedded* Redis that `sessiond dev`
starts; for an external Redis it is that server's own ``appendfsync`` setting. The default is
``everysec``: Redis fsyncs its append-only file once a second, so an OS crash or power loss can
drop up to about one second (two in the worst case) of acknowledged commands; a crash of the Redis
*process* alone normally loses nothing, since each write reaches the kernel before the reply.
``always`` fsyncs before every reply and loses no acknowledged command, at a large cost in write
throughput on ordinary disks. We default to ``everysec`` because it is what Redis recommends for
this trade-off and what most deployments run; set ``REDIS_APPENDFSYNC=always`` where losing an
acknowledged command is unacceptable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import msgspec

from events.errors import SessiondError
from events.session import DEFAULT_SESSION_TTL_MS
from events.simulator import DEFAULT_HEARTBEAT_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS

__all__ = [
    "DEV_JWT_REFRESH_SECRET",
    "DEV_JWT_SECRET",
    "DEV_SERVERS_FILE",
    "ConfigError",
    "Settings",
    "load_settings",
    "parse_duration_ms",
    "read_dev_servers",
]

Env = Literal["dev", "test", "prod"]
Fsync = Literal["always", "everysec", "no"]
Provisioner = Literal["local", "kubernetes"]

#: Development-only signing secrets; refused when SESSIOND_ENV=prod.
#: The same values as `gateway.config`, so tokens minted in dev verify everywhere.
DEV_JWT_SECRET = "sessiond-dev-access-secret-not-for-production"
DEV_JWT_REFRESH_SECRET = "sessiond-dev-refresh-secret-not-for-production"

DEFAULT_LEASE_TTL_MS = 10_000


class ConfigError(SessiondError):
    """The environment does not describe a runnable configuration."""

    code = "CONFIG"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a sessiond process needs to know about its environment.

    `redis_url` / `database_url` are None when unset: `sessiond dev` then starts embedded servers
    and exports their URLs to its children; other commands call `require_redis_url()`.
    """

    env: Env = "dev"
    redis_url: str | None = None
    database_url: str | None = None
    partitions: int = 16
    data_dir: str = ".sessiond"
    session_ttl_ms: int = DEFAULT_SESSION_TTL_MS
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS
    redis_appendfsync: Fsync = "everysec"
    server_host: str = "127.0.0.1"
    server_port: int = 8080
    jwt_secret: str = DEV_JWT_SECRET
    jwt_refresh_secret: str = DEV_JWT_REFRESH_SECRET
    jwt_public_key: str | None = None
    origins: tuple[str, ...] = ()
    simulator_provisioner: Provisioner = "local"
    simulator_idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS
    simulator_heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS
    log_level: str = "INFO"

    @property
    def server_addr(self) -> str:
        return f"{self.server_host}:{self.server_port}"

    @property
    def public_base_url(self) -> str:
        """Where a browser on this machine reaches the gateway."""
        host = "127.0.0.1" if self.server_host in ("0.0.0.0", "::", "") else self.server_host
        return f"http://{host}:{self.server_port}"

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigError(
                "REDIS_URL is not set: set REDIS_URL (or REDIS_ADDR), or run under `sessiond dev`,"
                " which starts an embedded Redis"
            )
        return self.redis_url

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set: set DATABASE_URL, or run under `sessiond dev`,"
                " which starts an embedded PostgreSQL"
            )
        return self.database_url


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
        raise ValueError(f"not a duration: {text!r} (use milliseconds or e.g. 30s, 15m, 7d)")
    return round(total)


_ENV_ALIASES = {"dev": "dev", "development": "dev", "test": "test", "prod": "prod",
                "production": "prod"}  # fmt: skip


def _env_name(raw: str) -> str:
    try:
        return _ENV_ALIASES[raw.lower()]
    except KeyError:
        raise ValueError("expected dev, test or prod (or development / production)") from None


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected an integer") from None


def _split_addr(value: str, default_host: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep:
        host, port = value.strip(), ""
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port with a port in 1..65535, got {value!r}")
    return host, int(port)


def _redis_url_from_parts(addr: str, password: str, db: str) -> str:
    host, port = _split_addr(addr, "127.0.0.1")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{int(db or 0)}"


DEV_SERVERS_FILE = "dev.json"


def read_dev_servers(data_dir: str | os.PathLike[str]) -> dict[str, str] | None:
    """The store URLs a running `sessiond dev` published in `data_dir`, if it is still alive.

    `sessiond dev` writes ``<data dir>/dev.json`` once its embedded servers are up and removes it
    on exit, so `sessiond send`, `sessiond events` and friends run from another terminal find the
    embedded Redis and PostgreSQL without anyone copying URLs around.
    """
    path = Path(data_dir) / DEV_SERVERS_FILE
    try:
        info = msgspec.json.decode(path.read_bytes())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError, msgspec.DecodeError):
        return None
    return {k: v for k, v in info.items() if k in ("redis_url", "database_url") and v}


def load_settings(
    env: Mapping[str, str] | None = None, *, discover: bool | None = None
) -> Settings:
    """Validate the environment (``os.environ`` by default) into `Settings`.

    With `discover` (the default when reading ``os.environ``), a store URL that is not set comes
    from a running `sessiond dev` on the same data dir (see `read_dev_servers`), except in prod.
    Raises `ConfigError` listing every invalid or missing variable.
    """
    if discover is None:
        discover = env is None
    env = os.environ if env is None else env
    errors: list[str] = []
    values: dict[str, object] = {}

    def get(name: str) -> str | None:
        value = env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def take(name: str, field: str, convert, check=None, expect: str = "") -> None:
        raw = get(name)
        if raw is None:
            return
        try:
            value = convert(raw)
        except (ValueError, TypeError) as e:
            errors.append(f"{name}={raw!r}: {e}")
            return
        if check is not None and not check(value):
            errors.append(f"{name}={raw!r}: expected {expect}")
            return
        values[field] = value

    def choice(*options: str):
        def convert(raw: str) -> str:
            if raw.lower() not in options:
                raise ValueError(f"expected one of {', '.join(options)}")
            return raw.lower()

        return convert

    take("SESSIOND_ENV", "env", _env_name)
    take("SESSIOND_PARTITIONS", "partitions", _int, lambda n: 1 <= n <= 16384, "1..16384")
    take("SESSIOND_DATA_DIR", "data_dir", str)
    take("SESSION_TTL", "session_ttl_ms", parse_duration_ms, lambda n: n > 0, "> 0")
    take("SESSION_TTL_MS", "session_ttl_ms", parse_duration_ms, lambda n: n > 0, "> 0")
    take("LEASE_TTL_MS", "lease_ttl_ms", parse_duration_ms, lambda n: n >= 100, ">= 100 ms")
    take("REDIS_APPENDFSYNC", "redis_appendfsync", choice("always", "everysec", "no"))
    take("SERVER_ADDR", "_server", lambda v: _split_addr(v, "0.0.0.0"))
    take("GATEWAY_PORT", "_port", _int, lambda n: 0 < n < 65536, "a port in 1..65535")
    take("JWT_SECRET", "jwt_secret", str)
    take("JWT_REFRESH_SECRET", "jwt_refresh_secret", str)
    take("JWT_PUBLIC_KEY", "jwt_public_key", str)
    for name in ("ALLOWED_ORIGINS", "SESSIOND_ORIGINS"):  # the latter wins
        take(name, "origins", lambda v: tuple(o.strip() for o in v.split(",") if o.strip()))
    take("SIMULATOR_PROVISIONER", "simulator_provisioner", choice("local", "kubernetes"))
    take(
        "SIMULATOR_IDLE_TIMEOUT", "simulator_idle_timeout_ms", parse_duration_ms,
        lambda n: n > 0, "> 0",
    )  # fmt: skip
    take(
        "SIMULATOR_HEARTBEAT_TIMEOUT", "simulator_heartbeat_timeout_ms", parse_duration_ms,
        lambda n: n > 0, "> 0",
    )  # fmt: skip
    take("SESSIOND_LOG_LEVEL", "log_level", choice("debug", "info", "warning", "error"))
    if "log_level" in values:
        values["log_level"] = str(values["log_level"]).upper()

    server = values.pop("_server", None)
    if server is not None:
        values["server_host"], values["server_port"] = server
    port_override = values.pop("_port", None)
    if port_override is not None:  # GATEWAY_PORT wins over SERVER_ADDR's port
        values["server_port"] = port_override

    redis_url = get("REDIS_URL")
    if redis_url is not None:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            errors.append(f"REDIS_URL={redis_url!r}: expected redis://, rediss:// or unix://")
        values["redis_url"] = redis_url
    elif get("REDIS_ADDR") is not None:
        try:
            values["redis_url"] = _redis_url_from_parts(
                get("REDIS_ADDR") or "", env.get("REDIS_PASSWORD", ""), get("REDIS_DB") or "0"
            )
        except ValueError as e:
            errors.append(f"REDIS_ADDR/REDIS_DB: {e}")
    elif get("REDIS_DB") is not None and not (get("REDIS_DB") or "").isdigit():
        errors.append(f"REDIS_DB={get('REDIS_DB')!r}: expected a database number")

    database_url = get("DATABASE_URL")
    if database_url is not None:
        if not database_url.startswith(("postgres://", "postgresql://")):
            errors.append(f"DATABASE_URL={database_url!r}: expected postgresql://...")
        values["database_url"] = database_url

    mode = values.get("env", "dev")
    if discover and mode != "prod" and not ("redis_url" in values and "database_url" in values):
        found = read_dev_servers(str(values.get("data_dir", ".sessiond")))
        for key, url in (found or {}).items():
            values.setdefault(key, url)
    if mode == "prod":
        for name, field, dev in (
            ("JWT_SECRET", "jwt_secret", DEV_JWT_SECRET),
            ("JWT_REFRESH_SECRET", "jwt_refresh_secret", DEV_JWT_REFRESH_SECRET),
        ):
            asymmetric = field == "jwt_secret" and get("JWT_PUBLIC_KEY") is not None
            if values.get(field, dev) == dev and not asymmetric:
                errors.append(f"{name} must be set when SESSIOND_ENV=prod")
        if "redis_url" not in values:
            errors.append("REDIS_URL (or REDIS_ADDR) must be set when SESSIOND_ENV=prod")
        if "database_url" not in values:
            errors.append("DATABASE_URL must be set when SESSIOND_ENV=prod")

    if errors:
        raise ConfigError("invalid configuration: " + "; ".join(errors))
    if "origins" not in values:
        port = values.get("server_port", 8080)
        values["origins"] = (f"http://127.0.0.1:{port}", f"http://localhost:{port}")
    return msgspec.convert(values, Settings)
