"""The gateway's pure pieces: JWT auth, config, the WS codec (both forms), pushes, error
mapping, and the hub's ordering rules (in order, once, buffered while catching up, reset when
history is gone, slow clients dropped) with an in-memory history."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from events.errors import DomainError, StoreUnavailable
from gateway.auth import TokenService, bearer
from gateway.config import ConfigError, GatewayConfig
from gateway.errors import ApiError, from_exception, from_outcome
from gateway.hub import ConnState, Hub
from gateway.operations.presence import quality_for
from gateway.protocol import Form, MessageType, ProtocolError, decode_inbound, encode_outbound
from gateway.push import Push, push_for_event
from infra.config import load_settings
from infra.store import MemoryStore
from tests.hubkit import MemConn
from tests.hubkit import changes_message as _changes

# ------------------------------------------------------------------ auth


def test_access_token_round_trip_carries_user_and_roles() -> None:
    ts = TokenService(GatewayConfig())
    claims = ts.verify(ts.issue("alice", ("admin",)))
    assert claims.user_id == "alice" and claims.is_admin


@pytest.mark.parametrize(
    ("token_of", "code"),
    [
        (lambda ts: None, "TOKEN_MISSING"),
        (lambda ts: ts.issue("a", ttl_s=-60), "TOKEN_EXPIRED"),
        (lambda ts: ts.issue("a")[:-4] + "abcd", "TOKEN_INVALID"),
        (lambda ts: "not.a.jwt", "TOKEN_INVALID"),
        (lambda ts: ts.issue("a", kind="refresh"), "TOKEN_INVALID"),
        (lambda ts: TokenService(GatewayConfig(jwt_secret="x" * 40)).issue("a"), "TOKEN_INVALID"),
    ],
)
def test_bad_tokens_are_refused_with_a_code(token_of, code) -> None:
    ts = TokenService(GatewayConfig())
    with pytest.raises(ApiError) as info:
        ts.verify(token_of(ts))
    assert info.value.status == 401 and info.value.code == code


def test_access_lasts_15_minutes_and_refresh_7_days() -> None:
    import jwt

    ts = TokenService(GatewayConfig())
    now = time.time()
    access = jwt.decode(ts.issue("a", now=now), options={"verify_signature": False})
    refresh = jwt.decode(
        ts.issue("a", kind="refresh", now=now), options={"verify_signature": False}
    )
    assert access["exp"] - access["iat"] == 15 * 60
    assert refresh["exp"] - refresh["iat"] == 7 * 24 * 3600
    assert ts.verify(ts.issue("a", kind="refresh"), "refresh").user_id == "a"


def test_rs256_verifies_with_the_public_key_only() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    minter = TokenService(
        GatewayConfig(jwt_algorithm="RS256", jwt_public_key=public, jwt_private_key=private)
    )
    verifier = TokenService(GatewayConfig(jwt_algorithm="RS256", jwt_public_key=public))
    assert verifier.verify(minter.issue("bob")).user_id == "bob"
    assert not verifier.can_mint
    with pytest.raises(ApiError) as info:  # an HS256 token is not accepted by an RS256 gateway
        verifier.verify(TokenService(GatewayConfig()).issue("bob"))
    assert info.value.code == "TOKEN_INVALID"


def test_bearer_header_parsing() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer(None) is None and bearer("Bearer ") is None


# ------------------------------------------------------------------ config


def test_seed004_environment_variables() -> None:
    cfg = load_settings(
        {
            "SERVER_ADDR": ":9090",
            "REDIS_ADDR": "redis:6379",
            "REDIS_PASSWORD": "pw",
            "REDIS_DB": "2",
            "JWT_SECRET": "s" * 40,
            "JWT_REFRESH_SECRET": "r" * 40,
        }
    ).gateway
    assert (cfg.host, cfg.port) == ("0.0.0.0", 9090)
    assert cfg.redis_url == "redis://:pw@redis:6379/2"
    assert cfg.jwt_secret == "s" * 40 and cfg.jwt_refresh_secret == "r" * 40


def test_defaults_listen_on_loopback_8080() -> None:
    cfg = load_settings({}).gateway
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8080)


def test_maintenance_intervals_must_be_positive_and_touches_frequent_enough() -> None:
    """A device's first touch comes within two touch intervals of its joining: an interval of
    half the presence timeout or more could let a connected device time out."""
    for env, words in (
        ({"GATEWAY_TOUCH_INTERVAL": "60"}, "under half the presence timeout"),
        ({"GATEWAY_TOUCH_INTERVAL": "0"}, "positive"),
        ({"GATEWAY_HEARTBEAT_INTERVAL": "-1"}, "positive"),
    ):
        with pytest.raises(ConfigError, match=words):
            load_settings(env)
    assert load_settings({"GATEWAY_TOUCH_INTERVAL": "59"}).gateway.touch_interval_s == 59


def test_production_refuses_the_dev_secret() -> None:
    prod = {
        "SESSIOND_ENV": "production",
        "REDIS_URL": "redis://x:1/0",
        "DATABASE_URL": "postgresql://x/y",
    }
    with pytest.raises(ConfigError, match="JWT_SECRET must be set"):
        load_settings(prod)
    with pytest.raises(ConfigError, match="JWT_SECRET: expected 32 characters"):
        load_settings({**prod, "JWT_SECRET": "short", "JWT_REFRESH_SECRET": "b" * 40})
    ok = load_settings({**prod, "JWT_SECRET": "a" * 40, "JWT_REFRESH_SECRET": "b" * 40}).gateway
    assert ok.env == "prod"


# ------------------------------------------------------------------ protocol


def test_numbers_in_numbers_out_names_in_names_out() -> None:
    n = decode_inbound(json.dumps({"type": 1, "payload": {"client_time": 5}}))
    assert n.type is MessageType.HEARTBEAT and n.form is Form.NUMBERS
    s = decode_inbound(json.dumps({"type": "HEARTBEAT"}))
    assert s.type is MessageType.HEARTBEAT and s.form is Form.NAMES and s.payload == {}
    out_n = json.loads(encode_outbound(Form.NUMBERS, MessageType.HEARTBEAT_ACK, {}))
    out_s = json.loads(encode_outbound(Form.NAMES, MessageType.HEARTBEAT_ACK, {}))
    assert out_n["type"] == 2 and out_s["type"] == "heartbeat_ack"
    assert set(out_n) == {
        "type",
        "session_id",
        "user_id",
        "device_id",
        "timestamp",
        "payload",
        "correlation_id",
    }


def test_seed004_type_numbers_follow_the_go_const_block() -> None:
    names = [
        "UNKNOWN",
        "HEARTBEAT",
        "HEARTBEAT_ACK",
        "SNAPSHOT_REQUEST",
        "SNAPSHOT_RESPONSE",
        "STATE_UPDATE",
        "ERROR",
        "AUTH",
        "AUTH_SUCCESS",
        "AUTH_FAILURE",
        "DEVICE_JOINED",
        "DEVICE_LEFT",
        "DEVICE_LIST",
        "BROADCAST",
        "ADMIN_UPDATE",
    ]
    assert [MessageType[n].value for n in names] == list(range(15))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{oops", "MALFORMED_JSON"),
        ('{"payload": {}}', "INVALID_MESSAGE"),
        ('{"type": 1, "payload": []}', "INVALID_MESSAGE"),
        ('{"type": 0}', "UNKNOWN_TYPE"),
        ('{"type": 42}', "UNKNOWN_TYPE"),
        ('{"type": "fly"}', "UNKNOWN_TYPE"),
        ('{"type": 1.5}', "INVALID_MESSAGE"),
        ('"just a string"', "INVALID_MESSAGE"),
    ],
)
def test_bad_frames_have_clear_codes(frame: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_inbound(frame)
    assert info.value.code == code


def test_pushes_encode_once_per_form_and_carry_the_version() -> None:
    push = push_for_event(
        "s1",
        7,
        "StateChanged",
        {
            "changes": {"a": 1},
            "deleted_keys": [],
            "state_version": 3,
            "at": 1,
            "type": "StateChanged",
        },
        1_700_000_000_000,
    )
    assert push is not None and push.version == 7 and push.mtype is MessageType.STATE_UPDATE
    names = json.loads(push.frame(Form.NAMES))
    numbers = json.loads(push.frame(Form.NUMBERS))
    assert names["type"] == "state_update" and numbers["type"] == 5
    assert names["version"] == numbers["version"] == 7
    assert "at" not in names["payload"] and names["payload"]["changes"] == {"a": 1}
    assert push.frame(Form.NAMES) is push.frame(Form.NAMES)
    assert push.sse().startswith(b"id: 7\nevent: state_update\ndata: ")
    assert push_for_event("s1", 8, "DevicesSeen", {"device_ids": []}) is None
    created = push_for_event("s1", 1, "SessionCreated", {"token": "secret", "user_id": "u"})
    assert created is not None and "token" not in created.payload


def test_quality_thresholds() -> None:
    assert quality_for(10, 150, 500) == "GOOD"
    assert quality_for(200, 150, 500) == "DEGRADED"
    assert quality_for(900, 150, 500) == "POOR"


def test_error_mapping_never_leaks_internals() -> None:
    assert from_exception(DomainError("VERSION_CONFLICT", "x")).status == 409
    e = from_exception(StoreUnavailable("redis at 10.0.0.1 refused"))
    assert e.status == 503 and "10.0.0.1" not in e.message
    e = from_exception(RuntimeError("secret detail"))
    assert e.status == 500 and e.message == "internal error"
    assert from_outcome("SESSION_FORBIDDEN", "no").status == 403


# ------------------------------------------------------------------ hub ordering


class FakeHistory:
    """An in-memory session event history: version -> push; `first` = oldest still kept."""

    def __init__(self) -> None:
        self.events: dict[str, list[int]] = {}
        self.first: dict[str, int] = {}

    def add(self, sid: str, n: int = 1) -> list[int]:
        vs = self.events.setdefault(sid, [])
        new = list(range(len(vs) + 1, len(vs) + n + 1))
        vs.extend(new)
        return new

    async def current_version(self, sid: str) -> int:
        return len(self.events.get(sid, []))

    async def after(self, sid: str, since: int, upto: int | None = None):
        await asyncio.sleep(0)
        vs = [v for v in self.events.get(sid, []) if v > since and (upto is None or v <= upto)]
        if vs and since + 1 < self.first.get(sid, 1):
            return [], since, False
        return [_p(sid, v) for v in vs], (vs[-1] if vs else since), True


def _p(sid: str, v: int) -> Push:
    return Push(MessageType.STATE_UPDATE, {"v": v}, session_id=sid, version=v)


class FakePubSub:
    async def subscribe(self, *channels: str) -> None:
        pass

    async def unsubscribe(self, *channels: str) -> None:
        pass


def _hub(history: FakeHistory) -> Hub:
    hub = Hub(None, history)  # type: ignore[arg-type]
    hub.pubsub = FakePubSub()
    return hub


@pytest.mark.anyio
async def test_resume_gets_missed_changes_in_order_once_then_live() -> None:
    h = FakeHistory()
    h.add("s", 5)
    hub = _hub(h)
    conn = MemConn("s", "u", "d")
    await hub.attach(conn, since=2)
    await asyncio.sleep(0)
    assert conn.versions() == [3, 4, 5]
    h.add("s", 2)  # 6, 7; the projector publishes 6 twice and 7 once
    await hub._on_change("s", _changes("s", 6))
    await hub._on_change("s", _changes("s", 6))
    await hub._on_change("s", _changes("s", 7))
    await asyncio.sleep(0)
    assert conn.versions() == [3, 4, 5, 6, 7]


@pytest.mark.anyio
async def test_a_change_that_meets_a_loading_store_waits_and_is_pushed_once_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A restarting Valkey answers LOADING: the change feed waits and retries the message (one
    line when it starts failing, one when it answers again), as for a lost connection; the
    versions still arrive in order."""
    h = FakeHistory()
    h.add("s", 1)
    hub = _hub(h)
    hub.retry_initial_s = 0.01
    conn = MemConn("s", "u", "d")
    await hub.attach(conn)
    h.add("s", 3)  # 2, 3, 4 appended; only 4's message arrives while Valkey loads its data
    original, refusals = h.after, [3]

    async def loading(sid, since, upto=None):
        if refusals[0]:
            refusals[0] -= 1
            raise StoreUnavailable("Redis refused a command: LOADING Valkey is loading")
        return await original(sid, since, upto)

    h.after = loading  # type: ignore[method-assign]
    worker = asyncio.create_task(hub._process())
    hub._on_message("s", _changes("s", 4))
    for _ in range(200):
        if conn.versions() == [2, 3, 4]:
            break
        await asyncio.sleep(0.01)
    worker.cancel()
    assert conn.versions() == [2, 3, 4]
    lines = [r for r in caplog.records if r.name == "sessiond.gateway.hub"]
    assert len(lines) == 2 and not any(r.exc_info for r in lines)


@pytest.mark.anyio
async def test_a_skipped_version_is_filled_from_history() -> None:
    h = FakeHistory()
    h.add("s", 1)
    hub = _hub(h)
    conn = MemConn("s", "u", "d")
    await hub.attach(conn)
    h.add("s", 3)  # 2, 3, 4 appended; only 4's message arrives
    await hub._on_change("s", _changes("s", 4))
    await asyncio.sleep(0)
    assert conn.versions() == [2, 3, 4]


@pytest.mark.anyio
async def test_changes_arriving_during_catch_up_are_buffered_not_lost() -> None:
    h = FakeHistory()
    h.add("s", 3)
    hub = _hub(h)
    first = MemConn("s", "u", "d1")
    await hub.attach(first)

    class SlowHistory(FakeHistory):
        pass

    conn = MemConn("s", "u", "d2")
    original = h.after

    async def slow_after(sid, since, upto=None):
        # while the new connection reads history, two more changes go live
        h.add("s", 2)
        await hub._on_change("s", _changes("s", 4, 5))
        return await original(sid, since, upto)

    h.after = slow_after  # type: ignore[method-assign]
    await hub.attach(conn, since=0)
    h.after = original  # type: ignore[method-assign]
    await asyncio.sleep(0)
    assert conn.versions() == [1, 2, 3, 4, 5]
    assert first.versions() == [4, 5]


@pytest.mark.anyio
async def test_history_gone_means_reset_then_what_followed() -> None:
    h = FakeHistory()
    h.add("s", 10)
    h.first["s"] = 8  # versions before 8 were trimmed
    hub = _hub(h)

    async def reset_state(sid: str):
        return {"state": {"v": 9}}, 9

    hub.reset_state = reset_state  # type: ignore[attr-defined]
    conn = MemConn("s", "u", "d")
    await hub.attach(conn, since=2)
    await asyncio.sleep(0)
    kinds = [f["type"] for f in conn.frames]
    assert kinds == ["reset", "state_update"]
    assert conn.frames[0]["version"] == 9 and conn.versions() == [9, 10]


@pytest.mark.anyio
async def test_a_slow_client_is_disconnected_when_its_backlog_passes_the_limit() -> None:
    h = FakeHistory()
    hub = _hub(h)
    blocked = asyncio.Event()

    class Stuck(MemConn):
        async def write(self, data: str) -> None:
            await blocked.wait()

    conn = Stuck("s", "u", "d", max_outgoing=10_000)
    await hub.attach(conn)
    big = Push(MessageType.BROADCAST, {"x": "y" * 3000})
    for _ in range(5):
        hub.push_to_session("s", big)
    await asyncio.sleep(0.01)
    assert conn.frames and conn.frames[-1] == {"closed": 1008, "reason": "SLOW_CLIENT"}
    blocked.set()


@pytest.mark.anyio
async def test_push_to_session_reaches_every_local_connection_and_only_them() -> None:
    h = FakeHistory()
    hub = _hub(h)
    a, b, other = MemConn("s", "u", "a"), MemConn("s", "u", "b"), MemConn("t", "u", "c")
    for c in (a, b, other):
        await hub.attach(c)
    assert hub.push_to_session("s", Push(MessageType.EXCHANGE_DATA, {"p": 1})) == 2
    await asyncio.sleep(0)
    assert [f["type"] for f in a.frames] == ["exchange_data"] == [f["type"] for f in b.frames]
    assert other.frames == []
    await hub.detach(a)
    assert hub.push_to_session("s", Push(MessageType.EXCHANGE_DATA, {"p": 2})) == 1


@pytest.mark.anyio
async def test_a_since_from_the_future_gets_a_reset_not_silence() -> None:
    h = FakeHistory()
    h.add("s", 3)
    hub = _hub(h)

    async def reset_state(sid: str):
        return {"state": {}}, 3

    hub.reset_state = reset_state  # type: ignore[attr-defined]
    conn = MemConn("s", "u", "d")
    await hub.attach(conn, since=99)
    h.add("s", 1)
    await hub._on_change("s", _changes("s", 4))
    await asyncio.sleep(0)
    assert [f["type"] for f in conn.frames] == ["reset", "state_update"]
    assert conn.versions() == [3, 4]


class _RecordingBus:
    """Stands in for the CommandBus to see which command the gateway builds (no store here)."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def send(self, actor_id: str, session_id: str, command: object, **_: object) -> object:
        self.sent.append(command)
        from events.envelope import Outcome

        return Outcome(command_id="c", actor_id=actor_id, ok=True, version=2, events=1)


# ------------------------------------------------------------------ connection states


def test_a_connection_moves_between_catching_up_and_live_then_closes_for_good() -> None:
    from gateway.hub import InvalidConnectionState

    conn = MemConn("s", "u", "d")
    assert conn.state is ConnState.CATCHING_UP
    for state in (
        ConnState.LIVE,
        ConnState.CATCHING_UP,
        ConnState.LIVE,
        ConnState.CLOSING,
        ConnState.CLOSED,
        ConnState.CLOSED,
    ):
        conn.move_to(state)
        assert conn.state is state
    for illegal in (ConnState.CATCHING_UP, ConnState.LIVE, ConnState.CLOSING):
        with pytest.raises(InvalidConnectionState):
            conn.move_to(illegal)
    assert conn.state is ConnState.CLOSED
    closing = MemConn("s", "u", "d")
    closing.move_to(ConnState.CLOSING)
    with pytest.raises(InvalidConnectionState):
        closing.move_to(ConnState.LIVE)


@pytest.mark.anyio
async def test_a_connection_closed_while_catching_up_stays_closed() -> None:
    """The client went away while its history was read: going live must not reopen it."""
    h = FakeHistory()
    h.add("s", 3)
    hub = _hub(h)
    conn = MemConn("s", "u", "d")
    original = h.after

    async def closing_after(sid, since, upto=None):
        conn.close_soon(1000, "BYE")
        return await original(sid, since, upto)

    h.after = closing_after  # type: ignore[method-assign]
    await hub.attach(conn, since=0)
    await asyncio.sleep(0)
    assert conn.state is ConnState.CLOSED and conn.versions() == []
    await hub.detach(conn)
    assert conn.state is ConnState.CLOSED and not hub.conns
    late = MemConn("s", "u", "d2")
    late.close_soon(1000, "BYE")  # closed before it was attached
    await hub.attach(late)
    assert late.conn_id not in hub.conns


def test_a_token_expires_after_its_grace() -> None:
    conn = MemConn("s", "u", "d")
    assert not conn.token_expired(5.0, now=1e12)  # 0: never
    conn.expires_at = 1000
    assert not conn.token_expired(5.0, now=1004.9) and conn.token_expired(5.0, now=1005)


@pytest.mark.anyio
async def test_sessions_are_created_with_the_configured_ttl() -> None:
    """SESSION_TTL reaches the CreateSession the gateway sends (it was read, then dropped)."""
    from gateway.auth import Claims
    from gateway.operations import Context
    from gateway.operations.sessions import create_session

    cfg = load_settings({"SESSION_TTL": "2h"}).gateway
    bus = _RecordingBus()
    ctx = Context(cfg, MemoryStore(cfg.partitions), None, bus)
    await create_session(ctx, Claims("u"), "s-1", device_id="d")
    (command,) = bus.sent
    assert command.ttl_ms == 2 * 3600 * 1000


@pytest.mark.anyio
async def test_simulator_reservations_carry_the_configured_timeouts() -> None:
    from gateway.auth import Claims
    from gateway.operations import Context
    from gateway.operations.simulators import SimulatorStart, start_simulator

    cfg = load_settings(
        {"SIMULATOR_HEARTBEAT_TIMEOUT": "5s", "SIMULATOR_IDLE_TIMEOUT": "2m"}
    ).gateway
    bus = _RecordingBus()
    ctx = Context(cfg, MemoryStore(cfg.partitions), None, bus)
    started = await start_simulator(
        ctx,
        Claims("u"),
        SimulatorStart(session_id="s-1", initial_symbols=["AAPL"], initial_cash=500.0),
    )
    (command,) = bus.sent
    assert (command.heartbeat_timeout_ms, command.idle_timeout_ms) == (5_000, 120_000)
    assert started.session_version == 2


@pytest.mark.anyio
async def test_maintenance_spreads_heartbeats_and_touches_over_the_interval() -> None:
    """Each tick handles one share: every connection gets one heartbeat per interval and every
    session one touch, but no tick writes to more than its share."""
    from events.session import TouchDevices
    from gateway import upkeep
    from gateway.hub import _Feed
    from gateway.operations import Context
    from gateway.rotation import Rotation

    env = {"GATEWAY_HEARTBEAT_INTERVAL": "15", "GATEWAY_TOUCH_INTERVAL": "30"}
    cfg = load_settings(env).gateway
    bus = _RecordingBus()
    gw = Context(cfg, MemoryStore(cfg.partitions), None, bus)
    conns = [MemConn(f"s-{i // 2}", "u", f"d-{i % 2}") for i in range(2000)]
    for c in conns:
        c.state = ConnState.LIVE
        gw.hub.conns[c.conn_id] = c
        gw.hub.feeds.setdefault(c.session_id, _Feed(c.session_id)).conns.add(c)
    beats = Rotation(150, lambda: gw.hub.conns)
    per_tick = []
    now = time.monotonic()
    for _ in range(150):
        before = sum(len(c.frames) for c in conns)
        upkeep.heartbeat(gw, now, beats.share())
        await asyncio.sleep(0)
        per_tick.append(sum(len(c.frames) for c in conns) - before)
    assert all(sum(f["type"] == "heartbeat" for f in c.frames) == 1 for c in conns)
    assert max(per_tick) < 3 * 2000 / 150
    sessions: list[str] = []

    async def send(actor_id: str, session_id: str, command: object, **_: object) -> None:
        assert isinstance(command, TouchDevices) and command.device_ids == ["d-0", "d-1"]
        sessions.append(session_id)

    bus.send = send  # type: ignore[method-assign]
    touches = Rotation(300, lambda: gw.hub.feeds)
    sizes = []
    for _ in range(300):
        before = len(sessions)
        assert not touches.period_starts or not sessions  # (period start: registry renewed)
        share = touches.share()
        await upkeep.touch(gw, share, registry=False)
        sizes.append(len(sessions) - before)
    assert sorted(sessions) == sorted(gw.hub.feeds)  # each session once
    assert max(sizes) < 4 * 1000 / 300


@pytest.mark.anyio
async def test_history_reads_trimmed_versions_from_the_archive_and_tells_a_gap() -> None:
    """The hub's catch-up reads the store: Redis first, the archive for what was trimmed; a
    version neither holds is a gap (the client gets a reset), never a silent skip."""
    import uuid

    import msgspec

    from events.codec import encode
    from events.envelope import EventEnvelope, Outcome
    from events.ids import session_actor
    from events.session import StateChanged
    from gateway.hub import EventHistory
    from tests.contract.test_store_contract import MemoryArchive

    store = MemoryStore(4)
    sid = str(uuid.uuid4())
    actor, p = session_actor(sid), store.partition_of(sid)
    envs = [
        EventEnvelope(
            event_id=str(uuid.uuid4()),
            actor_id=actor,
            version=v,
            partition=p,
            ts=v,
            command_id="c",
            correlation_id="c",
            causation_id="c",
            type="StateChanged",
            data=msgspec.Raw(
                encode(StateChanged(at=v, changes={"n": v}, deleted_keys=[], state_version=v))
            ),
        )
        for v in range(1, 6)
    ]
    epoch = await store.leases.acquire("worker", p, "w", 10_000)
    writer = store.open_partition(p, epoch, "w")
    batch = writer.new_batch()
    batch.append(
        b"0-1",
        "c",
        batch.actor(actor),
        0,
        "",
        encode(Outcome(command_id="c", actor_id=actor, ok=True, version=5, events=5)),
        [encode(e) for e in envs],
        [],
        [],
        [],
        None,
    )
    await writer.append(batch)
    history = EventHistory(store)
    assert await history.current_version(sid) == 5
    pushes, last, complete = await history.after(sid, 2)
    assert ([x.version for x in pushes], last, complete) == ([3, 4, 5], 5, True)
    assert await history.after(sid, 5) == ([], 5, True)

    await store.actors.trim(p, actor, 4)  # Redis keeps versions 4 and 5
    assert await history.after(sid, 1) == ([], 1, False)  # 2 and 3 are nowhere: a reset
    archive = MemoryArchive()
    archive.envelopes = envs[:3]
    store.archive = archive
    pushes, last, complete = await history.after(sid, 1)
    assert ([x.version for x in pushes], last, complete) == ([2, 3, 4, 5], 5, True)
    assert [x.payload["changes"] for x in pushes[:2]] == [{"n": 2}, {"n": 3}]
    archive.envelopes = [envs[0], envs[2]]  # the archive misses version 2
    assert await history.after(sid, 1) == ([], 1, False)


class _SilentStream(MemConn):
    """A watch that cannot send on its stream (SSE, a gRPC Watch): keep-alives are raw bytes."""

    transport = "sse"
    speaks = False
    __slots__ = ()

    async def write(self, data) -> None:
        self.frames.append({"raw": bytes(data)} if isinstance(data, bytes) else json.loads(data))


@pytest.mark.anyio
async def test_only_a_peer_that_can_speak_is_closed_for_its_silence() -> None:
    """A WebSocket peer silent for the idle timeout is gone (4408); an SSE stream cannot send,
    so its silence says nothing: it gets its keep-alive and stays open however long it lasts."""
    from gateway import upkeep
    from gateway.operations import Context

    cfg = load_settings({"GATEWAY_IDLE_TIMEOUT": "60"}).gateway
    gw = Context(cfg, MemoryStore(cfg.partitions), None, _RecordingBus())
    ws, sse = MemConn("s", "u", "d-ws"), _SilentStream("s", "u", "d-sse")
    now = time.monotonic()
    for conn in (ws, sse):
        conn.state = ConnState.LIVE
        conn.last_rx = now - 61
        gw.hub.conns[conn.conn_id] = conn
    upkeep.heartbeat(gw, now, [ws.conn_id, sse.conn_id])
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert {"closed": 4408, "reason": "IDLE_TIMEOUT"} in ws.frames
    assert sse.frames == [{"raw": b": keep-alive\n\n"}]


@pytest.mark.anyio
async def test_a_catch_up_that_reads_the_sessions_end_closes_the_connection() -> None:
    """A client that attaches just as its session ends gets the end from history, not from the
    live feed: it is closed as the feed would have closed it; a later restart keeps it open."""
    from gateway.hub import _close_if_history_ended
    from gateway.protocol import MessageType
    from gateway.push import Push

    def change(version: int, event: str, **more: str) -> Push:
        return Push(MessageType.SESSION_UPDATE, {"event": event, **more}, session_id="s",
                    version=version)  # fmt: skip

    cases = [
        ([("SessionEnded", {})], {"closed": 4410, "reason": "SESSION_ENDED"}),
        ([("SessionExpired", {})], {"closed": 4410, "reason": "SESSION_EXPIRED"}),
        ([("SessionEnded", {"reason": "restarted"})], None),
        ([("SessionEnded", {}), ("SessionCreated", {})], None),
        ([("StateChanged", {})], None),
    ]
    for history, expected in cases:
        conn = MemConn("s", "u", "d")
        conn.state = ConnState.CATCHING_UP
        pushes = [change(v, event, **more) for v, (event, more) in enumerate(history, 1)]
        _close_if_history_ended(conn, pushes)
        await asyncio.sleep(0.01)
        assert conn.frames == []  # nothing closes a connection before its catch-up ends
        conn.go_live()
        await asyncio.sleep(0.01)
        assert (conn.frames[-1] if conn.frames else None) == expected, history
