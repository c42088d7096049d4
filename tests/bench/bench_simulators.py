"""Benchmark: N simulators at R ticks/s on ONE `sessiond simulators` process, D devices per session.

Everything runs as real processes on this machine (embedded Redis and PostgreSQL, `sessiond
worker|projector|reactor|simulators|gateway`); this process is the WebSocket clients. Each
session is created over REST, its devices connect over WS, device 1 starts the simulator with a
WS `start_simulator`; once every device receives ticks, the run measures for --seconds:

- ticks delivered per second (exchange_data frames received by all clients),
- tick-to-client latency p50 / p99 / max (client receive time - the tick's `ts`, taken by the
  engine when it made the tick; same clock, same machine), goal p99 <= 50 ms,
- CPU of the simulators (engine) process and of the gateway process (utime + stime over the
  window, as % of one core), plus Redis and this client process for context.

Usage: .venv/bin/python tests/bench/bench_simulators.py [--sims 200] [--hz 10] [--devices 2]
       [--seconds 20] [--symbols 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.embedded import start_postgres, start_redis  # noqa: E402
from tests.integration.simstack import ProcessStack  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def children_cpu(pid: int) -> float:
    """CPU of `pid` plus its direct children (uvicorn may fork nothing, but be safe)."""
    total = cpu_seconds(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            total += cpu_seconds(int(child))
        except (FileNotFoundError, ValueError):
            pass
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Recorder:
    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[float] = []
        self.ticks = 0
        self.seen: set[int] = set()  # client indexes that got at least one tick
        self.statuses: dict[int, list[str]] = {}


async def client(
    idx: int, url: str, rec: Recorder, start: dict | None, ready: asyncio.Event
) -> None:
    import websockets

    json_loads = msgspec.json.decode
    async with websockets.connect(url, compression=None, max_size=2**22, ping_interval=None) as ws:
        ready.set()
        if start is not None:
            await ws.send(msgspec.json.encode({"type": "start_simulator", "payload": start}))
        async for raw in ws:
            now = time.time() * 1000
            if '"exchange_data"' in raw[:40]:
                # the tick's own `ts` without decoding the whole frame (keeps the client cheap)
                at = raw.find('"ts":', raw.find('"payload"'))
                end = raw.find(",", at)
                rec.seen.add(idx)
                if rec.measuring:
                    rec.ticks += 1
                    rec.latencies.append(now - int(raw[at + 5 : end]))
            else:
                msg = json_loads(raw)
                # the session feed's statuses (versioned), not the gateway's replies to commands
                if (
                    msg.get("type") == "simulator_status"
                    and isinstance(msg.get("payload"), dict)
                    and "version" in msg
                ):
                    rec.statuses.setdefault(idx, []).append(msg["payload"].get("status", ""))
                elif msg.get("type") == "error":
                    print(f"client {idx}: error {msg.get('payload')}", file=sys.stderr)


async def sample_redis(redis_url: str, sim_ids: list[str], rec: Recorder, out: dict) -> None:
    """Baseline for the decomposition: a direct XREAD of a few tick streams (no gateway):
    engine -> Redis (entry id ms - ts) and engine -> a Redis reader (now - ts)."""
    from infra.store.layout import market_data_stream
    from tests.rediskit import connect

    r = connect(redis_url)
    streams = {market_data_stream(s): "$" for s in sim_ids}
    try:
        while True:
            reply = await r.xread(streams, block=1000, count=100)
            now = time.time() * 1000
            for stream, entries in reply or []:
                for entry_id, fields in entries:
                    streams[stream.decode()] = entry_id.decode()
                    if rec.measuring:
                        ts = msgspec.json.decode(fields[b"d"])["ts"]
                        out.setdefault("to_redis", []).append(int(entry_id.split(b"-")[0]) - ts)
                        out.setdefault("to_reader", []).append(now - ts)
    finally:
        await r.aclose()


async def client_worker() -> None:
    """`--client-worker`: the clients of a share of the sessions, in their own process.

    stdin: one JSON line {"clients": [[url, start_or_null], ...]}, then the lines `measure`
    and `stop`; stdout: `ticking` once every client got a tick, then the results as JSON."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = msgspec.json.decode(await reader.readline())
    rec = Recorder()
    tasks = []
    for idx, (url, start) in enumerate(spec["clients"]):
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(client(idx, url, rec, start, ready)))
        await asyncio.wait_for(ready.wait(), 30)
    while len(rec.seen) < len(tasks):
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise t.exception()
        await asyncio.sleep(0.2)
    print("ticking", flush=True)
    assert (await reader.readline()).strip() == b"measure"
    rec.measuring = True
    cpu0, w0 = cpu_seconds(os.getpid()), time.monotonic()
    await reader.readline()
    rec.measuring = False
    window = time.monotonic() - w0
    cpu = (cpu_seconds(os.getpid()) - cpu0) / window
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(
        msgspec.json.encode(
            {
                "ticks": rec.ticks,
                "window": window,
                "latencies": rec.latencies,
                "cpu": cpu,
                "statuses": list(rec.statuses.values()),
            }
        ).decode(),
        flush=True,
    )


async def relay_buckets(base_url: str) -> dict[float, float]:
    """The gateway's tick relay lag histogram (cumulative bucket counts by upper bound)."""
    import httpx

    async with httpx.AsyncClient() as http:
        text = (await http.get(base_url + "/metrics", timeout=10)).text
    out = {}
    for line in text.splitlines():
        if line.startswith("sessiond_market_tick_relay_lag_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> str:
    delta = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    total = delta.get(float("inf"), 0)
    if not total:
        return "n/a"
    for le in sorted(delta):
        if delta[le] >= q * total:
            return f"<= {le * 1000:g} ms"
    return "n/a"


async def run(args: argparse.Namespace, stack: ProcessStack, redis_url: str) -> dict:
    import httpx

    from gateway.auth import TokenService
    from infra.config import load_settings
    from tests.rediskit import connect

    token = TokenService(load_settings(stack.env).gateway).issue("bench", (), "access", ttl_s=3600)
    symbols = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "NFLX"][: args.symbols]
    sessions = []
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        for i in range(args.sims):
            r = await http.post("/api/sessions", json={"device_id": f"bench-{i}-0"})
            r.raise_for_status()
            sessions.append(r.json()["session_id"])
    print(f"{len(sessions)} sessions created", file=sys.stderr)
    shares: list[list] = [[] for _ in range(args.client_procs)]
    for s, sid in enumerate(sessions):
        for d in range(args.devices):
            url = f"{stack.ws_url}?session_id={sid}&device_id=bench-{s}-{d}&token={token}"
            start = (
                {"initial_symbols": symbols, "initial_cash": 100000.0}
                if d == args.devices - 1
                else None
            )
            shares[s % args.client_procs].append([url, start])
    t0 = time.monotonic()
    workers = []
    for share in shares:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client-worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**28,
        )
        proc.stdin.write(msgspec.json.encode({"clients": share}) + b"\n")
        await proc.stdin.drain()
        workers.append(proc)
    for proc in workers:
        line = await asyncio.wait_for(proc.stdout.readline(), 180)
        if line.strip() != b"ticking":
            raise RuntimeError(f"client worker failed: {line!r}")
    print(
        f"{sum(map(len, shares))} clients in {len(workers)} processes receiving ticks after "
        f"{time.monotonic() - t0:.1f}s; warming up",
        file=sys.stderr,
    )
    rec = Recorder()
    r = connect(redis_url)
    sim_ids = []
    for sid in sessions[:10]:
        got = await r.get(f"sd:md:session:{sid}")
        if got:
            sim_ids.append(got.decode())
    await r.aclose()
    baseline: dict[str, list[float]] = {}
    sampler = asyncio.create_task(sample_redis(redis_url, sim_ids, rec, baseline))
    await asyncio.sleep(3)
    pids = {
        "simulators": stack.procs["simulators"].pid,
        "gateway": stack.procs["gateway"].pid,
        "worker": stack.procs["worker"].pid,
        "redis": args.redis_pid,
    }
    cpu0 = {k: children_cpu(p) for k, p in pids.items()}
    relay0 = await relay_buckets(stack.base_url)
    for proc in workers:
        proc.stdin.write(b"measure\n")
    rec.measuring = True
    w0 = time.monotonic()
    await asyncio.sleep(args.seconds)
    for proc in workers:
        proc.stdin.write(b"stop\n")
    rec.measuring = False
    wall = time.monotonic() - w0
    cpu1 = {k: children_cpu(p) for k, p in pids.items()}
    relay1 = await relay_buckets(stack.base_url)
    results = [msgspec.json.decode(await proc.stdout.readline()) for proc in workers]
    for proc in workers:
        await proc.wait()
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    lat = [x for res in results for x in res["latencies"]]
    statuses = [v for res in results for v in res["statuses"]]
    cpu = {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in pids}
    cpu["client_processes"] = round(100 * sum(res["cpu"] for res in results), 1)
    return {
        "simulators": args.sims,
        "tick_hz": args.hz,
        "devices_per_session": args.devices,
        "symbols": len(symbols),
        "clients": sum(map(len, shares)),
        "client_processes": len(workers),
        "seconds": round(wall, 1),
        # each client process counts over its own measuring window
        "ticks_delivered_per_s": round(sum(res["ticks"] / res["window"] for res in results)),
        "ticks_expected_per_s": round(args.sims * args.hz * args.devices),
        "latency_ms_p50": round(pct(lat, 0.50), 1),
        "latency_ms_p99": round(pct(lat, 0.99), 1),
        "latency_ms_max": round(max(lat), 1) if lat else None,
        "baseline_10_streams_direct_xread_ms": {
            "engine_to_redis_p50": round(pct(baseline.get("to_redis", []), 0.5), 1),
            "engine_to_redis_p99": round(pct(baseline.get("to_redis", []), 0.99), 1),
            "engine_to_reader_p50": round(pct(baseline.get("to_reader", []), 0.5), 1),
            "engine_to_reader_p99": round(pct(baseline.get("to_reader", []), 0.99), 1),
        },
        "gateway_relay_lag_engine_to_push": {
            "p50": bucket_quantile(relay0, relay1, 0.5),
            "p99": bucket_quantile(relay0, relay1, 0.99),
        },
        "cpu_pct_of_one_core": cpu,
        "status_order_ok": bool(statuses)
        and all(
            [s for i, s in enumerate(v) if i == 0 or v[i - 1] != s][:3]
            == ["CREATING", "STARTING", "RUNNING"]
            for v in statuses
        ),
        "status_order_bad_examples": [
            v
            for v in statuses
            if [s for i, s in enumerate(v) if i == 0 or v[i - 1] != s][:3]
            != ["CREATING", "STARTING", "RUNNING"]
        ][:3],
        "load_average_1m_at_end": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sims", type=int, default=200)
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--symbols", type=int, default=3)
    p.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="processes the WebSocket clients are spread over (default 2)",
    )
    p.add_argument("--client-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client_worker:
        asyncio.run(client_worker())
        return
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        tmp_path = Path(tmp)
        redis = start_redis(tmp_path / "redis")
        pg = start_postgres(tmp_path / "pg", fsync=False)
        args.redis_pid = redis.pid
        stack = ProcessStack(
            redis.url,
            pg.url,
            tmp_path,
            SIMULATOR_TICK_HZ=str(args.hz),
            SIMULATOR_HEARTBEAT_INTERVAL_MS="5000",
            SIMULATOR_HOST_TTL_MS="6000",
            SESSIOND_ENV="dev",
            GATEWAY_RATE_PER_S="1000",
            GATEWAY_RATE_BURST="1000",
        )
        try:
            stack.migrate()
            for role in ProcessStack.ROLES:
                stack.start(role)
            stack.wait_healthy(redis.url, timeout=60)
            result = asyncio.run(run(args, stack, redis.url))
        finally:
            stack.stop_all()
            redis.stop()
            pg.stop()
    print(msgspec.json.format(msgspec.json.encode(result)).decode())


if __name__ == "__main__":
    sys.exit(main())
