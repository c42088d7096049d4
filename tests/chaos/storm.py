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
import json
import os
import random
import subprocess
import sys
import time
import uuid

__all__ = ["run_storm"]


async def run_storm(cluster, connections: int, procs: int) -> dict:
    """Run the storm against `cluster` (a `DevCluster`); the figures of all children."""
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
            *cluster.bases,
            env=cluster.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for i in range(procs)
    ]
    started = time.monotonic()
    for child in children:
        line = await asyncio.wait_for(child.stdout.readline(), 900)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"storm child failed: {line!r}")
    print(
        f"  storm: {per * procs} connections open in {time.monotonic() - started:.1f} s;"
        " dropping them all at once",
        flush=True,
    )
    for child in children:
        child.stdin.write(b"drop\n")
    await asyncio.gather(*(child.stdin.drain() for child in children))
    figures = []
    for child in children:
        line = await asyncio.wait_for(child.stdout.readline(), 900)
        figures.append(json.loads(line))
        child.stdin.close()
        await child.wait()
    result = {
        "connections": sum(f["connections"] for f in figures),
        "resumed_s": max(f["resumed_s"] for f in figures),
        "gaps": sum(f["gaps"] for f in figures),
        "diverged": sum(f["diverged"] for f in figures),
        "sample": next((f["sample"] for f in figures if f["sample"]), None),
        "duplicates": sum(f["duplicates"] for f in figures),
        "missing": sum(f["missing"] for f in figures),
        "writes": sum(f["writes"] for f in figures),
    }
    print(f"  storm: all resumed in {result['resumed_s']:.1f} s; {result}", flush=True)
    return result


# --------------------------------------------------------------------------- the child


async def _child(args: argparse.Namespace) -> None:
    from gateway.auth import TokenService
    from infra.config import load_settings
    from tests.chaos.clients import Device, Ledger
    from tests.chaos.invariants import fold_state, gaps, read_logs

    tokens = TokenService(load_settings(dict(os.environ)).gateway)
    ws_bases = [b.replace("http://", "ws://") + "/ws" for b in args.bases]
    ledger = Ledger()
    stop = asyncio.Event()
    firsts, seconds = [], []
    for i in range(args.connections // 2):
        sid = str(uuid.uuid4())
        token = tokens.issue(f"storm{args.tag}-{i}", ttl_s=6 * 3600)
        firsts.append(Device(ledger, ws_bases, token, sid, "a", home=0, ping_interval=None))
        seconds.append(Device(ledger, ws_bases, token, sid, "b", home=1, ping_interval=None))
    devices = firsts + seconds
    tasks = []
    for group in (firsts, seconds):
        for start in range(0, len(group), 100):
            batch = group[start : start + 100]
            tasks += [asyncio.create_task(d.run(stop)) for d in batch]
            await asyncio.wait_for(asyncio.gather(*(d.connected.wait() for d in batch)), 300)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    writing = asyncio.Event()

    async def writes() -> int:
        n = 0
        inflight: set[asyncio.Task] = set()
        while not writing.is_set():
            n += 1
            task = asyncio.ensure_future(random.choice(devices).write(f"s{n}", n))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            await asyncio.sleep(0.02)
        await asyncio.gather(*inflight, return_exceptions=True)
        return n

    writer = asyncio.create_task(writes())
    await asyncio.sleep(0.5)
    connects = {id(d): d.connects for d in devices}
    dropped = time.monotonic()
    for d in devices:  # all at once: no close handshake
        if d.ws is not None:
            d.ws.transport.abort()
    deadline = dropped + 120
    while time.monotonic() < deadline:
        if all(d.connects > connects[id(d)] and d.connected.is_set() for d in devices):
            break
        await asyncio.sleep(0.05)
    resumed_s = time.monotonic() - dropped
    missing = sum(1 for d in devices if d.connects == connects[id(d)])
    await asyncio.sleep(1.0)
    writing.set()
    written = await writer
    sids = [d.session_id for d in firsts]
    deadline = time.monotonic() + 60
    while True:  # until every device shows its session's state as the log makes it
        await asyncio.sleep(1.0)
        logs = await read_logs(args.redis_url, args.partitions, sids)
        behind = [d for d in devices if d.state != fold_state(logs[d.session_id])]
        if not behind or time.monotonic() > deadline:
            break
    found = sum(len(gaps(d, logs[d.session_id])) for d in devices)
    sample = behind[0] if behind else None
    print(
        json.dumps(
            {
                "connections": len(devices),
                "resumed_s": resumed_s,
                "gaps": found,
                "diverged": len(behind),
                "duplicates": sum(d.duplicates for d in devices),
                "missing": missing,
                "writes": written,
                "sample": None
                if sample is None
                else {
                    "last": sample.last,
                    "received": sample.received[-5:],
                    "log": [(v, t) for v, t, _ in logs[sample.session_id][-5:]],
                },
            }
        ),
        flush=True,
    )
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true")
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--tag", default="0")
    p.add_argument("bases", nargs=2)
    asyncio.run(_child(p.parse_args()))


if __name__ == "__main__":
    main()
