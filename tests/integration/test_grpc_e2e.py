"""The gRPC API end to end: the real grpcio client against real worker, projector and gateway
processes (the gateway serves gRPC on its own GRPC_ADDR), on real Redis and PostgreSQL.

Every rpc, bad input, auth failures, idempotent retries, the health and reflection services,
and a Watch stream dropped and resumed from its last version without a gap.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import grpc
import msgspec
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.grpc import sessiond_pb2 as pb
from gateway.grpc import sessiond_pb2_grpc as pb_grpc
from tests.integration.gwstack import Stack, connect_ws, recv_until

pytestmark = pytest.mark.anyio


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        yield ch


def auth(stack: Stack, user: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.token(user)}"),)


def new_id() -> str:
    return str(uuid.uuid4())


async def refused(call) -> tuple[grpc.StatusCode, str, dict]:
    """The status, the error code and the error body of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = info.value
    trailers = dict(err.trailing_metadata() or ())
    body = msgspec.json.decode(trailers["sessiond-error-bin"]) if trailers else {}
    return err.code(), trailers.get("sessiond-error-code", ""), body


async def started(api: pb_grpc.SessionServiceStub, md, sid: str | None = None) -> str:
    sid = sid or new_id()
    await api.StartSession(pb.StartSessionRequest(session_id=sid, router_id=new_id()), metadata=md)
    return sid


async def test_every_call_of_a_session_life(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-alice")
    sid, router = new_id(), new_id()
    ack = await api.StartSession(
        pb.StartSessionRequest(session_id=sid, router_id=router), metadata=md
    )
    assert ack.session_version >= 1 and ack.key_generated and ack.idempotency_key
    refreshed = await api.RefreshSession(pb.RefreshSessionRequest(session_id=sid), metadata=md)
    assert refreshed.session_version > ack.session_version

    saved = await api.SaveSnapshot(
        pb.SaveSnapshotRequest(
            session_id=sid,
            state_json='{"cart": [1, 2], "n": 9007199254740993}',
            version=1,
            device_id="svc",
        ),
        metadata=md,
    )
    assert saved.state_version == 1
    patched = await api.ApplyChanges(
        pb.ApplyChangesRequest(
            session_id=sid, changes_json='{"theme": "dark"}', deleted_keys=["cart"], base_version=1
        ),
        metadata=md,
    )
    assert patched.state_version == 2
    session = await api.GetSession(
        pb.GetSessionRequest(session_id=sid, min_version=patched.ack.session_version),
        metadata=md,
    )
    assert json.loads(session.state_json) == {"n": 9007199254740993, "theme": "dark"}
    assert session.version == 2 and session.user_id == "g-alice" and session.status == "ACTIVE"
    resolved = await api.ResolveConflict(
        pb.ResolveConflictRequest(
            session_id=sid,
            client_state_json='{"theme": "light", "x": 1}',
            strategy=pb.MERGE,
            client_version=2,
        ),
        metadata=md,
    )
    assert json.loads(resolved.state_json)["x"] == 1 and resolved.state_version == 3

    issued = await api.StartHandoff(
        pb.StartHandoffRequest(session_id=sid, source_device="phone", target_device="tablet"),
        metadata=md,
    )
    assert issued.token and issued.expires_in == 300
    accepted = await api.AcceptHandoff(
        pb.AcceptHandoffRequest(session_id=sid, token=issued.token, device_id="tablet"),
        metadata=md,
    )
    assert accepted.state_version == 3 and json.loads(accepted.state_json)["x"] == 1
    code, error, _ = await refused(
        api.AcceptHandoff(
            pb.AcceptHandoffRequest(session_id=sid, token=issued.token, device_id="tablet"),
            metadata=md,
        )
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "HANDOFF_ALREADY_USED")

    ws, hello = await connect_ws(stack, "g-alice", "laptop", sid)
    try:
        assert hello["type"] == "connected", hello
        for _ in range(50):
            listed = await api.ListDevices(pb.ListDevicesRequest(session_id=sid), metadata=md)
            if any(d.device_id == "laptop" and d.online for d in listed.devices):
                break
            await asyncio.sleep(0.1)
        assert [d.device_id for d in listed.devices if d.online] == ["laptop"]
        gone = await api.DisconnectDevice(
            pb.DisconnectDeviceRequest(session_id=sid, device_id="laptop"), metadata=md
        )
        assert gone.session_version > 0
        with pytest.raises(Exception):  # noqa: B017 - the device's socket is closed for it
            await recv_until(ws, lambda m: False, timeout=5)
    finally:
        await ws.close()

    sim = await api.StartSimulator(
        pb.StartSimulatorRequest(session_id=sid, initial_symbols=["AAPL"], initial_cash=500.0),
        metadata=md,
    )
    assert sim.simulator_id and list(sim.initial_symbols) == ["AAPL"]
    assert sim.initial_cash == 500.0
    for _ in range(50):
        try:
            status = await api.GetSimulator(pb.GetSimulatorRequest(session_id=sid), metadata=md)
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    assert status.simulator_id == sim.simulator_id and status.session_id == sid
    stopped = await api.StopSimulator(pb.StopSimulatorRequest(session_id=sid), metadata=md)
    assert stopped.simulator_id == sim.simulator_id

    ended = await api.EndSession(
        pb.EndSessionRequest(session_id=sid, router_id=router), metadata=md
    )
    assert ended.session_version > stopped.ack.session_version
    code, error, _ = await refused(
        api.RefreshSession(pb.RefreshSessionRequest(session_id=sid), metadata=md)
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_ENDED")


async def test_bad_input_is_invalid_argument_with_its_code(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-bob")
    code, error, body = await refused(
        api.StartSession(
            pb.StartSessionRequest(session_id="not-a-uuid", router_id=new_id()), metadata=md
        )
    )
    assert (code, error) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert "session_id" in body["error"]["message"]
    sid = await started(api, md)
    for state_json, expected in (
        ("[1, 2]", "INVALID_ARGUMENT"),
        ("{", "MALFORMED_JSON"),
        ('{"a": 1e999999}', None),
        ("", "INVALID_ARGUMENT"),
    ):
        code, error, _ = await refused(
            api.SaveSnapshot(
                pb.SaveSnapshotRequest(session_id=sid, state_json=state_json), metadata=md
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, state_json
        assert expected is None or error == expected, (state_json, error)
    big = json.dumps({"blob": "x" * (300 * 1024)})
    code, error, _ = await refused(
        api.SaveSnapshot(pb.SaveSnapshotRequest(session_id=sid, state_json=big), metadata=md)
    )
    assert (code, error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STATE_TOO_LARGE")
    code, error, _ = await refused(
        api.ApplyChanges(
            pb.ApplyChangesRequest(session_id=sid, changes_json='{"a": 1}', base_version=7),
            metadata=md,
        )
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_CONFLICT")
    code, error, _ = await refused(
        api.ResolveConflict(
            pb.ResolveConflictRequest(session_id=sid, client_state_json="{}", strategy=7),
            metadata=md,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, error, _ = await refused(
        api.GetSession(pb.GetSessionRequest(session_id=new_id()), metadata=md)
    )
    assert (code, error) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    code, error, _ = await refused(
        api.GetSimulator(pb.GetSimulatorRequest(session_id=sid), metadata=md)
    )
    assert (code, error) == (grpc.StatusCode.NOT_FOUND, "SIMULATOR_NOT_FOUND")
    code, error, _ = await refused(
        api.StartHandoff(
            pb.StartHandoffRequest(session_id=sid, source_device="", target_device="b"), metadata=md
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_auth_failures(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    request = pb.RefreshSessionRequest(session_id=new_id())
    code, error, _ = await refused(api.RefreshSession(request))
    assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    code, _, _ = await refused(
        api.RefreshSession(request, metadata=(("authorization", "Bearer nonsense"),))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    refresh = stack.token("g-carol", kind="refresh")  # a refresh token is no access token
    code, _, _ = await refused(
        api.RefreshSession(request, metadata=(("authorization", f"Bearer {refresh}"),))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    sid = await started(api, auth(stack, "g-carol"))
    mallory = auth(stack, "g-mallory")
    code, error, _ = await refused(
        api.GetSession(pb.GetSessionRequest(session_id=sid), metadata=mallory)
    )
    assert (code, error) == (grpc.StatusCode.PERMISSION_DENIED, "SESSION_FORBIDDEN")
    code, _, _ = await refused(
        api.ApplyChanges(
            pb.ApplyChangesRequest(session_id=sid, changes_json='{"a": 1}'), metadata=mallory
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _, _ = await refused(api.Watch(pb.WatchRequest(session_id=sid), metadata=mallory).read())
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_retry_with_its_key_is_applied_once(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-dave")
    sid = await started(api, md)
    request = pb.ApplyChangesRequest(session_id=sid, changes_json='{"n": 1}', idempotency_key="k-1")
    first = await api.ApplyChanges(request, metadata=md)
    again = await api.ApplyChanges(request, metadata=md)
    assert again == first and not first.ack.key_generated
    code, error, _ = await refused(
        api.ApplyChanges(
            pb.ApplyChangesRequest(session_id=sid, changes_json='{"n": 2}', idempotency_key="k-1"),
            metadata=md,
        )
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")


async def test_health_and_reflection(stack: Stack, channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "sessiond.v1.SessionService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflect.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    services = {s.name for s in (await call.read()).list_services_response.service}
    await call.write(
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="sessiond.v1.SessionService")
    )
    files = (await call.read()).file_descriptor_response.file_descriptor_proto
    await call.done_writing()
    assert {"sessiond.v1.SessionService", "grpc.health.v1.Health"} <= services
    assert files  # a client can build its stubs from the server alone


async def _changes(stream, until: int, timeout: float = 10.0) -> list[pb.Change]:
    """Read versioned changes up to version `until`."""
    got: list[pb.Change] = []
    async with asyncio.timeout(timeout):
        while (change := await stream.read()) is not grpc.aio.EOF:
            if change.HasField("version"):
                got.append(change)
                if change.version >= until:
                    return got
    raise AssertionError(f"stream ended at {[c.version for c in got]}")


async def test_watch_resumes_after_a_dropped_connection_without_gaps(stack: Stack) -> None:
    md = auth(stack, "g-erin")
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        api = pb_grpc.SessionServiceStub(ch)
        sid = await started(api, md)
        stream = api.Watch(pb.WatchRequest(session_id=sid), metadata=md)
        hello = await stream.read()
        assert hello.type == "connected" and not hello.HasField("version")
        joined = json.loads(hello.payload_json)["version"]
        last = 0
        for i in range(3):
            last = (
                await api.ApplyChanges(
                    pb.ApplyChangesRequest(session_id=sid, changes_json=json.dumps({"i": i})),
                    metadata=md,
                )
            ).ack.session_version
        live = await _changes(stream, last)
        assert [c.version for c in live] == list(range(joined + 1, last + 1))
        assert all(c.type == "state_update" for c in live)
        assert json.loads(live[-1].payload_json)["changes"] == {"i": 2}
    # the connection is gone (channel closed); writes go on meanwhile, over another channel
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        api = pb_grpc.SessionServiceStub(ch)
        for i in range(3, 8):
            newest = (
                await api.ApplyChanges(
                    pb.ApplyChangesRequest(session_id=sid, changes_json=json.dumps({"i": i})),
                    metadata=md,
                )
            ).ack.session_version
        resumed = api.Watch(pb.WatchRequest(session_id=sid, since=live[-1].version), metadata=md)
        hello = await resumed.read()
        assert json.loads(hello.payload_json)["resumed_from"] == live[-1].version
        caught_up = await _changes(resumed, newest)
        assert [c.version for c in caught_up] == list(range(live[-1].version + 1, newest + 1))
        assert [json.loads(c.payload_json)["changes"]["i"] for c in caught_up] == [3, 4, 5, 6, 7]
        # and live again after the catch-up
        after = (
            await api.ApplyChanges(
                pb.ApplyChangesRequest(session_id=sid, changes_json='{"i": 8}'), metadata=md
            )
        ).ack.session_version
        assert [c.version for c in await _changes(resumed, after)] == [after]
        resumed.cancel()


async def test_watch_sees_what_a_websocket_sees(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-frank")
    sid = await started(api, md)
    stream = api.Watch(pb.WatchRequest(session_id=sid), metadata=md)
    start = json.loads((await stream.read()).payload_json)["version"]
    ws, _ = await connect_ws(stack, "g-frank", "laptop", sid, since=start)
    try:
        last = (
            await api.SaveSnapshot(
                pb.SaveSnapshotRequest(session_id=sid, state_json='{"a": 1}'), metadata=md
            )
        ).ack.session_version
        over_grpc = await _changes(stream, last)
        over_ws = []
        while not over_ws or over_ws[-1]["payload"]["version"] < last:
            over_ws.append(
                await recv_until(
                    ws, lambda m: "version" in m.get("payload", {}) and m["type"] != "connected"
                )
            )
        assert [(c.type, c.version, json.loads(c.payload_json)) for c in over_grpc] == [
            (m["type"], m["payload"]["version"], m["payload"]) for m in over_ws
        ]
    finally:
        await ws.close()
        stream.cancel()


async def test_watch_ends_when_the_session_ends_and_refuses_bad_requests(
    stack: Stack, channel
) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-gina")
    sid = await started(api, md)
    stream = api.Watch(pb.WatchRequest(session_id=sid), metadata=md)
    await stream.read()
    await api.EndSession(pb.EndSessionRequest(session_id=sid), metadata=md)
    seen = []
    while (change := await stream.read()) is not grpc.aio.EOF:
        seen.append(change)
    assert seen and json.loads(seen[-1].payload_json)["status"] == "ENDED"
    assert await stream.code() == grpc.StatusCode.OK
    for request, expected in (
        (pb.WatchRequest(session_id="nope"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.WatchRequest(session_id=new_id()), grpc.StatusCode.NOT_FOUND),
        (pb.WatchRequest(session_id=sid, since=-1), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        code, _, _ = await refused(api.Watch(request, metadata=md).read())
        assert code == expected, request
    code, _, _ = await refused(api.Watch(pb.WatchRequest(session_id=sid)).read())
    assert code == grpc.StatusCode.UNAUTHENTICATED
