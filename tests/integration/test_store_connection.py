"""The Redis store's own connections (`infra.store.redis.connection`) against a real Redis:
pipelining, FIFO replies, errors, lost connections, cancellation, sharded pub/sub with
re-subscription (`infra.store.redis.subscriber`), AUTH/SELECT from the URL; and what the store
raises when Redis is out of reach."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis

from events.errors import StoreUnavailable
from infra.embedded import start_redis
from infra.store import open_store
from infra.store.redis.connection import ConnectionLost, Endpoint, Pipeline
from infra.store.redis.connection import ReplyError as ResponseError
from infra.store.redis.resp import pack
from infra.store.redis.router import Router
from infra.store.redis.subscriber import Subscriber
from tests.integration.rawkit import count_writes

pytestmark = pytest.mark.anyio


def _subscriber(url: str, on_message, **kw) -> Subscriber:
    return Subscriber(Router(Endpoint.from_url(url), "t-router"), on_message, **kw)


async def _eventually(check, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_one_write_per_loop_turn_and_replies_in_order(redis_url: str) -> None:
    pipe = Pipeline(Endpoint.from_url(redis_url), name="t-pipe")
    try:
        assert await pipe.execute(pack(("PING",))) == b"PONG"
        writes = count_writes(pipe)
        # 300 callers in one loop turn: ECHO answers each with its own payload, INCR proves order
        echoes = [pipe.submit(pack(("ECHO", f"m{i}"))) for i in range(300)]
        incrs = [pipe.submit(pack(("INCR", "raw:counter"))) for _ in range(300)]
        assert await asyncio.gather(*echoes) == [f"m{i}".encode() for i in range(300)]
        assert await asyncio.gather(*incrs) == list(range(1, 301))
        assert len(writes) == 1, f"{len(writes)} writes for one loop turn"
        # coroutines that each send once in the same turn share one write too
        writes.clear()

        async def one(i: int) -> bytes:
            return await pipe.execute(pack(("ECHO", str(i))))

        assert await asyncio.gather(*(one(i) for i in range(50))) == [
            str(i).encode() for i in range(50)
        ]
        assert len(writes) == 1
    finally:
        pipe.close()


async def test_an_error_reply_fails_only_its_caller(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.set("raw:str", "not a number")
    pipe = Pipeline(Endpoint.from_url(redis_url))
    try:
        a = pipe.submit(pack(("ECHO", "a")))
        bad = pipe.submit(pack(("INCR", "raw:str")))
        wrong = pipe.submit(pack(("XADD", "raw:str", "*", "c", "x")))
        b = pipe.submit(pack(("ECHO", "b")))
        assert await a == b"a"
        with pytest.raises(ResponseError, match="not an integer"):
            await bad
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await wrong
        assert await b == b"b"
        assert await pipe.execute(pack(("ECHO", "after"))) == b"after"
    finally:
        pipe.close()
        r.close()


async def test_a_killed_connection_fails_what_is_in_flight_and_the_next_command_reconnects(
    redis_url: str,
) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    pipe = Pipeline(Endpoint.from_url(redis_url), name="t-killed")
    try:
        first_id = await pipe.execute(pack(("CLIENT", "ID")))
        # a command Redis holds (BLPOP) and two queued behind it on the same connection
        blocked = pipe.submit(pack(("BLPOP", "raw:never", "10")))
        behind = [pipe.submit(pack(("ECHO", "x"))), pipe.submit(pack(("INCR", "raw:n")))]
        await asyncio.sleep(0.05)
        assert await admin.client_kill_filter(_id=first_id) == 1
        for fut in (blocked, *behind):
            with pytest.raises(ConnectionLost):
                await fut
        assert not pipe.connected
        # the next command reconnects (a new client)
        second_id = await pipe.execute(pack(("CLIENT", "ID")))
        assert second_id != first_id
        assert await pipe.execute(pack(("ECHO", "back"))) == b"back"
        # what is submitted while (re)connecting goes out in submission order
        await admin.client_kill_filter(_id=second_id)
        await _eventually(lambda: not pipe.connected)
        burst = [pipe.submit(pack(("INCR", "raw:order"))) for _ in range(100)]
        assert await asyncio.gather(*burst) == list(range(1, 101))
    finally:
        pipe.close()
        await admin.aclose()


async def test_connect_failure_fails_the_callers_and_a_later_command_retries(
    redis_url: str,
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pipe = Pipeline(Endpoint(host="127.0.0.1", port=port, connect_timeout=1.0))
    futs = [pipe.submit(pack(("PING",))) for _ in range(3)]
    for fut in futs:
        with pytest.raises(ConnectionLost):
            await fut
    # point it at the real server: the next command connects afresh
    u = urlsplit(redis_url)
    pipe.endpoint = Endpoint(host=u.hostname or "127.0.0.1", port=u.port or 6379)
    try:
        assert await pipe.execute(pack(("PING",))) == b"PONG"
    finally:
        pipe.close()


async def test_a_cancelled_caller_does_not_desynchronise_the_replies(redis_url: str) -> None:
    pipe = Pipeline(Endpoint.from_url(redis_url))
    try:
        await pipe.execute(pack(("PING",)))
        # cancelled while Redis holds its command: its reply is read and dropped
        slow = asyncio.ensure_future(pipe.execute(pack(("BLPOP", "raw:q", "0.3"))))
        await asyncio.sleep(0.02)
        after = [pipe.submit(pack(("ECHO", f"e{i}"))) for i in range(5)]
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await asyncio.gather(*after) == [f"e{i}".encode() for i in range(5)]
        # cancelled in the same turn it was sent: the others still get their own replies
        tasks = [asyncio.ensure_future(pipe.execute(pack(("ECHO", str(i))))) for i in range(20)]
        await asyncio.sleep(0)
        for t in tasks[::3]:
            t.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        for i, res in enumerate(done):
            if i % 3 == 0:
                assert isinstance(res, asyncio.CancelledError)
            else:
                assert res == str(i).encode()
        assert await pipe.execute(pack(("ECHO", "still"))) == b"still"
    finally:
        pipe.close()


async def test_cancelled_before_connecting_is_not_sent(redis_url: str) -> None:
    pipe = Pipeline(Endpoint.from_url(redis_url))
    try:
        skipped = pipe.submit(pack(("INCR", "raw:skipped")))
        kept = pipe.submit(pack(("INCR", "raw:kept")))
        skipped.cancel()
        assert await kept == 1
        assert await pipe.execute(pack(("GET", "raw:skipped"))) is None
    finally:
        pipe.close()


async def test_subscriber_delivers_and_resubscribes_after_a_kill(redis_url: str) -> None:
    got: list[tuple[bytes, bytes]] = []
    reconnected = asyncio.Event()
    pub = aioredis.Redis.from_url(redis_url)
    sub = _subscriber(
        redis_url, lambda ch, d: got.append((ch, d)), on_reconnect=reconnected.set, name="t-sub"
    )
    await sub.start()
    try:
        await sub.subscribe("raw:a", b"raw:b")
        assert await pub.spublish("raw:a", b"1") == 1
        assert await pub.spublish("raw:b", b"2") == 1
        await _eventually(lambda: len(got) == 2)
        assert got == [(b"raw:a", b"1"), (b"raw:b", b"2")]

        await sub.unsubscribe("raw:b")
        await sub.subscribe("raw:c")
        await pub.spublish("raw:b", b"lost")
        await pub.spublish("raw:c", b"3")
        await _eventually(lambda: len(got) == 3)
        assert got[-1] == (b"raw:c", b"3")

        killed = await pub.client_kill_filter(_type="pubsub")
        assert killed >= 1
        await asyncio.wait_for(reconnected.wait(), 10)
        assert sub.reconnects == 1
        # every wanted channel is back (confirmed before on_reconnect): later messages arrive
        assert await pub.spublish("raw:a", b"4") == 1
        assert await pub.spublish("raw:c", b"5") == 1
        assert await pub.spublish("raw:b", b"gone") == 0
        await _eventually(lambda: len(got) == 5)
        assert got[3:] == [(b"raw:a", b"4"), (b"raw:c", b"5")]
        # a channel subscribed after the reconnect works too
        await sub.subscribe("raw:d")
        assert await pub.spublish("raw:d", b"6") == 1
        await _eventually(lambda: len(got) == 6)
    finally:
        await sub.close()
        await pub.aclose()
    assert await _numsub(redis_url, "raw:a") == 0  # closed: nothing left subscribed


async def _numsub(url: str, channel: str) -> int:
    r = aioredis.Redis.from_url(url)
    try:
        return dict(await r.pubsub_shardnumsub(channel))[channel.encode()]
    finally:
        await r.aclose()


async def test_subscribe_waits_through_a_reconnect(redis_url: str) -> None:
    got: list[bytes] = []
    pub = aioredis.Redis.from_url(redis_url)
    sub = _subscriber(redis_url, lambda ch, d: got.append(d))
    await sub.start()
    try:
        await pub.client_kill_filter(_type="pubsub")
        # asked while the connection is down: confirmed once it is back
        await sub.subscribe("raw:late")
        assert await pub.spublish("raw:late", b"x") == 1
        await _eventually(lambda: got == [b"x"])
    finally:
        await sub.close()
        await pub.aclose()


async def test_username_password_and_db_from_the_url(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", "raw-user", "on", ">s3cr3t", "~*", "&*", "+@all")
    u = urlsplit(redis_url)
    url = f"redis://raw-user:s3cr3t@{u.hostname}:{u.port}/5"
    pipe = Pipeline(Endpoint.from_url(url))
    got: list[bytes] = []
    sub = _subscriber(url, lambda ch, d: got.append(d))
    try:
        assert await pipe.execute(pack(("ACL", "WHOAMI"))) == b"raw-user"
        assert await pipe.execute(pack(("SET", "raw:where", "db5"))) == b"OK"
        assert redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/5").get("raw:where") == b"db5"
        assert admin.get("raw:where") is None  # not in db 0
        await sub.start()
        await sub.subscribe("raw:auth")
        assert admin.spublish("raw:auth", b"ok") == 1
        await _eventually(lambda: got == [b"ok"])
        bad = Pipeline(Endpoint.from_url(f"redis://raw-user:wrong@{u.hostname}:{u.port}/5"))
        with pytest.raises(ResponseError, match=r"WRONGPASS|invalid"):
            await bad.execute(pack(("PING",)))
        bad.close()
    finally:
        pipe.close()
        await sub.close()
        admin.execute_command("ACL", "DELUSER", "raw-user")
        admin.close()


async def test_password_only_url_authenticates_the_default_user(server_data_dir) -> None:
    server = start_redis(server_data_dir / "redis")
    try:
        with contextlib.closing(redis.Redis(port=server.port)) as r:
            r.config_set("requirepass", "p@ss word")
        from urllib.parse import quote

        url = f"redis://:{quote('p@ss word', safe='')}@127.0.0.1:{server.port}/2"
        pipe = Pipeline(Endpoint.from_url(url))
        try:
            assert await pipe.execute(pack(("SET", "k", "v"))) == b"OK"
            info = await pipe.execute(pack(("CLIENT", "INFO")))
            assert b" db=2 " in info
        finally:
            pipe.close()
        nopass = Pipeline(Endpoint.from_url(f"redis://127.0.0.1:{server.port}/2"))
        with pytest.raises(ResponseError, match="NOAUTH"):
            await nopass.execute(pack(("GET", "k")))
        nopass.close()
    finally:
        server.stop()


def test_endpoint_mirrors_the_redis_py_client() -> None:
    e = Endpoint.of(aioredis.Redis.from_url("redis://u:p%40w@h.example:6390/4"))
    assert (e.host, e.port, e.db, e.path, e.ssl) == ("h.example", 6390, 4, None, None)
    assert e.credentials() == ("u", "p@w")
    assert e.handshake("a name") == [
        pack(("AUTH", "u", "p@w")),
        pack(("SELECT", 4)),
        pack(("CLIENT", "SETNAME", "a_name")),
    ]
    e = Endpoint.from_url("unix:///tmp/r.sock?db=3")
    assert (e.path, e.db) == ("/tmp/r.sock", 3)
    assert e.handshake() == [pack(("SELECT", 3))]
    e = Endpoint.from_url("rediss://:pw@h:6380/0?ssl_cert_reqs=none")
    assert e.ssl is not None and e.ssl.verify_mode.name == "CERT_NONE"
    assert e.handshake() == [pack(("AUTH", "pw"))]
    e = Endpoint.of(redis.Redis(host="x", port=1, password="q", db=0))
    assert (e.host, e.port) == ("x", 1) and e.handshake() == [pack(("AUTH", "q"))]


def test_under_uvloop_as_the_gateway_runs_it(redis_url: str) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        admin = aioredis.Redis.from_url(redis_url)
        pipe = Pipeline(Endpoint.from_url(redis_url))
        got: list[bytes] = []
        back = asyncio.Event()
        sub = _subscriber(redis_url, lambda ch, d: got.append(d), on_reconnect=back.set)
        try:
            assert await asyncio.gather(
                *(pipe.execute(pack(("INCR", "uv:n"))) for _ in range(100))
            ) == list(range(1, 101))
            cid = await pipe.execute(pack(("CLIENT", "ID")))
            held = pipe.submit(pack(("BLPOP", "uv:never", "5")))
            await asyncio.sleep(0.05)
            await admin.client_kill_filter(_id=cid)
            with pytest.raises(ConnectionLost):
                await held
            assert await pipe.execute(pack(("ECHO", "ok"))) == b"ok"
            await sub.start()
            await sub.subscribe("uv:ch")
            await admin.client_kill_filter(_type="pubsub")
            await asyncio.wait_for(back.wait(), 10)
            assert await admin.spublish("uv:ch", b"after") == 1
            await _eventually(lambda: got == [b"after"])
        finally:
            pipe.close()
            await sub.close()
            await admin.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def test_an_unreachable_store_is_store_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = open_store(f"redis://127.0.0.1:{port}/0", 4)
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.leases.holders("worker")
        assert issubclass(ConnectionLost, StoreUnavailable)
        assert issubclass(ResponseError, StoreUnavailable)
    finally:
        await store.aclose()
