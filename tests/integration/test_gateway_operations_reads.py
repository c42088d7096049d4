"""The gateway's reads on a real PostgreSQL read model: the memory store and a worker in this
process decide the writes; the read model is written by the projections' own pure fold and
writers (`projections.model.Model`, `projections.store`), up to where a test says the projector
has got, so a lagging read model is exactly what a test makes it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from actors.runtime.worker import Worker
from events.codec import decode_event
from events.ids import session_actor
from gateway.auth import Claims
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.operations import Context, devices, sessions
from gateway.operations import state as states
from gateway.operations.reads import current_session, is_live
from infra.store import MemoryStore
from projections.changes import live_change
from projections.migrate import migrate
from projections.model import Model
from projections.store import write_actor_versions, write_changes

pytestmark = pytest.mark.anyio

ALICE = Claims("alice")
BOB = Claims("bob")
ROOT = Claims("root", ("admin",))


@pytest.fixture
async def ctx(database_url: str) -> AsyncIterator[Context]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    store = MemoryStore(4)
    worker = Worker(store, worker_id="ops-reads", live=live_change, lease_ttl_ms=5000)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 10)
    sender = store.command_sender("ops-reads")
    await sender.start()
    config = GatewayConfig(partitions=4, gateway_id="gw-test", pod_name="gw-test")
    try:
        yield Context(config, store, pool, sender)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await sender.close()
        await store.aclose()
        await pool.close()


async def project(ctx: Context, session_id: str) -> int:
    """Project the session's events so far, as the projector would have; returns the version
    the read model now holds."""
    model = Model()
    envs = await ctx.store.actors.read(
        ctx.store.partition_of(session_id), session_actor(session_id)
    )
    for env in envs:
        model.apply(env, decode_event(env.data, env.type))
    assert ctx.db is not None
    async with ctx.db.pool.acquire() as conn:
        # the session's rows are exactly what the fold says (an ended session has none)
        await conn.execute("DELETE FROM session.active_sessions WHERE session_id = $1", session_id)
        await write_changes(conn, model.changes())
        await write_actor_versions(conn, model.actors.values())
    return envs[-1].version


def sid() -> str:
    return str(uuid.uuid4())


async def test_the_current_session_is_the_row_with_the_unprojected_tail_folded_over(
    ctx: Context,
) -> None:
    s = sid()
    await sessions.start_session(ctx, ALICE, sessions.SessionStart(session_id=s, router_id=s))
    assert await project(ctx, s) == 1
    projected, version = await current_session(ctx, s)
    assert projected is not None and version == 1
    await sessions.refresh_session(ctx, ALICE, sessions.SessionChange(session_id=s))
    refreshed, version = await current_session(ctx, s)  # the read model still says version 1
    assert refreshed is not None and version == 2
    assert refreshed.expires_at > projected.expires_at and is_live(refreshed, 0)
    await sessions.end_session(ctx, ALICE, sessions.SessionChange(session_id=s))
    assert await current_session(ctx, s) == (None, 3)
    assert await project(ctx, s) == 3  # the row is gone; the version stays
    assert await current_session(ctx, s) == (None, 3)
    assert await current_session(ctx, sid()) == (None, 0)


async def test_reads_answer_the_owner_and_admins_only(ctx: Context) -> None:
    s = sid()
    await states.save_snapshot(
        ctx, ALICE, states.SnapshotWrite(session_id=s, state={"n": 1}, device_id="phone")
    )
    await project(ctx, s)
    snap = await states.read_snapshot(ctx, ALICE, states.SnapshotRead(session_id=s))
    assert (snap.user_id, snap.state_data, snap.version, snap.session_version) == (
        "alice",
        {"n": 1},
        1,
        2,
    )
    assert (await states.read_snapshot(ctx, ROOT, states.SnapshotRead(session_id=s))) == snap
    for call in (
        states.read_snapshot(ctx, BOB, states.SnapshotRead(session_id=s)),
        devices.list_devices(ctx, BOB, s),
    ):
        with pytest.raises(ApiError) as caught:
            await call
        assert (caught.value.status, caught.value.code) == (403, "SESSION_FORBIDDEN")
    with pytest.raises(ApiError) as caught:
        await devices.list_devices(ctx, ALICE, sid())
    assert (caught.value.status, caught.value.code) == (404, "SESSION_NOT_FOUND")
    assert await devices.list_devices(ctx, ALICE, s) == []


async def test_an_unprojected_session_is_read_as_its_owners_from_its_first_event(
    ctx: Context,
) -> None:
    s = sid()
    await states.save_snapshot(ctx, ALICE, states.SnapshotWrite(session_id=s, state={}))
    assert await devices.list_devices(ctx, ALICE, s) == []  # owner known from the event
    with pytest.raises(ApiError) as caught:
        await devices.list_devices(ctx, BOB, s)
    assert caught.value.code == "SESSION_FORBIDDEN"


async def test_a_snapshot_read_waits_for_the_version_a_write_answered(ctx: Context) -> None:
    s = sid()
    written = await states.save_snapshot(
        ctx, ALICE, states.SnapshotWrite(session_id=s, state={"v": 1})
    )
    await project(ctx, s)
    changed = await states.apply_changes(
        ctx, ALICE, states.StateChanges(session_id=s, changes={"v": 2})
    )
    assert changed.session_version == written.session_version + 1

    async def projector_catches_up() -> None:
        await asyncio.sleep(0.2)
        await project(ctx, s)

    catching_up = asyncio.create_task(projector_catches_up())
    snap = await states.read_snapshot(
        ctx, ALICE, states.SnapshotRead(session_id=s, min_version=changed.session_version)
    )
    await catching_up
    assert (snap.state_data, snap.session_version) == ({"v": 2}, changed.session_version)


async def test_a_device_known_only_to_the_read_model_finds_its_session(ctx: Context) -> None:
    """A session started by a snapshot names its device; the store's device index does not
    know it, the read model does."""
    s = sid()
    await states.save_snapshot(
        ctx, ALICE, states.SnapshotWrite(session_id=s, state={}, device_id="watch")
    )
    await project(ctx, s)
    assert await sessions.session_on_device(ctx, "alice", "watch") == s
    found = await sessions.session_for_device(ctx, ALICE, sessions.DeviceSession(device_id="watch"))
    assert found == sessions.SessionOnDevice(session_id=s, created=False)
    assert await sessions.session_on_device(ctx, "bob", "watch") is None
