"""Environment -> Settings: defaults (one per knob), seed 004 variables, durations, the sections
and their shared values, command-line options, sources, masking, and clear errors."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import msgspec
import pytest

from infra.config import (
    ConfigError,
    describe,
    load_settings,
    mask_url,
    parse_duration_ms,
    read_dev_servers,
)
from infra.logging import correlation, setup_logging
from infra.sections import GatewayConfig, ProjectorConfig, RuntimeConfig, SimulatorSettings


def test_defaults_are_a_runnable_dev_configuration() -> None:
    s = load_settings({})
    assert (s.env, s.partitions, s.data_dir) == ("dev", 16, ".sessiond")
    assert s.redis_url is None and s.database_url is None
    assert s.session_ttl_ms == 7 * 24 * 3600 * 1000
    assert s.redis_appendfsync == "everysec"
    assert s.gateway.addr == "127.0.0.1:8080"
    assert s.simulators.provisioner == "local"
    assert "http://127.0.0.1:8080" in s.gateway.allowed_origins


def test_seed_redis_variables_map_to_a_redis_url() -> None:
    s = load_settings({"REDIS_ADDR": "cache:6380", "REDIS_PASSWORD": "p@ss", "REDIS_DB": "2"})
    assert s.redis_url == "redis://:p%40ss@cache:6380/2"


def test_redis_url_wins_over_redis_addr() -> None:
    s = load_settings({"REDIS_URL": "redis://a:1/0", "REDIS_ADDR": "b:2"})
    assert s.redis_url == "redis://a:1/0"


def test_server_addr_with_empty_host_listens_everywhere_and_port_can_be_overridden() -> None:
    s = load_settings({"SERVER_ADDR": ":9000"}).gateway
    assert (s.host, s.port) == ("0.0.0.0", 9000)
    assert s.public_base_url == "http://127.0.0.1:9000"
    assert load_settings({"SERVER_ADDR": ":9000", "GATEWAY_PORT": "9001"}).gateway.port == 9001


def test_grpc_addr_defaults_to_loopback_and_is_checked() -> None:
    assert load_settings({}).gateway.grpc_addr == "127.0.0.1:50051"
    assert load_settings({"GRPC_ADDR": ":6000"}).gateway.grpc_addr == "127.0.0.1:6000"
    assert load_settings({"GRPC_ADDR": "0.0.0.0:6001"}).gateway.grpc_addr == "0.0.0.0:6001"
    assert load_settings({"GRPC_ADDR": "[::1]:6002"}).gateway.grpc_addr == "[::1]:6002"
    with pytest.raises(ConfigError, match="GRPC_ADDR"):
        load_settings({"GRPC_ADDR": "localhost:99999"})


@pytest.mark.parametrize(
    ("text", "ms"),
    [("250", 250), ("7d", 604_800_000), ("30s", 30_000), ("1h30m", 5_400_000), ("1.5s", 1500)],
)
def test_durations_accept_ms_or_units(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "7 weeks", "d", "10x", "-5s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(text)


def test_session_ttl_and_timeouts_parse_durations() -> None:
    s = load_settings(
        {"SESSION_TTL": "1d", "SIMULATOR_IDLE_TIMEOUT": "10m", "SIMULATOR_HEARTBEAT_TIMEOUT": "5s"}
    )
    assert s.session_ttl_ms == 86_400_000
    assert s.simulators.idle_timeout_ms == 600_000
    assert s.simulators.heartbeat_timeout_ms == 5_000
    # the gateway, which starts simulators, carries the same values
    assert s.gateway.simulator_idle_timeout_ms == 600_000
    assert s.gateway.simulator_heartbeat_timeout_ms == 5_000


def test_every_bad_variable_is_reported_in_one_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "SESSIOND_PARTITIONS": "many",
                "REDIS_APPENDFSYNC": "sometimes",
                "SESSION_TTL": "forever",
                "SIMULATOR_PROVISIONER": "docker",
            }
        )
    message = str(info.value)
    for name in (
        "SESSIOND_PARTITIONS",
        "REDIS_APPENDFSYNC",
        "SESSION_TTL",
        "SIMULATOR_PROVISIONER",
    ):
        assert name in message
    assert info.value.code == "CONFIG"


def test_production_refuses_dev_secrets_and_embedded_servers() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET must be set"):
        load_settings({"SESSIOND_ENV": "production"})
    s = load_settings(
        {
            "SESSIOND_ENV": "prod",
            "JWT_SECRET": "x" * 40,
            "JWT_REFRESH_SECRET": "y" * 40,
            "REDIS_URL": "redis://r:6379/0",
            "DATABASE_URL": "postgresql://u@db/sessiond",
        }
    )
    assert s.env == "prod"


def test_missing_store_urls_are_explained() -> None:
    with pytest.raises(ConfigError, match="sessiond dev"):
        load_settings({}).require_redis_url()
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings({}).require_database_url()


def test_logs_are_json_lines_with_the_correlation_id() -> None:
    stream = io.StringIO()
    setup_logging("INFO", service="test", stream=stream)
    try:
        log = logging.getLogger("sessiond.test")
        with correlation("corr-1"):
            log.info("hello %s", "world", extra={"session_id": "s1"})
        log.info("outside")
    finally:
        setup_logging("WARNING")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "hello world"
    assert first["correlation_id"] == "corr-1"
    assert first["session_id"] == "s1"
    assert first["service"] == "test" and first["level"] == "info"
    assert "correlation_id" not in second


def test_store_urls_of_a_running_dev_are_discovered_from_its_data_dir(tmp_path) -> None:
    info = {"pid": os.getpid(), "redis_url": "redis://127.0.0.1:1/0", "database_url": "pg://x"}
    (tmp_path / "dev.json").write_bytes(msgspec.json.encode(info))
    env = {"SESSIOND_DATA_DIR": str(tmp_path)}
    found = load_settings(env, discover=True)
    assert (found.redis_url, found.database_url) == ("redis://127.0.0.1:1/0", "pg://x")
    # an explicit URL wins, explicit env mappings do not discover unless asked, prod never does
    assert load_settings({**env, "REDIS_URL": "redis://h:2/0"}, discover=True).redis_url == (
        "redis://h:2/0"
    )
    assert load_settings(env).redis_url is None
    prod = {**env, "SESSIOND_ENV": "prod", "JWT_SECRET": "s" * 40, "JWT_REFRESH_SECRET": "r" * 40}
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings({**prod, "DATABASE_URL": "postgresql://db/x"}, discover=True)


def test_a_dead_dev_is_not_discovered(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    info = {"pid": dead.pid, "redis_url": "redis://127.0.0.1:1/0"}
    (tmp_path / "dev.json").write_bytes(msgspec.json.encode(info))
    assert read_dev_servers(tmp_path) is None
    assert load_settings({"SESSIOND_DATA_DIR": str(tmp_path)}, discover=True).redis_url is None


# ------------------------------------------------------------------ one Settings, sections


def test_every_section_has_one_default_per_knob() -> None:
    """Loaded from an empty environment, each section is what its Struct's defaults say: no
    second default hides in a loader (the lease TTL once differed: 5 s against 10 s)."""
    s = load_settings({})
    assert s.runtime == RuntimeConfig()
    assert s.projector == ProjectorConfig()
    assert s.simulators == SimulatorSettings()
    named = {"gateway_id": s.gateway.gateway_id, "pod_name": s.gateway.pod_name}
    assert s.gateway == GatewayConfig(**named)
    assert s.lease_ttl_ms == s.runtime.lease_ttl_ms == s.projector.lease_ttl_ms == 10_000


def test_shared_values_reach_every_section_that_needs_them() -> None:
    s = load_settings(
        {
            "REDIS_URL": "redis://r:6379/0",
            "DATABASE_URL": "postgresql://db/x",
            "SESSIOND_PARTITIONS": "8",
            "LEASE_TTL_MS": "3s",
            "SESSIOND_ENV": "test",
        }
    )
    assert (s.gateway.redis_url, s.projector.redis_url) == ("redis://r:6379/0",) * 2
    assert (s.gateway.database_url, s.projector.database_url) == ("postgresql://db/x",) * 2
    assert (s.gateway.partitions, s.projector.partitions) == (8, 8)
    assert (s.runtime.lease_ttl_ms, s.projector.lease_ttl_ms) == (3000, 3000)
    assert s.gateway.env == "test"
    assert s.source("projector.partitions") == "derived from partitions"
    # a section's own variable wins over the shared value
    own = load_settings({"LEASE_TTL_MS": "3000", "SESSIOND_PROJECTOR_LEASE_TTL_MS": "4000"})
    assert (own.runtime.lease_ttl_ms, own.projector.lease_ttl_ms) == (3000, 4000)


def test_production_is_an_alias_of_prod_that_says_so() -> None:
    env = {
        "REDIS_URL": "redis://r:6379/0",
        "DATABASE_URL": "postgresql://db/x",
        "JWT_SECRET": "s" * 40,
        "JWT_REFRESH_SECRET": "r" * 40,
    }
    s = load_settings({**env, "SESSIOND_ENV": "production"})
    assert (s.env, s.gateway.env) == ("prod", "prod")
    assert s.source("env") == "SESSIOND_ENV ('production' is an alias of 'prod')"
    assert load_settings({**env, "SESSIOND_ENV": "prod"}).source("env") == "SESSIOND_ENV"
    with pytest.raises(ConfigError, match=r"SESSIOND_ENV='staging': expected dev, test or prod"):
        load_settings({"SESSIOND_ENV": "staging"})


def test_problems_of_every_section_are_reported_in_one_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "SESSIOND_PARTITIONS": "0",
                "GATEWAY_MAX_JSON_DEPTH": "1",
                "SESSIOND_BATCH_SIZE": "lots",
                "SESSIOND_PROJECTOR_POOL": "0",
                "SIMULATOR_TICK_HZ": "-1",
                "GATEWAY_IDLE_TIMEOUT": "soon",
            }
        )
    message = info.value.message
    for expected in (
        "SESSIOND_PARTITIONS='0': expected 1..16384",
        "GATEWAY_MAX_JSON_DEPTH='1': expected 2..512",
        "SESSIOND_BATCH_SIZE='lots': expected an integer",
        "SESSIOND_PROJECTOR_POOL='0': expected at least 1",
        "SIMULATOR_TICK_HZ='-1': expected a positive number",
        "GATEWAY_IDLE_TIMEOUT='soon': expected seconds or a duration",
    ):
        assert expected in message


def test_secrets_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "REDIS_URL": "http://:hunter2@cache:6379/0",
                "JWT_PRIVATE_KEY": "hunter3-not-a-key",
                "SESSIOND_ENV": "prod",
                "JWT_SECRET": "hunter4",
            }
        )
    message = info.value.message
    assert "REDIS_URL='http://:****@cache:6379/0': expected a redis://" in message
    assert "JWT_PRIVATE_KEY='<hidden>'" in message
    assert "JWT_SECRET: expected 32 characters or more" in message
    assert "hunter" not in message


def test_durations_take_units_in_milliseconds_and_seconds_variables() -> None:
    s = load_settings(
        {
            "SESSIOND_OUTCOME_TTL_MS": "2h",
            "SESSIOND_TIMER_POLL_MS": "100",
            "SIMULATOR_BREAKER_RESET_MS": "1m",
            "GATEWAY_COMMAND_TIMEOUT": "1500ms",
            "GATEWAY_DRAIN_TIMEOUT": "2.5",
            "GATEWAY_DEVICE_RETENTION": "1d",
        }
    )
    assert (s.runtime.outcome_ttl_ms, s.runtime.timer_poll_ms) == (7_200_000, 100)
    assert s.simulators.breaker_reset_ms == 60_000
    assert (s.gateway.command_timeout_s, s.gateway.drain_timeout_s) == (1.5, 2.5)
    assert s.gateway.device_retention_s == 86_400
    assert load_settings({"GATEWAY_DRAIN_TIMEOUT": "0"}).gateway.drain_timeout_s == 0  # no wait


def test_command_line_options_win_and_are_checked_like_the_variables() -> None:
    env = {"SESSIOND_PARTITIONS": "8", "SIMULATOR_PROVISIONER": "kubernetes"}
    s = load_settings(
        env,
        options={
            "partitions": ("--partitions", "4"),
            "runtime.lease_ttl_ms": ("--lease-ttl-ms", "2s"),
            "simulators.provisioner": ("--provisioner", "local"),
        },
    )
    assert (s.partitions, s.gateway.partitions, s.projector.partitions) == (4, 4, 4)
    assert s.source("partitions") == "--partitions"
    assert (s.runtime.lease_ttl_ms, s.projector.lease_ttl_ms) == (2000, 10_000)
    assert s.simulators.provisioner == "local"
    with pytest.raises(ConfigError, match=r"--partitions='0': expected 1..16384"):
        load_settings({}, options={"partitions": ("--partitions", "0")})


def test_each_value_says_where_it_came_from() -> None:
    s = load_settings(
        {"REDIS_ADDR": "cache:6380", "GATEWAY_PORT": "9001", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    )
    assert s.source("gateway.port") == "GATEWAY_PORT"
    assert s.source("gateway.host") == "default"
    assert s.source("redis_url") == "derived from REDIS_ADDR, REDIS_PASSWORD, REDIS_DB"
    assert s.gateway.allowed_origins == ("http://127.0.0.1:9001", "http://localhost:9001")
    assert s.source("gateway.allowed_origins") == "derived from gateway.port"
    assert s.simulators.k8s_in_cluster and s.source("simulators.k8s_in_cluster") == (
        "KUBERNETES_SERVICE_HOST"
    )


def test_rs256_follows_from_a_public_key_given_as_a_file(tmp_path) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n"
    (tmp_path / "key.pem").write_text(pem)
    s = load_settings({"JWT_PUBLIC_KEY": str(tmp_path / "key.pem")})
    assert (s.gateway.jwt_algorithm, s.gateway.jwt_public_key) == ("RS256", pem)
    assert s.source("gateway.jwt_algorithm") == "derived from JWT_PUBLIC_KEY"
    with pytest.raises(ConfigError, match="JWT_ALGORITHM=RS256 needs JWT_PUBLIC_KEY"):
        load_settings({"JWT_ALGORITHM": "rs256"})
    with pytest.raises(ConfigError, match=r"JWT_PUBLIC_KEY=.*expected PEM text"):
        load_settings({"JWT_PUBLIC_KEY": str(tmp_path / "missing.pem")})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:p%40ss@cache:6380/2", "redis://:****@cache:6380/2"),
        ("rediss://user:pw@h:1/0", "rediss://user:****@h:1/0"),
        (
            "postgresql://u:pw@db:5432/x?sslmode=require",
            "postgresql://u:****@db:5432/x?sslmode=require",
        ),
        (
            "postgresql://u@db/x?password=pw&sslmode=off",
            "postgresql://u@db/x?password=****&sslmode=off",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("unix:///tmp/redis.sock?db=0", "unix:///tmp/redis.sock?db=0"),
    ],
)
def test_passwords_inside_urls_are_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_describe_lists_every_knob_of_every_section_masked() -> None:
    s = load_settings(
        {
            "REDIS_URL": "redis://:hunter2@cache:6379/0",
            "JWT_SECRET": "s" * 40,
            "SESSIOND_BATCH_SIZE": "50",
        }
    )
    entries = {e.path: e for e in describe(s)}
    fields = [f"{name}.{f.name}" for name, section in (
        ("gateway", GatewayConfig), ("runtime", RuntimeConfig), ("projector", ProjectorConfig),
        ("simulators", SimulatorSettings),
    ) for f in msgspec.structs.fields(section)]  # fmt: skip
    assert set(fields) <= entries.keys()
    assert {"env", "redis_url", "partitions", "lease_ttl_ms", "log_level"} <= entries.keys()
    assert entries["redis_url"].value == "redis://:****@cache:6379/0"
    assert entries["gateway.redis_url"].value == "redis://:****@cache:6379/0"
    assert entries["gateway.jwt_secret"].value == "****"
    assert entries["gateway.jwt_refresh_secret"].value == "****"  # the dev secret, masked too
    assert (entries["runtime.batch_size"].value, entries["runtime.batch_size"].source) == (
        50,
        "SESSIOND_BATCH_SIZE",
    )
    assert entries["runtime.batch_size"].variables == ("SESSIOND_BATCH_SIZE",)
    assert "hunter2" not in msgspec.json.encode(list(entries.values())).decode()


def test_log_context_fields_nest_and_a_records_own_fields_win() -> None:
    from infra.logging import bind_log_fields, log_context

    stream = io.StringIO()
    setup_logging("INFO", service="test", stream=stream)
    try:
        log = logging.getLogger("sessiond.test")
        with log_context(correlation_id="c1", session_id="s1", actor="session:s1", partition=3):
            with log_context(command_id="k1", session_id=""):  # empty: the outer value stays
                log.info("inner")
            log.info("own", extra={"partition": 9})
        log.info("outside")

        async def task() -> None:
            bind_log_fields(partition=5)  # a task's binding stays in its own context
            log.info("in task")

        import asyncio

        asyncio.run(task())
        log.info("after task")
    finally:
        setup_logging("WARNING")
    inner, own, outside, in_task, after = (
        json.loads(line) for line in stream.getvalue().splitlines()
    )
    fields = ("correlation_id", "session_id", "actor", "partition", "command_id")
    assert [inner[k] for k in fields] == ["c1", "s1", "session:s1", 3, "k1"]
    assert own["partition"] == 9 and "command_id" not in own
    assert not {"correlation_id", "session_id", "actor", "partition"} & set(outside)
    assert in_task["partition"] == 5 and "partition" not in after
