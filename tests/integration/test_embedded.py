"""The embedded servers are real, keep their data across restarts and leave no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import pytest
import redis

from infra.embedded import EmbeddedServerError, start_postgres, start_redis, start_redis_cluster


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie still answers kill(0): look at its state
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_redis_answers_and_keeps_data_across_restart(server_data_dir: Path) -> None:
    server = start_redis(server_data_dir / "r")
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        client.xadd("s", {"f": "1"}, id="1-0")
        client.set("k", "v")
        client.close()
    finally:
        server.stop()
    pid = server.pid
    assert _gone(pid)

    again = start_redis(server_data_dir / "r", appendfsync="always")
    try:
        client = redis.Redis.from_url(again.url)
        assert client.get("k") == b"v"
        assert client.xrange("s") == [(b"1-0", {b"f": b"1"})]
        assert client.config_get("appendfsync")["appendfsync"] == "always"
        client.close()
    finally:
        again.stop()
    assert _gone(again.pid)


def test_redis_data_dir_cannot_be_shared_by_two_servers(server_data_dir: Path) -> None:
    server = start_redis(server_data_dir / "r")
    try:
        with pytest.raises(EmbeddedServerError, match="in use"):
            start_redis(server_data_dir / "r")
    finally:
        server.stop()


def test_redis_rejects_unknown_fsync_policy(server_data_dir: Path) -> None:
    with pytest.raises(EmbeddedServerError, match="appendfsync"):
        start_redis(server_data_dir / "r", appendfsync="sometimes")


def test_a_cluster_with_replicas_starts_in_seconds_from_the_same_binary(
    server_data_dir: Path,
) -> None:
    started = time.monotonic()
    cluster = start_redis_cluster(server_data_dir / "c", 3, replicas=1)
    elapsed = time.monotonic() - started
    try:
        assert elapsed < 10, elapsed  # about two seconds here
        assert len(cluster.masters) == 3 and len(cluster.nodes) == 6
        assert cluster.live_masters() == sorted(n.port for n in cluster.masters)
        client = redis.RedisCluster.from_url(cluster.url)
        info = client.cluster_info()
        assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384
        assert int(info["cluster_known_nodes"]) == 6
        for master in cluster.masters:  # each with its replica in sync
            node = redis.Redis.from_url(master.url)
            assert node.info("replication")["connected_slaves"] == 1
            node.close()
        for i in range(30):  # keys of every master
            client.set(f"k{i}", i)
        assert [int(client.get(f"k{i}")) for i in range(30)] == list(range(30))
        client.close()
        pids = [n.pid for n in cluster.nodes]
    finally:
        cluster.stop()
    assert all(_gone(pid) for pid in pids)


def test_embedded_servers_die_with_their_parent(server_data_dir: Path) -> None:
    """A SIGKILLed parent (crashed `sessiond dev`, killed pytest) leaves no orphan server."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from infra.embedded import start_postgres, start_redis
        r = start_redis(Path({str(server_data_dir / "r")!r}))
        p = start_postgres(Path({str(server_data_dir / "p")!r}), fsync=False)
        print(r.pid, p.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        redis_pid, pg_pid = (int(x) for x in line.split())
        os.kill(redis_pid, 0)
        os.kill(pg_pid, 0)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert _gone(redis_pid), "valkey-server outlived its parent"
    assert _gone(pg_pid), "postgres outlived its parent"
    # and the directory lock died with them: a new server can use the same data
    server = start_redis(server_data_dir / "r")
    server.stop()


@pytest.mark.anyio
async def test_postgres_query_works_and_data_survives_restart(server_data_dir: Path) -> None:
    server = start_postgres(server_data_dir / "pg", fsync=False)
    try:
        conn = await asyncpg.connect(server.url)
        assert await conn.fetchval("SELECT 40 + 2") == 42
        await conn.execute("CREATE TABLE kept (x int)")
        await conn.execute("INSERT INTO kept VALUES (7)")
        await conn.close()
    finally:
        server.stop()
    assert _gone(server.pid)

    again = start_postgres(server_data_dir / "pg")
    try:
        conn = await asyncpg.connect(again.url)
        assert await conn.fetchval("SELECT x FROM kept") == 7
        await conn.close()
    finally:
        again.stop()
    assert _gone(again.pid)


@pytest.mark.anyio
async def test_database_url_fixture_gives_an_empty_private_database(
    database_url: str, postgres_server_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        assert name.startswith("t_")
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
    finally:
        await conn.close()


def test_redis_url_fixture_starts_from_an_empty_server(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set("left-over", "1")
    finally:
        client.close()


def test_embedded_redis_serves_local_clients_on_its_unix_socket(tmp_path: Path) -> None:
    """`local_url` (what `sessiond dev` gives its processes) is the unix socket, and every
    client of ours accepts it: redis-py's unix connection refuses the TCP keepalive option that
    the TCP clients set."""
    import asyncio

    from infra.store.redis.connection import Endpoint, Pipeline
    from infra.store.redis.resp import pack
    from tests.rediskit import connect, connect_sync

    server = start_redis(tmp_path / "r")
    try:
        assert server.unix_url is not None and server.local_url == server.unix_url
        sync = connect_sync(server.local_url)
        assert sync.set("via", "unix") and sync.get("via") == b"unix"
        sync.close()

        async def both() -> tuple[bytes, bytes]:
            client = connect(server.local_url)
            pipe = Pipeline(Endpoint.from_url(server.local_url), name="t")
            try:
                return await client.get("via"), await pipe.execute(pack(["GET", "via"]))
            finally:
                pipe.close()
                await client.aclose()

        assert asyncio.run(both()) == (b"unix", b"unix")
    finally:
        server.stop()
