"""The sections of the configuration: one frozen Struct per component, with its one default.

`infra.config.load_settings` fills them from the environment once, at process start, and the CLI
hands each component its own section (`Worker(config=settings.runtime)`,
`create_app(settings.gateway)`, ...). A section repeats the few deployment-wide values its
component needs (Redis URL, partitions, ...): the loader derives them from the shared values, so
each still has one source and one default. Constructed directly (tests, tools), a section holds
the same defaults the loader would give.

No I/O and no environment here: the variables, their parsing and their checks live in
`infra.config`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from events.session import DEFAULT_SESSION_TTL_MS
from events.simulator import DEFAULT_HEARTBEAT_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS

__all__ = [
    "DEFAULT_GRPC_ADDR",
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_PARTITIONS",
    "DEFAULT_PORT",
    "DEV_JWT_REFRESH_SECRET",
    "DEV_JWT_SECRET",
    "DEV_SECRETS",
    "MAX_JSON_DEPTH",
    "Env",
    "GatewayConfig",
    "ProjectorConfig",
    "RuntimeConfig",
    "SimulatorSettings",
    "local_origins",
]

#: `dev`, `test` or `prod`; the loader also accepts `development` and `production` for them.
Env = Literal["dev", "test", "prod"]

DEFAULT_PARTITIONS = 16
#: How long a partition lease lives: a dead worker's or projector's partitions move after it.
DEFAULT_LEASE_TTL_MS = 10_000
DEFAULT_PORT = 8080
DEFAULT_GRPC_ADDR = "127.0.0.1:50051"

#: Development-only signing secrets, refused when SESSIOND_ENV=prod. The same everywhere, so
#: tokens minted in dev (`sessiond token`) verify in every dev process.
DEV_JWT_SECRET = "sessiond-dev-access-secret-not-for-production"
DEV_JWT_REFRESH_SECRET = "sessiond-dev-refresh-secret-not-for-production"
#: Secrets that are public knowledge (ours and the ones printed in seed 004): refused in prod.
DEV_SECRETS = frozenset(
    {
        DEV_JWT_SECRET,
        DEV_JWT_REFRESH_SECRET,
        "harmony-flow-secret-key",
        "harmony-flow-refresh-secret-key",
    }
)

#: The deepest nesting GATEWAY_MAX_JSON_DEPTH may allow (msgspec's own recursion guard, about
#: 1000, would otherwise answer first).
MAX_JSON_DEPTH = 512


def local_origins(port: int) -> tuple[str, ...]:
    """The browser origins of a gateway on this machine: the default allow-list."""
    return (f"http://127.0.0.1:{port}", f"http://localhost:{port}")


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The gateway's section: listen address, auth, limits, timings."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    grpc_addr: str = DEFAULT_GRPC_ADDR  # the gRPC API (seed 001), served by the same process
    # derived from the shared values (one source each)
    redis_url: str = ""
    database_url: str = ""
    partitions: int = DEFAULT_PARTITIONS
    env: Env = "dev"
    simulator_heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS
    simulator_idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS
    simulator_activity_interval_ms: int = 60_000  # how often client activity is reported
    session_ttl_ms: int = DEFAULT_SESSION_TTL_MS
    metrics_addr: str = ""  # where /healthz and /metrics are served too (SESSIOND_METRICS_ADDR)
    gateway_id: str = ""  # the loader makes it <hostname>-<pid>
    pod_name: str = ""  # the loader makes it the gateway id
    # auth
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
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
    allowed_origins: tuple[str, ...] = local_origins(DEFAULT_PORT)  # "*": any origin
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

    @property
    def addr(self) -> str:
        """``host:port``, as SERVER_ADDR spells it."""
        return f"{self.host}:{self.port}"

    @property
    def public_base_url(self) -> str:
        """Where a browser on this machine reaches the gateway."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The worker runtime's section: how it holds leases, batches commands, caches actors and
    fires timers."""

    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS  # a dead worker's partitions move after about this
    renew_interval_ms: int = 0  # 0 = lease_ttl_ms / 3
    batch_size: int = 500  # commands read (and appended in one script) per partition at a time
    block_ms: int = 100  # how long an idle partition blocks on XREADGROUP
    snapshot_every: int = 100  # write a snapshot when this many events passed since the last
    cache_max_actors: int = 200_000  # LRU bound of the in-memory actor cache
    passivate_after_ms: int = 600_000  # idle actors leave the cache after this long
    timer_poll_ms: int = 250  # how often the owner looks for due timers
    timer_batch: int = 500  # timers fired per poll at most
    outcome_ttl_ms: int = 24 * 3600 * 1000  # how long a command id deduplicates
    max_conflict_retries: int = 5  # reload-and-decide rounds per batch before retrying later
    trim_interval_ms: int = 10_000  # how often acknowledged commands are trimmed from the stream

    @property
    def renew_every_s(self) -> float:
        return (self.renew_interval_ms or self.lease_ttl_ms // 3) / 1000


class ProjectorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The projections' section: the projector's rounds, pool and cache; rebuild's workers."""

    # derived from the shared values (one source each)
    redis_url: str = ""
    database_url: str = ""
    partitions: int = DEFAULT_PARTITIONS
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS
    batch_size: int = 2000
    block_ms: int = 100
    cache_sessions: int = 200_000  # aggregates kept in memory, over all partitions
    pool_size: int = 8
    # Rounds start at most this often: under load, events that arrive meanwhile share one
    # round (one statement, one XREAD wake-up) instead of paying a round each; an idle
    # projector still starts a round the moment an event arrives.
    round_min_ms: int = 50
    # `sessiond projections rebuild`'s folding processes: one by default, since on the 2-core
    # machines we measure on more processes only compete with PostgreSQL for the cores.
    rebuild_workers: int = 1
    # Housekeeping between rounds (`projections.housekeeping`): Redis retention of the owned
    # partitions, and seed 002's cleanup of expired sessions by partition 0's holder; 0 = off.
    housekeeping_interval_ms: int = 600_000
    retention_keep: int = 100  # newest versions of an actor always kept in Redis


class SimulatorSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The simulators' section: provisioners, engines, and the simulator actor's timeouts."""

    provisioner: Literal["local", "kubernetes"] = "local"
    tick_hz: float = 10.0
    heartbeat_interval_ms: int = 5000  # how often an engine reports to its simulator actor
    md_maxlen: int = 1000  # ticks kept per simulator stream
    host_ttl_ms: int = 6000  # a simulators process is dead after this
    ack_timeout_ms: int = 5000  # local start/stop answer deadline
    breaker_failures: int = 3  # failed calls that open the breaker
    breaker_reset_ms: int = 30_000  # open -> half-open
    retries: int = 3  # retries of a transient failure per call
    backoff_base_ms: int = 200
    backoff_max_ms: int = 5000
    activity_interval_ms: int = 60_000  # how often gateways report client activity
    k8s_namespace: str = "sessiond"
    k8s_image: str = "sessiond:latest"
    k8s_kubeconfig: str = ""  # empty: in-cluster config inside a pod, else ~/.kube/config
    k8s_context: str = ""
    k8s_ready_timeout_ms: int = 120_000
    k8s_poll_ms: int = 1000
    k8s_in_cluster: bool = False  # running inside a Kubernetes pod
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS  # an idle simulator is stopped after this
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS  # a silent one is marked failed
    spec: str = ""  # JSON EngineSpec of `sessiond simulators --single` (a simulator's own pod)
