"""The CLI's side of the console (issue 18): `sessiond events` by correlation id, type and
count, `--output json|table` on the read commands, progress on stderr for `export`,
`projections verify` and `projections trim`, and `sessiond --version`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid

import pytest

from tests.integration.gwstack import ROOT, SESSIOND, Stack, connect_ws, recv_until

pytestmark = pytest.mark.anyio


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SESSIOND, *args], env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _lines(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


async def _session(stack: Stack, changes: int) -> str:
    sid = str(uuid.uuid4())
    ws, hello = await connect_ws(stack, f"cli-{sid[:6]}", "desk", sid)
    try:
        assert hello["type"] == "connected", hello
        for i in range(changes):
            await ws.send(json.dumps({"type": "state_update", "payload": {"key": "n", "value": i}}))
            await recv_until(
                ws,
                lambda m, i=i: (
                    m["type"] == "state_update" and m["payload"].get("changes") == {"n": i}
                ),
            )
    finally:
        await ws.close()
    return sid


async def test_events_filter_by_type_count_and_correlation_id(stack: Stack) -> None:
    sid = await _session(stack, 4)
    actor = f"session:{sid}"
    run = asyncio.to_thread
    changed = _lines(
        await run(
            _cli,
            stack,
            "events",
            actor,
            "--type",
            "StateChanged",
            "--limit",
            "2",
            "--output",
            "json",
        )
    )
    assert [e["type"] for e in changed] == ["StateChanged"] * 2
    assert [e["data"]["changes"] for e in changed] == [{"n": 0}, {"n": 1}]
    both = _lines(
        await run(
            _cli,
            stack,
            "events",
            actor,
            "--type",
            "StateChanged",
            "--type",
            "SessionCreated",
            "--json",
        )
    )
    assert [e["type"] for e in both] == ["SessionCreated"] + ["StateChanged"] * 4
    table = await run(_cli, stack, "events", actor, "--output", "table", "--limit", "1")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == [
        "VERSION",
        "TIME",
        "TYPE",
    ]
    assert len(table.stdout.splitlines()) == 2
    # every archived event of one request, whatever its actor
    cid = changed[1]["correlation_id"]
    deadline = time.monotonic() + 15
    while True:
        found = await run(_cli, stack, "events", "--correlation-id", cid, "--output", "json")
        if found.returncode == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert [(e["actor_id"], e["version"]) for e in _lines(found)] == [
        (actor, changed[1]["version"])
    ]
    table = await run(_cli, stack, "events", "--correlation-id", cid)
    assert table.stdout.splitlines()[1].startswith(actor)
    for bad in (
        ["events", actor, "--correlation-id", cid],
        ["events"],
        ["events", actor, "--limit", "0"],
        ["events", "--correlation-id", "no-such-id-" + uuid.uuid4().hex],
    ):
        done = await run(_cli, stack, *bad)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (bad, done.stderr)


async def test_export_verify_and_trim_report_progress_on_stderr(stack: Stack) -> None:
    sid = await _session(stack, 3)
    run = asyncio.to_thread
    exported = await run(_cli, stack, "export", sid)
    lines = _lines(exported)
    assert lines[0]["type"] == "SessionCreated"
    assert f"{len(lines):,}/{len(lines):,} events" in exported.stderr
    quiet = await run(_cli, stack, "export", sid, "--quiet")
    assert "export [" not in quiet.stderr and quiet.stdout == exported.stdout  # logs may stay
    verify = await run(_cli, stack, "projections", "verify")
    assert "verify [" in verify.stderr and "log entries" in verify.stderr
    assert json.loads(verify.stdout)["sessions"] >= 1
    trim = await run(_cli, stack, "projections", "trim", "--dry-run")
    assert trim.returncode == 0, trim.stderr
    assert "partitions" in trim.stderr.splitlines()[-1] and "trim [" in trim.stderr
    assert len(_lines(trim)) == int(stack.env.get("SESSIOND_PARTITIONS", "16"))


async def test_read_commands_take_output_json_or_table(stack: Stack) -> None:
    sid = await _session(stack, 1)
    run = asyncio.to_thread
    state = _lines(await run(_cli, stack, "replay", f"session:{sid}", "--output", "json"))
    assert state[0]["state"]["state"] == {"n": 0}
    readable = await run(_cli, stack, "replay", f"session:{sid}", "-o", "table")
    assert readable.stdout.startswith(f"session:{sid} at version")
    status = _lines(await run(_cli, stack, "projections", "status", "--output", "json"))
    assert any(row["kind"] == "partition" for row in status)
    bad = await run(_cli, stack, "events", f"session:{sid}", "--output", "yaml")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_version_prints_the_package_version() -> None:
    done = subprocess.run(
        [*SESSIOND, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    name, version = done.stdout.split()
    assert name == "sessiond" and version[0].isdigit()
