"""`sessiond replay` / `sessiond export` through the real worker: replaying to version V gives the
state the live actor had at V (its own snapshot), also from an exported file and from the
archive once Redis no longer holds the events."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import msgspec
import pytest

from actors.registry import state_type
from actors.runtime.worker import Worker
from events import session as se
from events import simulator as si
from infra.commands import replay as replay_cmd
from infra.store import open_store
from infra.store.layout import event_stream, snapshot_key
from infra.store.routing import partition_of
from projections.history import read_history
from projections.migrate import migrate
from projections.projector import Projector, ProjectorConfig
from tests.rediskit import connect

pytestmark = pytest.mark.anyio

P = 4
ROOT = Path(__file__).resolve().parents[2]


def _cli(args: list[str], redis_url: str, dsn: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "REDIS_URL": redis_url, "SESSIOND_PARTITIONS": str(P)}
    env.pop("DATABASE_URL", None)
    if dsn:
        env["DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _live_history(redis_url: str) -> tuple[str, str, dict[int, object], dict[int, object]]:
    """Drive a session and its simulator through the worker; return the snapshots the worker
    wrote after every event (snapshot_every=1): version -> live state, per actor."""
    redis = connect(redis_url)
    store = open_store(redis_url, P)
    worker = Worker(store, worker_id="w-replay", snapshot_every=1, lease_ttl_ms=2000)
    task = asyncio.create_task(worker.run())
    bus = store.commands
    sid, sim = str(uuid.uuid4()), str(uuid.uuid4())
    aid, sim_aid = f"session:{sid}", f"simulator:{sim}"
    p = partition_of(sid, P)
    decode = msgspec.msgpack.Decoder(tuple[int, state_type(aid)])
    sim_decode = msgspec.msgpack.Decoder(tuple[int, state_type(sim_aid)])
    live: dict[int, object] = {}
    sim_live: dict[int, object] = {}
    now = int(time.time() * 1000)
    commands = [
        (aid, se.CreateSession(at=now, user_id="u1", session_id=sid, device_id="d1")),
        (
            aid,
            se.JoinDevice(
                at=now + 1, user_id="u1", device_id="d1", connection_id="c1", device_type="mobile"
            ),
        ),
        (
            aid,
            se.ReplaceState(
                at=now + 2, user_id="u1", session_id=sid, state={"a": 1}, device_id="d1"
            ),
        ),
        (aid, se.ApplyStateChanges(at=now + 3, user_id="u1", changes={"b": 2}, deleted_keys=["a"])),
        (
            aid,
            se.ReserveSimulator(
                at=now + 4, user_id="u1", simulator_id=sim, initial_symbols=["AAPL"]
            ),
        ),
        (sim_aid, si.RecordProvisioned(at=now + 5, endpoint="http://sim")),
        (sim_aid, si.RecordHeartbeat(at=now + 6)),
        (
            aid,
            se.ChangeConnectionQuality(at=now + 7, user_id="u1", quality=se.ConnectionQuality.POOR),
        ),
        (aid, se.LeaveDevice(at=now + 8, user_id="u1", device_id="d1", connection_id="c1")),
        (aid, se.EndSession(at=now + 9, user_id="u1")),
    ]
    try:
        for actor, command in commands:
            deadline = time.monotonic() + 30
            while True:
                outcome = await bus.send(actor, sid, command, timeout=10)
                assert outcome is not None, actor
                if outcome.ok:
                    break
                # a simulator exists only once the session's policy created it
                assert actor == sim_aid and time.monotonic() < deadline, outcome
                await asyncio.sleep(0.1)
            # policies (simulator creation, status mirroring) run as further commands
            await asyncio.sleep(0.15)
            for target, dec, into in ((aid, decode, live), (sim_aid, sim_decode, sim_live)):
                raw = await redis.get(snapshot_key(p, target))
                if raw:
                    version, state = dec.decode(raw)
                    into[version] = state
    finally:
        worker.stop()
        await task
        await store.aclose()
        await redis.aclose()
    return sid, sim, live, sim_live


async def test_replay_to_version_equals_the_live_actors_state(redis_url, database_url):
    sid, sim, live, sim_live = await _live_history(redis_url)
    assert len(live) >= 8 and len(sim_live) >= 3
    # every version through the command's own code, two of them through the real CLI
    store = open_store(redis_url, P)
    envs = await read_history(store, f"session:{sid}")
    await store.aclose()
    for version, state in live.items():
        buf = io.StringIO()
        replay_cmd._show(
            f"session:{sid}",
            envs,
            argparse.Namespace(to_version=version, at=None, diff=False, output="json"),
            buf,
        )
        doc = json.loads(buf.getvalue())
        assert doc["version"] == version
        assert doc["state"] == msgspec.to_builtins(state), version
    for version in (min(live), sorted(live)[len(live) // 2]):
        out = await asyncio.to_thread(
            _cli, ["replay", f"session:{sid}", "--to-version", str(version), "--json"], redis_url
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["state"] == msgspec.to_builtins(live[version])
    # --at: the state after the last event at or before that time
    at_version = sorted(live)[2]
    at_ts = envs[at_version - 1].ts
    buf = io.StringIO()
    replay_cmd._show(
        f"session:{sid}",
        envs,
        argparse.Namespace(to_version=None, at=str(at_ts), diff=False, output="json"),
        buf,
    )
    assert json.loads(buf.getvalue())["version"] == max(e.version for e in envs if e.ts <= at_ts)
    last = max(sim_live)
    out = await asyncio.to_thread(
        _cli,
        ["replay", f"simulator:{sim}", "--to-version", str(last), "--json", "--session", sid],
        redis_url,
    )
    assert json.loads(out.stdout)["state"] == msgspec.to_builtins(sim_live[last])

    # each step's difference, readable and as JSON lines
    out = await asyncio.to_thread(_cli, ["replay", f"session:{sid}", "--diff", "--json"], redis_url)
    steps = [json.loads(line) for line in out.stdout.splitlines()]
    assert [s["version"] for s in steps] == list(range(1, len(steps) + 1))
    state_step = next(s for s in steps if s["type"] == "StateChanged")
    assert state_step["changes"]["state.b"] == [None, 2]
    assert state_step["changes"]["state.a"] == [1, None]
    text = await asyncio.to_thread(_cli, ["replay", f"session:{sid}", "--diff"], redis_url)
    assert "StateChanged" in text.stdout and "state.b: null -> 2" in text.stdout

    # export, then replay the file with no server at all
    await migrate(database_url)
    exported = await asyncio.to_thread(_cli, ["export", sid], redis_url)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {line["actor_id"] for line in lines} == {f"session:{sid}", f"simulator:{sim}"}
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"export-{sid}.jsonl"
    path.write_text(exported.stdout)
    try:
        v = max(live)
        out = await asyncio.to_thread(
            _cli,
            ["replay", "--file", str(path), f"session:{sid}", "--json", "--to-version", str(v)],
            "redis://127.0.0.1:1/0",
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["state"] == msgspec.to_builtins(live[v])
    finally:
        path.unlink()

    # archive fallback: project, drop the Redis stream, replay and export still work
    redis = connect(redis_url)
    store = open_store(redis_url, P)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    projector = Projector(
        ProjectorConfig(redis_url=redis_url, database_url=database_url, partitions=P), store, pool
    )
    run = asyncio.create_task(projector.run())
    try:
        deadline = time.monotonic() + 60
        while await pool.fetchval("SELECT count(*) FROM events.archive") < len(lines):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        projector.stop()
        await run
        await pool.close()
        await store.aclose()
    p = partition_of(sid, P)
    await redis.xtrim(event_stream(p, f"session:{sid}"), minid=f"{max(live) - 2}-0")
    await redis.aclose()
    v = max(live)
    out = await asyncio.to_thread(
        _cli,
        ["replay", f"session:{sid}", "--to-version", str(v), "--json"],
        redis_url,
        database_url,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == msgspec.to_builtins(live[v])
    again = await asyncio.to_thread(_cli, ["export", sid], redis_url, database_url)
    assert again.stdout == exported.stdout
