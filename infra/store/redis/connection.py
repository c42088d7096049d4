"""The store's connections to Redis: a raw asyncio RESP client with hiredis' C reply parser.

redis-py costs more CPU than the work on the hot paths (a pool checkout, a retry wrapper,
per-argument packing, one write plus one read per command), so the store talks RESP itself:

- `Pipeline`: one connection; every command submitted within one event-loop turn goes out in
  ONE socket write, and replies are matched to their callers first-in first-out (Redis answers
  the commands of one connection in order). A caller that stops waiting (cancelled) does not
  desynchronise the FIFO: its reply is read and dropped. An error reply fails that caller only
  (`ReplyError`); a lost connection fails every command in flight (`ConnectionLost`: they may
  or may not have been executed) and the next command reconnects.
- `Subscriber`: one pub/sub connection; SUBSCRIBE/UNSUBSCRIBE channels and get each message
  through a callback. On connection loss it reconnects with backoff, re-subscribes every channel
  and then calls `on_reconnect` (messages published meanwhile are lost: the caller catches up).

Both errors are `StoreUnavailable`: nothing of redis-py leaves the store. `Endpoint.from_url`
reads a ``redis://``, ``rediss://`` or ``unix://`` URL with redis-py's parser (a cold path).
Replies are raw (bytes, ints, lists, None; RESP2).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import hiredis

from events.errors import StoreUnavailable
from infra.store.redis.resp import pack

__all__ = ["ConnectionLost", "Endpoint", "Pipeline", "ReplyError", "Subscriber"]

log = logging.getLogger("sessiond.store")


class ReplyError(StoreUnavailable):
    """Redis answered a command with an error (`reply` is its text, e.g. "NOSCRIPT ...")."""

    def __init__(self, reply: str) -> None:
        super().__init__(f"Redis refused a command: {reply}")
        self.reply = reply


class ConnectionLost(StoreUnavailable):
    """The connection could not be opened, or was lost with commands in flight."""


class Endpoint:
    """Where and how to connect: TCP (`host`, `port`) or a unix socket (`path`), optional TLS,
    credentials and database."""

    __slots__ = ("connect_timeout", "credentials", "db", "host", "path", "port", "ssl")

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        credentials: Callable[[], tuple[str | None, str | None]] | None = None,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.path = path
        self.db = int(db or 0)
        self.ssl = ssl_context
        self.connect_timeout = connect_timeout
        if credentials is None:
            user, pw = username, password
            credentials = lambda: (user, pw)  # noqa: E731
        self.credentials = credentials

    def __repr__(self) -> str:
        where = self.path or f"{self.host}:{self.port}"
        return f"Endpoint({where}, db={self.db}, tls={self.ssl is not None})"

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """The endpoint of a ``redis://``, ``rediss://`` or ``unix://`` URL (redis-py's rules:
        credentials, ``/db`` or ``?db=``, TLS options)."""
        import redis.asyncio

        try:
            client = redis.asyncio.Redis.from_url(url)
        except ValueError as exc:
            raise StoreUnavailable(f"bad Redis URL {url!r}: {exc}") from None
        return cls.of(client)

    @classmethod
    def of(cls, client: Any) -> Endpoint:
        """Connect where (and as whom) the redis-py client `client` connects (nothing is
        opened: only its settings are read)."""
        from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
        from redis.connection import SSLConnection as SyncSSLConnection

        pool = client.connection_pool
        kw = pool.connection_kwargs
        conn_cls = pool.connection_class
        ctx = None
        if issubclass(conn_cls, (AsyncSSLConnection, SyncSSLConnection)):
            # redis-py turns its ssl_* options into a context: reuse it rather than copy it
            ctx = conn_cls(**kw).ssl_context.get()
        provider = kw.get("credential_provider")
        credentials = None
        if provider is not None:

            def credentials() -> tuple[str | None, str | None]:
                creds = provider.get_credentials()
                return (None, creds[0]) if len(creds) == 1 else (creds[0], creds[1])

        timeout = kw.get("socket_connect_timeout")
        return cls(
            host=kw.get("host", "127.0.0.1"),
            port=kw.get("port", 6379),
            path=kw.get("path"),
            username=kw.get("username"),
            password=kw.get("password"),
            db=kw.get("db", 0),
            ssl_context=ctx,
            connect_timeout=5.0 if timeout is None else float(timeout),
            credentials=credentials,
        )

    def handshake(self, name: str = "") -> list[bytes]:
        """The commands every new connection starts with."""
        cmds = []
        user, password = self.credentials()
        if password:
            cmds.append(pack(("AUTH", user, password) if user else ("AUTH", password)))
        if self.db:
            cmds.append(pack(("SELECT", self.db)))
        name = _NAME_UNSAFE.sub("_", name)
        if name:
            cmds.append(pack(("CLIENT", "SETNAME", name)))
        return cmds

    async def open(self, protocol_factory: Callable[[], asyncio.Protocol]) -> Any:
        """Open a transport to the endpoint; raises `ConnectionLost`."""
        loop = asyncio.get_running_loop()
        try:
            if self.path:
                coro = loop.create_unix_connection(protocol_factory, self.path, ssl=self.ssl)
            else:
                coro = loop.create_connection(protocol_factory, self.host, self.port, ssl=self.ssl)
            transport, proto = await asyncio.wait_for(coro, self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(f"could not connect to Redis at {self!r}: {exc}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None and not self.path:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return proto


#: what CLIENT SETNAME refuses (spaces, newlines...) or could confuse CLIENT LIST
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@/-]")

_PUSH_KINDS = frozenset(
    (b"message", b"pmessage", b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe", b"pong")
)


class _Conn(asyncio.Protocol):
    """One connection. Replies go FIFO to the futures of the commands sent; with `on_push`,
    pub/sub pushes (lists whose first element is a push kind) go there instead."""

    def __init__(self, on_push: Callable[[list], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.reader = hiredis.Reader()
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        self.out: list[bytes] = []
        self.on_push = on_push
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.error: Exception | None = None
        self.last_rx = time.monotonic()

    # -------------------------------------------------------------- protocol callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        on_push = self.on_push
        try:
            while (reply := reader.gets()) is not False:
                if (
                    on_push is not None
                    and reply.__class__ is list
                    and reply
                    and reply[0] in _PUSH_KINDS
                ):
                    on_push(reply)
                    continue
                if not pending:
                    if on_push is not None:  # a PING's PONG while nothing is subscribed
                        if reply != b"PONG":
                            log.warning("subscriber: unexpected reply %r", reply)
                        continue
                    raise hiredis.ProtocolError(f"unexpected reply {reply!r:.80}")
                fut = pending.popleft()
                if fut.done():  # its caller gave up; the FIFO stays in step
                    continue
                if reply.__class__ is hiredis.ReplyError:
                    fut.set_exception(ReplyError(str(reply)))
                else:
                    fut.set_result(reply)
        except hiredis.ProtocolError as exc:
            log.warning("Redis protocol error, dropping the connection: %s", exc)
            self.abort(ConnectionLost(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            ConnectionLost(
                f"connection to Redis lost: {exc}" if exc else "connection to Redis closed"
            )
        )

    # -------------------------------------------------------------- use
    @property
    def closed(self) -> bool:
        return self.error is not None

    def send(self, packed: bytes) -> asyncio.Future:
        """Queue one framed command; the future gets its reply. Written at the end of the
        current loop turn together with everything else queued in it."""
        fut = self.loop.create_future()
        self.send_with(packed, fut)
        return fut

    def send_with(self, packed: bytes, fut: asyncio.Future) -> None:
        """`send` with the caller's future."""
        if self.error is not None:
            raise self.error
        self.pending.append(fut)
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(packed)

    def send_only(self, packed: bytes) -> None:
        """Queue a command whose reply arrives as a push (SUBSCRIBE & co)."""
        if self.error is not None:
            raise self.error
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(packed)

    def _flush(self) -> None:
        out = self.out
        if not out or self.error is not None:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.transport.write(data)

    def abort(self, error: Exception | None = None) -> None:
        self._fail(error or ConnectionLost("connection to Redis closed"))
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.out.clear()
        pending, self.pending = self.pending, collections.deque()
        for fut in pending:
            if not fut.done():
                fut.set_exception(self.error)
                fut.exception()  # nobody may be left to look at it: no "never retrieved"
        if not self.lost.done():
            self.lost.set_result(None)


async def _open(
    endpoint: Endpoint, name: str, on_push: Callable[[list], None] | None = None
) -> _Conn:
    """A connected, authenticated `_Conn` on the right database."""
    conn: _Conn = await endpoint.open(lambda: _Conn(on_push))
    try:
        replies = [conn.send(cmd) for cmd in endpoint.handshake(name)]
        for fut in replies:
            await fut
    except BaseException:
        conn.abort()
        raise
    return conn


class Pipeline:
    """Commands on one dedicated connection, pipelined per event-loop turn (see the module).

    Commands go out in the order they were submitted, across a (re)connect too: what is
    submitted while connecting waits in a backlog that is queued, in order, before anything
    submitted later.
    """

    def __init__(self, endpoint: Endpoint, *, name: str = "") -> None:
        self.endpoint = endpoint
        self.name = name
        self._conn: _Conn | None = None
        self._backlog: list[tuple[bytes, asyncio.Future]] = []
        self._connecting: asyncio.Task | None = None
        self._closed = False

    def submit(self, packed: bytes) -> asyncio.Future:
        """Queue one framed command (connecting first if needed); the future gets its raw
        reply, `ReplyError` for an error reply, `ConnectionLost` if the connection fails."""
        conn = self._conn
        if conn is not None and conn.error is None:
            return conn.send(packed)
        if self._closed:
            raise ConnectionLost("connection closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._backlog.append((packed, fut))
        if self._connecting is None:
            self._connecting = loop.create_task(self._connect(), name=f"connect-{self.name}")
        return fut

    async def execute(self, packed: bytes) -> Any:
        """Send one framed command and return its raw reply."""
        return await self.submit(packed)

    async def _connect(self) -> None:
        try:
            conn = await _open(self.endpoint, self.name)
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, StoreUnavailable)
                else ConnectionLost(f"could not connect to Redis at {self.endpoint!r}: {exc}")
            )
            self._connecting = None
            backlog, self._backlog = self._backlog, []
            for _, fut in backlog:
                if not fut.done():
                    fut.set_exception(error)
                    fut.exception()
            if not isinstance(exc, Exception):
                raise
            return
        self._connecting = None
        if self._closed:
            conn.abort(ConnectionLost("connection closed"))
        self._conn = conn
        backlog, self._backlog = self._backlog, []
        for packed, fut in backlog:
            if fut.done():  # given up before it was sent: skip it
                continue
            if conn.error is not None:
                fut.set_exception(conn.error)
                fut.exception()
            else:
                conn.send_with(packed, fut)

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.error is None

    def close(self) -> None:
        """Drop the connection; commands in flight fail with `ConnectionLost`."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.abort(ConnectionLost("connection closed"))
            self._conn = None


class Subscriber:
    """One pub/sub connection that keeps a set of channels subscribed (see the module).

    `on_message(channel, data)` is called from the protocol callback for every message, in
    order; it must not block. `on_reconnect()` is called after a lost connection was replaced
    and every channel re-subscribed.
    """

    #: a PING when nothing arrived for this long; the connection is dropped if the next interval
    #: also passes in silence
    HEALTH_S = 15.0

    def __init__(
        self,
        endpoint: Endpoint,
        on_message: Callable[[bytes, bytes], None],
        *,
        on_reconnect: Callable[[], None] | None = None,
        name: str = "",
        confirm_timeout: float = 5.0,
    ) -> None:
        self.endpoint = endpoint
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.name = name
        self.confirm_timeout = confirm_timeout
        self.channels: set[bytes] = set()
        self._conn: _Conn | None = None
        self._ready = False  # connected, and every wanted channel asked for
        self._confirm: dict[bytes, list[asyncio.Future]] = {}
        self._task: asyncio.Task | None = None
        self.reconnects = 0

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect (raising `ConnectionLost` if Redis cannot be reached) and keep the
        connection up."""
        if self._task is not None:
            return
        conn = await _open(self.endpoint, self.name, self._on_push)
        self._go(conn)
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(conn), name=f"subscriber-{self.name}"
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._conn is not None:
            self._conn.abort()
            self._conn = None
        self._ready = False
        for waiters in self._confirm.values():
            for fut in waiters:
                if not fut.done():
                    fut.cancel()
        self._confirm.clear()

    # -------------------------------------------------------------- channels
    async def subscribe(self, *channels: str | bytes) -> None:
        """Subscribe `channels` (kept across reconnects); returns once Redis confirmed them.
        Raises `ConnectionLost` if that takes longer than `confirm_timeout` (they stay wanted
        and are subscribed when the connection comes back)."""
        chans = [c.encode() if isinstance(c, str) else c for c in channels]
        if not chans:
            return
        loop = asyncio.get_running_loop()
        waits = []
        for ch in chans:
            self.channels.add(ch)
            fut = loop.create_future()
            self._confirm.setdefault(ch, []).append(fut)
            waits.append(fut)
        if self._ready and self._conn is not None and self._conn.error is None:
            self._conn.send_only(pack((b"SUBSCRIBE", *chans)))
        try:
            async with asyncio.timeout(self.confirm_timeout):
                for fut in waits:
                    await fut
        except TimeoutError:
            raise ConnectionLost(
                f"Redis did not confirm the subscription to {len(chans)} channel(s)"
            ) from None
        finally:
            for ch, fut in zip(chans, waits, strict=True):
                waiters = self._confirm.get(ch)
                if waiters is not None and fut in waiters:
                    waiters.remove(fut)
                    if not waiters:
                        del self._confirm[ch]

    async def unsubscribe(self, *channels: str | bytes) -> None:
        chans = [c.encode() if isinstance(c, str) else c for c in channels]
        for ch in chans:
            self.channels.discard(ch)
        if chans and self._ready and self._conn is not None and self._conn.error is None:
            self._conn.send_only(pack((b"UNSUBSCRIBE", *chans)))

    # -------------------------------------------------------------- internals
    def _on_push(self, reply: list) -> None:
        kind = reply[0]
        if kind == b"message":
            try:
                self.on_message(reply[1], reply[2])
            except Exception:
                log.exception("subscriber %s: message handler failed", self.name)
        elif kind == b"subscribe":
            waiters = self._confirm.pop(reply[1], None)
            if waiters:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)

    def _go(self, conn: _Conn) -> list[bytes]:
        """Make `conn` the live connection and ask for every wanted channel (no await between
        the two: a channel added meanwhile is not missed)."""
        self._conn = conn
        self._ready = True
        chans = list(self.channels)
        if chans:
            conn.send_only(pack((b"SUBSCRIBE", *chans)))
        return chans

    async def _supervise(self, conn: _Conn) -> None:
        while True:
            await self._watch(conn)
            self._ready = False
            self._conn = None
            log.warning("subscriber %s: connection lost (%s); reconnecting", self.name, conn.error)
            conn = await self._reconnect()
            self.reconnects += 1
            if self.on_reconnect is not None:
                try:
                    self.on_reconnect()
                except Exception:
                    log.exception("subscriber %s: on_reconnect failed", self.name)

    async def _reconnect(self) -> _Conn:
        """A new connection with every wanted channel subscribed (confirmed), retrying with
        backoff."""
        backoff = 0.05
        while True:
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
            try:
                conn = await _open(self.endpoint, self.name, self._on_push)
            except (StoreUnavailable, OSError) as exc:
                log.warning("subscriber %s: reconnect failed: %s", self.name, exc)
                continue
            chans = self._go(conn)
            if chans:
                # Redis confirms in order: the last channel's confirmation covers them all
                last = asyncio.get_running_loop().create_future()
                self._confirm.setdefault(chans[-1], []).append(last)
                try:
                    await asyncio.wait(
                        (last, conn.lost),
                        timeout=self.confirm_timeout,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiters = self._confirm.get(chans[-1])
                    if waiters is not None and last in waiters:
                        waiters.remove(last)
                        if not waiters:
                            del self._confirm[chans[-1]]
                if not last.done():
                    log.warning("subscriber %s: re-subscribe not confirmed", self.name)
                    conn.abort()
            if conn.closed:
                self._ready = False
                self._conn = None
                continue
            log.info("subscriber %s: reconnected, %d channel(s)", self.name, len(chans))
            return conn

    async def _watch(self, conn: _Conn) -> None:
        """Until `conn` is lost; a PING keeps silence from hiding a dead peer."""
        pinged = False
        while not conn.closed:
            try:
                async with asyncio.timeout(self.HEALTH_S):
                    await asyncio.shield(conn.lost)
                return
            except TimeoutError:
                pass
            if time.monotonic() - conn.last_rx < self.HEALTH_S:
                pinged = False
                continue
            if pinged:
                conn.abort(ConnectionLost("no answer to PING"))
                return
            conn.send_only(b"*1\r\n$4\r\nPING\r\n")
            pinged = True
