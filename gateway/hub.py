"""The connection hub: every client connection of this gateway process, grouped by session, and
the change feed that keeps them up to date, gap-free.

- One subscription to the store's change feed per process (`ChangeFeed.subscriber`), holding
  one subscribed session per session with at least one local connection, shared by all of
  them, and the admin broadcast. When its connection is lost it reconnects, re-subscribes
  everything and every session is caught up from its events.
- Every change carries the session's event version. A session feed delivers versions in order:
  when a published change skips versions (missed message, no-change events) it reads the missing
  events of the session actor from the store (`ActorReader`) and pushes them first.
- A connection tracks the last version it was sent; a connection resuming with `since` is caught
  up from the stream (or the archive), then live changes buffered meanwhile are drained, each
  version sent at most once. When history no longer reaches back it gets a `reset` with the
  current state from the projections, then what followed.
- No task or queue per connection: writes go straight to the connection while it keeps up; a
  short-lived flush task exists only while a connection has a backlog, and a backlog above
  `max_outgoing_bytes` disconnects the slow client (its socket is dropped if it does not take
  the close either, so its device goes offline at once).

`Hub.push_to_session(session_id, push)` is the hook other modules (market data) use to reach every
local client of a session; `Hub.on_attach` callbacks learn when a session gains its first local
connection and `Hub.on_detach` when it loses its last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind

from events.envelope import EventEnvelope
from events.errors import StoreUnavailable
from events.ids import session_actor
from gateway.protocol import Form, MessageType
from gateway.push import Push, push_for_event, session_closed_by
from infra import tracing
from infra.store import ChangeFeed, FeedSubscription, Store
from projections.changes import Change, change_for, decode_changes

__all__ = [
    "ConnState",
    "Connection",
    "EventHistory",
    "Hub",
    "InvalidConnectionState",
    "ResetState",
]

log = logging.getLogger("sessiond.gateway.hub")


class ConnState(IntEnum):
    """A connection's life: catching up (history read, live changes buffered) <-> live, then
    closing (a close was asked for) and closed (the socket is done). Once closing, a
    connection never opens again. Changed only through `Connection.move_to`."""

    CATCHING_UP = 1
    LIVE = 2
    CLOSING = 3
    CLOSED = 4


#: The moves `Connection.move_to` allows: catching up and live alternate (a resumed client
#: catches up again), any open state may close, and closing ends closed. A connection closed
#: twice (the reader and a failed write both notice) stays closed.
_MOVES: dict[ConnState, frozenset[ConnState]] = {
    ConnState.CATCHING_UP: frozenset(ConnState),
    ConnState.LIVE: frozenset({ConnState.CATCHING_UP, ConnState.CLOSING, ConnState.CLOSED}),
    ConnState.CLOSING: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset({ConnState.CLOSED}),
}


class InvalidConnectionState(RuntimeError):
    """A connection was asked for a move its state does not allow: a bug in the caller, raised
    loudly (as websockets' `InvalidState` and Starlette's `client_state` checks do)."""


def _close_if_history_ended(conn: Connection, pushes: list[Push]) -> None:
    """A catch-up that read its session's end from history closes the connection as the live
    feed would have (the end was appended while the client attached, so no live change of it
    reaches this connection); a later restart in the same history keeps it open."""
    reason = None
    for push in pushes:
        ended = session_closed_by(push)
        if ended is not None:
            reason = ended
        elif isinstance(push.payload, dict) and push.payload.get("event") == "SessionCreated":
            reason = None
    if reason is not None:
        conn.close_when_caught_up(4410, reason)


class Connection:
    """One client connection (WS or SSE) as the hub sees it. Subclasses write bytes."""

    transport = "ws"
    #: Whether the peer sends (heartbeats, messages) so that its silence means it is gone. A
    #: WebSocket peer answers heartbeats; an SSE or gRPC watch cannot send on its stream, so
    #: only a failed or stalled write (the slow-client rule) tells that it left.
    speaks = True
    __slots__ = (
        "_close_after_catch_up",
        "_flusher",
        "backlog",
        "backlog_bytes",
        "buffer",
        "conn_id",
        "connected_at",
        "device_id",
        "expires_at",
        "form",
        "hub",
        "is_admin",
        "last_rx",
        "last_version",
        "max_outgoing",
        "quality",
        "rtt_ms",
        "session_id",
        "state",
        "user_id",
    )

    def __init__(
        self,
        session_id: str,
        user_id: str,
        device_id: str,
        *,
        form: Form = Form.NAMES,
        max_outgoing: int = 1 << 20,
        is_admin: bool = False,
    ) -> None:
        self.conn_id = uuid.uuid4().hex
        self.session_id = session_id
        self.user_id = user_id
        self.device_id = device_id
        self.form = form
        self.is_admin = is_admin
        self.state = ConnState.CATCHING_UP
        self.last_version = 0
        self.buffer: list[Push] | None = []
        self.backlog: deque[Any] | None = None  # made only while a write is pending
        self.backlog_bytes = 0
        self.max_outgoing = max_outgoing
        self._flusher: asyncio.Task | None = None
        self.hub: Hub | None = None
        self.quality = "GOOD"
        self.rtt_ms = 0.0
        self.connected_at = time.time()
        self.last_rx = time.monotonic()
        self._close_after_catch_up: tuple[int, str] | None = None
        self.expires_at = 0  # the token's `exp` (s since the epoch): closed after it; 0 = never

    # ------------------------------------------------------------------ state
    def move_to(self, state: ConnState) -> None:
        """The one way a connection changes state (see `ConnState`); an illegal move raises
        `InvalidConnectionState`."""
        if state not in _MOVES[self.state]:
            raise InvalidConnectionState(
                f"connection {self.conn_id}: {self.state.name} -> {state.name} is not a move"
            )
        self.state = state

    @property
    def closing(self) -> bool:
        """Closing or closed: nothing more is sent, and it never opens again."""
        return self.state >= ConnState.CLOSING

    def token_expired(self, grace_s: float, now: float | None = None) -> bool:
        """Whether the token the connection was opened (or last re-authenticated) with has
        expired, `grace_s` allowed: the upkeep closes such a connection (4401 TOKEN_EXPIRED)
        within one heartbeat interval, and a WS message on it is refused."""
        exp = self.expires_at
        return bool(exp) and (time.time() if now is None else now) >= exp + grace_s

    # ------------------------------------------------------------------ to implement
    def encode(self, push: Push) -> Any:
        return push.frame(self.form)

    async def write(self, data: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def abort(self, code: int, reason: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ delivery
    def deliver(self, push: Push) -> None:
        """Send a change in version order, at most once; buffer it while catching up."""
        if self.state >= ConnState.CLOSING:
            return
        v = push.version
        if v is not None:
            if self.state is ConnState.CATCHING_UP:
                assert self.buffer is not None
                self.buffer.append(push)
                return
            if v <= self.last_version:
                return
            self.last_version = v
        self.send(self.encode(push))

    def deliver_history(self, pushes: list[Push], upto: int) -> None:
        """Catch-up: pushes read from history, then the version reached (`upto`)."""
        for push in pushes:
            if push.version is not None and push.version <= self.last_version:
                continue
            if push.version is not None:
                self.last_version = push.version
            self.send(self.encode(push))
        self.last_version = max(self.last_version, upto)

    def go_live(self) -> None:
        """End of catch-up: drain what arrived meanwhile, in order, skipping what was sent (a
        connection closed meanwhile just drops it)."""
        buffered, self.buffer = self.buffer or [], None
        if self.closing:
            return
        self.move_to(ConnState.LIVE)
        for push in sorted(buffered, key=lambda p: p.version or 0):
            self.deliver(push)
        pending, self._close_after_catch_up = self._close_after_catch_up, None
        if pending is not None:
            self.close_soon(*pending)

    def send(self, data: Any) -> None:
        """Queue one frame; never blocks. A client whose backlog passes the limit is dropped."""
        if self.state >= ConnState.CLOSING:
            return
        size = len(data)
        if self.backlog_bytes + size > self.max_outgoing:
            log.warning(
                "slow client %s: backlog over %d bytes, closing", self.conn_id, self.max_outgoing
            )
            if self.hub is not None and self.hub.metrics is not None:
                self.hub.metrics.slow_clients.inc()
            self.backlog = None
            self.backlog_bytes = 0
            self.close_soon(1008, "SLOW_CLIENT")
            return
        if self.backlog is None and self._flusher is None and self.write_now(data):
            return
        if self.backlog is None:
            self.backlog = deque()
        self.backlog.append(data)
        self.backlog_bytes += size
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def write_now(self, data: Any) -> bool:
        """Write `data` inline if the transport takes it without waiting; False = queue it."""
        return False

    async def _flush(self) -> None:
        try:
            while self.backlog and self.state < ConnState.CLOSED:
                data = self.backlog[0]
                await self.write(data)
                if self.backlog and self.backlog[0] is data:
                    self.backlog.popleft()
                    self.backlog_bytes -= len(data)
        except Exception:  # the peer went away: the reader side cleans up
            self.backlog = None
            self.backlog_bytes = 0
            self.move_to(ConnState.CLOSED)
        finally:
            if not self.backlog:
                self.backlog = None
            self._flusher = None

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until everything queued has been written."""
        flusher = self._flusher
        if flusher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(flusher), timeout)

    def close_when_caught_up(self, code: int, reason: str) -> None:
        """`close_soon`, but a connection still catching up first gets what it is owed (the
        history it is reading and the changes buffered meanwhile end with the change that
        closes it: a session's end must reach the client before the close)."""
        if self.state is ConnState.CATCHING_UP:
            self._close_after_catch_up = (code, reason)
        else:
            self.close_soon(code, reason)

    def close_soon(self, code: int, reason: str) -> None:
        """Close with `code` in the background (once; later calls do nothing)."""
        if self.closing:
            return
        self.move_to(ConnState.CLOSING)
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.abort(code, reason)


class EventHistory:
    """A session's events as pushes, read from the store: what Redis holds, preceded by what
    only the archive (PostgreSQL) still has."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def current_version(self, session_id: str) -> int:
        return await self.store.actors.last_version(
            self.store.partition_of(session_id), session_actor(session_id)
        )

    async def after(
        self, session_id: str, since: int, upto: int | None = None
    ) -> tuple[list[Push], int, bool]:
        """Pushes for the events after `since` (up to `upto`, else the current version), the
        last version read, and whether history reached back to `since` gap-free (False: a
        reset is needed)."""
        if upto is None:
            upto = await self.current_version(session_id)
        if upto <= since:
            return [], since, True
        envs = await self.store.actors.read(
            self.store.partition_of(session_id),
            session_actor(session_id),
            after=since,
            upto=upto,
        )
        if not _gap_free(envs, since):
            return [], since, False
        pushes = [push for env in envs if (push := _push(session_id, env)) is not None]
        return pushes, envs[-1].version, True


def _gap_free(envs: list[EventEnvelope], since: int) -> bool:
    """Whether `envs` are the versions since+1, since+2, ... (at least one)."""
    return bool(envs) and all(env.version == since + i for i, env in enumerate(envs, start=1))


def _push(session_id: str, env: Any) -> Push | None:
    change = change_for(env)
    return push_for_change(change) if change is not None else None


def push_for_change(change: Change) -> Push | None:
    """The client message for one `projections.changes.Change` (live or rebuilt)."""
    return push_for_event(change.session_id, change.version, change.type, change.data, change.ts)


class _Feed:
    __slots__ = ("conns", "last_version", "ready", "session_id")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.conns: set[Connection] = set()
        self.last_version: int | None = None
        self.ready = asyncio.Event()


#: The session's current state (from the projections) and its version, for a `reset`.
ResetState = Callable[[str], Awaitable[tuple[dict, int]]]


class Hub:
    """All local connections, and the change feed shared by the connections of a session."""

    def __init__(
        self,
        feed: ChangeFeed,
        history: EventHistory,
        *,
        metrics: Any = None,
        reset_state: ResetState | None = None,
    ) -> None:
        self.feed = feed
        self.history = history
        self.conns: dict[str, Connection] = {}
        self.feeds: dict[str, _Feed] = {}
        self.pubsub: FeedSubscription | None = None
        #: (session id, change message; None: catch up) or (None, admin broadcast)
        self._inbox: asyncio.Queue[tuple[str | None, bytes | None]] = asyncio.Queue(maxsize=100_000)
        self._worker: asyncio.Task | None = None
        self._busy = False  # `_process` is handling a message (it may be awaiting history)
        #: backoff while the store is unavailable (a message is retried, never dropped)
        self.retry_initial_s = 0.1
        self.retry_max_s = 2.0
        self.retry_give_up_s = 60.0
        self.on_attach: list[Callable[[str], Awaitable[None]]] = []
        self.on_detach: list[Callable[[str], Awaitable[None]]] = []
        self.on_change: list[Callable[[Push], None]] = []
        self.metrics = metrics
        self.reset_state = reset_state

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the change feed subscription (the admin broadcast included)."""
        self.pubsub = self.feed.subscriber(
            self._on_message,
            on_broadcast=self._on_broadcast,
            on_reconnect=self._on_reconnect,
            name="sd-gateway-changes",
        )
        await self.pubsub.start()
        self._worker = asyncio.get_running_loop().create_task(self._process())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(BaseException):
                await self._worker
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.close()

    def _on_message(self, session_id: str, data: bytes) -> None:
        """A change message of a session (called by the subscription, in publish order). The
        common case, the next versions of a ready session with nothing queued before them, is
        pushed right here; anything that must wait (history to read, a feed being set up) goes
        through the inbox, and so does everything behind it, to keep the order."""
        if not self._busy and self._inbox.empty() and data and self._push_inline(session_id, data):
            return
        try:
            self._inbox.put_nowait((session_id, data))
        except asyncio.QueueFull:  # a later change of the session fills the gap from history
            log.warning("change feed backlog full: dropped a message of session %s", session_id)

    def _on_broadcast(self, data: bytes) -> None:
        """An admin broadcast, queued behind the changes that arrived before it."""
        try:
            self._inbox.put_nowait((None, data))
        except asyncio.QueueFull:
            log.warning("change feed backlog full: dropped an admin broadcast")

    def _on_reconnect(self) -> None:
        """The feed connection was replaced (every channel re-subscribed): catch each session
        up on what was published while it was away."""
        log.warning("change feed reconnected; catching %d session(s) up", len(self.feeds))
        for sid in list(self.feeds):
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait((sid, None))

    async def _process(self) -> None:
        while True:
            session_id, data = await self._inbox.get()
            self._busy = True
            try:
                await self._process_one(session_id, data)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("change feed: failed to process a message of session %s", session_id)
            finally:
                self._busy = False

    async def _process_one(self, session_id: str | None, data: bytes | None) -> None:
        """Handle one inbox message; while the store is unavailable (connection lost, or a
        restarting Valkey answering LOADING) wait with backoff and retry the same message,
        which keeps every session's order: one line when the outage starts, one when it ends,
        no traceback per message."""
        delay = self.retry_initial_s
        failing = False
        give_up = time.monotonic() + self.retry_give_up_s
        while True:
            try:
                if session_id is not None:
                    await self._on_change(session_id, data)
                elif data is not None:
                    self._on_admin(data)
            except StoreUnavailable as e:
                if not failing:
                    log.warning(
                        "change feed: the store is unavailable (%s); waiting to"
                        " catch session %s up",
                        e,
                        session_id,
                    )
                    failing = True
                if time.monotonic() > give_up:  # the session's next change fills the gap
                    log.error(
                        "change feed: gave up on a message of session %s after %.0f s",
                        session_id,
                        self.retry_give_up_s,
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)
                continue
            if failing:
                log.warning(
                    "change feed: the store answers again; session %s caught up", session_id
                )
            return

    # ------------------------------------------------------------------ changes
    async def _on_change(self, session_id: str, data: bytes | None) -> None:
        """A commit of the projector for this session: push its changes in version order.
        A change that skips versions first pulls the missing ones from the event stream."""
        feed = self.feeds.get(session_id)
        if feed is None:
            return
        await feed.ready.wait()
        try:
            changes = decode_changes(data) if data else []
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("session %s: undecodable change message", session_id)
            changes = []
        if not changes:  # unknown content (or a resubscribe): read what the stream has
            await self._fill(feed, None)
            return
        for change in changes:
            last = feed.last_version or 0
            if change.version <= last:
                continue  # already delivered (read from the stream ahead of its publication)
            if change.version > last + 1:
                await self._fill(feed, change.version - 1)
            self._push_next(feed, change)

    def _push_next(self, feed: _Feed, change: Change) -> None:
        """Push `change` unless its version was already delivered (read from the stream ahead
        of its publication)."""
        if change.version <= (feed.last_version or 0):
            return
        feed.last_version = change.version
        push = push_for_change(change)
        if push is None:
            return
        parent = tracing.context_of(change.traceparent) if tracing.enabled() else None
        if parent is None:
            self._fan_out(feed, push)
            return
        with tracing.tracer().start_as_current_span(
            "sessiond.gateway.push", context=parent, kind=SpanKind.CONSUMER,
            attributes=tracing.attributes(session_id=feed.session_id, version=change.version,
                                          event=change.type, connections=len(feed.conns)),
        ):  # fmt: skip
            self._fan_out(feed, push)

    def _push_inline(self, session_id: str, data: bytes) -> bool:
        """`_on_change` without waiting, when nothing needs to: True if handled."""
        feed = self.feeds.get(session_id)
        if feed is None:
            return True
        if not feed.ready.is_set():
            return False
        try:
            changes = decode_changes(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        if not changes:
            return False  # unknown content: read what the stream has
        upto = feed.last_version or 0
        for change in changes:
            if change.version > upto + 1:
                return False  # a gap: history must be read first
            upto = max(upto, change.version)
        for change in changes:
            self._push_next(feed, change)
        return True

    async def _fill(self, feed: _Feed, upto: int | None) -> None:
        since = feed.last_version or 0
        pushes, last, complete = await self.history.after(feed.session_id, since, upto)
        if not complete:
            log.warning("session %s: history does not reach back to %d", feed.session_id, since)
            return
        feed.last_version = max(since, last)
        for push in pushes:
            self._fan_out(feed, push)

    def _fan_out(self, feed: _Feed, push: Push) -> None:
        for conn in tuple(feed.conns):
            conn.deliver(push)
        for hook in self.on_change:
            hook(push)
        if self.metrics is not None:
            self.metrics.pushes.inc(len(feed.conns))

    def _on_admin(self, data: bytes) -> None:
        body = msgspec.json.decode(data)
        kind = MessageType.ADMIN_UPDATE if body.get("admin_only") else MessageType.BROADCAST
        push = Push(kind, body.get("payload", body))
        for conn in tuple(self.conns.values()):
            if kind is MessageType.BROADCAST or conn.is_admin:
                conn.deliver(push)

    # ------------------------------------------------------------------ connections
    async def attach(self, conn: Connection, since: int | None = None) -> None:
        """Register `conn` and bring it up to date: after `since` when given (resume), else
        from the current version on. Live changes arriving meanwhile are buffered."""
        conn.hub = self
        if conn.closing:  # closed before it was attached (a slow first write): nothing to do
            return
        self.conns[conn.conn_id] = conn
        feed = self.feeds.get(conn.session_id)
        first = feed is None
        if first:
            feed = self.feeds[conn.session_id] = _Feed(conn.session_id)
            try:
                await self.pubsub.subscribe(conn.session_id)
                feed.last_version = await self.history.current_version(conn.session_id)
            finally:
                feed.ready.set()
        else:
            await feed.ready.wait()
        feed.conns.add(conn)
        await self.resync(conn, since)
        if first:
            for hook in self.on_attach:
                await hook(conn.session_id)

    async def resync(self, conn: Connection, since: int | None) -> None:
        """Bring `conn` up to date after `since` (None: from the current version on), buffering
        live changes meanwhile; then deliver those, each version once."""
        if conn.closing:
            return
        conn.move_to(ConnState.CATCHING_UP)
        conn.buffer = []
        try:
            current = await self.history.current_version(conn.session_id)
            if since is None:
                conn.last_version = current
            elif since > current:
                await self._reset(conn)  # a version this session never had: start over
            else:
                conn.last_version = since
                # later versions reach `conn` through the feed meanwhile (buffered)
                pushes, last, complete = await self.history.after(conn.session_id, since, current)
                if complete:
                    conn.deliver_history(pushes, last)
                    _close_if_history_ended(conn, pushes)
                else:
                    await self._reset(conn)
        finally:
            conn.go_live()

    async def _reset(self, conn: Connection) -> None:
        """History no longer reaches back to what the client has: send the full current state
        (version V, from the projections), then everything after V."""
        state, version = (
            ({}, 0) if self.reset_state is None else await self.reset_state(conn.session_id)
        )
        conn.last_version = version
        conn.send(
            conn.encode(
                Push(
                    MessageType.RESET,
                    {**state, "version": version},
                    session_id=conn.session_id,
                    version=version,
                )
            )
        )
        pushes, last, complete = await self.history.after(conn.session_id, version)
        if complete:
            conn.deliver_history(pushes, last)

    async def detach(self, conn: Connection) -> None:
        conn.move_to(ConnState.CLOSED)
        self.conns.pop(conn.conn_id, None)
        feed = self.feeds.get(conn.session_id)
        if feed is None:
            return
        feed.conns.discard(conn)
        if not feed.conns:
            del self.feeds[conn.session_id]
            with contextlib.suppress(Exception):
                await self.pubsub.unsubscribe(conn.session_id)
            for hook in self.on_detach:
                with contextlib.suppress(Exception):
                    await hook(conn.session_id)

    # ------------------------------------------------------------------ hooks for others
    def connections_of(self, session_id: str) -> tuple[Connection, ...]:
        feed = self.feeds.get(session_id)
        return tuple(feed.conns) if feed is not None else ()

    def push_to_session(self, session_id: str, push: Push) -> int:
        """Send `push` to every local client of the session (e.g. an exchange tick);
        returns how many connections it was queued on. Never blocks."""
        conns = self.connections_of(session_id)
        for conn in conns:
            conn.deliver(push)
        return len(conns)
