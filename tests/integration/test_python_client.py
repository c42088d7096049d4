"""The Python client (`clients/python`, `sessiond_client`) against a real stack: seed 003's
`(result, error)` functions, every other call, sync and async, retries that apply a write once
when its answer was lost, and a watch that resumes by itself, gap-free, after its connection
is cut.

The faults are real: a TCP proxy in front of the gateway loses answers or cuts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sessiond_client import (
    AsyncSessiondClient,
    ClientError,
    Message,
    RetryPolicy,
    SessiondClient,
    SessionStarted,
    StateWritten,
    WatchError,
    correlated,
)

from tests.integration.gwstack import Stack, connect_ws


def new_id() -> str:
    return str(uuid.uuid4())


class Proxy:
    """A TCP proxy to the gateway that can lose the next answers (the request reaches the
    gateway and is handled; the client sees the connection drop) or cut every connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.lose_answers = 0
        self.requests = 0
        self.transports: set[asyncio.BaseTransport] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        for transport in list(self.transports):
            transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.transports.add(writer.transport)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def requests() -> None:
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    self.requests += 1
                    up_writer.write(data)
                    await up_writer.drain()
            up_writer.close()

        async def answers() -> None:
            with contextlib.suppress(Exception):
                while data := await up_reader.read(65536):
                    if self.lose_answers:  # handled upstream; the client never hears of it
                        self.lose_answers -= 1
                        writer.transport.abort()
                        return
                    writer.write(data)
                    await writer.drain()
            writer.close()

        try:
            await asyncio.gather(requests(), answers())
        finally:
            self.transports.discard(writer.transport)
            up_writer.close()


@pytest.fixture
async def proxy(stack: Stack) -> AsyncIterator[Proxy]:
    async with Proxy(stack.port) as p:
        yield p


def test_seed003_functions_return_result_and_error(stack: Stack) -> None:
    user_id, router_id, session_id = "pc-alice", new_id(), new_id()
    with SessiondClient(stack.base, stack.token(user_id)) as client:
        result, error = client.start_session(user_id, router_id, session_id, restart=False)
        assert error is None
        assert result == SessionStarted(
            session_id=session_id,
            router_reachable=True,
            infrastructure_ready=True,
            message="Session established successfully",
        )
        result, error = client.refresh_session(user_id, router_id, session_id)
        assert (result, error) == (Message(message=f"Session {session_id} refreshed"), None)
        result, error = client.end_session(user_id, router_id, session_id)
        assert (result, error) == (Message(message="Session ended"), None)

        result, error = client.refresh_session(user_id, router_id, session_id)
        assert result is None and isinstance(error, str)
        assert error.startswith("SESSION_ENDED: ") and error.status == 410
        result, error = client.start_session(user_id, router_id, "not-a-uuid")
        assert result is None and error.code == "INVALID_ARGUMENT" and "sessionId" in error
        result, error = client.start_session("someone-else", router_id, new_id())
        assert result is None and error.code == "SESSION_FORBIDDEN"
    with SessiondClient(stack.base, "not-a-token") as client:
        result, error = client.start_session(user_id, router_id, new_id())
        assert result is None and error.status == 401


@pytest.mark.anyio
async def test_calls_in_a_correlated_block_carry_its_id_to_their_events(stack: Stack) -> None:
    user, sid, cid = "pc-corr", new_id(), f"sdk-{uuid.uuid4().hex}"
    async with AsyncSessiondClient(stack.base, stack.token(user)) as c:
        with correlated(cid):
            assert (await c.start_session(user, new_id(), sid))[1] is None
            assert (await c.apply_changes(sid, {"a": 1}))[1] is None
        assert (await c.apply_changes(sid, {"b": 2}))[1] is None  # outside: the command id
    admin = stack.headers("root", "admin")
    async with httpx.AsyncClient(base_url=stack.base, headers=admin) as http:
        deadline = time.monotonic() + 15
        while True:
            r = await http.get("/admin/events", params={"correlation_id": cid})
            types = [e["type"] for e in r.json()["events"]]
            if "StateChanged" in types or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert types == ["SessionCreated", "StateChanged"], types


def test_state_handoff_device_and_simulator_calls(stack: Stack) -> None:
    user, sid = "pc-bob", new_id()
    with SessiondClient(stack.base, stack.token(user)) as c:
        assert c.start_session(user, new_id(), sid)[1] is None
        written, error = c.save_snapshot(sid, {"cart": [1], "big": 2**63 - 1}, version=1)
        assert error is None and isinstance(written, StateWritten) and written.version == 1
        patched, _ = c.apply_changes(sid, {"theme": "dark"}, deleted_keys=["cart"], base_version=1)
        assert patched.version == 2
        _, error = c.apply_changes(sid, {"x": 1}, base_version=1)
        assert error.code == "VERSION_CONFLICT" and error.status == 409
        snap, _ = c.get_session(sid, min_version=patched.session_version)
        assert snap.state_data == {"big": 2**63 - 1, "theme": "dark"} and snap.version == 2
        resolved, _ = c.resolve_conflict(
            sid, {"theme": "light", "y": 2}, strategy="merge", client_version=2
        )
        assert resolved.resolved_state["y"] == 2 and resolved.version == 3
        issued, _ = c.start_handoff(sid, "phone", "tablet")
        accepted, _ = c.accept_handoff(sid, issued.token, device_id="tablet")
        assert accepted.valid and accepted.state_version == 3
        _, error = c.accept_handoff(sid, issued.token, device_id="tablet")
        assert error.code == "HANDOFF_ALREADY_USED"
        devices, _ = c.list_devices(sid)
        assert devices.session_id == sid and devices.count == len(devices.devices)
        sim, _ = c.start_simulator(sid, symbols=["AAPL"], cash=1000.0)
        assert sim.status == "CREATING" and sim.initial_symbols == ["AAPL"]
        status, deadline = None, time.monotonic() + 15
        while time.monotonic() < deadline:  # until the projector has the simulator's row
            status, error = c.simulator_status(sid)
            if error is None:
                break
            time.sleep(0.1)
        assert status is not None and status.simulator_id == sim.simulator_id
        stopped, _ = c.stop_simulator(sid)
        assert stopped.status == "STOPPING" and stopped.simulator_id == sim.simulator_id


@pytest.mark.anyio
async def test_async_client_and_device_disconnect(stack: Stack) -> None:
    user, sid = "pc-carol", new_id()
    async with AsyncSessiondClient(stack.base, stack.token(user)) as c:
        started, error = await c.start_session(user, new_id(), sid)
        assert error is None and started.session_id == sid
        ws, _ = await connect_ws(stack, user, "laptop", sid)
        try:
            for _ in range(150):
                devices, _ = await c.list_devices(sid)
                if any(d.device_id == "laptop" and d.online for d in devices.devices):
                    break
                await asyncio.sleep(0.1)
            gone, error = await c.disconnect_device(sid, "laptop")
            assert error is None and gone.disconnected
        finally:
            await ws.close()
        _, error = await c.get_session(new_id())
        assert error.code == "SESSION_NOT_FOUND" and error.status == 404


@pytest.mark.anyio
async def test_a_write_whose_answer_was_lost_is_retried_and_applied_once(
    stack: Stack, proxy: Proxy
) -> None:
    user, sid = "pc-dave", new_id()
    policy = RetryPolicy(attempts=3, backoff_s=0.05)
    async with AsyncSessiondClient(proxy.url, stack.token(user), retry=policy) as c:
        assert (await c.start_session(user, new_id(), sid))[1] is None
        proxy.lose_answers = 1
        before = proxy.requests
        written, error = await c.apply_changes(sid, {"n": 1})
        assert error is None
        assert proxy.requests - before >= 2  # the write was sent twice
        snap, _ = await c.get_session(sid, min_version=written.session_version)
        assert written.version == 1 and snap.version == 1  # applied once
        proxy.lose_answers = 10  # every answer lost: the error says so, nothing doubled
        _, error = await c.apply_changes(sid, {"n": 2})
        assert isinstance(error, ClientError) and error.code == "CONNECTION_ERROR"
        proxy.lose_answers = 0
        snap, _ = await c.get_session(sid, min_version=written.session_version + 1)
        assert snap.version == 2 and snap.state_data == {"n": 2}


@pytest.mark.anyio
async def test_watch_resumes_after_its_connection_is_cut_without_gaps(
    stack: Stack, proxy: Proxy
) -> None:
    user, sid, router = "pc-erin", new_id(), new_id()
    writer = AsyncSessiondClient(stack.base, stack.token(user))
    policy = RetryPolicy(attempts=5, backoff_s=0.05)
    watcher = AsyncSessiondClient(proxy.url, stack.token(user), retry=policy)
    try:
        assert (await writer.start_session(user, router, sid))[1] is None
        stream = watcher.watch(sid, device_id="watcher")
        hello = await anext(stream)
        assert hello.type == "connected"
        versions: list[int] = []
        values: list[int] = []

        async def read_until(version: int) -> None:
            async with asyncio.timeout(15):
                while not versions or versions[-1] < version:
                    change = await anext(stream)
                    if change.type == "state_update":
                        versions.append(change.version)
                        values.append(change.payload["changes"]["i"])

        last = 0
        for i in range(3):
            last = (await writer.apply_changes(sid, {"i": i}))[0].session_version
        await read_until(last)
        proxy.cut()  # the watch's connection drops; writes go on meanwhile
        for i in range(3, 7):
            last = (await writer.apply_changes(sid, {"i": i}))[0].session_version
        await read_until(last)
        assert values == list(range(7))  # every change once, in order, across the cut
        assert versions == sorted(set(versions))
        assert (await writer.end_session(user, router, sid))[1] is None  # its own router
        async with asyncio.timeout(15):
            rest = [change async for change in stream]  # ends with the session
        assert rest[-1].payload["status"] == "ENDED"
    finally:
        await writer.aclose()
        await watcher.aclose()


@pytest.mark.anyio
async def test_watch_refused_for_good_raises(stack: Stack) -> None:
    async with AsyncSessiondClient(stack.base, stack.token("pc-frank")) as c:
        with pytest.raises(WatchError) as info:
            await anext(c.watch(new_id()))
        assert info.value.error.code == "SESSION_NOT_FOUND"
