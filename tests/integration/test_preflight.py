"""Production refuses to start on a Redis/Valkey that may evict keys or persists nothing, and on
a PostgreSQL older than the minimum: real servers started with the wrong settings, real
processes refusing them in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from infra.embedded import redis_executable
from infra.preflight import MIN_POSTGRES, UnsafeServer, check_postgres, check_redis
from infra.store import open_store
from tests.integration.gwstack import ROOT, SESSIOND, free_port

pytestmark = pytest.mark.anyio

SECRET = "x" * 40


@pytest.fixture
def valkey(server_data_dir: Path) -> Iterator[Callable[..., str]]:
    """Start valkey-server with the given flags (stopped by PID after the test)."""
    procs: list[subprocess.Popen] = []

    def run(*flags: str) -> str:
        port = free_port()
        data = server_data_dir / f"valkey-{port}"
        data.mkdir()
        proc = subprocess.Popen(
            [
                redis_executable(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--daemonize",
                "no",
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return url
            except OSError:
                assert time.monotonic() < deadline, "valkey-server did not start"
                time.sleep(0.05)

    yield run
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def _prod(redis_url: str, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "SESSIOND_ENV": "production",
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "JWT_REFRESH_SECRET": SECRET + "r",
        "SESSIOND_PARTITIONS": "4",
    }


def _refusal(command: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [*SESSIOND, command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, (out.stdout, out.stderr)
    # The process's log lines (JSON, e.g. the store's "single node" line) may come first; the
    # refusal itself is one plain line, and nothing follows it (no traceback).
    lines = [line for line in out.stderr.strip().splitlines() if not line.startswith("{")]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["gateway", "worker", "reactor", "simulators", "projector"])
def test_production_refuses_a_server_that_may_evict_keys(
    command: str, valkey, database_url: str
) -> None:
    url = valkey("--appendonly", "yes", "--maxmemory-policy", "allkeys-lru")
    line = _refusal(command, _prod(url, database_url))
    assert line.startswith("sessiond: error: valkey "), line
    assert "maxmemory-policy allkeys-lru" in line and "set maxmemory-policy noeviction" in line


def test_production_refuses_a_server_without_persistence(valkey, database_url: str) -> None:
    url = valkey("--appendonly", "no", "--save", "")
    line = _refusal("worker", _prod(url, database_url))
    assert "has no persistence" in line and "appendonly yes" in line, line


async def test_rdb_snapshots_alone_count_as_persistence(valkey) -> None:
    url = valkey("--appendonly", "no", "--save", "3600 1")
    store = open_store(url, 4)
    try:
        await check_redis(store, "prod")
    finally:
        await store.aclose()


async def test_outside_production_nothing_is_checked(valkey) -> None:
    url = valkey("--appendonly", "no", "--save", "", "--maxmemory-policy", "allkeys-lru")
    store = open_store(url, 4)
    try:
        for env in ("dev", "test"):
            await check_redis(store, env)
        with pytest.raises(UnsafeServer):
            await check_redis(store, "prod")
    finally:
        await store.aclose()


async def test_postgresql_older_than_the_minimum_is_refused_in_production(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
        assert major >= MIN_POSTGRES  # the test server itself passes
        await check_postgres(conn, "prod")
        with pytest.raises(UnsafeServer) as refused:
            await check_postgres(conn, "prod", minimum=major + 1)
        assert f"is older than {major + 1}" in refused.value.message
        await check_postgres(conn, "dev", minimum=major + 1)
    finally:
        await conn.close()
