"""The whole product on a real 3-master Valkey Cluster: worker, projector and gateway processes
whose `REDIS_URL` names one node.

- Every process says it found a cluster; `sessiond partitions` shows where each partition lives.
- Two WebSocket devices of one session round-trip their updates, with gap-free resume.
- Resharding under load: one partition's slot moves to another master (MIGRATING / IMPORTING,
  MIGRATE key by key, SETSLOT NODE) while commands flow and two devices update: no command is
  lost or applied twice, the watching device sees every update once, in order.
- Failover: with one replica per master, the master serving a session's partition is killed
  (SIGKILL); its replica takes over and the worker, the projector and the gateway carry on by
  themselves.

The shared cluster serves the first tests; the tests that change the cluster's shape start one of
their own (about two seconds each).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from infra.embedded import ClusterNode, EmbeddedCluster, start_redis_cluster
from infra.store import open_store, partition_of, partition_slot
from tests.integration.gwstack import ROOT, SESSIOND, Stack, connect_ws, recv_until, running_stack
from tests.integration.test_gateway_e2e import test_two_devices_and_gap_free_resume as two_devices
from tests.integration.test_worker_failover import Load
from tests.rediskit import connect_any

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

P = 4  # running_stack's partitions


@pytest.fixture(scope="module")
def cluster_stack(
    redis_cluster_server_url: str, postgres_server_url: str, tmp_path_factory
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("cluster-logs")
    with running_stack(redis_cluster_server_url, postgres_server_url, logs) as s:
        yield s


@pytest.fixture
def own_cluster(
    request: pytest.FixtureRequest, server_data_dir: Path, postgres_server_url: str, tmp_path: Path
) -> Iterator[tuple[EmbeddedCluster, Stack]]:
    """A 3-master cluster of the test's own (`replicas` per master, from the test's
    ``cluster_replicas`` mark) and a stack on it."""
    mark = request.node.get_closest_marker("cluster_replicas")
    replicas = mark.args[0] if mark else 0
    with (
        start_redis_cluster(server_data_dir / "cluster", 3, replicas=replicas) as cluster,
        running_stack(cluster.url, postgres_server_url, tmp_path) as stack,
    ):
        yield cluster, stack


def _full_log(stack: Stack, name: str) -> str:
    return (Path(stack.env["SESSIOND_TEST_LOGS"]) / f"{name}.log").read_text(errors="replace")


def _slot_owner(cluster: EmbeddedCluster, slot: int) -> ClusterNode:
    """The node serving `slot` now, as a live node tells it."""
    for node in cluster.nodes:
        if not node.alive():
            continue
        client = redis.Redis(port=node.port)
        try:
            for first, last, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return cluster.node(int(master[1]))
        finally:
            client.close()
    raise AssertionError(f"no live node knows slot {slot}")


def _migrate_slot(
    cluster: EmbeddedCluster, slot: int, src: ClusterNode, dst: ClusterNode, pause: float
) -> int:
    """Move `slot` from `src` to `dst` as `valkey-cli --cluster reshard` does, a few keys at a
    time with `pause` between batches (so that traffic meets the slot half moved); returns the
    keys moved."""
    s, d = redis.Redis(port=src.port), redis.Redis(port=dst.port)
    moved = 0
    try:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id)
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 5):
            s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(pause)
        for node in [dst, src, *(m for m in cluster.masters if m not in (src, dst))]:
            client = redis.Redis(port=node.port)
            try:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
            finally:
                client.close()
    finally:
        s.close()
        d.close()
    return moved


async def _updates(ws: Any, values: range, every_s: float) -> None:
    for i in values:
        await ws.send(json.dumps({"type": "state_update", "payload": {"key": "n", "value": i}}))
        await asyncio.sleep(every_s)


async def _seen(ws: Any, last: int, timeout: float) -> list[tuple[int, int]]:
    """(value, version) of every state update until the one carrying `last`."""
    got: list[tuple[int, int]] = []
    while not got or got[-1][0] != last:
        m = await recv_until(ws, lambda m: m["type"] == "state_update", timeout=timeout)
        got.append((m["payload"]["changes"]["n"], m["version"]))
    return got


def _carries(value: int) -> Any:
    return lambda m: m["type"] == "state_update" and m["payload"]["changes"].get("n") == value


async def _round_trip_after_failover(
    stack: Stack, sid: str, deadline: float
) -> tuple[int, dict[str, Any]]:
    """Reconnect both devices and send updates from one until the other receives one; returns
    that value and the message."""
    value = 1000
    while True:
        assert time.monotonic() < deadline, stack.log("gateway")
        try:
            ws_a, _ = await connect_ws(stack, "sam", "device-a", sid)
            ws_b, _ = await connect_ws(stack, "sam", "device-b", sid)
        except (OSError, websockets.exceptions.WebSocketException, AssertionError):
            await asyncio.sleep(0.2)
            continue
        try:
            while time.monotonic() < deadline:
                value += 1
                await _updates(ws_a, range(value, value + 1), 0)
                try:
                    m = await recv_until(ws_b, _carries(value), timeout=2)
                    return value, m
                except (AssertionError, TimeoutError):
                    continue
        except websockets.exceptions.ConnectionClosed:
            await asyncio.sleep(0.2)
        finally:
            await ws_a.close()
            await ws_b.close()


# ------------------------------------------------------------------ the shared cluster
async def test_every_process_says_it_found_a_cluster(cluster_stack: Stack) -> None:
    deadline = time.monotonic() + 30  # a process logs it on its first use of the store
    for name in ("worker", "projector", "gateway"):
        while "cluster: 3 masters (valkey " not in _full_log(cluster_stack, name):
            assert time.monotonic() < deadline, (name, _full_log(cluster_stack, name)[-2000:])
            await asyncio.sleep(0.1)


async def test_two_devices_round_trip_and_resume_on_a_cluster(cluster_stack: Stack) -> None:
    await two_devices(cluster_stack)


def test_partitions_command_shows_slots_nodes_and_owners(cluster_stack: Stack) -> None:
    def partitions(*args: str) -> str:
        out = subprocess.run(
            [*SESSIOND, "partitions", *args],
            env=cluster_stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    doc = json.loads(partitions("--output", "json"))
    assert doc["redis"].startswith("cluster: 3 masters")
    rows = doc["partitions"]
    assert [r["partition"] for r in rows] == list(range(P))
    assert [r["slot"] for r in rows] == [partition_slot(p) for p in range(P)]
    assert len({r["node"] for r in rows}) > 1  # spread over the masters
    assert all(r["worker"] and r["projector"] for r in rows), rows
    text = partitions()
    assert text.startswith("redis: cluster: 3 masters")
    assert text.splitlines()[1].split() == ["partition", "slot", "node", "worker", "projector"]
    assert len(text.splitlines()) == 2 + P


# ------------------------------------------------------------------ clusters of their own
async def test_moving_a_partitions_slot_under_load_loses_nothing(
    own_cluster: tuple[EmbeddedCluster, Stack],
) -> None:
    cluster, stack = own_cluster
    ws_a, hello = await connect_ws(stack, "rita", "device-a")
    sid = hello["payload"]["session_id"]
    ws_b, _ = await connect_ws(stack, "rita", "device-b", sid)
    store = open_store(cluster.url, P)
    white_box = connect_any(cluster.url)
    try:
        slot = partition_slot(partition_of(sid, P))
        src = _slot_owner(cluster, slot)
        dst = next(m for m in cluster.masters if m is not src)
        load = Load(store.commands)
        await load.create()
        await _updates(ws_a, range(0, 1), 0)
        assert (await _seen(ws_b, 0, 10))[-1][0] == 0
        n = 60
        watching = asyncio.create_task(_seen(ws_b, n, 30))
        sending = asyncio.create_task(load.run_for(3.0, rate=300))
        updating = asyncio.create_task(_updates(ws_a, range(1, n + 1), 0.04))
        await asyncio.sleep(0.3)  # traffic first, then the slot moves under it
        moved = await asyncio.to_thread(_migrate_slot, cluster, slot, src, dst, 0.02)
        await asyncio.gather(sending, updating)
        seen = await watching
        assert moved > 10, moved
        assert _slot_owner(cluster, slot) is dst
        values = [v for v, _ in seen]
        versions = [v for _, v in seen]
        assert values == list(range(1, n + 1)), values  # each once, in order, no gap
        assert versions == sorted(set(versions))
        await load.check_exactly_once(white_box)
    finally:
        await ws_a.close()
        await ws_b.close()
        await store.aclose()
        await white_box.aclose()


@pytest.mark.cluster_replicas(1)
async def test_a_killed_master_fails_over_to_its_replica_and_every_process_recovers(
    own_cluster: tuple[EmbeddedCluster, Stack],
) -> None:
    cluster, stack = own_cluster
    ws_a, hello = await connect_ws(stack, "sam", "device-a")
    sid = hello["payload"]["session_id"]
    ws_b, _ = await connect_ws(stack, "sam", "device-b", sid)
    try:
        await _updates(ws_a, range(0, 1), 0)
        await _seen(ws_b, 0, 10)
        slot = partition_slot(partition_of(sid, P))
        victim = _slot_owner(cluster, slot)
        victim.kill()  # SIGKILL: a crash
        killed = time.monotonic()
        while _slot_owner(cluster, slot) is victim:  # until its replica takes over
            assert time.monotonic() - killed < 30, "no failover"
            await asyncio.sleep(0.1)
        cluster.wait_ok(30)
        # writes acknowledged just before the crash may be lost (asynchronous replication:
        # see docs/cluster.md); a device whose connection the gateway closed while the store was
        # unreachable (1013, try again later) reconnects, as clients do; what is written after
        # the failover must flow end to end again, without restarting any process
        deadline = time.monotonic() + 30
        value, m = await _round_trip_after_failover(stack, sid, deadline)
        recovered = time.monotonic() - killed
        assert m["version"] > 1
        async with httpx.AsyncClient(base_url=stack.base) as http:
            h = stack.headers("sam")
            while True:  # the projector materialises it too
                r = await http.get(f"/session/{sid}", headers=h)
                if r.status_code == 200 and r.json()["state_data"].get("n") == value:
                    break
                assert time.monotonic() < deadline, (r.text, stack.log("projector"))
                await asyncio.sleep(0.2)
        assert recovered < 30
        for name in ("worker", "projector", "gateway"):
            assert stack.procs[name].poll() is None, stack.log(name)
    finally:
        await ws_a.close()
        await ws_b.close()
