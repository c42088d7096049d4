"""Environment -> Settings: defaults, seed 004 variables, durations, and clear errors."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import msgspec
import pytest

from infra.config import ConfigError, load_settings, parse_duration_ms, read_dev_servers
from infra.logging import correlation, setup_logging


def test_defaults_are_a_runnable_dev_configuration() -> None:
    s = load_settings({})
    assert (s.env, s.partitions, s.data_dir) == ("dev", 16, ".sessiond")
    assert s.redis_url is None and s.database_url is None
    assert s.session_ttl_ms == 7 * 24 * 3600 * 1000
    assert s.redis_appendfsync == "everysec"
    assert s.server_addr == "127.0.0.1:8080"
    assert s.simulator_provisioner == "local"
    assert "http://127.0.0.1:8080" in s.origins


def test_seed_redis_variables_map_to_a_redis_url() -> None:
    s = load_settings({"REDIS_ADDR": "cache:6380", "REDIS_PASSWORD": "p@ss", "REDIS_DB": "2"})
    assert s.redis_url == "redis://:p%40ss@cache:6380/2"


def test_redis_url_wins_over_redis_addr() -> None:
    s = load_settings({"REDIS_URL": "redis://a:1/0", "REDIS_ADDR": "b:2"})
    assert s.redis_url == "redis://a:1/0"


def test_server_addr_with_empty_host_listens_everywhere_and_port_can_be_overridden() -> None:
    s = load_settings({"SERVER_ADDR": ":9000"})
    assert (s.server_host, s.server_port) == ("0.0.0.0", 9000)
    assert s.public_base_url == "http://127.0.0.1:9000"
    assert load_settings({"SERVER_ADDR": ":9000", "GATEWAY_PORT": "9001"}).server_port == 9001


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
    assert s.simulator_idle_timeout_ms == 600_000
    assert s.simulator_heartbeat_timeout_ms == 5_000


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
