"""Gateway benchmark (run: `.venv/bin/python tests/bench/bench_gateway.py`, or `make bench-perf`
for issue 19's figures with the runtime's).

Prints, in one run, on this machine with every process on it (embedded Redis and PostgreSQL,
one worker, one projector, one gateway, client processes), each headline figure also on a line
`RESULT <name> <value>  steal=..% psi=..% busy=..%` (the machine's pressure meanwhile):

(a0) the raw baseline: the same clients and load through a bare `websockets` relay process.
(a) end-to-end latency p50/p99 of a state update sent by one device (WS STATE_UPDATE) until its
    arrival at the other device of the same session, at RATE updates/s over SESSIONS sessions
    (2 devices each), for DURATION seconds. Goal: p99 <= 25 ms. CPU per delivered update of
    every service process (worker, projector, gateway, Redis, PostgreSQL; /proc/<pid>/stat)
    against the relay's: `RESULT cpu_per_update_ratio` (goal <= 2.5).
(p) seed 004's latency claims under the same load: WS snapshot request, handoff start (POST) to
    accept (GET of the token), conflict resolution; `RESULT snapshot_request_p99_ms`,
    `handoff_p99_ms`, `conflict_resolution_p99_ms` (goals < 50, < 100, < 50 ms).
(s) the sustainable rate: the highest rate (steps of STEP_S seconds on the same connections)
    at which p99 <= 25 ms with nothing dropped or refused: `RESULT sustainable_updates_per_s`.
(b) CONNS authenticated WebSocket connections over GATEWAYS fresh gateway processes, each
    sending a heartbeat every HEARTBEAT_S seconds: RSS per connection beside bare `websockets`
    echo servers (as many processes) holding as many in the same run: `RESULT
    ws_memory_ratio` (goal <= 1.3).

Environment knobs: BENCH_SESSIONS (1000), BENCH_RATE (1000), BENCH_DURATION (20),
BENCH_STEP_S (20, the search's step), BENCH_SEARCH_STEPS (6, 0: no search), BENCH_MAX_RATE
(6000), BENCH_PROBE_RATE (5 of each probe a second), BENCH_PROBE_SESSIONS (20), BENCH_CONNS
(20000), BENCH_GATEWAYS (2, (b)'s gateway processes), BENCH_CLIENT_PROCS (1: (a)'s one lean
client process carries the 2,000 connections in ~14% of a core; a second one cost 4-5 points of
CPU more), BENCH_CONN_PROCS (2, (b)'s client processes; one opens at most ~20,000 files),
BENCH_SKIP_A / BENCH_SKIP_RAW / BENCH_SKIP_PROBES / BENCH_SKIP_B, BENCH_TIMELINE=1
(p50/p99/max per second), BENCH_REDIS_TCP=1 (Redis through loopback TCP instead of its unix
socket), BENCH_PG_FSYNC=0 (PostgreSQL without fsync, as the test fixtures run it; by default it
is durable, as in `sessiond dev`), BENCH_CLUSTER=1 (Redis is an embedded 3-master Valkey
Cluster on this machine, through loopback TCP; the processes' REDIS_URL names one node),
BENCH_PROFILE_GATEWAY=FILE (the gateway under cProfile).
A quick run: `BENCH_DURATION=8 BENCH_STEP_S=8 BENCH_CONNS=4000`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.machine import (  # noqa: E402
    MachineSample,
    Pressure,
    proc_cpu_seconds,
    result,
    tree,
)

SESSIONS = int(os.environ.get("BENCH_SESSIONS", "1000"))
RATE = float(os.environ.get("BENCH_RATE", "1000"))
DURATION = float(os.environ.get("BENCH_DURATION", "20"))
STEP_S = float(os.environ.get("BENCH_STEP_S", "20"))
SEARCH_STEPS = int(os.environ.get("BENCH_SEARCH_STEPS", "6"))
MAX_RATE = float(os.environ.get("BENCH_MAX_RATE", "6000"))
PROBE_RATE = float(os.environ.get("BENCH_PROBE_RATE", "5"))
PROBE_SESSIONS = int(os.environ.get("BENCH_PROBE_SESSIONS", "20"))
CONNS = int(os.environ.get("BENCH_CONNS", "20000"))
GATEWAYS = int(os.environ.get("BENCH_GATEWAYS", "2"))
CLIENT_PROCS = int(os.environ.get("BENCH_CLIENT_PROCS", "1"))
CONN_PROCS = int(os.environ.get("BENCH_CONN_PROCS", "2"))  # (b)'s clients: 10,000 connections each
GOAL_P99_MS = 25.0
CLUSTER = os.environ.get("BENCH_CLUSTER", "") not in ("", "0")
HEARTBEAT_S = 10.0
SESSIOND = [sys.executable, "-m", "infra.cli"]


def raise_fd_limit(n: int = 20000) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(n, soft), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


# ------------------------------------------------------------------ client processes
def _use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass


class _Changes(msgspec.Struct, frozen=True):
    t: float | None = None
    s: int = 0  # the step (rate) of the run the update was sent in


class _Payload(msgspec.Struct, frozen=True):
    """The two fields of a pushed state update the latency client reads."""

    changes: _Changes = _Changes()
    ts: int = 0


class _Update(msgspec.Struct, frozen=True):
    payload: _Payload


def latency_client(
    url: str, tokens: dict[str, str], sessions: list[str], steps: mp.Queue, out: mp.Queue
) -> None:
    """Connect devices A and B of each session once, then run the steps the parent sends
    (`(step, rate, duration)`, None to stop): A sends `rate`/s updates round-robin; B records
    the latency of each update of that step from send to arrival. The connections are `lean_ws`
    ones: these processes stand in for remote devices, and every bit of CPU they spend is taken
    from the service they measure."""
    raise_fd_limit()
    _use_uvloop()
    from tests.bench.lean_ws import LeanWebSocket
    from tests.bench.lean_ws import connect as ws_connect

    decode_update = msgspec.json.Decoder(_Update).decode
    encode = msgspec.json.encode

    async def main() -> None:
        lat: list[float] = []
        sent_at: list[float] = []
        stage: list[tuple[float, float]] = []
        errors = 0
        codes: dict[str, int] = {}
        current = 0

        async def connect(sid: str, device: str, user: str) -> LeanWebSocket:
            for attempt in range(20):
                try:
                    ws = await ws_connect(
                        f"{url}?token={tokens[user]}&device_id={device}&session_id={sid}"
                    )
                    hello = json.loads(await ws.recv())
                    if hello["type"] == "connected":
                        return ws
                    await ws.close()
                except Exception:
                    pass
                await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError(f"could not connect {sid}/{device}")

        def on_a(raw: str) -> None:
            nonlocal errors
            if '"error"' in raw[:20]:
                errors += 1
                code = json.loads(raw)["payload"].get("code", "?")
                codes[code] = codes.get(code, 0) + 1

        def on_b(raw: str) -> None:
            if raw.startswith('{"type":"state_update"'):
                payload = decode_update(raw).payload
                sent = payload.changes.t
                if sent is not None and payload.changes.s == current:
                    now = time.time()
                    lat.append(now - sent)
                    sent_at.append(sent)
                    if payload.ts:
                        stage.append((payload.ts / 1000 - sent, now - payload.ts / 1000))

        sem = asyncio.Semaphore(50)

        async def open_pair(i: int, sid: str) -> tuple[LeanWebSocket, LeanWebSocket]:
            user = f"bench-{i % 50}"
            async with sem:
                a = await connect(sid, "device-a", user)
                b = await connect(sid, "device-b", user)
            return a, b

        pairs = await asyncio.gather(*(open_pair(i, s) for i, s in enumerate(sessions)))
        # the measuring client must not pause itself: its own cyclic-GC passes over 1,000
        # connections took 60-100 ms (seen with gc.callbacks) and showed up as latency
        from infra.gctune import tune_gc

        tune_gc()
        for a, b in pairs:
            a.on_text, b.on_text = on_a, on_b
        out.put(("ready", len(pairs)))
        await asyncio.sleep(1.0)
        loop = asyncio.get_running_loop()
        while (cmd := await loop.run_in_executor(None, steps.get)) is not None:
            current, rate, duration = cmd
            lat, sent_at, stage, errors, codes = [], [], [], 0, {}
            interval = 1.0 / rate
            cpu_start = time.process_time()
            start = time.perf_counter()
            n = 0
            while (now := time.perf_counter()) - start < duration:
                due = start + n * interval
                if due > now:
                    await asyncio.sleep(due - now)
                a, _ = pairs[n % len(pairs)]
                a.send(
                    encode(
                        {
                            "type": "state_update",
                            "payload": {"changes": {"t": time.time(), "n": n, "s": current}},
                        }
                    ).decode()
                )
                n += 1
            await asyncio.sleep(3.0)
            client_cpu = time.process_time() - cpu_start
            out.put(
                (
                    "done",
                    {
                        "sent": n,
                        "received": len(lat),
                        "latencies": lat,
                        "sent_at": sent_at,
                        "errors": errors,
                        "codes": codes,
                        "stage": stage,
                        "cpu": client_cpu,
                        "seconds": time.perf_counter() - start - 3.0,
                    },
                )
            )
        await asyncio.gather(*(ws.close() for p in pairs for ws in p), return_exceptions=True)

    asyncio.run(main())


def probe_client(
    base: str,
    tokens: dict[str, str],
    sessions: list[str],
    rate: float,
    stop_file: str,
    out: mp.Queue,
) -> None:
    """Seed 004's latency claims, timed while the update load runs: a WS SNAPSHOT_REQUEST
    answered (goal < 50 ms), a handoff from its start (POST) to its acceptance (the token
    validated by GET) (< 100 ms), and a conflict resolved (POST /session/conflict/resolve,
    `merge`) (< 50 ms). Each kind runs `rate` times a second over `sessions` (one device
    connected to each, so that a handoff has a source online) until `stop_file` exists."""
    raise_fd_limit()
    _use_uvloop()
    import httpx

    from tests.bench.lean_ws import connect as ws_connect

    async def main() -> None:
        http = httpx.AsyncClient(base_url=f"http://{base}", timeout=30)
        users = {sid: f"bench-{i % 50}" for i, sid in enumerate(sessions)}
        waiting: dict[str, asyncio.Future[None]] = {}

        def on_text(raw: str) -> None:
            msg = json.loads(raw)
            fut = waiting.pop(msg.get("correlation_id") or "", None)
            if fut is not None and not fut.done():
                if msg["type"] == "snapshot_response":
                    fut.set_result(None)
                else:
                    fut.set_exception(RuntimeError(str(msg.get("payload"))[:200]))

        conns = {}
        for sid in sessions:
            ws = await ws_connect(
                f"ws://{base}/ws?token={tokens[users[sid]]}&device_id=probe-src&session_id={sid}"
            )
            await ws.recv()
            ws.on_text = on_text
            conns[sid] = ws
        times: dict[str, list[float]] = {"snapshot": [], "handoff": [], "conflict": []}
        failures: dict[str, list[str]] = {k: [] for k in times}

        def headers(sid: str) -> dict[str, str]:
            return {"authorization": f"Bearer {tokens[users[sid]]}"}

        async def snapshot(sid: str, n: int) -> None:
            cid = f"p{n}"
            waiting[cid] = asyncio.get_running_loop().create_future()
            conns[sid].send(json.dumps({"type": "snapshot_request", "correlation_id": cid}))
            await asyncio.wait_for(waiting[cid], 10)

        async def handoff(sid: str, n: int) -> None:
            r = await http.post(
                f"/session/{sid}/handoff",
                headers=headers(sid),
                json={"source_device": "probe-src", "target_device": f"probe-dst-{n}"},
            )
            if r.status_code != 201:
                raise RuntimeError(f"start {r.status_code} {r.text[:200]}")
            r = await http.get(f"/session/{sid}/handoff/{r.json()['token']}", headers=headers(sid))
            if r.status_code != 200:
                raise RuntimeError(f"accept {r.status_code} {r.text[:200]}")

        async def conflict(sid: str, n: int) -> None:
            r = await http.post(
                "/session/conflict/resolve",
                headers=headers(sid),
                json={
                    "session_id": sid,
                    "client_version": 0,
                    "client_state": {"probe": n},
                    "resolution_strategy": "merge",
                },
            )
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code} {r.text[:200]}")

        async def run(kind: str, op: Callable[[str, int], Any], offset: float) -> None:
            await asyncio.sleep(offset)
            n = 0
            while not os.path.exists(stop_file):
                sid = sessions[n % len(sessions)]
                t0 = time.perf_counter()
                try:
                    await op(sid, n)
                    times[kind].append(time.perf_counter() - t0)
                except Exception as exc:
                    failures[kind].append(str(exc))
                n += 1
                await asyncio.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - t0)))

        out.put(("ready", len(conns)))
        await asyncio.gather(
            run("snapshot", snapshot, 0.0),
            run("handoff", handoff, 0.3 / rate),
            run("conflict", conflict, 0.6 / rate),
        )
        await asyncio.gather(*(ws.close() for ws in conns.values()), return_exceptions=True)
        await http.aclose()
        out.put(("done", {"times": times, "failures": failures}))

    asyncio.run(main())


def conn_client(
    url: str,
    tokens: dict[str, str],
    sessions: list[str],
    per_session: int,
    hold_s: float,
    heartbeat_s: float,
    out: mp.Queue,
    bare: bool,
) -> None:
    """Open len(sessions) * per_session connections and hold them, heartbeating."""
    raise_fd_limit()
    _use_uvloop()
    import websockets

    async def main() -> None:
        conns = []
        sem = asyncio.Semaphore(100)
        failures = 0

        async def one(i: int, sid: str, d: int):
            nonlocal failures
            user = f"bench-{i % 50}"
            q = "" if bare else f"?token={tokens[user]}&device_id=dev-{d}&session_id={sid}"
            for attempt in range(30):
                try:
                    async with sem:
                        ws = await websockets.connect(
                            url + q, compression=None, open_timeout=120, ping_interval=None
                        )
                        if not bare:
                            hello = json.loads(await ws.recv())
                            if hello["type"] != "connected":
                                await ws.close()
                                raise RuntimeError(hello)
                    return ws
                except Exception:
                    await asyncio.sleep(0.2 * (attempt + 1))
            failures += 1
            return None

        async def beat(ws, offset: float) -> None:
            await asyncio.sleep(offset)
            try:
                while True:
                    await ws.send('{"type":"heartbeat","payload":{}}')
                    await asyncio.sleep(heartbeat_s)
            except Exception:
                pass

        async def sink(ws) -> None:
            try:
                async for _ in ws:
                    pass
            except Exception:
                pass

        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(one(i, s, d) for i, s in enumerate(sessions) for d in range(per_session))
        )
        conns = [c for c in results if c is not None]
        tasks = [
            asyncio.ensure_future(beat(ws, (k % 1000) / 1000 * heartbeat_s))
            for k, ws in enumerate(conns)
        ]
        tasks += [asyncio.ensure_future(sink(ws)) for ws in conns]
        out.put(
            ("open", {"open": len(conns), "failed": failures, "seconds": time.perf_counter() - t0})
        )
        await asyncio.sleep(hold_s)
        open_now = sum(1 for ws in conns if ws.state.name == "OPEN")
        out.put(("held", open_now))
        # wait for the parent's go to close
        await asyncio.get_running_loop().run_in_executor(
            None, _wait_file, os.environ.get("BENCH_CLOSE_FILE", "")
        )
        for t in tasks:
            t.cancel()
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
        out.put(("closed", len(conns)))

    asyncio.run(main())


def _wait_file(path: str) -> None:
    while path and not os.path.exists(path):
        time.sleep(0.1)


def _server_script(handler: str) -> str:
    """A bare `websockets` server process (uvloop, the same fd limit as the gateway's clients)
    serving `handler`, an `async def handler(ws)` in source; prints "ready" once listening on
    the port given as its argument."""
    return (
        r"""
import asyncio, sys, resource
from urllib.parse import parse_qs, urlsplit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(20000, hard), hard))
try:
    import uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:
    pass
from websockets.asyncio.server import serve
"""
        + handler
        + r"""
async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None,
                     ping_interval=None, backlog=4096):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"""
    )


#: (b)'s baseline: a bare `websockets` echo server.
BARE_SERVER = _server_script(r"""
async def handler(ws):
    async for m in ws:
        await ws.send(m)
""")

#: (a)'s raw baseline: a bare `websockets` server that relays each message of device A of a
#: session to device B of the same session (the query string the gateway takes names them), with
#: no actors, no log, no database: what one server hop between two devices costs on this machine.
RELAY_SERVER = _server_script(r"""
devices = {}
async def handler(ws):
    query = parse_qs(urlsplit(ws.request.path).query)
    sid, device = query["session_id"][0], query["device_id"][0]
    other = (sid, "device-b" if device == "device-a" else "device-a")
    devices[sid, device] = ws
    await ws.send('{"type":"connected"}')
    try:
        async for m in ws:
            peer = devices.get(other)
            if peer is not None:
                await peer.send(m)
    finally:
        devices.pop((sid, device), None)
""")


@contextlib.contextmanager
def bare_server(script: str) -> Iterator[tuple[int, int]]:
    """Run a `_server_script` on a free port: (port, pid) while in the block."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(port)], stdout=subprocess.PIPE, preexec_fn=raise_fd_limit
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


# ------------------------------------------------------------------ the stack
class Stack:
    def __init__(self) -> None:
        from infra.embedded import start_postgres, start_redis, start_redis_cluster

        self.dir = Path(tempfile.mkdtemp(prefix="sessiond-bench-gw-"))
        self.dir.chmod(0o755)
        if CLUSTER:
            self.redis: Any = start_redis_cluster(self.dir / "cluster", 3)
        else:
            self.redis = start_redis(self.dir / "redis")
        self.redis_pids = [n.pid for n in self.redis.nodes] if CLUSTER else [self.redis.pid]
        # durable, as `sessiond dev` runs it (BENCH_PG_FSYNC=0: without fsync, for comparison)
        self.pg = start_postgres(self.dir / "pg", fsync=os.environ.get("BENCH_PG_FSYNC") != "0")
        self.port = free_port()
        # every process is on this machine: Redis through its unix socket, as PostgreSQL
        # (BENCH_REDIS_TCP=1: through loopback TCP instead, for comparison)
        tcp = CLUSTER or os.environ.get("BENCH_REDIS_TCP")
        redis_url = self.redis.url if tcp else self.redis.local_url
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": self.pg.url,
            "SESSIOND_ENV": "test",
            "GATEWAY_RATE_PER_S": "1000",
            "GATEWAY_RATE_BURST": "1000",
            "GATEWAY_IDLE_TIMEOUT": "3600",
            "GATEWAY_REST_RATE_PER_S": "0",
            "GATEWAY_MAX_CONNECTIONS_PER_USER": "0",
            "SESSIOND_LOG_LEVEL": "warning",
        }
        self.env.pop("SESSIOND_ORIGINS", None)
        subprocess.run(
            [*SESSIOND, "migrate"], env=self.env, cwd=ROOT, check=True, capture_output=True
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self.start("worker", "worker")
        self.start("projector", "projector", "--no-migrate")
        self.start_gateway()
        from gateway.auth import TokenService
        from infra.config import load_settings

        ts = TokenService(load_settings(self.env).gateway)
        self.tokens = {f"bench-{i}": ts.issue(f"bench-{i}", (), ttl_s=3600) for i in range(50)}

    def start(self, name: str, *args: str, command: tuple[str, ...] = tuple(SESSIOND)) -> None:
        log = open(self.dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [*command, *args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_fd_limit,
        )

    def start_gateway(self, name: str = "gateway", port: int | None = None) -> None:
        # BENCH_PROFILE_GATEWAY=FILE: the gateway runs under cProfile, its stats in FILE at exit
        prof = os.environ.get("BENCH_PROFILE_GATEWAY")
        command = (
            (sys.executable, "-m", "cProfile", "-o", prof, "-m", "infra.cli")
            if prof
            else tuple(SESSIOND)
        )
        port = port or self.port
        self.start(name, "gateway", "--port", str(port), command=command)
        self.wait_ready(port)

    def wait_ready(self, port: int) -> None:
        import httpx

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gateway not ready")

    def service_pids(self) -> dict[str, list[int]]:
        """Every process of the service: sessiond's, Redis and PostgreSQL (with its backends)."""
        groups = {n: [p.pid] for n, p in self.procs.items()}
        groups["redis"] = self.redis_pids
        groups["postgres"] = tree(self.pg.pid)
        return groups

    def stop(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.redis.stop()
        self.pg.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _split(items: list, n: int) -> list[list]:
    return [items[i::n] for i in range(n)]


def sched_seconds(pids: list[int]) -> tuple[float, float]:
    """(on-CPU, waiting-for-a-CPU) seconds of every thread of `pids`, from schedstat: on a
    saturated machine the wait is where latency goes, and CPU % alone does not show it."""
    run = wait = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                r, w, _ = task.read_text().split()
            except (OSError, ValueError):
                continue
            run += int(r)
            wait += int(w)
    return run / 1e9, wait / 1e9


def _command_round_trip(port: int) -> str:
    """Mean and bucket counts of the gateway's command round-trip histogram."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = count = 0.0
    buckets: list[tuple[str, float]] = []
    for line in text.splitlines():
        if line.startswith("sessiond_gateway_command_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("sessiond_gateway_command_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("sessiond_gateway_command_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((le, float(line.split()[-1])))
    if not count:
        return ""
    p50 = next((le for le, c in buckets if c >= count * 0.5), "?")
    p99 = next((le for le, c in buckets if c >= count * 0.99), "?")
    return (
        f"mean {1000 * total / count:.1f} ms over {count:.0f} commands, p50 <= {p50} s,"
        f" p99 <= {p99} s"
    )


class LatencyClients:
    """The `latency_client` processes against one server, connected once (SESSIONS sessions,
    2 devices each) and then run step after step (a rate for a duration) on the same
    connections: the rate search does not reconnect 2,000 devices per rate."""

    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        sessions = [str(uuid.uuid4()) for _ in range(SESSIONS)]
        ctx = mp.get_context("spawn")
        self.out = ctx.Queue()
        self.steps = [ctx.Queue() for _ in range(CLIENT_PROCS)]
        self.procs = [
            ctx.Process(target=latency_client, args=(url, tokens, part, q, self.out))
            for part, q in zip(_split(sessions, CLIENT_PROCS), self.steps, strict=True)
        ]
        for p in self.procs:
            p.start()
        t0 = time.perf_counter()
        ready = 0
        while ready < SESSIONS:
            ready += self._get("ready", t0)
        print(
            f"  {ready} sessions x 2 devices connected in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        self.count = 0

    def _get(self, kind: str, t0: float) -> Any:
        while True:
            try:
                got, value = self.out.get(timeout=1)
            except queue.Empty:
                dead = [p for p in self.procs if p.exitcode not in (None, 0)]
                if dead or time.perf_counter() - t0 > 900:
                    raise RuntimeError(
                        f"a client process failed (exit codes "
                        f"{[p.exitcode for p in self.procs]}); see its traceback"
                        " above"
                    ) from None
                continue
            assert got == kind, (got, kind)
            return value

    def step(self, rate: float, duration: float) -> list[dict]:
        """Send `rate` updates/s for `duration` s (and wait 3 s for the stragglers)."""
        self.count += 1
        for q in self.steps:
            q.put((self.count, rate / CLIENT_PROCS, duration))
        t0 = time.perf_counter()
        return [self._get("done", t0) for _ in self.procs]

    def close(self) -> None:
        for q in self.steps:
            q.put(None)
        for p in self.procs:
            p.join(30)


class Step(msgspec.Struct, frozen=True):
    """One rate held for one duration: what the devices saw, what the service's processes
    (and the baseline's) spent, and the machine's pressure meanwhile."""

    rate: float
    duration: float
    sent: int
    received: int
    errors: int
    p50: float
    p90: float
    p99: float
    max: float
    cpu: dict[str, float]  # CPU seconds per process group (from /proc/<pid>/stat)
    waits: dict[str, float]  # run-queue seconds per process group (schedstat)
    pressure: Pressure
    machine: str
    codes: dict[str, int]

    @property
    def service_cpu(self) -> float:
        return sum(v for k, v in self.cpu.items() if k not in ("clients", "bench"))

    @property
    def sustained(self) -> bool:
        """p99 <= 25 ms, nothing dropped or refused, and the rate was really offered."""
        return (
            self.p99 <= GOAL_P99_MS
            and self.received == self.sent
            and not self.errors
            and self.sent >= 0.95 * self.rate * self.duration
        )


def run_step(
    clients: LatencyClients,
    groups: Callable[[], dict[str, list[int]]],
    rate: float,
    duration: float,
) -> tuple[Step, list[dict]]:
    """One step, with the CPU of every process `groups()` names, from /proc/<pid>/stat."""
    before = groups()
    cpu0 = {n: proc_cpu_seconds(pids) for n, pids in before.items()}
    wait0 = {n: sched_seconds(pids)[1] for n, pids in before.items()}
    bench0 = time.process_time()
    m0 = MachineSample.now()
    results = clients.step(rate, duration)
    m1 = MachineSample.now()
    after = groups()  # PostgreSQL backends started meanwhile count from zero
    cpu = {n: proc_cpu_seconds(pids) - cpu0.get(n, 0.0) for n, pids in after.items()}
    waits = {n: sched_seconds(pids)[1] - wait0.get(n, 0.0) for n, pids in after.items()}
    cpu["clients"] = sum(r["cpu"] for r in results)
    cpu["bench"] = time.process_time() - bench0
    codes: dict[str, int] = {}
    for r in results:
        for c, k in r["codes"].items():
            codes[c] = codes.get(c, 0) + k
    ms = _latencies_ms(results)
    step = Step(
        rate=rate,
        duration=duration,
        sent=sum(r["sent"] for r in results),
        received=len(ms),
        errors=sum(r["errors"] for r in results),
        p50=pct(ms, 50),
        p90=pct(ms, 90),
        p99=pct(ms, 99),
        max=max(ms) if ms else float("nan"),
        cpu=cpu,
        waits=waits,
        pressure=m1.pressure(m0),
        machine=m1.since(m0),
        codes=codes,
    )
    return step, results


def _latencies_ms(results: list[dict]) -> list[float]:
    return [x * 1000 for r in results for x in r["latencies"]]


def bench_raw_relay(stack: Stack) -> Step:
    """(a)'s baseline, same clients and load, through `RELAY_SERVER`."""
    with bare_server(RELAY_SERVER) as (port, pid):
        clients = LatencyClients(f"ws://127.0.0.1:{port}/", stack.tokens)
        try:
            step, _ = run_step(clients, lambda: {"relay": [pid]}, RATE, DURATION)
        finally:
            clients.close()
    print(
        f"(a0) raw baseline, a bare websockets relay process (device A -> relay -> device B),"
        f" same clients and load:\n    received {step.received} of {step.sent}; p50 "
        f"{step.p50:.1f} ms   p99 {step.p99:.1f} ms   max {step.max:.1f} ms; relay CPU "
        f"{100 * step.cpu['relay'] / (step.duration + 3):.0f}% of a core\n    {step.machine}",
        flush=True,
    )
    return step


def print_step(label: str, step: Step, results: list[dict], raw: Step | None) -> None:
    print(
        f"{label} e2e latency device A -> device B, {SESSIONS} sessions, {step.rate:.0f} "
        f"updates/s for {step.duration:.0f} s:"
    )
    print(
        f"    sent {step.sent}, received {step.received} "
        f"({step.received / max(step.sent, 1):.1%}), errors {step.errors}, achieved "
        f"{step.sent / step.duration:.0f} updates/s"
    )
    print(
        f"    p50 {step.p50:.1f} ms   p90 {step.p90:.1f} ms   p99 {step.p99:.1f} ms   max "
        f"{step.max:.1f} ms   (goal p99 <= {GOAL_P99_MS:.0f} ms)",
        flush=True,
    )
    if raw is not None:
        print(
            f"    against the raw relay (a0) of this run: p50 {step.p50 / raw.p50:.1f}x, "
            f"p99 {step.p99 / raw.p99:.1f}x"
        )
    if step.codes:
        print(f"    error codes: {step.codes}")
    if os.environ.get("BENCH_TIMELINE"):
        _timeline(results)
    stage = [x for r in results for x in r["stage"]]
    if stage:
        to_cmd = [a * 1000 for a, _ in stage]
        to_b = [b * 1000 for _, b in stage]
        print(
            f"    split: client send -> command stamped at the gateway p50 {pct(to_cmd, 50):.1f}"
            f" / p99 {pct(to_cmd, 99):.1f} ms; command -> device B p50 {pct(to_b, 50):.1f} /"
            f" p99 {pct(to_b, 99):.1f} ms"
        )
    span = step.duration + 3.0
    print(
        "    CPU (% of one core, /proc/<pid>/stat): "
        + ", ".join(f"{n} {100 * v / span:.0f}%" for n, v in step.cpu.items())
        + f"; total {100 * sum(step.cpu.values()) / span:.0f}% of {100 * (os.cpu_count() or 1)}%"
    )
    if step.received:
        print(
            "    CPU per delivered update: "
            + ", ".join(f"{n} {1e6 * v / step.received:.0f} us" for n, v in step.cpu.items())
        )
    print(
        "    waiting for a CPU (% of the run, run-queue time from schedstat): "
        + ", ".join(f"{n} {100 * v / span:.0f}%" for n, v in step.waits.items())
    )
    print(f"    {step.machine}", flush=True)


def bench_probes(stack: Stack, clients: LatencyClients) -> None:
    """(p) seed 004's three latency claims, timed by `probe_client` while the clients send
    RATE updates/s: one RESULT line each."""
    sessions = [str(uuid.uuid4()) for _ in range(PROBE_SESSIONS)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop_file = tempfile.mktemp(prefix="bench-probes-")
    proc = ctx.Process(
        target=probe_client,
        args=(f"127.0.0.1:{stack.port}", stack.tokens, sessions, PROBE_RATE, stop_file, out),
    )
    proc.start()
    out.get(timeout=300)
    m0 = MachineSample.now()
    step, _ = run_step(clients, stack.service_pids, RATE, DURATION)
    Path(stop_file).touch()
    found = out.get(timeout=120)[1]
    pressure = MachineSample.now().pressure(m0)
    proc.join(30)
    os.unlink(stop_file)
    print(
        f"(p) seed 004's latency claims, {PROBE_RATE:g}/s of each over {PROBE_SESSIONS} "
        f"sessions, under {RATE:.0f} updates/s (their p99 {step.p99:.1f} ms meanwhile):"
    )
    for kind, name, goal in (
        ("snapshot", "snapshot_request_p99_ms", 50),
        ("handoff", "handoff_p99_ms", 100),
        ("conflict", "conflict_resolution_p99_ms", 50),
    ):
        ms = [x * 1000 for x in found["times"][kind]]
        failed = found["failures"][kind]
        print(
            f"    {kind}: {len(ms)} timed, {len(failed)} failed; p50 {pct(ms, 50):.1f} ms   "
            f"p99 {pct(ms, 99):.1f} ms   max {max(ms) if ms else float('nan'):.1f} ms   "
            f"(goal < {goal} ms)" + (f"; first failure: {failed[0]}" if failed else "")
        )
        result(name, pct(ms, 99), pressure, f"goal<{goal} n={len(ms)} failed={len(failed)}")


def search_rate(
    clients: LatencyClients, groups: Callable[[], dict[str, list[int]]], first: Step
) -> int:
    """The highest rate (a multiple of 50, of 10 below 500) at which `Step.sustained` holds: up
    by 1.5x from the first step while it holds, down by half while it does not, then bisect, at
    most SEARCH_STEPS steps of STEP_S seconds."""
    passed: float | None = first.rate if first.sustained else None
    failed: float | None = None if first.sustained else first.rate
    for _ in range(SEARCH_STEPS):
        if failed is None:
            rate = passed * 1.5  # type: ignore[operator]
        elif passed is None:
            rate = failed / 2
        elif failed / passed <= 1.15:
            break
        else:
            rate = (passed + failed) / 2
        quantum = 50 if rate >= 500 else 10
        rate = max(10.0, round(rate / quantum) * quantum)
        if rate in (passed, failed) or rate > MAX_RATE:
            break
        step, _ = run_step(clients, groups, rate, STEP_S)
        print(
            f"    search {rate:.0f}/s: p50 {step.p50:.1f} p99 {step.p99:.1f} ms, received "
            f"{step.received}/{step.sent}, errors {step.errors}, service CPU "
            f"{100 * step.service_cpu / (STEP_S + 3):.0f}%, {step.pressure} -> "
            f"{'holds' if step.sustained else 'fails'}",
            flush=True,
        )
        if step.sustained:
            passed = rate
        else:
            failed = rate
    return int(passed or 0)


def bench_latency(stack: Stack, raw: Step | None) -> None:
    clients = LatencyClients(f"ws://127.0.0.1:{stack.port}/ws", stack.tokens)
    try:
        step, results = run_step(clients, stack.service_pids, RATE, DURATION)
        print_step("(a)", step, results, raw)
        rt = _command_round_trip(stack.port)
        if rt:
            print(f"    gateway command round trip (XADD -> worker -> outcome): {rt}")
        if raw is not None and raw.received and step.received:
            per_update = step.service_cpu / step.received
            raw_per_update = raw.cpu["relay"] / raw.received
            print(
                f"    CPU per delivered update: service {1e6 * per_update:.0f} us (worker, "
                f"projector, gateway, Redis, PostgreSQL), bare relay "
                f"{1e6 * raw_per_update:.0f} us"
            )
            # beside it: the same with the client processes counted on both sides
            both = (step.service_cpu + step.cpu["clients"]) / step.received
            raw_both = (raw.cpu["relay"] + raw.cpu["clients"]) / raw.received
            result(
                "cpu_per_update_ratio",
                per_update / raw_per_update,
                step.pressure,
                f"service={1e6 * per_update:.0f}us relay={1e6 * raw_per_update:.0f}us "
                f"with_clients={both / raw_both:.2f} relay_{raw.pressure}",
            )
        result("a_p99_ms", step.p99, step.pressure, f"p50={step.p50:.1f} rate={RATE:.0f}")
        if not os.environ.get("BENCH_SKIP_PROBES"):
            bench_probes(stack, clients)
        if SEARCH_STEPS:
            m0 = MachineSample.now()
            first = step
            if STEP_S != DURATION:
                first, _ = run_step(clients, stack.service_pids, RATE, STEP_S)
            print(
                f"(s) sustainable rate (p99 <= {GOAL_P99_MS:.0f} ms, nothing dropped), "
                f"{STEP_S:.0f} s per rate, from {RATE:.0f}/s (p99 {first.p99:.1f} ms, "
                f"{'holds' if first.sustained else 'fails'}):",
                flush=True,
            )
            best = search_rate(clients, stack.service_pids, first)
            result(
                "sustainable_updates_per_s",
                best,
                MachineSample.now().pressure(m0),
                f"step={STEP_S:.0f}s",
            )
    finally:
        clients.close()


def _timeline(results: list[dict]) -> None:
    """p99 and max per second of the run: a periodic stall shows up as a pattern."""
    per: dict[int, list[float]] = {}
    pairs = [(t, x) for r in results for t, x in zip(r["sent_at"], r["latencies"], strict=True)]
    start = min(t for t, _ in pairs)
    for t, x in pairs:
        per.setdefault(int(t - start), []).append(x * 1000)
    for sec, xs in sorted(per.items()):
        print(
            f"    t={sec:3d}s p50 {pct(xs, 50):6.1f} p99 {pct(xs, 99):6.1f} max {max(xs):6.1f} ms"
        )


def hold_connections(urls: list[str], tokens: dict, bare: bool, server_pids: list[int]) -> dict:
    """CONNS connections held by CONN_PROCS client processes, client i on `urls[i % n]`; the
    servers' RSS before and while holding them."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    close_file = tempfile.mktemp(prefix="bench-close-")
    os.environ["BENCH_CLOSE_FILE"] = close_file
    per_session = 10
    sessions = [str(uuid.uuid4()) for _ in range(CONNS // per_session)]
    before = sum(rss_kib(pid) for pid in server_pids)
    procs = [
        ctx.Process(
            target=conn_client,
            args=(
                urls[i % len(urls)],
                tokens,
                part,
                per_session,
                HEARTBEAT_S * 2,
                HEARTBEAT_S,
                out,
                bare,
            ),
        )
        for i, part in enumerate(_split(sessions, CONN_PROCS))
    ]
    for p in procs:
        p.start()
    got: dict[str, list[Any]] = {"open": [], "held": []}
    while len(got["held"]) < len(procs):  # a client may hold before another has opened
        kind, v = out.get(timeout=900)
        got[kind].append(v)
    opened = sum(v["open"] for v in got["open"])
    failed = sum(v["failed"] for v in got["open"])
    secs = max(v["seconds"] for v in got["open"])
    held = sum(got["held"])
    after = sum(rss_kib(pid) for pid in server_pids)
    Path(close_file).touch()
    for _ in procs:
        out.get(timeout=300)
    for p in procs:
        p.join()
    os.unlink(close_file)
    return {
        "before": before,
        "after": after,
        "opened": opened,
        "failed": failed,
        "held": held,
        "open_seconds": secs,
    }


def bench_connections(stack: Stack) -> None:
    """(b) CONNS connections over GATEWAYS fresh gateway processes (one process opens at most
    about 20,000 files here), beside as many bare websockets processes holding as many."""
    stack.stop("gateway")
    names = [f"gateway-{i}" for i in range(GATEWAYS)]
    ports = [free_port() for _ in names]
    for name, port in zip(names, ports, strict=True):
        stack.start_gateway(name, port)
    time.sleep(1.0)
    m0 = MachineSample.now()
    gw = hold_connections(
        [f"ws://127.0.0.1:{p}/ws" for p in ports],
        stack.tokens,
        False,
        [stack.procs[n].pid for n in names],
    )
    with contextlib.ExitStack() as servers:
        bare = [servers.enter_context(bare_server(BARE_SERVER)) for _ in names]
        time.sleep(1.0)
        b = hold_connections(
            [f"ws://127.0.0.1:{port}/" for port, _ in bare],
            stack.tokens,
            True,
            [pid for _, pid in bare],
        )
    pressure = MachineSample.now().pressure(m0)
    gw_per = (gw["after"] - gw["before"]) / max(gw["held"], 1)
    b_per = (b["after"] - b["before"]) / max(b["held"], 1)
    print(
        f"(b) {CONNS} authenticated WS connections over {GATEWAYS} gateway processes, "
        f"heartbeat every {HEARTBEAT_S:.0f}s:"
    )
    print(
        f"    gateways: opened {gw['opened']} (failed {gw['failed']}) in "
        f"{gw['open_seconds']:.1f}s, held {gw['held']}; RSS {gw['before'] / 1024:.1f} -> "
        f"{gw['after'] / 1024:.1f} MiB = {gw_per:.1f} KiB/connection"
    )
    print(
        f"    bare websockets echo ({GATEWAYS} processes): held {b['held']}; RSS "
        f"{b['before'] / 1024:.1f} -> {b['after'] / 1024:.1f} MiB = {b_per:.1f} "
        "KiB/connection"
    )
    ratio = gw_per / b_per if b_per else float("nan")
    print(f"    ratio gateway/bare = {ratio:.2f}x (goal <= 1.3x)", flush=True)
    result(
        "ws_memory_ratio",
        ratio,
        pressure,
        f"gateway={gw_per:.1f}KiB bare={b_per:.1f}KiB held={gw['held']}/{b['held']}",
    )


def main() -> None:
    raise_fd_limit()
    redis = "a 3-master Redis Cluster" if CLUSTER else "Redis"
    print(f"starting embedded {redis} + PostgreSQL, worker, projector, gateway ...", flush=True)
    stack = Stack()
    try:
        if not os.environ.get("BENCH_SKIP_A"):
            raw = None if os.environ.get("BENCH_SKIP_RAW") else bench_raw_relay(stack)
            bench_latency(stack, raw)
        if not os.environ.get("BENCH_SKIP_B"):
            bench_connections(stack)
    finally:
        stack.close()


if __name__ == "__main__":
    main()
