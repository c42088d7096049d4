"""One trace follows a client's write from the gateway's request through the worker's append,
the projector's change and the gateway's push, on real Redis and PostgreSQL (the gateway on
uvicorn, a worker and a projector, all in this process so that OpenTelemetry's in-memory
exporter catches every span); with tracing off, nothing is traced and envelopes stay as they
were."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors.runtime.worker import Worker
from events import session as se
from events.codec import decode_event_envelope
from events.envelope import CommandEnvelope
from events.ids import session_actor
from gateway.hub import Hub
from gateway.push import Push
from infra import tracing
from infra.sections import ProjectorConfig, RuntimeConfig
from infra.store import open_store
from infra.store.envelopes import build_envelope
from projections.changes import live_change
from projections.migrate import migrate
from projections.projector import Projector, pool_settings
from tests.hubkit import MemConn

pytestmark = pytest.mark.anyio

P = 4


class _History:
    """The hub's event history: nothing missed in these tests (every change arrives live)."""

    async def current_version(self, sid: str) -> int:
        return 0

    async def after(self, sid: str, since: int, upto: int | None = None):
        pushes: list[Push] = []
        return pushes, since, True


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.setup_tracing("test", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()


@contextlib.asynccontextmanager
async def _system(redis_url: str, database_url: str) -> AsyncIterator[tuple[Any, Hub]]:
    """A worker, a projector and a gateway's hub in this process, on the real servers."""
    await migrate(database_url)
    store = open_store(redis_url, P)
    worker = Worker(
        open_store(redis_url, P), config=RuntimeConfig(lease_ttl_ms=3000), live=live_change
    )
    config = ProjectorConfig(
        redis_url=redis_url, database_url=database_url, partitions=P, lease_ttl_ms=3000
    )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4,
                                     server_settings=pool_settings(config))  # fmt: skip
    projector = Projector(config, open_store(redis_url, P), pool)
    hub = Hub(store.feed, _History())  # type: ignore[arg-type]
    await hub.start()
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(projector.run())]
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        yield store, hub
    finally:
        worker.stop()
        projector.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.close()
        await pool.close()
        for s in (store, worker.store, projector.store):
            await s.aclose()


async def _until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


async def test_one_trace_spans_the_sender_the_worker_the_projector_and_the_push(
    redis_url: str, database_url: str, spans: InMemorySpanExporter
) -> None:
    sid = str(uuid.uuid4())
    actor = session_actor(sid)
    async with _system(redis_url, database_url) as (store, hub):
        conn = MemConn(sid, "u", "dev-1")
        await hub.attach(conn)
        bus = store.commands
        await bus.start()
        created = await bus.send(
            actor, sid, se.CreateSession(at=int(time.time() * 1000), user_id="u", session_id=sid)
        )
        assert created is not None and created.ok
        await _until(lambda: conn.versions() == [1])
        with tracing.tracer().start_as_current_span("edge.request") as request:
            out = await bus.send(actor, sid, se.ApplyStateChanges(
                at=int(time.time() * 1000), user_id="u", changes={"n": 1}))  # fmt: skip
        assert out is not None and out.ok
        await _until(lambda: conn.versions() == [1, 2])
        await _until(lambda: any(s.name == "sessiond.gateway.push" for s in
                                 spans.get_finished_spans()))  # fmt: skip
        await hub.detach(conn)
    finished = spans.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    in_trace = {s.name: s for s in finished if s.context.trace_id == trace_id}
    assert set(in_trace) == {
        "edge.request",
        "sessiond.worker.command",
        "sessiond.gateway.push",
    }, [s.name for s in finished]
    worker, push = (in_trace[f"sessiond.{n}"] for n in ("worker.command", "gateway.push"))
    assert worker.parent.span_id == request.get_span_context().span_id
    # the append published the change: the push is the worker's child (no projector between)
    assert push.parent.span_id == worker.context.span_id
    assert worker.attributes["sessiond.actor"] == actor
    assert worker.attributes["sessiond.command"] == "ApplyStateChanges"
    assert push.attributes["sessiond.connections"] == 1
    # the untraced first command (no span around its send) started no trace of its own
    assert all(s.context.trace_id == trace_id for s in finished)
    assert "state_update" in {f.get("type") for f in conn.frames}


def test_envelopes_carry_the_senders_trace_context_and_none_without_one(
    spans: InMemorySpanExporter,
) -> None:
    command = se.RefreshSession(at=1)
    untraced = build_envelope("session:s", "s", command)
    assert untraced.traceparent == ""
    with tracing.tracer().start_as_current_span("sender") as span:
        traced = build_envelope("session:s", "s", command, traceparent=tracing.traceparent())
    ctx = span.get_span_context()
    assert traced.traceparent.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    # the field is the envelope's new last one: an envelope encoded before it decodes
    old = msgspec.msgpack.encode({k: v for k, v in msgspec.structs.asdict(untraced).items()
                                  if k != "traceparent"})  # fmt: skip
    assert msgspec.msgpack.decode(old, type=CommandEnvelope) == untraced


async def test_without_tracing_events_encode_exactly_as_before(
    redis_url: str, database_url: str
) -> None:
    assert not tracing.enabled()
    sid = str(uuid.uuid4())
    async with _system(redis_url, database_url) as (store, _hub):
        bus = store.commands
        await bus.start()
        out = await bus.send(session_actor(sid), sid, se.CreateSession(
            at=int(time.time() * 1000), user_id="u", session_id=sid))  # fmt: skip
        assert out is not None and out.ok
        entries = await store.log.range(store.partition_of(sid))
    raw = [payload for _, payload in entries if decode_event_envelope(payload).actor_id
           == session_actor(sid)]  # fmt: skip
    assert raw and all(b"traceparent" not in payload for payload in raw)


@contextlib.asynccontextmanager
async def _gateway(redis_url: str, database_url: str) -> AsyncIterator[Any]:
    """The real gateway app on uvicorn, in this process, on a free port."""
    from gateway.server import build_server
    from infra.config import load_settings
    from tests.integration.gwstack import free_port

    settings = load_settings({
        "REDIS_URL": redis_url, "DATABASE_URL": database_url, "SESSIOND_PARTITIONS": str(P),
        "SESSIOND_ENV": "test", "GATEWAY_PORT": str(free_port()),
        "GRPC_ADDR": f"127.0.0.1:{free_port()}",
    })  # fmt: skip
    server = build_server(settings.gateway)
    task = asyncio.create_task(server.serve())
    await _until(lambda: server.started or task.done())
    assert not task.done(), task
    try:
        yield settings.gateway
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


async def test_one_trace_spans_the_gateway_the_worker_the_projector_and_the_push(
    redis_url: str, database_url: str, spans: InMemorySpanExporter
) -> None:
    import json

    import httpx
    import websockets

    from gateway.auth import TokenService
    from infra.metrics import REGISTRY

    sid = str(uuid.uuid4())
    async with _system(redis_url, database_url), _gateway(redis_url, database_url) as config:
        token = TokenService(config).issue("alice", (), "access")
        base = f"127.0.0.1:{config.port}"
        url = f"ws://{base}/ws?token={token}&session_id={sid}&device_id="
        async with websockets.connect(url + "a") as a, websockets.connect(url + "b") as b:
            for ws in (a, b):
                assert json.loads(await ws.recv())["type"] == "connected"
            spans.clear()
            await a.send(json.dumps({"type": "state_update", "correlation_id": "c-1",
                                     "payload": {"key": "n", "value": 1}}))  # fmt: skip
            while json.loads(await asyncio.wait_for(b.recv(), 15))["type"] != "state_update":
                pass
            await _until(lambda: any(s.name == "sessiond.gateway.push"
                                     for s in spans.get_finished_spans()))  # fmt: skip
            ws_spans = list(spans.get_finished_spans())
            # a REST call continues the trace of the client's traceparent header
            spans.clear()
            with tracing.tracer().start_as_current_span("client") as client:
                header = tracing.traceparent()
            async with httpx.AsyncClient(base_url=f"http://{base}") as http:
                r = await http.get(f"/session/{sid}/devices", headers={
                    "Authorization": f"Bearer {token}", "traceparent": header})  # fmt: skip
            assert r.status_code == 200, r.text
    request = next(s for s in ws_spans if s.name == "sessiond.gateway.request")
    assert request.parent is None  # the client sent no trace: the gateway starts it
    assert request.attributes["sessiond.ws_message"] == "STATE_UPDATE"
    in_trace = {s.name: s for s in ws_spans if s.context.trace_id == request.context.trace_id}
    assert set(in_trace) >= {
        "sessiond.gateway.request",
        "sessiond.worker.command",
        "sessiond.gateway.push",
    }, sorted(in_trace)
    worker = in_trace["sessiond.worker.command"]
    push = in_trace["sessiond.gateway.push"]
    assert worker.parent.span_id == request.context.span_id
    assert push.parent.span_id == worker.context.span_id
    assert push.attributes["sessiond.connections"] == 2
    rest = next(s for s in spans.get_finished_spans() if s.name == "sessiond.gateway.request")
    assert rest.parent.span_id == client.get_span_context().span_id
    assert rest.attributes["sessiond.http_route"] == "/session/{uuid}/devices"
    assert rest.attributes["http.response.status_code"] == 200
    labels = {"method": "GET", "route": "/session/{uuid}/devices", "status": "200"}
    assert REGISTRY.get_sample_value("sessiond_gateway_http_requests_total", labels) >= 1
