"""The whole service as real processes (`sessiond worker|projector|reactor|simulators|gateway`),
for the simulator end-to-end tests; plus a small WebSocket client that keeps every frame."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import websockets

__all__ = ["Client", "ProcessStack", "free_port"]

ROOT = Path(__file__).resolve().parents[2]
SESSIOND = str(Path(sys.executable).parent / "sessiond")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessStack:
    ROLES = ("worker", "projector", "reactor", "simulators", "gateway")

    def __init__(self, redis_url: str, database_url: str, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "SESSIOND_ENV": "test",
            "SESSIOND_PARTITIONS": "4",
            "SESSIOND_TIMER_POLL_MS": "50",
            "SESSIOND_BLOCK_MS": "50",
            "LEASE_TTL_MS": "2000",
            "SERVER_ADDR": f"127.0.0.1:{self.port}",
            "GRPC_ADDR": f"127.0.0.1:{free_port()}",  # never the shared default 50051
            "SIMULATOR_HEARTBEAT_INTERVAL_MS": "300",
            "SIMULATOR_HOST_TTL_MS": "1500",
            "SIMULATOR_TICK_HZ": "10",
            "SIMULATOR_RETRIES": "1",
            "SIMULATOR_BACKOFF_BASE_MS": "20",
            "SIMULATOR_ACK_TIMEOUT_MS": "2000",
            "SIMULATOR_ACTIVITY_INTERVAL_MS": "300",
            "GATEWAY_DRAIN_TIMEOUT": "1",
            # one user drives every session (the benchmark: hundreds of them): no per-user limits
            "GATEWAY_REST_RATE_PER_S": "0",
            "GATEWAY_MAX_CONNECTIONS_PER_USER": "0",
            **env,
        }
        self.env.pop("PYTHONPATH", None)
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def migrate(self) -> None:
        subprocess.run(
            [SESSIOND, "migrate"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self, role: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{role}.log", "ab")
        proc = subprocess.Popen(
            [SESSIOND, role],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[role] = proc
        return proc

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(role, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for role in list(self.procs):
            self.kill(role, signal.SIGTERM)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )

    def wait_healthy(self, redis_url: str, timeout: float = 40.0) -> None:
        import httpx
        import redis

        deadline = time.monotonic() + timeout
        r = redis.Redis.from_url(redis_url)
        try:
            while True:
                for role, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"{role} exited {proc.returncode}\n{self.logs()}")
                ok = False
                with contextlib.suppress(Exception):
                    # the gateway serves, and every partition has a worker
                    ready = httpx.get(self.base_url + "/ready", timeout=1).status_code == 200
                    health = httpx.get(self.base_url + "/health", timeout=1).json()
                    ready = ready and health["checks"]["workers"]["status"] == "ok"
                    now_ms = int(time.time() * 1000)
                    hosts = (
                        r.zcount("sd:sim:hosts", now_ms, "+inf")
                        if "simulators" in self.procs
                        else 1
                    )
                    ok = ready and hosts > 0
                if ok:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stack not ready in {timeout}s\n{self.logs()}")
                time.sleep(0.2)
        finally:
            r.close()


class Client:
    """A WebSocket client speaking the named protocol; every frame it got is in `frames`."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str, session_id: str, device_id: str, token: str) -> Client:
        ws = await websockets.connect(
            f"{url}?session_id={session_id}&device_id={device_id}&token={token}",
            compression=None,
            max_size=2**22,
        )
        return cls(ws)

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._new.set()

    async def send(
        self, mtype: str, payload: dict[str, Any] | None = None, correlation_id: str = ""
    ) -> None:
        await self.ws.send(
            json.dumps({"type": mtype, "payload": payload or {}, "correlation_id": correlation_id})
        )

    def of(self, mtype: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == mtype]

    def statuses(self) -> list[str]:
        """Simulator statuses pushed from the session feed (versioned), in arrival order."""
        return [
            f["payload"]["status"]
            for f in self.of("simulator_status")
            if "version" in f and isinstance(f.get("payload"), dict) and "status" in f["payload"]
        ]

    def ticks(self) -> list[dict[str, Any]]:
        return [f["payload"] for f in self.of("exchange_data")]

    async def until(self, predicate, timeout: float = 10.0, what: str = "frames") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.frames[-8:]}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), min(left, 0.2))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
