"""Every long-running process serves `/healthz` and `/metrics` on SESSIOND_METRICS_ADDR (real
processes on real servers), says 503 with the reason when a store it needs is gone, and the
probe answers 503 while the process's event loop is wedged."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.embedded import start_postgres, start_redis
from infra.probe import probe_server
from tests.integration.gwstack import ROOT, SESSIOND, free_port

pytestmark = pytest.mark.anyio

#: process -> (its command line, a metric only it exports)
PROCESSES = {
    "gateway": (["gateway", "--port", "{port}"], "sessiond_gateway_connections"),
    "worker": (["worker"], "sessiond_worker_owned_partitions"),
    "projector": (["projector"], "sessiond_projector_owned_partitions"),
    "reactor": (["reactor"], "sessiond_reactor_events_total"),
    "simulators": (["simulators"], "sessiond_engine_ticks_published_total"),
}


def _env(redis_url: str, database_url: str, metrics_port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "SESSIOND_PARTITIONS": "4",
        "LEASE_TTL_MS": "3000",
        "SESSIOND_ENV": "test",
        "SESSIOND_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class Running:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.base, self.log = proc, f"http://127.0.0.1:{port}", log

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=5)

    def wait_health(self, status: int, timeout: float = 30.0) -> dict[str, Any]:
        """The first /healthz answer with `status` (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                r = self.get("/healthz")
                last = (r.status_code, r.text)
                if r.status_code == status:
                    return r.json()
            except httpx.TransportError as e:
                last = e
            time.sleep(0.2)
        raise AssertionError(f"no {status} within {timeout}s; last {last}; log:\n"
                             + self.log.read_text()[-3000:])  # fmt: skip


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start a sessiond process (its PID is stopped after the test)."""
    started: list[subprocess.Popen] = []

    def run(args: list[str], env: dict[str, str]) -> Running:
        log = tmp_path / f"{args[0]}-{len(started)}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*SESSIOND, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        started.append(proc)
        port = int(env["SESSIOND_METRICS_ADDR"].rpartition(":")[2])
        return Running(proc, port, log)

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("name", list(PROCESSES))
def test_every_process_serves_healthz_and_metrics_on_its_metrics_addr(
    name: str, start: Callable[..., Running], redis_url: str, database_url: str
) -> None:
    args, own_metric = PROCESSES[name]
    args = [a.format(port=free_port()) for a in args]
    running = start(args, _env(redis_url, database_url, free_port()))
    assert running.wait_health(200) == {"status": "ok"}
    metrics = running.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for family in (own_metric, "process_cpu_seconds_total", "process_resident_memory_bytes",
                   "python_gc_collections_total"):  # fmt: skip
        assert f"\n# TYPE {family.removesuffix('_total')}" in text or family in text, family
    assert "\nsessiond_partitions 4.0\n" in text
    assert running.get("/nowhere").status_code == 404
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(15) == 0


def test_the_projector_reports_its_lag_per_partition(
    start: Callable[..., Running], redis_url: str, database_url: str
) -> None:
    running = start(["projector"], _env(redis_url, database_url, free_port()))
    running.wait_health(200)
    deadline = time.monotonic() + 10
    while 'sessiond_projector_lag_events{partition="3"}' not in running.get("/metrics").text:
        assert time.monotonic() < deadline, running.get("/metrics").text
        time.sleep(0.2)
    text = running.get("/metrics").text
    for p in range(4):
        assert f'sessiond_projector_lag_seconds{{partition="{p}"}} 0.0' in text
        assert f'sessiond_projector_lag_events{{partition="{p}"}} 0.0' in text
    assert "sessiond_projector_owned_partitions 4.0" in text


def test_a_worker_that_cannot_reach_redis_answers_503_with_the_reason(
    start: Callable[..., Running], server_data_dir: Path, database_url: str
) -> None:
    redis = start_redis(server_data_dir / "redis")
    try:
        running = start(["worker"], _env(redis.url, database_url, free_port()))
        running.wait_health(200)
        redis.stop()
        body = running.wait_health(503, timeout=15)
    finally:
        redis.stop()
    assert body["status"] == "unavailable"
    assert body["reason"].startswith("redis: "), body
    assert body["checks"]["redis"] != "ok"


def test_a_gateway_that_cannot_reach_postgresql_answers_503_but_keeps_serving_health(
    start: Callable[..., Running], server_data_dir: Path, redis_url: str
) -> None:
    pg = start_postgres(server_data_dir / "pg", fsync=False)
    port = free_port()
    try:
        running = start(["gateway", "--port", str(port)], _env(redis_url, pg.url, free_port()))
        running.wait_health(200)
        pg.stop()
        body = running.wait_health(503, timeout=15)
        # its own port still answers /health (degraded: writes go through without PostgreSQL)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        pg.stop()
    assert body["checks"]["postgres"] != "ok" and body["checks"]["redis"] == "ok", body
    assert body["reason"].startswith("postgres: "), body
    assert health.json()["checks"]["postgres"]["status"] == "unreachable"


def test_a_projector_that_cannot_reach_postgresql_answers_503_with_the_reason(
    start: Callable[..., Running], server_data_dir: Path, redis_url: str
) -> None:
    pg = start_postgres(server_data_dir / "pg", fsync=False)
    try:
        running = start(["projector"], _env(redis_url, pg.url, free_port()))
        running.wait_health(200)
        pg.stop()
        body = running.wait_health(503, timeout=15)
    finally:
        pg.stop()
    assert body["checks"]["postgres"] != "ok", body
    assert "postgres" in body["reason"].lower(), body


async def test_the_probe_answers_503_while_the_event_loop_is_wedged() -> None:
    port = free_port()
    seen: dict[str, Any] = {}

    async def fine() -> None:
        return None

    def probe_during_the_stall() -> None:
        time.sleep(1.6)
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        seen.update(status=r.status_code, body=r.json())

    async with probe_server(f"127.0.0.1:{port}", {"fine": fine}, period_s=0.2,
                            stall_after_s=1.0):  # fmt: skip
        await asyncio.sleep(0.3)
        r = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        prober = threading.Thread(target=probe_during_the_stall)
        prober.start()
        time.sleep(2.2)  # the loop is wedged: nothing runs on it meanwhile
        prober.join()
    assert seen["status"] == 503, seen
    assert seen["body"]["reason"].startswith("the event loop made no progress"), seen


async def test_a_failing_or_silent_check_makes_healthz_503_naming_it() -> None:
    port = free_port()

    async def broken() -> str | None:
        return "the lease loop has not completed a round for 9 s"

    async def silent() -> str | None:
        await asyncio.sleep(30)
        return None

    async with probe_server(f"127.0.0.1:{port}", {"leases": broken, "redis": silent},
                            period_s=0.2):  # fmt: skip
        await asyncio.sleep(1.5)
        r = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert r.status_code == 503
    body = r.json()
    assert body["reason"] == "leases: the lease loop has not completed a round for 9 s"
    assert body["checks"] == {
        "leases": "the lease loop has not completed a round for 9 s",
        "redis": "no answer within 1 s",
    }
