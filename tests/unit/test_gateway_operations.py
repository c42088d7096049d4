"""The gateway's operations without a server: the in-memory event store, a real worker in this
process deciding the commands, no transport. What an adapter gets back (typed results, domain
errors with their codes) is what these tests read; reads that need the read models are in
tests/integration/test_gateway_operations_reads.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from actors.runtime.worker import Worker
from events.errors import SessiondError
from gateway.auth import Claims
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.operations import Context, admin, devices, handoffs, sessions, simulators
from gateway.operations import state as states
from gateway.operations.reads import current_session, is_live
from infra.store import MemoryStore
from projections.changes import live_change

pytestmark = pytest.mark.anyio

ALICE = Claims("alice")
BOB = Claims("bob")
ROOT = Claims("root", ("admin",))


@pytest.fixture
async def ctx() -> AsyncIterator[Context]:
    """A gateway process's context on a memory store, with a worker deciding its commands."""
    store = MemoryStore(4)
    worker = Worker(store, worker_id="ops", live=live_change, lease_ttl_ms=5000, timer_poll_ms=50)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 10)
    sender = store.command_sender("ops-test")
    await sender.start()
    config = GatewayConfig(
        partitions=4, gateway_id="gw-test", pod_name="gw-test", command_timeout_s=5.0
    )
    try:
        yield Context(config, store, None, sender)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await sender.close()
        await store.aclose()


def sid() -> str:
    return str(uuid.uuid4())


async def refused(code: str, call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    assert caught.value.code == code, caught.value.message
    return caught.value


# ------------------------------------------------------------------ state writes


async def test_a_snapshot_creates_the_session_and_answers_from_the_outcome(ctx: Context) -> None:
    s = sid()
    written = await states.save_snapshot(
        ctx, ALICE, states.SnapshotWrite(session_id=s, state={"n": 1})
    )
    # SessionCreated then StateReplaced: the session's version 2, the state's version 1
    assert (written.session_version, written.state_version) == (2, 1)
    assert written.key_generated and written.idempotency_key
    changed = await states.apply_changes(
        ctx, ALICE, states.StateChanges(session_id=s, changes={"m": 2}, base_version=1)
    )
    assert (changed.session_version, changed.state_version) == (3, 2)


async def test_a_retry_gets_the_first_answer_and_a_reused_key_is_refused(ctx: Context) -> None:
    s = sid()
    await states.save_snapshot(ctx, ALICE, states.SnapshotWrite(session_id=s, state={}))
    write = states.StateChanges(session_id=s, changes={"n": 1}, idempotency_key="k-1")
    first = await states.apply_changes(ctx, ALICE, write)
    # the same write from another device of the user (a client that reconnected elsewhere)
    again = await states.apply_changes(
        ctx, ALICE, msgspec.structs.replace(write, device_id="tablet")
    )
    assert again == first and not first.key_generated
    await refused(
        "IDEMPOTENCY_KEY_REUSED",
        states.apply_changes(ctx, ALICE, msgspec.structs.replace(write, changes={"n": 2})),
    )
    await refused(
        "INVALID_ARGUMENT",
        states.apply_changes(ctx, ALICE, msgspec.structs.replace(write, idempotency_key="a b")),
    )


async def test_writes_are_authorized_by_the_decider_alone(ctx: Context) -> None:
    s = sid()
    await states.save_snapshot(ctx, ALICE, states.SnapshotWrite(session_id=s, state={}))
    error = await refused(
        "SESSION_FORBIDDEN",
        states.apply_changes(ctx, BOB, states.StateChanges(session_id=s, changes={"x": 1})),
    )
    assert error.status == 403
    await refused(
        "SESSION_FORBIDDEN",
        handoffs.start_handoff(
            ctx, BOB, handoffs.HandoffStart(session_id=s, source_device="a", target_device="b")
        ),
    )
    # an admin reaches every session; the command says so, the decider lets it
    written = await states.apply_changes(
        ctx, ROOT, states.StateChanges(session_id=s, changes={"x": 1})
    )
    assert written.state_version == 2
    error = await refused(
        "SESSION_NOT_FOUND",
        states.apply_changes(ctx, ALICE, states.StateChanges(session_id=sid(), changes={"x": 1})),
    )
    assert error.status == 404


async def test_a_body_naming_another_user_is_refused_before_anything_is_sent(
    ctx: Context,
) -> None:
    await refused(
        "SESSION_FORBIDDEN",
        states.save_snapshot(
            ctx, ALICE, states.SnapshotWrite(session_id=sid(), state={}, user_id="bob")
        ),
    )


async def test_state_the_stores_cannot_hold_is_refused(ctx: Context) -> None:
    small = Context(
        msgspec.structs.replace(ctx.config, max_state_bytes=10), ctx.store, None, ctx.sender
    )
    error = await refused(
        "STATE_TOO_LARGE",
        states.save_snapshot(
            small, ALICE, states.SnapshotWrite(session_id=sid(), state={"k": "x" * 20})
        ),
    )
    assert error.status == 413
    await refused(
        "INVALID_ARGUMENT",
        states.apply_changes(
            ctx, ALICE, states.StateChanges(session_id=sid(), changes={"big": 1 << 70})
        ),
    )


async def test_a_conflict_answers_the_state_the_strategy_kept(ctx: Context) -> None:
    s = sid()
    await states.save_snapshot(ctx, ALICE, states.SnapshotWrite(session_id=s, state={"a": 1}))
    merged = await states.resolve_conflict(
        ctx,
        ALICE,
        states.ConflictResolution(
            session_id=s, client_state={"b": 2}, strategy=states.ConflictStrategy.MERGE
        ),
    )
    assert (merged.state, merged.state_version) == ({"a": 1, "b": 2}, 2)
    kept = await states.resolve_conflict(
        ctx, ALICE, states.ConflictResolution(session_id=s, client_state={"c": 3})
    )
    assert (kept.state, kept.state_version) == ({"a": 1, "b": 2}, 2)  # server wins


# ------------------------------------------------------------------ handoffs, devices


async def test_a_handoff_answers_its_token_and_its_acceptance_the_state(ctx: Context) -> None:
    s = sid()
    await states.save_snapshot(ctx, ALICE, states.SnapshotWrite(session_id=s, state={"p": 80}))
    start = handoffs.HandoffStart(
        session_id=s, source_device="phone", target_device="tablet", idempotency_key="h-1"
    )
    issued = await handoffs.start_handoff(ctx, ALICE, start)
    assert issued.expires_in == 300 and issued.expires_at > 0
    assert (await handoffs.start_handoff(ctx, ALICE, start)).token == issued.token  # a retry
    await refused(
        "HANDOFF_WRONG_DEVICE",
        handoffs.accept_handoff(
            ctx,
            ALICE,
            handoffs.HandoffAcceptance(session_id=s, token=issued.token, device_id="laptop"),
        ),
    )
    accepted = await handoffs.accept_handoff(
        ctx, ALICE, handoffs.HandoffAcceptance(session_id=s, token=issued.token, device_id="tablet")
    )
    assert (accepted.state, accepted.state_version) == ({"p": 80}, 1)
    assert (accepted.source_device, accepted.target_device) == ("phone", "tablet")
    await refused(
        "HANDOFF_ALREADY_USED",
        handoffs.accept_handoff(
            ctx, ALICE, handoffs.HandoffAcceptance(session_id=s, token=issued.token)
        ),
    )
    await refused(
        "HANDOFF_NOT_FOUND",
        handoffs.accept_handoff(ctx, ALICE, handoffs.HandoffAcceptance(session_id=s, token="nope")),
    )


async def test_disconnecting_a_device_the_session_never_saw_says_so(ctx: Context) -> None:
    s = sid()
    await states.save_snapshot(ctx, ALICE, states.SnapshotWrite(session_id=s, state={}))
    await refused(
        "DEVICE_NOT_FOUND",
        devices.disconnect_device(
            ctx, ALICE, devices.DeviceDisconnect(session_id=s, device_id="ghost")
        ),
    )


# ------------------------------------------------------------------ sessions


async def test_seed_003_start_refresh_end(ctx: Context) -> None:
    s, router = sid(), sid()
    started = await sessions.start_session(
        ctx, ALICE, sessions.SessionStart(session_id=s, router_id=router)
    )
    assert started.session_version == 1
    again = await sessions.start_session(
        ctx, ALICE, sessions.SessionStart(session_id=s, router_id=router)
    )
    assert again.session_version == 1  # live: a no-op
    await refused(
        "SESSION_FORBIDDEN",
        sessions.start_session(ctx, BOB, sessions.SessionStart(session_id=s, router_id=router)),
    )
    assert (
        await sessions.refresh_session(ctx, ALICE, sessions.SessionChange(session_id=s))
    ).session_version == 2
    assert (
        await sessions.end_session(
            ctx, ALICE, sessions.SessionChange(session_id=s, router_id=router)
        )
    ).session_version == 3
    await refused(
        "SESSION_ENDED", sessions.refresh_session(ctx, ALICE, sessions.SessionChange(session_id=s))
    )


async def test_the_users_session_on_a_device_is_reused_while_live_then_replaced(
    ctx: Context,
) -> None:
    """No command asks whether it is live: the session's state is read (its events folded)."""
    first = await sessions.session_for_device(ctx, ALICE, sessions.DeviceSession(device_id="phone"))
    assert first.created
    again = await sessions.session_for_device(ctx, ALICE, sessions.DeviceSession(device_id="phone"))
    assert again == sessions.SessionOnDevice(session_id=first.session_id, created=False)
    other = await sessions.session_for_device(ctx, BOB, sessions.DeviceSession(device_id="phone"))
    assert other.created and other.session_id != first.session_id
    await sessions.end_session(ctx, ALICE, sessions.SessionChange(session_id=first.session_id))
    session, version = await current_session(ctx, first.session_id)
    assert (session, version) == (None, 2)  # ended: no row, but it existed
    fresh = await sessions.session_for_device(ctx, ALICE, sessions.DeviceSession(device_id="phone"))
    assert fresh.created and fresh.session_id != first.session_id
    session, _ = await current_session(ctx, fresh.session_id)
    assert session is not None and session.user_id == "alice" and is_live(session, 0)


async def test_concurrent_requests_for_one_device_agree_on_one_session(ctx: Context) -> None:
    found = await asyncio.gather(
        *(
            sessions.session_for_device(ctx, ALICE, sessions.DeviceSession(device_id="laptop"))
            for _ in range(5)
        )
    )
    assert len({f.session_id for f in found}) == 1
    assert sum(f.created for f in found) == 1


async def test_a_device_id_is_required(ctx: Context) -> None:
    await refused(
        "INVALID_ARGUMENT",
        sessions.session_for_device(ctx, ALICE, sessions.DeviceSession(device_id="")),
    )


# ------------------------------------------------------------------ simulators


async def test_a_simulator_start_names_the_same_simulator_on_a_retry(ctx: Context) -> None:
    s = sid()
    await sessions.start_session(ctx, ALICE, sessions.SessionStart(session_id=s, router_id=s))
    start = simulators.SimulatorStart(session_id=s, idempotency_key="sim-1")
    started = await simulators.start_simulator(ctx, ALICE, start)
    assert started.initial_symbols == list(simulators.DEFAULT_SYMBOLS)
    assert started.initial_cash == simulators.DEFAULT_CASH
    assert (await simulators.start_simulator(ctx, ALICE, start)) == started
    error = await refused(
        "SIMULATOR_ALREADY_ACTIVE",
        simulators.start_simulator(ctx, ALICE, simulators.SimulatorStart(session_id=s)),
    )
    assert error.status == 409


async def test_a_named_simulator_is_stopped_by_its_owner_or_an_admin_only(ctx: Context) -> None:
    s = sid()
    await sessions.start_session(ctx, ALICE, sessions.SessionStart(session_id=s, router_id=s))
    started = await simulators.start_simulator(ctx, ALICE, simulators.SimulatorStart(session_id=s))
    stop = simulators.SimulatorStop(session_id=s, simulator_id=started.simulator_id)

    async def created() -> None:  # the session's policy creates the simulator actor
        while True:
            try:
                return await simulators.stop_simulator(ctx, BOB, stop)
            except ApiError as exc:
                if exc.code != "SIMULATOR_NOT_FOUND":
                    raise
            await asyncio.sleep(0.02)

    await refused("SESSION_FORBIDDEN", asyncio.wait_for(created(), 5))
    stopped = await simulators.stop_simulator(ctx, ROOT, stop)
    assert stopped.simulator_id == started.simulator_id and stopped.simulator is None


async def test_without_a_read_model_a_session_has_no_simulator_to_look_up(ctx: Context) -> None:
    s = sid()
    await sessions.start_session(ctx, ALICE, sessions.SessionStart(session_id=s, router_id=s))
    await refused(
        "SIMULATOR_NOT_FOUND",
        simulators.stop_simulator(ctx, ALICE, simulators.SimulatorStop(session_id=s)),
    )
    await refused("SESSION_FORBIDDEN", simulators.simulator_status(ctx, BOB, s))
    await refused("SESSION_NOT_FOUND", simulators.simulator_status(ctx, ALICE, sid()))


# ------------------------------------------------------------------ admin


async def test_a_broadcast_needs_the_admin_role_and_goes_out_in_one_shape(ctx: Context) -> None:
    got: list[bytes] = []
    feed = ctx.store.feed.subscriber(lambda s, d: None, on_broadcast=got.append, name="t")
    await feed.start()
    try:
        await refused(
            "ADMIN_REQUIRED", admin.broadcast(ctx, ALICE, admin.Broadcast(payload={"message": "x"}))
        )
        note = admin.Broadcast.notification("maintenance", "notification", "2030-01-01T00:00Z")
        assert (await admin.broadcast(ctx, ROOT, note)).gateways == 1
        await admin.broadcast(ctx, ROOT, admin.Broadcast(payload={"m": 1}, admin_only=True))
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert [msgspec.json.decode(g) for g in got] == [
            {
                "payload": {
                    "message": "maintenance",
                    "type": "notification",
                    "timestamp": "2030-01-01T00:00Z",
                },
                "admin_only": False,
            },
            {"payload": {"m": 1}, "admin_only": True},
        ]
    finally:
        await feed.close()


async def test_admin_reads_need_the_admin_role(ctx: Context) -> None:
    await refused("ADMIN_REQUIRED", admin.admin_metrics(ctx, ALICE, "all"))
    await refused("NOT_FOUND", admin.admin_metrics(ctx, ROOT, "nope"))
    metrics = await admin.admin_metrics(ctx, ROOT, "connections")
    assert metrics["total_connections"] == 0 and "timestamp" in metrics
    assert await admin.admin_sessions(ctx, ROOT, None) == admin.SessionList(sessions=[], count=0)
    await refused("ADMIN_REQUIRED", admin.admin_connections(ctx, ALICE))
    assert await admin.admin_connections(ctx, ROOT) == admin.ConnectionList(connections=[], count=0)


def test_edge_errors_are_part_of_the_one_exception_tree() -> None:
    from gateway.protocol import ProtocolError
    from gateway.validate import InvalidInput

    for error in (
        ApiError(404, "X", "m"),
        InvalidInput("INVALID_ARGUMENT", "m"),
        ProtocolError("UNKNOWN_TYPE", "m"),
    ):
        assert isinstance(error, SessiondError) and error.message == "m"
    assert ProtocolError("UNKNOWN_TYPE", "m").status == 400
