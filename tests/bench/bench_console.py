"""Console time-travel benchmark (not collected by pytest):
.venv/bin/python tests/bench/bench_console.py

One session with EVENTS events (SessionCreated, then state changes over KEYS keys) in a real
Redis (embedded valkey, or REDIS_URL); the gateway's `console.actor_state` operation (what
`GET /admin/actors/{actor}/state?version=N` runs on the server: read the events appended since
the cached timeline, fold from the nearest checkpoint, the state and its diff as JSON data) is
timed at LOOKUPS random versions, and once cold (the first look: the whole history read from
Redis and folded). Prints

  RESULT state_at_version_ms <the slowest warm lookup, ms>
  RESULT state_at_version_p50_ms <median warm lookup, ms>
  RESULT state_first_look_ms <an actor not cached yet: read and fold it all, median of 5, ms>
  RESULT state_first_look_after_start_ms <the same, the very first request of the process>

Env knobs: EVENTS (10000), KEYS (50), LOOKUPS (500).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from events import session as se  # noqa: E402
from gateway.auth import Claims  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.operations import Context  # noqa: E402
from gateway.operations.console import actor_state  # noqa: E402
from infra.store import open_store  # noqa: E402
from tests.actorkit import LocalActors  # noqa: E402

EVENTS = int(os.environ.get("EVENTS", 10_000))
KEYS = int(os.environ.get("KEYS", 50))
LOOKUPS = int(os.environ.get("LOOKUPS", 500))
P = 16
ADMIN = Claims(user_id="bench", roles=("admin",))


def say(text: str) -> None:
    print(text, flush=True)


async def make_history(redis_url: str) -> str:
    store = open_store(redis_url, P)
    actors = LocalActors(store)
    sid = str(uuid.uuid4())
    actor = f"session:{sid}"
    actors.send_nowait(
        actor, se.CreateSession(at=1, user_id="bench", session_id=sid, ttl_ms=10**12)
    )
    rnd = random.Random(7)
    for i in range(EVENTS - 1):
        key = f"k{rnd.randrange(KEYS)}"
        actors.send_nowait(
            actor,
            se.ApplyStateChanges(
                at=2 + i, user_id="bench", changes={key: {"n": i, "text": "x" * rnd.randrange(40)}}
            ),
        )
        if actors.pending >= 500:
            await actors.flush()
    await actors.flush()
    await store.aclose()
    return actor


async def bench(redis_url: str, actor: str) -> None:
    store = open_store(redis_url, P)
    sender = store.command_sender(name="bench")
    ctx = Context(GatewayConfig(redis_url=redis_url, partitions=P), store, None, sender)
    try:
        t = time.perf_counter()
        first = await actor_state(ctx, ADMIN, actor, EVENTS // 2)
        cold = (time.perf_counter() - t) * 1000
        assert first.last_version == EVENTS, first.last_version
        uncached = []
        for _ in range(5):  # a server that runs already, looking at an actor it has not cached
            ctx.console.timelines.clear()
            t = time.perf_counter()
            await actor_state(ctx, ADMIN, actor, EVENTS // 2)
            uncached.append((time.perf_counter() - t) * 1000)
        rnd = random.Random(11)
        times = []
        for _ in range(LOOKUPS):
            v = rnd.randint(0, EVENTS)
            t = time.perf_counter()
            got = await actor_state(ctx, ADMIN, actor, v)
            times.append((time.perf_counter() - t) * 1000)
            assert got.version == v
        say(
            f"{EVENTS:,} events; {LOOKUPS} lookups at random versions: p50"
            f" {statistics.median(times):.2f} ms, p99"
            f" {sorted(times)[int(len(times) * 0.99) - 1]:.2f} ms, max {max(times):.2f} ms;"
            f" first look after start {cold:.1f} ms; first look of an actor (not cached, read +"
            f" fold everything), median of 5: {statistics.median(uncached):.1f} ms"
        )
        say(f"RESULT state_at_version_ms {max(times):.2f}")
        say(f"RESULT state_at_version_p50_ms {statistics.median(times):.2f}")
        say(f"RESULT state_first_look_ms {statistics.median(uncached):.1f}")
        say(f"RESULT state_first_look_after_start_ms {cold:.1f}")
    finally:
        await store.aclose()


async def main() -> None:
    from infra.embedded import start_redis

    server = None
    redis_url = os.environ.get("REDIS_URL")
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    try:
        if not redis_url:
            server = start_redis(tmp / "redis")
            redis_url = server.url
        t = time.perf_counter()
        actor = await make_history(redis_url)
        say(f"history of {actor}: {EVENTS:,} events in {time.perf_counter() - t:.1f} s")
        await bench(redis_url, actor)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
