"""A real sessiond stack for end-to-end tests: worker, projector and gateway processes on the
session's real Redis (a node or a cluster) and PostgreSQL (a fresh database per stack), and
helpers to talk to it.

`running_stack(...)` starts one (extra environment variables tune it); the module-scoped `stack`
fixture in `conftest.py` shares one per test module.
"""

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
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

__all__ = [
    "ROOT",
    "SESSIOND",
    "Stack",
    "connect_ws",
    "free_port",
    "of_type",
    "recv_until",
    "running_stack",
]

ROOT = Path(__file__).resolve().parents[2]
SESSIOND = [sys.executable, "-m", "infra.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """A running worker + projector + gateway, and helpers to talk to the gateway."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        #: the gateway's gRPC address (GRPC_ADDR: a free port of its own)
        self.grpc_target = env["GRPC_ADDR"]
        self.ws_base = f"ws://127.0.0.1:{port}/ws"
        self.procs: dict[str, subprocess.Popen] = {}
        from gateway.auth import TokenService
        from infra.config import load_settings

        self.tokens = TokenService(load_settings(env).gateway)

    def token(self, user: str, *roles: str, kind: str = "access", ttl_s: int | None = None) -> str:
        return self.tokens.issue(user, roles, kind, ttl_s=ttl_s)

    def headers(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, *roles)}"}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(Path(self.env["SESSIOND_TEST_LOGS"]) / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [*SESSIOND, *args], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs[name] = proc
        return proc

    def start_gateway(self) -> None:
        self.start("gateway", "gateway", "--port", str(self.port), "--drain-timeout", "2")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}: {self.log(name)}")
            try:
                # ready (Redis, PostgreSQL) and every partition has a worker: commands are
                # applied at once (the gateway's /ready no longer waits for the workers)
                r = httpx.get(f"{self.base}/ready", timeout=2)
                last = r.text
                if r.status_code == 200:
                    h = httpx.get(f"{self.base}/health", timeout=2)
                    last = h.text
                    if h.json()["checks"]["workers"]["status"] == "ok":
                        return
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"stack not ready: {last}\n{self.log('gateway')}")

    def log(self, name: str) -> str:
        path = Path(self.env["SESSIOND_TEST_LOGS"]) / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def _db_url(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def running_stack(
    redis_server_url: str, postgres_server_url: str, logs: Path, **env_overrides: str
) -> Iterator[Stack]:
    """A worker, a projector and a gateway on a flushed Redis and a new database; `env_overrides`
    are added to (or, with an empty value, removed from) the processes' environment."""
    import asyncpg

    from tests.rediskit import flush_all

    flush_all(redis_server_url)  # every master of a cluster
    name = f"gw_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_server_url)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    env = {
        **os.environ,
        "REDIS_URL": redis_server_url,
        "DATABASE_URL": _db_url(postgres_server_url, name),
        "SESSIOND_PARTITIONS": "4",
        "LEASE_TTL_MS": "3000",
        "SESSIOND_ENV": "test",
        "SESSIOND_TEST_LOGS": str(logs),
        "GATEWAY_HEARTBEAT_INTERVAL": "2",
        "GATEWAY_TOUCH_INTERVAL": "2",
        "GATEWAY_RATE_PER_S": "200",
        "GATEWAY_RATE_BURST": "200",
        "GATEWAY_REST_RATE_PER_S": "1000",  # fuzzers send many requests as one user
        "GATEWAY_REST_RATE_BURST": "1000",
        "PYTHONUNBUFFERED": "1",
        "GRPC_ADDR": f"127.0.0.1:{free_port()}",  # never the shared default 50051
    }
    env.pop("SESSIOND_ORIGINS", None)
    env["ALLOWED_ORIGINS"] = "http://allowed.example"
    for key, value in env_overrides.items():
        if value == "":
            env.pop(key, None)
        else:
            env[key] = value
    s = Stack(env, free_port())
    subprocess.run([*SESSIOND, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    s.start("worker", "worker")
    s.start("projector", "projector", "--no-migrate")
    s.start_gateway()
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop_all()

        async def drop() -> None:
            conn = await asyncpg.connect(postgres_server_url)
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.close()

        asyncio.run(drop())


async def recv_until(ws, pred, timeout: float = 10.0) -> dict:
    """Read messages until `pred(msg)`; heartbeats and others are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for a message")
        msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        if pred(msg):
            return msg


def of_type(*names):
    return lambda m: m.get("type") in names


async def connect_ws(
    stack: Stack,
    user: str,
    device: str,
    session_id: str = "",
    since: int | None = None,
    **extra: str,
):
    q = f"?token={stack.token(user)}&device_id={device}"
    if session_id:
        q += f"&session_id={session_id}"
    if since is not None:
        q += f"&since={since}"
    for k, v in extra.items():
        q += f"&{k}={v}"
    ws = await websockets.connect(stack.ws_base + q, max_size=4 << 20, compression=None)
    hello = await recv_until(ws, of_type("connected", 100, "error"))
    return ws, hello


# ------------------------------------------------------------------ seed 000
