"""Shared fixtures: real Redis and real PostgreSQL for every test that asks for them.

- `redis_server_url` / `postgres_server_url` (session): an embedded server started for this pytest
  process in its own temp dir on a free port (or unix socket), or the server named by
  ``REDIS_URL`` / ``DATABASE_URL`` when set. Started lazily: a run that needs neither starts
  neither. Several pytest processes may run at once; each gets its own servers.
- `redis_url` (function): the same server, ``FLUSHALL`` first.
- `redis_cluster` (session): a real 3-master Valkey Cluster from the same binary
  (`infra.embedded.start_redis_cluster`), about two seconds to start, shared by every test that
  asks for it; `redis_cluster_url` (function) flushes every master first and gives a URL naming
  one node (``REDIS_CLUSTER_URL`` names an external cluster instead). A test that changes the
  cluster's shape (moves a slot, kills a node) starts a cluster of its own.
- `any_redis_url` (function, parametrized "redis" / "cluster"): the test runs once on the single
  node and once on the cluster, each flushed first.
- `database_url` (function): a fresh empty database created for the test, dropped after (leftover
  connections are terminated first).
- `server_data_dir` (function): a fresh directory outside pytest's temp root for a test that
  starts its own embedded server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from infra.embedded import EmbeddedCluster, start_postgres, start_redis, start_redis_cluster
from tests.rediskit import flush_all


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _remove_stale_dirs() -> None:
    """Delete server dirs left by pytest processes that were killed (their servers died too)."""
    for path in Path(tempfile.gettempdir()).glob("sessiond-[ts][er][sv]*-*-*"):
        try:
            pid = int(path.name.split("-")[2])
            os.kill(pid, 0)
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            continue


@pytest.fixture(scope="session")
def _server_root() -> Iterator[Path]:
    _remove_stale_dirs()
    # Not pytest's basetemp: it is pruned by other concurrent pytest runs, and a short path keeps
    # the postgres unix socket under the 107-byte limit.
    root = Path(tempfile.mkdtemp(prefix=f"sessiond-test-{os.getpid()}-"))
    root.chmod(0o755)  # the embedded postgres runs as its own system user when we are root
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server_data_dir() -> Iterator[Path]:
    """A fresh directory for a test's own embedded server (`start_redis` / `start_postgres`).

    Use it rather than `tmp_path` for PostgreSQL data: as root the server runs as another user,
    and pytest makes its own temp root private (0700) whenever a pytest session starts.
    """
    root = Path(tempfile.mkdtemp(prefix=f"sessiond-srv-{os.getpid()}-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server_url(_server_root: Path) -> Iterator[str]:
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    server = start_redis(_server_root / "redis")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server_url(_server_root: Path) -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    server = start_postgres(_server_root / "pg", fsync=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    flush_all(redis_server_url)
    return redis_server_url


@pytest.fixture(scope="session")
def redis_cluster(_server_root: Path) -> Iterator[EmbeddedCluster | None]:
    """The embedded 3-master cluster (None when ``REDIS_CLUSTER_URL`` names another)."""
    if os.environ.get("REDIS_CLUSTER_URL"):
        yield None
        return
    cluster = start_redis_cluster(_server_root / "cluster", 3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_server_url(redis_cluster: EmbeddedCluster | None) -> str:
    return os.environ.get("REDIS_CLUSTER_URL") or redis_cluster.url  # type: ignore[union-attr]


@pytest.fixture
def redis_cluster_url(redis_cluster_server_url: str) -> str:
    flush_all(redis_cluster_server_url)
    return redis_cluster_server_url


@pytest.fixture(params=["redis", "cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    fixture = "redis_url" if request.param == "redis" else "redis_cluster_url"
    return str(request.getfixturevalue(fixture))


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def _run_sync(coro_fn, *args):
    """Run an asyncpg coroutine from a sync fixture, off any event loop the test may own."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn(*args))).result()


async def _create_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


_db_counter = itertools.count()


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    name = f"t_{os.getpid()}_{next(_db_counter)}_{uuid.uuid4().hex[:8]}"
    _run_sync(_create_database, postgres_server_url, name)
    try:
        yield _with_database(postgres_server_url, name)
    finally:
        _run_sync(_drop_database, postgres_server_url, name)
