"""`/ready` and `/health` against real processes: readiness is the gateway's own (a worker
failover must not take every gateway out of the Service, issue 17), health says what is wrong."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.integration.gwstack import Stack

pytestmark = pytest.mark.anyio


async def test_ready_does_not_need_the_workers_but_health_reports_them(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base, timeout=5) as http:
        body = (await http.get("/health")).json()
        assert body["status"] == "healthy", body["checks"]
        assert body["checks"]["workers"] == {"status": "ok", "leases": "4/4"}
        assert body["checks"]["projector"]["running"] == 1
        stack.stop("worker")  # its leases are released: no partition has a worker
        try:
            deadline = time.monotonic() + 15
            while (await http.get("/health")).json()["checks"]["workers"]["status"] != "none":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            health = await http.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "unhealthy"
            ready = await http.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["worker_leases"] == "0/4"
        finally:
            stack.start("worker", "worker")
        deadline = time.monotonic() + 15
        while (await http.get("/health")).json()["status"] != "healthy":
            assert time.monotonic() < deadline, (await http.get("/health")).json()["checks"]
            await asyncio.sleep(0.1)
