"""`sessiond worker`, `sessiond send` and `sessiond events` as a user runs them, on real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from infra.store import layout

pytestmark = pytest.mark.slow

SESSIOND = str(Path(sys.executable).parent / "sessiond")
P = 4


def run(url: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "SESSIOND_PARTITIONS": str(P)}
    return subprocess.run(
        [SESSIOND, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def worker(redis_url: str, tmp_path: Path):
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(
        [SESSIOND, "worker", "--id", "cli", "--lease-ttl-ms", "2000"],
        env={**os.environ, "REDIS_URL": redis_url, "SESSIOND_PARTITIONS": str(P)},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 20
    while sum(bool(client.exists(layout.lease_key(p))) for p in range(P)) < P:
        assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
        time.sleep(0.05)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    log.close()
    client.close()


def test_send_and_events_show_versions_times_and_correlation_ids(
    redis_url: str, worker: subprocess.Popen[bytes]
) -> None:
    created = run(redis_url, "send", "create-session", "--user", "alice",
                  "--correlation-id", "corr-1")  # fmt: skip
    assert created.returncode == 0, created.stderr
    outcome = json.loads(created.stdout)
    assert outcome["ok"] and outcome["version"] == 1
    actor = outcome["actor_id"]
    sid = outcome["session_id"]
    assert actor == f"session:{sid}"

    refreshed = run(redis_url, "send", actor, "RefreshSession", "--user", "alice",
                    "--command-id", "r-1")  # fmt: skip
    assert json.loads(refreshed.stdout)["version"] == 2
    again = run(redis_url, "send", actor, "refresh-session", "--user", "alice",
                "--command-id", "r-1")  # fmt: skip
    assert json.loads(again.stdout) == json.loads(refreshed.stdout)  # same id: same outcome

    refused = run(redis_url, "send", actor, "RefreshSession", "--user", "mallory")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error_code"] == "SESSION_FORBIDDEN"

    lines = run(redis_url, "events", actor, "--json").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["version"], e["type"]) for e in events] == [
        (1, "SessionCreated"), (2, "SessionRefreshed"),
    ]  # fmt: skip
    assert events[0]["correlation_id"] == "corr-1" and events[1]["command_id"] == "r-1"
    assert events[0]["data"]["user_id"] == "alice" and events[0]["time"].endswith("Z")

    table = run(redis_url, "events", actor, "--since", "1").stdout
    assert "VERSION" in table and "SessionRefreshed" in table and "SessionCreated" not in table


def test_partitions_on_a_single_node_show_one_node_and_the_owners(
    redis_url: str, worker: subprocess.Popen[bytes]
) -> None:
    out = run(redis_url, "partitions", "--output", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["redis"].startswith("single node (valkey ")
    rows = doc["partitions"]
    assert [r["partition"] for r in rows] == list(range(P))
    assert len({r["node"] for r in rows}) == 1
    owner = rows[0]["worker"]
    assert owner.startswith("cli") and [r["worker"] for r in rows] == [owner] * P
    assert [r["projector"] for r in rows] == [None] * P  # no projector runs
    text = run(redis_url, "partitions").stdout.splitlines()
    assert text[0].startswith("redis: single node") and len(text) == 2 + P
    assert text[2].split()[3:] == [owner, "-"]


def test_send_rejects_bad_input_with_one_clear_line(redis_url: str) -> None:
    for args, message in [
        (["send", "session:x", "NoSuchCommand"], "unknown command type"),
        (["send", "session:x", "UpdateMetadata", '{"values": 3}'], "invalid UpdateMetadata"),
        (["send", "session:x", "UpdateMetadata", "{not json"], "JSON is not valid"),
        (["send", "nocolon", "RefreshSession"], "ACTOR_ID"),
        (["events", "session:nobody"], "no events"),
    ]:
        result = run(redis_url, *args)
        assert result.returncode == 2, (args, result)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_worker_stops_gracefully_on_sigterm_and_releases_its_leases(
    redis_url: str, worker: subprocess.Popen[bytes]
) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    client = redis.Redis.from_url(redis_url)
    try:
        assert not any(client.exists(layout.lease_key(p)) for p in range(P))
    finally:
        client.close()
