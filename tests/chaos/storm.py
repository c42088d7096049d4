"""The reconnect storm: N WebSocket connections dropped at once, every one reconnecting with
`since` to the other gateway, under writes; 0 gaps, 0 duplicates, and the time until all have
resumed.

One process cannot open much more than 20,000 files here, and one asyncio loop is the client's
bottleneck, so the connections are split over `procs` child processes (`python -m
tests.chaos.storm --child`), each holding sessions of two devices (one per gateway). The parent
tells them all to drop at the same moment (a line on their stdin); each aborts every socket
(no close handshake: as a network drop or a crashed client looks), reconnects, and writes one
JSON line of figures when its devices have caught up with the event log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

__all__ = ["run_storm"]


async def run_storm(
    cluster, connections: int, procs: int, *, deadline_s: float = 300.0, gate: int = 100
) -> dict:
    """Run the storm against `cluster` (a `DevCluster`); the figures of all children.

    Each child reports within `deadline_s` of the drop what it has (a child that does not is
    killed and counted as failed), and the CPU each client process and each gateway spent
    while the connections resumed is measured (`cpu`), to tell which side is the bottleneck."""
    info = cluster.info()
    per = connections // procs // 2 * 2
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.chaos.storm",
            "--child",
            "--connections",
            str(per),
            "--redis-url",
            info["redis_url"],
            "--partitions",
            str(cluster.partitions),
            "--tag",
            str(i),
            "--deadline",
            str(deadline_s),
            "--gate",
            str(gate),
            *cluster.bases,
            env=cluster.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for i in range(procs)
    ]
    try:
        return await _drive(cluster, children, per, deadline_s)
    finally:
        for child in children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()


async def _drive(cluster, children: list, per: int, deadline_s: float) -> dict:
    started = time.monotonic()
    for child in children:
        line = await asyncio.wait_for(child.stdout.readline(), 900)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"storm child failed: {line!r}")
    print(
        f"  storm: {per * len(children)} connections open in {time.monotonic() - started:.1f} s;"
        " dropping them all at once",
        flush=True,
    )
    pids = {f"client{i}": c.pid for i, c in enumerate(children)}
    pids.update({g: cluster.pid(g) for g in ("gateway-a", "gateway-b")})
    samples: list[tuple[float, dict[str, float]]] = []
    sampler = asyncio.create_task(_sample_cpu(pids, samples))
    dropped = time.monotonic()
    for child in children:
        child.stdin.write(b"drop\n")
    await asyncio.gather(*(child.stdin.drain() for child in children))
    figures = []
    for i, child in enumerate(children):
        left = dropped + deadline_s + 120 - time.monotonic()
        try:
            line = await asyncio.wait_for(child.stdout.readline(), max(1.0, left))
            figures.append(json.loads(line))
        except (TimeoutError, ValueError):
            print(f"  storm: client process {i} did not report; killed", flush=True)
            child.kill()
            figures.append({"connections": per, "missing": per, "failed": True})
            continue
        child.stdin.close()
        await child.wait()
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    resumed_s = max(f.get("resumed_s", deadline_s) for f in figures)
    result = {
        "connections": sum(f["connections"] for f in figures),
        "resumed_s": resumed_s,
        "gaps": sum(f.get("gaps", 0) for f in figures),
        "diverged": sum(f.get("diverged", 0) for f in figures),
        "sample": next((f["sample"] for f in figures if f.get("sample")), None),
        "duplicates": sum(f.get("duplicates", 0) for f in figures),
        "missing": sum(f.get("missing", 0) for f in figures),
        "writes": sum(f.get("writes", 0) for f in figures),
        "timed_out": any(f.get("timed_out") or f.get("failed") for f in figures),
        "reconnect_attempts": sum(f.get("attempts", 0) for f in figures),
        "loop_lag_max_s": max(f.get("loop_lag_max_s", 0.0) for f in figures),
        "cpu": _cpu_use(samples, dropped, dropped + resumed_s),
    }
    print(f"  storm: all resumed in {result['resumed_s']:.1f} s; {result}", flush=True)
    return result


def _sched(pid: int | None) -> tuple[float, float] | None:
    """Seconds `pid` ran on a CPU and waited runnable for one (/proc/<pid>/schedstat), all its
    threads; None when it is gone."""
    total = [0.0, 0.0]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            ran, waited = (task / "schedstat").read_text().split()[:2]
            total[0] += int(ran) / 1e9
            total[1] += int(waited) / 1e9
    except (OSError, ValueError, TypeError):
        return None
    return total[0], total[1]


async def _sample_cpu(pids: dict[str, int | None], out: list) -> None:
    while True:
        out.append((time.monotonic(), {n: _sched(p) for n, p in pids.items()}))
        await asyncio.sleep(0.5)


def _cpu_use(samples: list, start: float, end: float) -> dict[str, str]:
    """Per process over [start, end]: the cores it ran on, and (after "+") the cores' worth of
    time it was runnable but waited for a CPU (1.0 = one whole core): a process that ran much
    and waited little is the bottleneck; one that waited as long as it ran was starved by the
    machine."""
    if len(samples) < 2:
        return {}
    first = min(samples, key=lambda s: abs(s[0] - start))
    last = min(samples, key=lambda s: abs(s[0] - end))
    if last[0] <= first[0]:
        last = samples[-1]
    wall = last[0] - first[0]
    use = {}
    for name, before in first[1].items():
        after = last[1].get(name)
        if before is not None and after is not None and wall > 0:
            ran, waited = ((a - b) / wall for a, b in zip(after, before, strict=True))
            use[name] = f"{ran:.2f}+{waited:.2f}"
    return use


# --------------------------------------------------------------------------- the child


async def _child(args: argparse.Namespace) -> None:
    from gateway.auth import TokenService
    from infra.config import load_settings
    from tests.chaos.clients import Device, Ledger

    tokens = TokenService(load_settings(dict(os.environ)).gateway)
    ws_bases = [b.replace("http://", "ws://") + "/ws" for b in args.bases]
    ledger = Ledger()
    stop = asyncio.Event()
    gate = asyncio.Semaphore(args.gate)
    firsts, seconds = [], []
    for i in range(args.connections // 2):
        sid = str(uuid.uuid4())
        token = tokens.issue(f"storm{args.tag}-{i}", ttl_s=6 * 3600)
        for group, name, home in ((firsts, "a", 0), (seconds, "b", 1)):
            group.append(
                Device(
                    ledger,
                    ws_bases,
                    token,
                    sid,
                    name,
                    home=home,
                    ping_interval=None,
                    gate=gate,
                    max_delay=5.0,
                )
            )
    devices = firsts + seconds
    tasks = []
    for group in (firsts, seconds):
        for start in range(0, len(group), 100):
            batch = group[start : start + 100]
            tasks += [asyncio.create_task(d.run(stop)) for d in batch]
            await asyncio.wait_for(asyncio.gather(*(d.connected.wait() for d in batch)), 300)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    figures: dict = {"connections": len(devices)}
    try:
        await asyncio.wait_for(_storm(args, devices, firsts, figures), args.deadline)
    except TimeoutError:
        figures["timed_out"] = True
    print(json.dumps(figures), flush=True)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _storm(args: argparse.Namespace, devices: list, firsts: list, figures: dict) -> None:
    """Drop every socket at once under writes, wait until all have resumed, then until every
    device shows its session's state as the log makes it; `figures` holds what is known at
    each step (the caller prints it even when the deadline cuts this short)."""
    from tests.chaos.invariants import fold_state, gaps, read_logs

    writing = asyncio.Event()
    written = [0]

    async def writes() -> None:
        inflight: set[asyncio.Task] = set()
        while not writing.is_set():
            written[0] += 1
            n = written[0]
            task = asyncio.ensure_future(random.choice(devices).write(f"s{n}", n))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.gather(*inflight, return_exceptions=True), 15)

    lag = [0.0]

    async def ticker() -> None:  # how late the client's own loop runs: its saturation
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.1)
            lag[0] = max(lag[0], time.monotonic() - t - 0.1)

    writer = asyncio.create_task(writes())
    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.5)
    connects = {id(d): d.connects for d in devices}
    attempts = {id(d): d.attempts for d in devices}
    cpu0 = time.process_time()
    dropped = time.monotonic()
    for d in devices:  # all at once: no close handshake
        if d.ws is not None:
            d.ws.transport.abort()

    def resumed() -> int:
        return sum(1 for d in devices if d.connects > connects[id(d)] and d.connected.is_set())

    figures.update(missing=len(devices), resumed_s=None)
    while True:
        done = resumed()
        figures.update(missing=len(devices) - done, resumed_s=time.monotonic() - dropped)
        figures.update(loop_lag_max_s=round(lag[0], 2), cpu_s=time.process_time() - cpu0)
        figures["attempts"] = sum(d.attempts - attempts[id(d)] for d in devices)
        if done == len(devices):
            break
        await asyncio.sleep(0.05)
    ticking.cancel()
    await asyncio.sleep(1.0)
    writing.set()
    await writer
    figures["writes"] = written[0]
    sids = [d.session_id for d in firsts]
    while True:  # until every device shows its session's state as the log makes it
        await asyncio.sleep(1.0)
        logs = await read_logs(args.redis_url, args.partitions, sids)
        behind = [d for d in devices if d.state != fold_state(logs[d.session_id])]
        figures["gaps"] = sum(len(gaps(d, logs[d.session_id])) for d in devices)
        figures["duplicates"] = sum(d.duplicates for d in devices)
        figures["diverged"] = len(behind)
        if behind:
            sample = behind[0]
            figures["sample"] = {
                "last": sample.last,
                "received": sample.received[-5:],
                "log": [(v, t) for v, t, _ in logs[sample.session_id][-5:]],
            }
        else:
            figures["sample"] = None
            return


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true")
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--tag", default="0")
    p.add_argument("--deadline", type=float, default=300.0, help="report by (s after the drop)")
    p.add_argument("--gate", type=int, default=100, help="handshakes in flight at most")
    p.add_argument("bases", nargs=2)
    asyncio.run(_child(p.parse_args()))


if __name__ == "__main__":
    main()
