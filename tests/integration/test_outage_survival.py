"""Every sessiond process kind outlives Redis and PostgreSQL outages: it waits and reconnects with
backoff instead of exiting (before: `simulators` exited with code 2 when Redis went away; the
reactor, the simulators and the gateway exited when started while Redis was down, the projector
and the gateway when started while PostgreSQL was down).

Real servers of the test's own (`server_data_dir`), killed with SIGKILL and started again on the
same data directory (Redis on the same port).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, start_postgres, start_redis
from tests.integration.gwstack import ROOT, SESSIOND
from tests.integration.pgkill import kill_postgres, restart_postgres

KINDS = ("worker", "projector", "reactor", "simulators", "gateway")


class Servers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis: EmbeddedRedis = start_redis(root / "redis", appendfsync="always")
        self.port = self.redis.port
        self.pg: EmbeddedPostgres = start_postgres(root / "pg", fsync=False)

    def kill_redis(self) -> None:
        os.kill(self.redis.pid, signal.SIGKILL)
        self.redis.stop()

    def start_redis(self) -> None:
        self.redis = start_redis(self.root / "redis", port=self.port, appendfsync="always")

    def kill_postgres(self) -> None:
        kill_postgres(self.pg)

    def start_postgres(self) -> None:
        self.pg = restart_postgres(self.root / "pg", fsync=False)

    def stop(self) -> None:
        self.redis.stop()
        self.pg.stop()


class Processes:
    """One process of each kind on `servers`."""

    def __init__(self, servers: Servers, logs: Path) -> None:
        self.logs = logs
        self.gateway_port = free_port()
        self.env = {
            **os.environ,
            "REDIS_URL": servers.redis.url,
            "DATABASE_URL": servers.pg.url,
            "SESSIOND_PARTITIONS": "4",
            "LEASE_TTL_MS": "3000",
            "SESSIOND_ENV": "test",
            "PYTHONUNBUFFERED": "1",
            "GRPC_ADDR": f"127.0.0.1:{free_port()}",  # never the shared default 50051
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def migrate(self) -> None:
        subprocess.run([*SESSIOND, "migrate"], env=self.env, cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip

    def start(self) -> None:
        args = {
            "worker": ["worker"],
            "projector": ["projector"],
            "reactor": ["reactor"],
            "simulators": ["simulators"],
            "gateway": ["gateway", "--port", str(self.gateway_port)],
        }
        for kind in KINDS:
            log = open(self.logs / f"{kind}.log", "ab")
            self.procs[kind] = subprocess.Popen(
                [*SESSIOND, *args[kind]], env=self.env, cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def exited(self) -> dict[str, int]:
        return {k: p.returncode for k, p in self.procs.items() if p.poll() is not None}

    def log(self, kind: str) -> str:
        return (self.logs / f"{kind}.log").read_text()[-3000:]

    def assert_all_running(self) -> None:
        gone = self.exited()
        assert not gone, f"exited: {gone}\n" + "\n".join(f"== {k}\n{self.log(k)}" for k in gone)

    def wait_serving(self, timeout: float = 60.0) -> dict:
        """The gateway answers /ready and every partition has a worker and a projector."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self.assert_all_running()
            try:
                h = httpx.get(f"http://127.0.0.1:{self.gateway_port}/health", timeout=2).json()
                last = h
                checks = h["checks"]
                if (
                    httpx.get(f"http://127.0.0.1:{self.gateway_port}/ready", timeout=2).status_code
                    == 200
                    and checks["workers"]["status"] == "ok"
                    and checks["projector"]["status"] == "ok"
                ):
                    return h
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                last = exc
            time.sleep(0.3)
        raise AssertionError(f"not serving after {timeout}s: {last}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def servers(server_data_dir: Path) -> Iterator[Servers]:
    s = Servers(server_data_dir)
    try:
        yield s
    finally:
        s.stop()


def test_every_process_kind_rides_out_redis_and_postgres_restarts(
    servers: Servers, tmp_path: Path
) -> None:
    procs = Processes(servers, tmp_path)
    procs.migrate()
    procs.start()
    try:
        procs.wait_serving()
        servers.kill_redis()
        time.sleep(4)
        procs.assert_all_running()
        servers.start_redis()
        procs.wait_serving()

        servers.kill_postgres()
        time.sleep(4)
        procs.assert_all_running()
        servers.start_postgres()
        procs.wait_serving()
        time.sleep(2)
        procs.assert_all_running()
    finally:
        procs.stop()


def test_every_process_kind_started_while_the_servers_are_down_waits_for_them(
    servers: Servers, tmp_path: Path
) -> None:
    procs = Processes(servers, tmp_path)
    procs.migrate()
    servers.redis.stop()
    servers.pg.stop()
    procs.start()
    try:
        time.sleep(6)
        procs.assert_all_running()
        servers.start_redis()
        time.sleep(3)
        procs.assert_all_running()
        servers.start_postgres()
        procs.wait_serving()
        for kind in ("reactor", "simulators", "gateway"):
            assert "Redis unreachable" in procs.log(kind), kind
        assert "PostgreSQL unreachable" in procs.log("projector")
    finally:
        procs.stop()
