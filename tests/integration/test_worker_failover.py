"""Failover with real `sessiond worker` processes on real Redis (a single node and a 3-master
cluster): kill -9 and SIGSTOP/SIGCONT.

Every accepted command must end with exactly one set of events (none lost, none doubled), the
actor streams must stay gap-free, and a paused worker whose lease was taken over must have
every write refused by the fencing epoch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from events.codec import decode_event_envelope, decode_outcome
from events.ids import session_actor
from events.session import CreateSession, RefreshSession, UpdateMetadata
from infra.store import CommandSender, layout, open_store
from infra.store.routing import partition_of
from tests.rediskit import connect_any, get_many

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

P = 4
LEASE_MS = 1000
SESSIOND = str(Path(sys.executable).parent / "sessiond")
ROOT = Path(__file__).resolve().parents[2]


class WorkerProc:
    """A `sessiond worker` process; with `faults`, the test's own faulty worker
    (`tests/integration/faulty_worker.py`: the same worker with faults injected)."""

    def __init__(
        self, url: str, name: str, log_dir: Path, faults: Sequence[str] = (), **env: str
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        args = ["--partitions", str(P), "--id", name, "--lease-ttl-ms", str(LEASE_MS)]
        if faults:
            command = [
                sys.executable,
                "-m",
                "tests.integration.faulty_worker",
                "--redis-url",
                url,
                *args,
                *faults,
            ]
        else:
            command = [SESSIOND, "worker", *args]
        self.proc = subprocess.Popen(
            command, cwd=ROOT,
            env={**os.environ, "REDIS_URL": url, "SESSIOND_PARTITIONS": str(P),
                 "SESSIOND_BLOCK_MS": "50", "SESSIOND_LOG_LEVEL": "INFO", **env},
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@pytest.fixture
def workers(tmp_path: Path):
    started: list[WorkerProc] = []

    def start(url: str, name: str, faults: Sequence[str] = (), **env: str) -> WorkerProc:
        w = WorkerProc(url, name, tmp_path, faults, **env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


async def owners(redis: Any) -> list[str]:
    values = await get_many(redis, [layout.lease_key(p) for p in range(P)])
    return [(v or b"").decode().split(":")[0] for v in values]


async def fenced_replies(redis: Any) -> int:
    """Writes the append and timer scripts refused to a stale owner, over all partitions."""
    values = await get_many(redis, [layout.fenced_key(p) for p in range(P)])
    return sum(int(v or 0) for v in values)


async def wait_for(check: Any, timeout: float) -> float:
    """Seconds until `check()` was true; fails after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await check():
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {timeout}s")


class Load:
    """Sessions and a stream of commands with known ids, sent without waiting."""

    def __init__(self, bus: CommandSender, sessions: int = 12) -> None:
        self.bus = bus
        self.sessions = [str(uuid.uuid4()) for _ in range(sessions)]
        self.sent: list[tuple[str, str]] = []  # (session id, command id)
        self.i = 0

    async def create(self) -> None:
        now = int(time.time() * 1000)
        for sid in self.sessions:
            out = await self.bus.send(
                session_actor(sid), sid,
                CreateSession(at=now, user_id="u", session_id=sid), timeout=15,
            )  # fmt: skip
            assert out is not None and out.ok

    async def send(self, n: int) -> None:
        for _ in range(n):
            sid = self.sessions[self.i % len(self.sessions)]
            cid = f"cmd-{self.i}"
            now = int(time.time() * 1000)
            command = (
                RefreshSession(at=now, user_id="u")
                if self.i % 2
                else UpdateMetadata(at=now, user_id="u", values={"n": self.i})
            )
            await self.bus.send(session_actor(sid), sid, command, command_id=cid, wait=False)
            self.sent.append((sid, cid))
            self.i += 1

    async def run_for(self, seconds: float, rate: float = 400) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await self.send(max(1, int(rate / 20)))
            await asyncio.sleep(0.05)

    async def check_exactly_once(self, redis: Any, timeout: float = 20) -> None:
        """Every sent command has an outcome and exactly its events, once; streams gap-free."""
        outcomes: dict[str, Any] = {}

        async def all_settled() -> bool:
            missing = [(s, c) for s, c in self.sent if c not in outcomes]
            values = await get_many(
                redis, [layout.outcome_key(partition_of(s, P), c) for s, c in missing]
            )
            for (_, cid), raw in zip(missing, values, strict=True):
                if raw:
                    outcomes[cid] = decode_outcome(raw)
            return len(outcomes) == len(self.sent)

        await wait_for(all_settled, timeout)
        per_command: Counter[str] = Counter()
        for sid in self.sessions:
            p = partition_of(sid, P)
            entries = await redis.xrange(layout.event_stream(p, session_actor(sid)))
            envs = [decode_event_envelope(f[b"e"]) for _, f in entries]
            assert [e.version for e in envs] == list(range(1, len(envs) + 1))
            assert [eid for eid, _ in entries] == [f"{e.version}-0".encode() for e in envs]
            for env in envs:
                per_command[env.command_id] += 1
                if env.command_id in outcomes:
                    assert outcomes[env.command_id].version >= env.version
        for _, cid in self.sent:
            out = outcomes[cid]
            assert out.ok, out
            assert per_command[cid] == out.events == 1, (cid, per_command[cid], out)
        for p in range(P):
            pending = await redis.xpending(layout.command_stream(p), layout.COMMAND_GROUP)
            assert pending["pending"] == 0


async def test_killed_worker_is_replaced_within_the_lease_ttl_and_nothing_is_lost(
    any_redis_url: str, workers: Any
) -> None:
    # wa holds each decided batch 200 ms before appending: killed, it is almost surely mid-batch
    a = workers(any_redis_url, "wa", faults=["--append-delay-ms", "200"])
    b = workers(any_redis_url, "wb")
    redis = connect_any(any_redis_url)
    store = open_store(any_redis_url, P)
    bus = store.commands
    try:

        async def balanced() -> bool:
            o = await owners(redis)
            return sorted(o) == ["wa", "wa", "wb", "wb"]

        await wait_for(balanced, 20)
        load = Load(bus)
        await load.create()
        await load.run_for(1.0)
        a.proc.kill()  # SIGKILL while commands keep flowing
        killed = time.monotonic()

        async def b_owns_all() -> bool:
            return await owners(redis) == ["wb"] * P

        sending = asyncio.create_task(load.run_for(2.0))
        await wait_for(b_owns_all, 10)
        takeover = time.monotonic() - killed
        await sending
        # within the lease TTL, plus one renewal tick of the survivor and scheduling slack
        assert takeover < LEASE_MS / 1000 + LEASE_MS / 3000 + 1.0, takeover
        await load.check_exactly_once(redis)
        assert "re-driving" in b.log() or "acquired partition" in b.log()
    finally:
        await store.aclose()
        await redis.aclose()


async def test_paused_worker_is_fenced_after_takeover_and_streams_stay_consistent(
    any_redis_url: str, workers: Any
) -> None:
    # The paused worker plays a process stopped between its lease check and its write: its
    # local lease check is off and it holds every decided batch 300 ms before appending, so it
    # has commands in hand when stopped. Only the fencing epoch in the script can stop it.
    a = workers(any_redis_url, "wa", faults=["--no-local-lease-check", "--append-delay-ms", "300"])
    workers(any_redis_url, "wb")
    redis = connect_any(any_redis_url)
    store = open_store(any_redis_url, P)
    bus = store.commands
    try:

        async def balanced() -> bool:
            return sorted(await owners(redis)) == ["wa", "wa", "wb", "wb"]

        await wait_for(balanced, 20)
        load = Load(bus)
        await load.create()
        sending = asyncio.create_task(load.run_for(4.0))
        await asyncio.sleep(0.5)
        a.proc.send_signal(signal.SIGSTOP)

        async def b_owns_all() -> bool:
            return await owners(redis) == ["wb"] * P

        await wait_for(b_owns_all, 10)
        refused_before = await fenced_replies(redis)
        await asyncio.sleep(0.5)
        a.proc.send_signal(signal.SIGCONT)
        await sending
        await load.check_exactly_once(redis)
        # the stale worker did try to write what it held, and Redis refused it
        assert await fenced_replies(redis) > refused_before, a.log()[-3000:]
    finally:
        await store.aclose()
        await redis.aclose()
