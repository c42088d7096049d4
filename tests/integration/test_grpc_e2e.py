"""The gRPC API end to end: the real grpcio client against real worker, projector and gateway
processes (the gateway serves gRPC on its own GRPC_ADDR), on real Redis and PostgreSQL.

Every rpc, bad input, auth failures, idempotent retries, the health and reflection services,
and a Watch stream dropped and resumed from its last version without a gap.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator

import grpc
import msgspec
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.grpc import sessiond_pb2 as pb
from gateway.grpc import sessiond_pb2_grpc as pb_grpc
from tests.integration.gwstack import ROOT, SESSIOND, Stack, connect_ws, free_port, recv_until

SERVICE = "sessiond.v1.SessionService"


@pytest.fixture
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    """The blocking client (grpc.aio's binds to the first event loop it meets, and each test
    runs on a new one)."""
    with grpc.insecure_channel(stack.grpc_target) as ch:
        yield ch


def auth(stack: Stack, user: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.token(user)}"),)


def new_id() -> str:
    return str(uuid.uuid4())


def refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, dict]:
    """The status, the error code and the error body of a call that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    trailers = dict(err.trailing_metadata() or ())
    body = msgspec.json.decode(trailers["sessiond-error-bin"]) if trailers else {}
    return err.code(), trailers.get("sessiond-error-code", ""), body


def started(api: pb_grpc.SessionServiceStub, md, sid: str | None = None) -> str:
    sid = sid or new_id()
    api.StartSession(pb.StartSessionRequest(session_id=sid, router_id=new_id()), metadata=md)
    return sid


@pytest.mark.anyio
async def test_every_call_of_a_session_life(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-alice")
    sid, router = new_id(), new_id()
    ack = api.StartSession(pb.StartSessionRequest(session_id=sid, router_id=router), metadata=md)
    assert ack.session_version >= 1 and ack.key_generated and ack.idempotency_key
    refreshed = api.RefreshSession(pb.RefreshSessionRequest(session_id=sid), metadata=md)
    assert refreshed.session_version > ack.session_version

    saved = api.SaveSnapshot(
        pb.SaveSnapshotRequest(
            session_id=sid,
            state_json='{"cart": [1, 2], "n": 9007199254740993}',
            version=1,
            device_id="svc",
        ),
        metadata=md,
    )
    assert saved.state_version == 1
    patched = api.ApplyChanges(
        pb.ApplyChangesRequest(
            session_id=sid, changes_json='{"theme": "dark"}', deleted_keys=["cart"], base_version=1
        ),
        metadata=md,
    )
    assert patched.state_version == 2
    session = api.GetSession(
        pb.GetSessionRequest(session_id=sid, min_version=patched.ack.session_version),
        metadata=md,
    )
    assert json.loads(session.state_json) == {"n": 9007199254740993, "theme": "dark"}
    assert session.version == 2 and session.user_id == "g-alice" and session.status == "ACTIVE"
    resolved = api.ResolveConflict(
        pb.ResolveConflictRequest(
            session_id=sid,
            client_state_json='{"theme": "light", "x": 1}',
            strategy=pb.MERGE,
            client_version=2,
        ),
        metadata=md,
    )
    assert json.loads(resolved.state_json)["x"] == 1 and resolved.state_version == 3

    issued = api.StartHandoff(
        pb.StartHandoffRequest(session_id=sid, source_device="phone", target_device="tablet"),
        metadata=md,
    )
    assert issued.token and issued.expires_in == 300
    accepted = api.AcceptHandoff(
        pb.AcceptHandoffRequest(session_id=sid, token=issued.token, device_id="tablet"),
        metadata=md,
    )
    assert accepted.state_version == 3 and json.loads(accepted.state_json)["x"] == 1
    code, error, _ = refused(
        lambda: api.AcceptHandoff(
            pb.AcceptHandoffRequest(session_id=sid, token=issued.token, device_id="tablet"),
            metadata=md,
        )
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "HANDOFF_ALREADY_USED")

    ws, hello = await connect_ws(stack, "g-alice", "laptop", sid)
    try:
        assert hello["type"] == "connected", hello
        for _ in range(150):
            listed = api.ListDevices(pb.ListDevicesRequest(session_id=sid), metadata=md)
            if any(d.device_id == "laptop" and d.online for d in listed.devices):
                break
            await asyncio.sleep(0.1)
        assert [d.device_id for d in listed.devices if d.online] == ["laptop"]
        gone = api.DisconnectDevice(
            pb.DisconnectDeviceRequest(session_id=sid, device_id="laptop"), metadata=md
        )
        assert gone.session_version > 0
        with pytest.raises(Exception):  # noqa: B017 - the device's socket is closed for it
            await recv_until(ws, lambda m: False, timeout=5)
    finally:
        await ws.close()

    sim = api.StartSimulator(
        pb.StartSimulatorRequest(session_id=sid, initial_symbols=["AAPL"], initial_cash=500.0),
        metadata=md,
    )
    assert sim.simulator_id and list(sim.initial_symbols) == ["AAPL"]
    assert sim.initial_cash == 500.0
    for _ in range(150):  # until the projector has the simulator's row
        try:
            status = api.GetSimulator(pb.GetSimulatorRequest(session_id=sid), metadata=md)
            break
        except grpc.RpcError:
            await asyncio.sleep(0.1)
    assert status.simulator_id == sim.simulator_id and status.session_id == sid
    stopped = api.StopSimulator(pb.StopSimulatorRequest(session_id=sid), metadata=md)
    assert stopped.simulator_id == sim.simulator_id

    ended = api.EndSession(pb.EndSessionRequest(session_id=sid, router_id=router), metadata=md)
    assert ended.session_version > stopped.ack.session_version
    code, error, _ = refused(
        lambda: api.RefreshSession(pb.RefreshSessionRequest(session_id=sid), metadata=md)
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_ENDED")


def test_bad_input_is_invalid_argument_with_its_code(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-bob")
    code, error, body = refused(
        lambda: api.StartSession(
            pb.StartSessionRequest(session_id="not-a-uuid", router_id=new_id()), metadata=md
        )
    )
    assert (code, error) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert "session_id" in body["error"]["message"]
    sid = started(api, md)
    for state_json, expected in (
        ("[1, 2]", "INVALID_ARGUMENT"),
        ("{", "MALFORMED_JSON"),
        ('{"a": 1e999999}', None),
        ("", "INVALID_ARGUMENT"),
    ):
        code, error, _ = refused(
            lambda text=state_json: api.SaveSnapshot(
                pb.SaveSnapshotRequest(session_id=sid, state_json=text), metadata=md
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, state_json
        assert expected is None or error == expected, (state_json, error)
    big = json.dumps({"blob": "x" * (300 * 1024)})
    code, error, _ = refused(
        lambda: api.SaveSnapshot(
            pb.SaveSnapshotRequest(session_id=sid, state_json=big), metadata=md
        )
    )
    assert (code, error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STATE_TOO_LARGE")
    code, error, _ = refused(
        lambda: api.ApplyChanges(
            pb.ApplyChangesRequest(session_id=sid, changes_json='{"a": 1}', base_version=7),
            metadata=md,
        )
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_CONFLICT")
    code, error, _ = refused(
        lambda: api.ResolveConflict(
            pb.ResolveConflictRequest(session_id=sid, client_state_json="{}", strategy=7),
            metadata=md,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, error, _ = refused(
        lambda: api.GetSession(pb.GetSessionRequest(session_id=new_id()), metadata=md)
    )
    assert (code, error) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    code, error, _ = refused(
        lambda: api.GetSimulator(pb.GetSimulatorRequest(session_id=sid), metadata=md)
    )
    assert (code, error) == (grpc.StatusCode.NOT_FOUND, "SIMULATOR_NOT_FOUND")
    code, error, _ = refused(
        lambda: api.StartHandoff(
            pb.StartHandoffRequest(session_id=sid, source_device="", target_device="b"), metadata=md
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_auth_failures(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    request = pb.RefreshSessionRequest(session_id=new_id())
    code, error, _ = refused(lambda: api.RefreshSession(request))
    assert (code, error) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    code, _, _ = refused(
        lambda: api.RefreshSession(request, metadata=(("authorization", "Bearer nonsense"),))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    refresh = stack.token("g-carol", kind="refresh")  # a refresh token is no access token
    code, _, _ = refused(
        lambda: api.RefreshSession(request, metadata=(("authorization", f"Bearer {refresh}"),))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    sid = started(api, auth(stack, "g-carol"))
    mallory = auth(stack, "g-mallory")
    code, error, _ = refused(
        lambda: api.GetSession(pb.GetSessionRequest(session_id=sid), metadata=mallory)
    )
    assert (code, error) == (grpc.StatusCode.PERMISSION_DENIED, "SESSION_FORBIDDEN")
    code, _, _ = refused(
        lambda: api.ApplyChanges(
            pb.ApplyChangesRequest(session_id=sid, changes_json='{"a": 1}'), metadata=mallory
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _, _ = refused(
        lambda: next(api.Watch(pb.WatchRequest(session_id=sid), metadata=mallory, timeout=10))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_a_retry_with_its_key_is_applied_once(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-dave")
    sid = started(api, md)
    request = pb.ApplyChangesRequest(session_id=sid, changes_json='{"n": 1}', idempotency_key="k-1")
    first = api.ApplyChanges(request, metadata=md)
    again = api.ApplyChanges(request, metadata=md)
    assert again == first and not first.ack.key_generated
    code, error, _ = refused(
        lambda: api.ApplyChanges(
            pb.ApplyChangesRequest(session_id=sid, changes_json='{"n": 2}', idempotency_key="k-1"),
            metadata=md,
        )
    )
    assert (code, error) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")


def test_health_and_reflection(stack: Stack, channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "sessiond.v1.SessionService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    listed, found = reflect.ServerReflectionInfo(
        iter(
            [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
            ]
        )
    )
    services = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= services
    assert found.file_descriptor_response.file_descriptor_proto  # stubs from the server alone


def watch(api: pb_grpc.SessionServiceStub, md, sid: str, since: int | None = None):
    """A Watch call (bounded: a test never hangs on it) and its `connected` message."""
    request = pb.WatchRequest(session_id=sid, since=since)
    stream = api.Watch(request, metadata=md, timeout=30)
    hello = next(stream)
    assert hello.type == "connected" and not hello.HasField("version"), hello
    return stream, json.loads(hello.payload_json)


def changes(stream, until: int) -> list[pb.Change]:
    """Read the versioned changes up to version `until`."""
    got: list[pb.Change] = []
    for change in stream:
        if change.HasField("version"):
            got.append(change)
            if change.version >= until:
                return got
    raise AssertionError(f"stream ended at {[c.version for c in got]}")


def write(api: pb_grpc.SessionServiceStub, md, sid: str, changes: dict) -> int:
    request = pb.ApplyChangesRequest(session_id=sid, changes_json=json.dumps(changes))
    return api.ApplyChanges(request, metadata=md).ack.session_version


def test_watch_resumes_after_a_dropped_connection_without_gaps(stack: Stack) -> None:
    md = auth(stack, "g-erin")
    with grpc.insecure_channel(stack.grpc_target) as ch:
        api = pb_grpc.SessionServiceStub(ch)
        sid = started(api, md)
        stream, hello = watch(api, md, sid)
        last = [write(api, md, sid, {"i": i}) for i in range(3)][-1]
        live = changes(stream, last)
        assert [c.version for c in live] == list(range(hello["version"] + 1, last + 1))
        assert all(c.type == "state_update" for c in live)
        assert json.loads(live[-1].payload_json)["changes"] == {"i": 2}
    # the connection is gone (its channel closed); writes go on meanwhile, over another one
    with grpc.insecure_channel(stack.grpc_target) as ch:
        api = pb_grpc.SessionServiceStub(ch)
        newest = [write(api, md, sid, {"i": i}) for i in range(3, 8)][-1]
        resumed, hello = watch(api, md, sid, since=live[-1].version)
        assert hello["resumed_from"] == live[-1].version
        caught_up = changes(resumed, newest)
        assert [c.version for c in caught_up] == list(range(live[-1].version + 1, newest + 1))
        assert [json.loads(c.payload_json)["changes"]["i"] for c in caught_up] == [3, 4, 5, 6, 7]
        after = write(api, md, sid, {"i": 8})  # and live again after the catch-up
        assert [c.version for c in changes(resumed, after)] == [after]
        resumed.cancel()


@pytest.mark.anyio
async def test_watch_sees_what_a_websocket_sees(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-frank")
    sid = started(api, md)
    stream, hello = watch(api, md, sid)
    ws, _ = await connect_ws(stack, "g-frank", "laptop", sid, since=hello["version"])
    try:
        request = pb.SaveSnapshotRequest(session_id=sid, state_json='{"a": 1}')
        last = api.SaveSnapshot(request, metadata=md).ack.session_version
        over_grpc = changes(stream, last)
        over_ws: list[dict] = []
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


def test_watch_ends_when_the_session_ends_and_refuses_bad_requests(stack: Stack, channel) -> None:
    api = pb_grpc.SessionServiceStub(channel)
    md = auth(stack, "g-gina")
    sid = started(api, md)
    stream, _ = watch(api, md, sid)
    api.EndSession(pb.EndSessionRequest(session_id=sid), metadata=md)
    seen = list(stream)
    assert seen and json.loads(seen[-1].payload_json)["status"] == "ENDED"
    assert stream.code() == grpc.StatusCode.OK
    for request, expected in (
        (pb.WatchRequest(session_id="nope"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.WatchRequest(session_id=new_id()), grpc.StatusCode.NOT_FOUND),
        (pb.WatchRequest(session_id=sid, since=-1), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        code, _, _ = refused(lambda r=request: next(api.Watch(r, metadata=md, timeout=10)))
        assert code == expected, request
    code, _, _ = refused(lambda: next(api.Watch(pb.WatchRequest(session_id=sid), timeout=10)))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_draining_gateway_ends_watches_unavailable_and_they_resume_on_the_next(
    stack: Stack,
) -> None:
    """SIGTERM: the stream ends UNAVAILABLE (after a `reconnect` advice); the client resumes
    from its last version on the gateway that replaces it, missing nothing written between."""
    md = auth(stack, "g-hana")
    with grpc.insecure_channel(stack.grpc_target) as ch:
        api = pb_grpc.SessionServiceStub(ch)
        sid = started(api, md)
        stream, _ = watch(api, md, sid)
        seen = changes(stream, write(api, md, sid, {"i": 0}))
        stack.procs["gateway"].send_signal(signal.SIGTERM)
        types = []
        with pytest.raises(grpc.RpcError) as ended:
            for change in stream:
                types.append(change.type)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "reconnect" in types
    assert stack.stop("gateway") == 0
    stack.start_gateway()
    stack.wait_ready()
    with grpc.insecure_channel(stack.grpc_target) as ch:
        api = pb_grpc.SessionServiceStub(ch)
        newest = [write(api, md, sid, {"i": i}) for i in (1, 2)][-1]
        resumed, _ = watch(api, md, sid, since=seen[-1].version)
        caught_up = changes(resumed, newest)
        assert [c.version for c in caught_up] == list(range(seen[-1].version + 1, newest + 1))
        resumed.cancel()


def test_outcome_unknown_carries_the_key_and_its_retry_is_applied_once(stack: Stack) -> None:
    """The worker is down: the write is UNAVAILABLE with OUTCOME_UNKNOWN and the key to retry
    with; once a worker is back, the retry under that key is applied once."""
    md = auth(stack, "g-ivan")
    with grpc.insecure_channel(stack.grpc_target) as ch:
        api = pb_grpc.SessionServiceStub(ch)
        sid = started(api, md)
        stack.stop("worker")
        try:
            request = pb.ApplyChangesRequest(session_id=sid, changes_json='{"n": 1}')
            code, error, body = refused(lambda: api.ApplyChanges(request, metadata=md, timeout=30))
            assert (code, error) == (grpc.StatusCode.UNAVAILABLE, "OUTCOME_UNKNOWN")
            key = body["error"]["idempotency_key"]
            assert key
        finally:
            stack.start("worker", "worker")
        retry = pb.ApplyChangesRequest(session_id=sid, changes_json='{"n": 1}', idempotency_key=key)
        for _ in range(100):  # until the new worker holds the partition
            try:
                written = api.ApplyChanges(retry, metadata=md, timeout=30)
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        again = api.ApplyChanges(retry, metadata=md, timeout=30)
        assert again == written and written.state_version == 1  # once, not twice
        session = api.GetSession(
            pb.GetSessionRequest(session_id=sid, min_version=written.ack.session_version),
            metadata=md,
        )
        assert json.loads(session.state_json) == {"n": 1} and session.version == 1


def test_a_gateway_whose_grpc_address_is_taken_exits_with_an_error(stack: Stack) -> None:
    """Two gateways on one GRPC_ADDR: the second says so and exits (code 3), rather than
    serving REST without its gRPC API (or sharing the port through SO_REUSEPORT)."""
    env = {**stack.env, "GRPC_ADDR": stack.grpc_target}
    proc = subprocess.run(
        [*SESSIOND, "gateway", "--port", str(free_port())],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"gRPC cannot listen on {stack.grpc_target}" in proc.stdout + proc.stderr
