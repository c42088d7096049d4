"""Gateway benchmark (run: `.venv/bin/python tests/bench/bench_gateway.py`).

Prints, in one run, on this machine with every process on it (embedded Redis and PostgreSQL,
one worker, one projector, one gateway, client processes):

(a) end-to-end latency p50/p99 of a state update sent by one device (WS STATE_UPDATE) until its
    arrival at the other device of the same session, at RATE updates/s over SESSIONS sessions
    (2 devices each), for DURATION seconds. Goal: p99 <= 25 ms.
(b) CONNS concurrent authenticated WebSocket connections held by one (fresh) gateway process, each
    sending a heartbeat every HEARTBEAT_S seconds: the gateway's RSS per connection, beside a
    bare `websockets` echo server holding the same CONNS connections in the same run.
    Goal: <= 2x the bare server's memory per connection.

Environment knobs: BENCH_SESSIONS (1000), BENCH_RATE (1000), BENCH_DURATION (20),
BENCH_CONNS (10000), BENCH_CLIENT_PROCS (1: (a)'s one lean client process carries the 2,000
connections in ~14% of a core; a second one cost 4-5 points of CPU more), BENCH_CONN_PROCS
(2, (b)'s client processes), BENCH_SKIP_A /
BENCH_SKIP_B, BENCH_WATCH_FEED=1 (also time command -> change published, with one more
subscriber of the change feed), BENCH_TIMELINE=1 (p50/p99/max per second),
BENCH_REDIS_TCP=1 (Redis through loopback TCP instead of its unix socket), BENCH_PG_FSYNC=0
(PostgreSQL without fsync, as the test fixtures run it; by default it is durable, as in
`sessiond dev`), BENCH_CLUSTER=1 (Redis is an embedded 3-master Valkey Cluster on this machine,
through loopback TCP; the processes' REDIS_URL names one node).
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

SESSIONS = int(os.environ.get("BENCH_SESSIONS", "1000"))
RATE = float(os.environ.get("BENCH_RATE", "1000"))
DURATION = float(os.environ.get("BENCH_DURATION", "20"))
CONNS = int(os.environ.get("BENCH_CONNS", "10000"))
CLIENT_PROCS = int(os.environ.get("BENCH_CLIENT_PROCS", "1"))
CONN_PROCS = int(os.environ.get("BENCH_CONN_PROCS", "2"))  # (b)'s clients: 5,000 connections each
# the feed watcher is one more subscriber of every change (Redis writes each one twice) and one
# more process thread on the machine: it splits the latency into stages but adds to it
WATCH_FEED = os.environ.get("BENCH_WATCH_FEED", "") not in ("", "0")
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


class _Payload(msgspec.Struct, frozen=True):
    """The two fields of a pushed state update the latency client reads."""

    changes: _Changes = _Changes()
    ts: int = 0


class _Update(msgspec.Struct, frozen=True):
    payload: _Payload


def latency_client(url: str, tokens: dict[str, str], sessions: list[str], rate: float,
                   duration: float, out: mp.Queue) -> None:
    """Connect devices A and B of each session; A sends `rate`/s updates round-robin; B records
    the latency of each update from send to arrival. The connections are `lean_ws` ones: these
    processes stand in for remote devices, and every bit of CPU they spend is taken from the
    service they measure."""
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

        async def connect(sid: str, device: str, user: str) -> LeanWebSocket:
            for attempt in range(20):
                try:
                    ws = await ws_connect(
                        f"{url}?token={tokens[user]}&device_id={device}&session_id={sid}")
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
                if sent is not None:
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
        interval = 1.0 / rate
        cpu_start = time.process_time()
        start = time.perf_counter()
        n = 0
        while (now := time.perf_counter()) - start < duration:
            due = start + n * interval
            if due > now:
                await asyncio.sleep(due - now)
            a, _ = pairs[n % len(pairs)]
            a.send(encode({"type": "state_update", "payload": {
                "changes": {"t": time.time(), "n": n}}}).decode())
            n += 1
        await asyncio.sleep(3.0)
        client_cpu = time.process_time() - cpu_start
        await asyncio.gather(*(ws.close() for p in pairs for ws in p), return_exceptions=True)
        out.put(("done", {"sent": n, "received": len(lat), "latencies": lat,
                          "sent_at": sent_at, "errors": errors, "codes": codes,
                          "stage": stage, "cpu": client_cpu}))

    asyncio.run(main())


def conn_client(url: str, tokens: dict[str, str], sessions: list[str], per_session: int,
                hold_s: float, heartbeat_s: float, out: mp.Queue, bare: bool) -> None:
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
            q = "" if bare else \
                f"?token={tokens[user]}&device_id=dev-{d}&session_id={sid}"
            for attempt in range(30):
                try:
                    async with sem:
                        ws = await websockets.connect(url + q, compression=None,
                                                      open_timeout=120, ping_interval=None)
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
        results = await asyncio.gather(*(one(i, s, d) for i, s in enumerate(sessions)
                                         for d in range(per_session)))
        conns = [c for c in results if c is not None]
        tasks = [asyncio.ensure_future(beat(ws, (k % 1000) / 1000 * heartbeat_s))
                 for k, ws in enumerate(conns)]
        tasks += [asyncio.ensure_future(sink(ws)) for ws in conns]
        out.put(("open", {"open": len(conns), "failed": failures,
                          "seconds": time.perf_counter() - t0}))
        await asyncio.sleep(hold_s)
        open_now = sum(1 for ws in conns if ws.state.name == "OPEN")
        out.put(("held", open_now))
        # wait for the parent's go to close
        await asyncio.get_running_loop().run_in_executor(None, _wait_file, os.environ.get(
            "BENCH_CLOSE_FILE", ""))
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
    return r"""
import asyncio, sys, resource
from urllib.parse import parse_qs, urlsplit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(20000, hard), hard))
try:
    import uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:
    pass
from websockets.asyncio.server import serve
""" + handler + r"""
async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None,
                     ping_interval=None, backlog=4096):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


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
    proc = subprocess.Popen([sys.executable, "-c", script, str(port)],
                            stdout=subprocess.PIPE, preexec_fn=raise_fd_limit)
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
        self.env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": self.pg.url,
                    "SESSIOND_ENV": "test", "GATEWAY_RATE_PER_S": "1000",
                    "GATEWAY_RATE_BURST": "1000", "GATEWAY_IDLE_TIMEOUT": "120",
                    "GATEWAY_REST_RATE_PER_S": "0", "GATEWAY_MAX_CONNECTIONS_PER_USER": "0",
                    "SESSIOND_LOG_LEVEL": "warning"}
        self.env.pop("SESSIOND_ORIGINS", None)
        subprocess.run([*SESSIOND, "migrate"], env=self.env, cwd=ROOT, check=True,
                       capture_output=True)
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
            [*command, *args], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=raise_fd_limit)

    def start_gateway(self) -> None:
        # BENCH_PROFILE_GATEWAY=FILE: the gateway runs under cProfile, its stats in FILE at exit
        prof = os.environ.get("BENCH_PROFILE_GATEWAY")
        command = (sys.executable, "-m", "cProfile", "-o", prof, "-m", "infra.cli") if prof \
            else tuple(SESSIOND)
        self.start("gateway", "gateway", "--port", str(self.port), command=command)
        self.wait_ready()

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gateway not ready")

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


def tree(pid: int) -> list[int]:
    """`pid` and its direct children (PostgreSQL's postmaster and its backends)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [pid, *kids]


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


class MachineSample(msgspec.Struct, frozen=True):
    """The whole machine's CPU counters at one moment: what the host charged for a run, beside
    what our processes' own accounting says (the two differ by kernel work on their behalf,
    and on these shared virtual CPUs the same work costs a different amount from one minute
    to the next)."""

    at: float
    ticks: tuple[int, ...]  # /proc/stat "cpu": user nice system idle iowait irq softirq steal
    pressure_us: int | None  # /proc/pressure/cpu "some" total: time some task waited for a CPU

    @classmethod
    def now(cls) -> MachineSample:
        ticks = tuple(int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
        try:
            some = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
            pressure: int | None = int(some.rsplit("total=", 1)[1])
        except (OSError, IndexError, ValueError):
            pressure = None
        return cls(time.monotonic(), ticks, pressure)

    def since(self, start: MachineSample) -> str:
        d = [b - a for a, b in zip(start.ticks, self.ticks, strict=True)]
        total = sum(d) or 1
        busy = total - d[3] - d[4]
        cpus = os.cpu_count() or 1
        line = (f"the whole machine (/proc/stat) {100 * cpus * busy / total:.0f}% busy of "
                f"{100 * cpus}%, steal {100 * d[7] / total:.0f}%")
        if self.pressure_us is not None and start.pressure_us is not None:
            waited = (self.pressure_us - start.pressure_us) / 1e6 / (self.at - start.at)
            line += f"; some task waiting for a CPU {100 * waited:.0f}% of the time (PSI)"
        return line


class _FeedChange(msgspec.Struct, frozen=True):
    type: str = ""
    ts: int = 0


_decode_feed = msgspec.json.Decoder(list[_FeedChange]).decode


def _watch_feed(redis_url: str, stop: Any, lags: list[float]) -> None:
    """Sample the change feed as published: event time -> publication (worker + projector).
    A raw socket and hiredis: redis-py's pub/sub cost this thread ~6% of a core."""
    from urllib.parse import urlsplit

    import hiredis

    url = urlsplit(redis_url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379)) as sock:
        sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$8\r\nsd:chg:*\r\n")
        sock.settimeout(0.2)
        reader = hiredis.Reader()
        while not stop.is_set():
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                return
            now = time.time()
            reader.feed(data)
            while (msg := reader.gets()) is not False:
                if msg[0] == b"pmessage":
                    lags.extend(now - c.ts / 1000 for c in _decode_feed(msg[3])
                                if c.type == "StateChanged")


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
    return (f"mean {1000 * total / count:.1f} ms over {count:.0f} commands, p50 <= {p50} s,"
            f" p99 <= {p99} s")


def run_latency_clients(url: str, tokens: dict[str, str],
                        started: Callable[[], None] = lambda: None) -> tuple[list[dict], str]:
    """Run `latency_client` processes against `url` (SESSIONS sessions, RATE updates/s for
    DURATION s); `started()` is called once every device is connected. Their results, and the
    whole machine's counters from then to the end (`MachineSample.since`)."""
    sessions = [str(uuid.uuid4()) for _ in range(SESSIONS)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=latency_client, args=(url, tokens, part,
                                                      RATE / CLIENT_PROCS, DURATION, out))
             for part in _split(sessions, CLIENT_PROCS)]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    ready = 0
    results = []
    machine0 = MachineSample.now()
    while len(results) < len(procs):
        try:
            kind, value = out.get(timeout=1)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.perf_counter() - t0 > 600:
                raise RuntimeError(f"a client process failed (exit codes "
                                   f"{[p.exitcode for p in procs]}); see its traceback above"
                                   ) from None
            continue
        if kind == "ready":
            ready += value
            if ready == SESSIONS:
                print(f"  {ready} sessions x 2 devices connected in "
                      f"{time.perf_counter() - t0:.1f}s; sending {RATE:.0f} updates/s for "
                      f"{DURATION:.0f}s", flush=True)
                machine0 = MachineSample.now()
                started()
        else:
            results.append(value)
    machine = MachineSample.now().since(machine0)
    for p in procs:
        p.join()
    return results, machine


def _latencies_ms(results: list[dict]) -> list[float]:
    return [x * 1000 for r in results for x in r["latencies"]]


def bench_raw_relay(stack: Stack) -> list[float]:
    """(a)'s baseline, same clients and load, through `RELAY_SERVER`; its latencies (ms)."""
    with bare_server(RELAY_SERVER) as (port, _pid):
        results, machine = run_latency_clients(f"ws://127.0.0.1:{port}/", stack.tokens)
    ms = _latencies_ms(results)
    sent = sum(r["sent"] for r in results)
    print(f"(a0) raw baseline, a bare websockets relay process (device A -> relay -> device B),"
          f" same clients and load:\n    received {len(ms)} of {sent}; p50 {pct(ms, 50):.1f} ms"
          f"   p99 {pct(ms, 99):.1f} ms   max {max(ms) if ms else float('nan'):.1f} ms\n"
          f"    {machine}", flush=True)
    return ms


def bench_latency(stack: Stack, raw_ms: list[float] | None = None) -> None:
    import threading

    feed_lags: list[float] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_feed, args=(stack.redis.url, stop, feed_lags),
                               daemon=True)
    if WATCH_FEED:
        watcher.start()
    cpu0: dict[str, tuple[float, float]] = {}
    groups: dict[str, list[int]] = {}
    bench_cpu0 = 0.0

    def started() -> None:
        nonlocal groups, cpu0, bench_cpu0
        groups = {n: [p.pid] for n, p in stack.procs.items()}
        groups["redis"] = stack.redis_pids
        groups["postgres"] = tree(stack.pg.pid)
        cpu0 = {n: sched_seconds(pids) for n, pids in groups.items()}
        bench_cpu0 = time.process_time()

    results, machine = run_latency_clients(f"ws://127.0.0.1:{stack.port}/ws", stack.tokens,
                                           started)
    stop.set()
    if WATCH_FEED:
        watcher.join(5)
    groups["postgres"] = tree(stack.pg.pid)  # backends started meanwhile count from zero
    cpu: dict[str, float] = {}
    waits: dict[str, float] = {}
    for n, pids in groups.items():
        run, wait = sched_seconds(pids)
        cpu[n] = run - cpu0.get(n, (0.0, 0.0))[0]
        waits[n] = wait - cpu0.get(n, (0.0, 0.0))[1]
    cpu["clients"] = sum(r["cpu"] for r in results)
    cpu["bench"] = time.process_time() - bench_cpu0
    codes: dict[str, int] = {}
    for r in results:
        for c, k in r["codes"].items():
            codes[c] = codes.get(c, 0) + k
    ms = _latencies_ms(results)
    sent = sum(r["sent"] for r in results)
    errors = sum(r["errors"] for r in results)
    print(f"(a) e2e latency device A -> device B, {SESSIONS} sessions, {RATE:.0f} updates/s:")
    print(f"    sent {sent}, received {len(ms)} ({len(ms) / max(sent, 1):.1%}), errors "
          f"{errors}, achieved {sent / DURATION:.0f} updates/s")
    print(f"    p50 {pct(ms, 50):.1f} ms   p90 {pct(ms, 90):.1f} ms   p99 {pct(ms, 99):.1f} ms"
          f"   max {max(ms) if ms else float('nan'):.1f} ms   (goal p99 <= 25 ms)", flush=True)
    if raw_ms:
        print(f"    against the raw relay (a0) of this run: p50 "
              f"{pct(ms, 50) / pct(raw_ms, 50):.1f}x, p99 {pct(ms, 99) / pct(raw_ms, 99):.1f}x")
    if codes:
        print(f"    error codes: {codes}")
    if os.environ.get("BENCH_TIMELINE"):
        _timeline(results)
    stage = [x for r in results for x in r["stage"]]
    if stage:
        to_cmd = [a * 1000 for a, _ in stage]
        to_b = [b * 1000 for _, b in stage]
        print(f"    split: client send -> command stamped at the gateway p50 {pct(to_cmd, 50):.1f}"
              f" / p99 {pct(to_cmd, 99):.1f} ms; command -> device B p50 {pct(to_b, 50):.1f} /"
              f" p99 {pct(to_b, 99):.1f} ms")
    rt = _command_round_trip(stack.port)
    if rt:
        print(f"    gateway command round trip (XADD -> worker -> outcome): {rt}")
    if feed_lags:
        fl = [x * 1000 for x in feed_lags]
        print(f"    of which command -> change published (worker + projector): p50 "
              f"{pct(fl, 50):.1f} / p99 {pct(fl, 99):.1f} ms")
    span = DURATION + 4.0
    print("    CPU (% of one core) during the run: " + ", ".join(
        f"{n} {100 * v / span:.0f}%" for n, v in cpu.items())
        + f"; total {100 * sum(cpu.values()) / span:.0f}% of {100 * (os.cpu_count() or 1)}%")
    print("    waiting for a CPU (% of the run, run-queue time from schedstat): " + ", ".join(
        f"{n} {100 * v / span:.0f}%" for n, v in waits.items()))
    print(f"    {machine}", flush=True)


def _timeline(results: list[dict]) -> None:
    """p99 and max per second of the run: a periodic stall shows up as a pattern."""
    per: dict[int, list[float]] = {}
    pairs = [(t, x) for r in results for t, x in zip(r["sent_at"], r["latencies"], strict=True)]
    start = min(t for t, _ in pairs)
    for t, x in pairs:
        per.setdefault(int(t - start), []).append(x * 1000)
    for sec, xs in sorted(per.items()):
        print(f"    t={sec:3d}s p50 {pct(xs, 50):6.1f} p99 {pct(xs, 99):6.1f}"
              f" max {max(xs):6.1f} ms")


def hold_connections(url: str, tokens: dict, bare: bool, pid_of_server: int) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    close_file = tempfile.mktemp(prefix="bench-close-")
    os.environ["BENCH_CLOSE_FILE"] = close_file
    per_session = 10
    sessions = [str(uuid.uuid4()) for _ in range(CONNS // per_session)]
    before = rss_kib(pid_of_server)
    procs = [ctx.Process(target=conn_client, args=(url, tokens, part, per_session,
                                                   HEARTBEAT_S * 2, HEARTBEAT_S, out, bare))
             for part in _split(sessions, CONN_PROCS)]
    for p in procs:
        p.start()
    opened = failed = 0
    secs = 0.0
    for _ in procs:
        _kind, v = out.get(timeout=900)
        opened += v["open"]
        failed += v["failed"]
        secs = max(secs, v["seconds"])
    held = sum(out.get(timeout=600)[1] for _ in procs)
    after = rss_kib(pid_of_server)
    Path(close_file).touch()
    for _ in procs:
        out.get(timeout=300)
    for p in procs:
        p.join()
    os.unlink(close_file)
    return {"before": before, "after": after, "opened": opened, "failed": failed,
            "held": held, "open_seconds": secs}


def bench_connections(stack: Stack) -> None:
    # a fresh gateway process, so its RSS is not inflated by part (a)
    stack.stop("gateway")
    stack.start_gateway()
    gw_pid = stack.procs["gateway"].pid
    time.sleep(1.0)
    gw = hold_connections(f"ws://127.0.0.1:{stack.port}/ws", stack.tokens, False, gw_pid)
    with bare_server(BARE_SERVER) as (port, pid):
        time.sleep(1.0)
        b = hold_connections(f"ws://127.0.0.1:{port}/", stack.tokens, True, pid)
    gw_per = (gw["after"] - gw["before"]) / max(gw["held"], 1)
    b_per = (b["after"] - b["before"]) / max(b["held"], 1)
    print(f"(b) {CONNS} authenticated WS connections, heartbeat every {HEARTBEAT_S:.0f}s, "
          "one gateway process:")
    print(f"    gateway: opened {gw['opened']} (failed {gw['failed']}) in "
          f"{gw['open_seconds']:.1f}s, held {gw['held']}; RSS {gw['before'] / 1024:.1f} -> "
          f"{gw['after'] / 1024:.1f} MiB = {gw_per:.1f} KiB/connection")
    print(f"    bare websockets echo: held {b['held']}; RSS {b['before'] / 1024:.1f} -> "
          f"{b['after'] / 1024:.1f} MiB = {b_per:.1f} KiB/connection")
    print(f"    ratio gateway/bare = {gw_per / b_per if b_per else float('nan'):.2f}x "
          "(goal <= 2x)", flush=True)


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
