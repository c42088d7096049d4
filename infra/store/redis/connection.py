"""The store's connections to Redis: a raw asyncio RESP client with hiredis' C reply parser.

redis-py costs more CPU than the work on the hot paths (a pool checkout, a retry wrapper,
per-argument packing, one write plus one read per command), so the store talks RESP itself:

- `Pipeline`: one connection; every command submitted within one event-loop turn goes out in
  ONE socket write, and replies are matched to their callers first-in first-out (Redis answers
  the commands of one connection in order). A caller that stops waiting (cancelled) does not
  desynchronise the FIFO: its reply is read and dropped. An error reply fails that caller only
  (`ReplyError`); a lost connection fails every command in flight (`ConnectionLost`: they may
  or may not have been executed) and the next command reconnects.
- `_Conn` with a push handler: a pub/sub connection (`infra.store.redis.subscriber` keeps the
  shard channels subscribed on it).

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

__all__ = ["ConnectionLost", "Endpoint", "Pipeline", "ReplyError"]

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

    @property
    def address(self) -> tuple[str, int]:
        """(host, port); a unix socket's path with port 0."""
        return (self.path, 0) if self.path else (self.host, self.port)

    def at(self, host: str, port: int) -> Endpoint:
        """Another node of the same cluster: same credentials, TLS and timeouts, database 0
        (a cluster has no other)."""
        other = Endpoint(
            host=host,
            port=port,
            ssl_context=self.ssl,
            connect_timeout=self.connect_timeout,
            credentials=self.credentials,
        )
        return other

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
    (
        b"message",
        b"pmessage",
        b"smessage",
        b"subscribe",
        b"unsubscribe",
        b"psubscribe",
        b"punsubscribe",
        b"ssubscribe",
        b"sunsubscribe",
        b"pong",
    )
)


class _Conn(asyncio.Protocol):
    """One connection. Replies go FIFO to the futures of the commands sent; with `on_push`,
    pub/sub pushes (lists whose first element is a push kind) go there instead."""

    def __init__(self, on_push: Callable[[list], None] | None = None) -> None:
        self.on_error: Callable[[str], None] | None = None
        self.close_when_idle = False
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
                        if reply.__class__ is hiredis.ReplyError and self.on_error is not None:
                            self.on_error(str(reply))  # a subscription refused (MOVED)
                        elif reply != b"PONG":
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
            if self.close_when_idle and not pending:
                self.abort(ConnectionLost("connection closed (idle)"))
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

    def close_when_idle(self) -> None:
        """Take no more commands; close once those in flight are answered (a slot moved to
        another node: what was sent here still gets its reply)."""
        if self._connecting is not None:
            return  # its backlog is still to be sent: leave it be
        conn = self._conn
        if conn is None or conn.error is not None or not conn.pending:
            self.close()
            return
        self._closed = True
        conn.close_when_idle = True

    def close(self) -> None:
        """Drop the connection; commands in flight fail with `ConnectionLost`."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.abort(ConnectionLost("connection closed"))
            self._conn = None
