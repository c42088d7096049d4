"""The WebSocket adapter: `/ws`, a plain ASGI endpoint (no Starlette wrapper, no per-connection
task or queue).

Two ways in, one protocol after:
- seed 000: `/ws?session_id=..&device_id=..&token=..` (the session is created when needed), the
  server answers `connected`;
- seed 004: connect, then send AUTH (type 7 or "auth") first with `token` and `device_id`
  (optionally `session_id`, `since`); the server answers AUTH_SUCCESS (8) or AUTH_FAILURE (9).
`since=<version>` (query or AUTH payload) resumes: every change after it, in order, once.

A `correlation_id` only correlates: it is echoed on the answer. A write (state_update,
start_simulator, stop_simulator) is made retry-safe by an optional `idempotency_key` (see
`gateway.operations.commands`); such a write is answered with its own type `{accepted, version,
idempotency_key}`. An AUTH message on an open connection re-authenticates it (same user): the
connection lives until the new token expires.

Each message is decoded (`gateway.protocol`), handed to one operation of `gateway.operations`,
and its result or error encoded as the answer; the connection itself (catch-up, live changes,
backpressure) is the hub's.

Close codes: 4400 bad request, 4401 auth failed or token expired, 4403 forbidden, 4408
idle/auth timeout, 4429 rate limited or too many connections, 1008 slow client / origin
refused, 1012 server draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import parse_qs

import msgspec
from opentelemetry.trace import SpanKind

from gateway.auth import Claims, bearer
from gateway.errors import ApiError, from_exception
from gateway.hub import Connection, ConnState
from gateway.operations import Context, access, admin, devices, presence, reads, simulators
from gateway.operations import state as states
from gateway.operations.commands import now_ms
from gateway.operations.reads import SimulatorView
from gateway.protocol import (
    Form,
    Inbound,
    MessageType,
    ProtocolError,
    decode_inbound,
    encode_outbound,
)
from gateway.push import Push
from gateway.ratelimit import TokenBucket
from gateway.validate import identifier, parse_uuid, version_param
from gateway.wsproto import trim_open_connection
from infra import tracing
from infra.logging import log_context

__all__ = ["WebSocketEndpoint", "WsConnection"]

#: How long a close frame may take to leave: a client that does not read it in time (a slow
#: client, by definition) has its socket dropped, so that its device goes offline at once.
CLOSE_GRACE_S = 1.0


class WsConnection(Connection):
    transport = "ws"
    __slots__ = ("_send", "_writable", "bucket")

    def __init__(self, send: Any, *args: Any, rate_burst: float = 100.0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._send = send
        # uvicorn's websockets-sansio `send` only ever waits on this event (paused writing),
        # before writing anything: when it is set, the send completes inline.
        writable = getattr(getattr(send, "__self__", None), "writable", None)
        self._writable = writable if isinstance(writable, asyncio.Event) else None
        self.bucket = TokenBucket(rate_burst, time.monotonic())

    def write_now(self, data: str) -> bool:
        writable = self._writable
        if writable is None or not writable.is_set():
            return False
        coro = self._send({"type": "websocket.send", "text": data})
        try:
            coro.send(None)
        except StopIteration:
            return True
        except Exception:
            self.move_to(ConnState.CLOSED)
            return True
        coro.close()  # it waited before writing anything: queue the frame instead
        return False

    async def write(self, data: str) -> None:
        await self._send({"type": "websocket.send", "text": data})

    async def abort(self, code: int, reason: str) -> None:
        """Close with `code`; a close frame that cannot leave within `CLOSE_GRACE_S` (and, for a
        slow client, one it has not taken within the grace) ends with the socket dropped: the
        reader then sees the disconnect and the device leaves."""
        await self.drain(0.5)
        self.move_to(ConnState.CLOSED)
        try:
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason}),
                CLOSE_GRACE_S,
            )
            if reason != "SLOW_CLIENT":
                return
            await asyncio.sleep(CLOSE_GRACE_S)
        except Exception:  # timed out (the client reads nothing), or it is gone already
            pass
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        if transport is not None:
            transport.abort()

    @property
    def claims(self) -> Claims:
        """The caller, as the connection was (re-)authenticated."""
        return Claims(self.user_id, ("admin",) if self.is_admin else (), self.expires_at)

    def reply(
        self, mtype: MessageType, payload: Any, correlation_id: str = "", version: int | None = None
    ) -> None:
        self.send(
            encode_outbound(
                self.form,
                mtype,
                payload,
                session_id=self.session_id,
                user_id=self.user_id,
                device_id=self.device_id,
                correlation_id=correlation_id,
                version=version,
            ).decode()
        )

    def error(
        self, code: str, message: str, correlation_id: str = "", extra: dict[str, Any] | None = None
    ) -> None:
        self.reply(
            MessageType.ERROR, {"code": code, "message": message, **(extra or {})}, correlation_id
        )


class _Handshake(msgspec.Struct, frozen=True):
    claims: Claims
    session_id: str
    device_id: str
    since: int | None
    form: Form
    via_auth: bool
    device_type: str = ""
    device_name: str = ""
    os: str = ""
    correlation_id: str = ""


class _Refused(ApiError):
    """A handshake refused, answered in the client's wire form."""

    def __init__(self, error: ApiError, form: Form) -> None:
        super().__init__(error.status, error.code, error.message)
        self.form = form


#: Close codes of a refused handshake, by HTTP status (else 4400; 5xx: 1011).
_HANDSHAKE_CLOSE = {401: 4401, 403: 4403, 408: 4408}
#: ... and of a refused join: 1013 "try again later" for a store that is down.
_JOIN_CLOSE = {401: 4401, 403: 4403, 410: 4410, 429: 4429, 503: 1013}


def _since(value: Any) -> int | None:
    return version_param(value, "since")


class WebSocketEndpoint:
    """The ASGI callable mounted at `/ws`."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        ctx: Context = scope["app"].state.context
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if ctx.draining or not ctx.config.origin_allowed(headers.get("origin")):
            await send({"type": "websocket.close", "code": 1008})  # -> HTTP 403
            return
        await send({"type": "websocket.accept"})
        task = asyncio.current_task()
        if task is not None:
            ctx.handlers.add(task)
        try:
            # The handshake's locals (headers, query, claims...) die with `_open`'s frame:
            # only `conn` and this frame stay alive for the connection's lifetime.
            conn = await self._open(ctx, scope, receive, send, headers)
            del headers, event
            if conn is None:
                return
            trim_open_connection(scope, send)
            try:
                await self._loop(ctx, conn, receive)
            finally:
                await ctx.hub.detach(conn)
                await presence.close_connection(ctx, conn)
        finally:
            if task is not None:
                ctx.handlers.discard(task)

    async def _open(
        self, ctx: Context, scope: dict, receive: Any, send: Any, headers: dict[str, str]
    ) -> WsConnection | None:
        """Authenticate, join and welcome; None when refused (the refusal was sent)."""
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        form = (
            Form.NUMBERS if query.get("protocol") in ("numbers", "numeric", "004") else Form.NAMES
        )
        try:
            hs = await self._handshake(ctx, query, headers, receive, form)
        except _Closed:
            return None
        except ProtocolError as exc:
            await _refuse(ctx, send, form, exc, 4400, MessageType.ERROR, exc.correlation_id)
            return None
        except ApiError as exc:
            mtype = MessageType.AUTH_FAILURE if exc.status == 401 else MessageType.ERROR
            await _refuse(
                ctx,
                send,
                exc.form if isinstance(exc, _Refused) else form,
                exc,
                _HANDSHAKE_CLOSE.get(exc.status, 4400),
                mtype,
            )
            return None
        opened = await self._join(ctx, scope, send, hs)
        if opened is None:
            return None
        conn, joined = opened
        try:
            await self._welcome(ctx, conn, hs, joined)
        except BaseException:
            await ctx.hub.detach(conn)
            await presence.close_connection(ctx, conn)
            raise
        return conn

    async def _join(
        self, ctx: Context, scope: dict, send: Any, hs: _Handshake
    ) -> tuple[WsConnection, int] | None:
        """The connection, joined (and the version it joined at); None when refused."""
        conn = WsConnection(
            send,
            hs.session_id,
            hs.claims.user_id,
            hs.device_id,
            form=hs.form,
            max_outgoing=ctx.config.max_outgoing_bytes,
            is_admin=hs.claims.is_admin,
            rate_burst=ctx.config.rate_burst,
        )
        conn.expires_at = hs.claims.expires_at
        client = scope.get("client") or ("", 0)
        opening = presence.Opening(
            device_type=hs.device_type,
            device_name=hs.device_name,
            os=hs.os,
            ip_address=client[0],
            create=True,
        )
        try:
            self._check_device(ctx, hs)
            return conn, await presence.open_connection(ctx, hs.claims, conn, opening)
        except Exception as exc:
            err = from_exception(exc)
            close = _JOIN_CLOSE.get(err.status, 4400 if err.status < 500 else 1011)
            mtype = MessageType.AUTH_FAILURE if hs.via_auth else MessageType.ERROR
            await _refuse(ctx, send, hs.form, err, close, mtype)
            return None

    async def _welcome(self, ctx: Context, conn: WsConnection, hs: _Handshake, joined: int) -> None:
        """CONNECTED (or AUTH_SUCCESS), then the changes since `since` (else from the version
        joined on), and the simulator's status when the session has one."""
        conn.reply(
            MessageType.AUTH_SUCCESS if hs.via_auth else MessageType.CONNECTED,
            {
                "session_id": conn.session_id,
                "user_id": conn.user_id,
                "device_id": conn.device_id,
                "connection_id": conn.conn_id,
                "version": joined,
                "resumed_from": hs.since,
                "heartbeat_interval": ctx.config.heartbeat_interval_s,
                "gateway": ctx.config.gateway_id,
            },
            hs.correlation_id,
        )
        await ctx.hub.attach(conn, hs.since if hs.since is not None else joined)
        if hs.since is None:  # (the opening authorized this read of the session)
            with contextlib.suppress(Exception):
                sim = await reads.simulator_row(ctx, conn.session_id)
                if sim is not None:
                    conn.reply(MessageType.SIMULATOR_STATUS, sim)

    async def _handshake(
        self, ctx: Context, query: dict[str, str], headers: dict[str, str], receive: Any, form: Form
    ) -> _Handshake:
        token = query.get("token") or bearer(headers.get("authorization"))
        if token:
            claims = access.authenticate(ctx, token)
            return _Handshake(
                claims=claims,
                session_id=parse_uuid(query["session_id"], "session_id")
                if query.get("session_id")
                else "",
                device_id=query.get("device_id", ""),
                since=_since(query.get("since")),
                form=form,
                via_auth=False,
                device_type=query.get("device_type", ""),
                device_name=query.get("device_name", ""),
            )
        # seed 004: the first message must be AUTH
        try:
            event = await asyncio.wait_for(receive(), ctx.config.auth_timeout_s)
        except TimeoutError:
            raise ApiError(408, "AUTH_TIMEOUT", "send AUTH as the first message") from None
        if event["type"] == "websocket.disconnect":
            raise _Closed
        data = event.get("text") if event.get("text") is not None else event.get("bytes", b"")
        if len(data) > ctx.config.max_ws_message:
            raise ApiError(400, "MESSAGE_TOO_LARGE", "the AUTH message is too large")
        msg = decode_inbound(data, ctx.config)
        try:
            return self._auth_message(ctx, query, msg)
        except ApiError as exc:
            raise _Refused(exc, msg.form) from None  # answered in the client's form

    def _auth_message(self, ctx: Context, query: dict[str, str], msg: Inbound) -> _Handshake:
        if msg.type is not MessageType.AUTH:
            raise ApiError(401, "AUTH_REQUIRED", "the first message must be AUTH with a token")
        p = msg.payload
        tok = p.get("token")
        if not isinstance(tok, str):
            raise ApiError(401, "TOKEN_MISSING", "AUTH payload needs a `token` string")
        claims = access.authenticate(ctx, tok)
        sid = p.get("session_id") or msg.session_id or query.get("session_id") or ""
        device = p.get("device_id") or msg.device_id or query.get("device_id") or ""
        for name, value in (
            ("device_id", device),
            ("device_type", p.get("device_type", "")),
            ("device_name", p.get("device_name", "")),
            ("os", p.get("os", "")),
        ):
            if not isinstance(value, str):
                raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be a string")
        return _Handshake(
            claims=claims,
            session_id=parse_uuid(sid, "session_id") if sid else "",
            device_id=device,
            since=_since(p.get("since", query.get("since"))),
            form=msg.form,
            via_auth=True,
            device_type=p.get("device_type", ""),
            device_name=p.get("device_name", ""),
            os=p.get("os", ""),
            correlation_id=msg.correlation_id,
        )

    def _check_device(self, ctx: Context, hs: _Handshake) -> None:
        """The device's identifiers are what the stores can hold (refused as a join is)."""
        identifier(hs.device_id, "device_id", ctx.config, required=True)
        for name, value in (
            ("device_type", hs.device_type),
            ("device_name", hs.device_name),
            ("os", hs.os),
        ):
            identifier(value, name, ctx.config)

    async def _loop(self, ctx: Context, conn: WsConnection, receive: Any) -> None:
        cfg = ctx.config
        while conn.state < ConnState.CLOSED:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            conn.last_rx = time.monotonic()
            data = event.get("text")
            if data is None:
                data = event.get("bytes") or b""
            # token bucket: rate_per_s sustained, rate_burst at once
            if not conn.bucket.take(conn.last_rx, cfg.rate_per_s, cfg.rate_burst):
                ctx.metrics.ws_errors.labels("RATE_LIMITED").inc()
                conn.error("RATE_LIMITED", f"more than {cfg.rate_per_s:g} messages/s")
                if conn.bucket.tokens < -cfg.rate_burst:
                    conn.close_soon(4429, "RATE_LIMITED")
                continue
            if len(data) > cfg.max_ws_message:
                ctx.metrics.ws_errors.labels("MESSAGE_TOO_LARGE").inc()
                conn.error(
                    "MESSAGE_TOO_LARGE", f"messages are limited to {cfg.max_ws_message} bytes"
                )
                continue
            try:
                msg = decode_inbound(data, cfg)
            except ProtocolError as exc:
                ctx.metrics.ws_errors.labels(exc.code).inc()
                conn.error(exc.code, exc.message, exc.correlation_id)
                continue
            conn.form = msg.form
            ctx.metrics.ws_messages.labels(msg.type.name).inc()
            if msg.type is not MessageType.AUTH and conn.token_expired(cfg.token_grace_s):
                ctx.metrics.ws_errors.labels("TOKEN_EXPIRED").inc()
                conn.error(
                    "TOKEN_EXPIRED",
                    "the connection's token has expired: send AUTH with a new token, or reconnect",
                    msg.correlation_id,
                )
                conn.close_soon(4401, "TOKEN_EXPIRED")
                continue
            try:
                with log_context(correlation_id=msg.correlation_id, session_id=conn.session_id):
                    if msg.type in _UNTRACED:
                        await self._dispatch(ctx, conn, msg)
                    else:
                        with tracing.span(
                            "sessiond.gateway.request", kind=SpanKind.SERVER,
                            ws_message=msg.type.name, session_id=conn.session_id,
                        ):  # fmt: skip
                            await self._dispatch(ctx, conn, msg)
            except Exception as exc:
                err = from_exception(exc)
                ctx.metrics.ws_errors.labels(err.code).inc()
                conn.error(err.code, err.message, msg.correlation_id, err.extra)

    async def _dispatch(self, ctx: Context, conn: WsConnection, msg: Inbound) -> None:
        if msg.session_id and msg.session_id != conn.session_id:
            raise ApiError(
                403, "SESSION_MISMATCH", "this connection is bound to another session_id"
            )
        handler = _HANDLERS.get(msg.type)
        if handler is None:
            raise ApiError(
                400,
                "UNEXPECTED_TYPE",
                f"{msg.type.name} is sent by the server, not accepted from clients",
            )
        await handler(ctx, conn, msg)


#: Messages that get no span of their own: the keep-alives, every few seconds per connection.
_UNTRACED = frozenset({MessageType.HEARTBEAT, MessageType.HEARTBEAT_ACK})

# ------------------------------------------------------------------ one handler per message


async def _heartbeat(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    p = msg.payload
    conn.reply(
        MessageType.HEARTBEAT_ACK,
        {"client_time": p.get("client_time"), "server_time": now_ms()},
        msg.correlation_id,
    )
    rtt = p.get("rtt_ms", p.get("latency_ms"))
    if isinstance(rtt, (int, float)) and not isinstance(rtt, bool):
        await _rtt(ctx, conn, float(rtt))


async def _heartbeat_ack(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    st = msg.payload.get("server_time")
    if isinstance(st, (int, float)) and not isinstance(st, bool):
        await _rtt(ctx, conn, max(0.0, now_ms() - float(st)))


async def _rtt(ctx: Context, conn: WsConnection, rtt: float) -> None:
    if await presence.record_rtt(ctx, conn, rtt):  # just became POOR: advise a reconnect
        conn.deliver(
            Push(
                MessageType.RECONNECT,
                {
                    "reason": "POOR_CONNECTION",
                    "rtt_ms": rtt,
                    "since": conn.last_version,
                },
                session_id=conn.session_id,
            )
        )


async def _snapshot(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    snap = await states.read_snapshot(
        ctx, conn.claims, states.SnapshotRead(session_id=conn.session_id)
    )
    conn.reply(
        MessageType.SNAPSHOT_RESPONSE, snap, msg.correlation_id, version=snap.session_version
    )


async def _state_update(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    """Three spellings: {state | state_data, version}, {changes, deleted_keys}, {key, value,
    operation}; answered (`{accepted, version, idempotency_key}`) only when the client sent
    a key: the change itself reaches every device through the feed."""
    request = _state_request(ctx, conn, msg)
    if isinstance(request, states.SnapshotWrite):
        written: Any = await states.save_snapshot(ctx, conn.claims, request)
    else:
        written = await states.apply_changes(ctx, conn.claims, request)
    if not written.key_generated:  # a retry-aware client learns each attempt's outcome
        conn.reply(
            MessageType.STATE_UPDATE,
            {
                "accepted": True,
                "version": written.session_version or None,
                "idempotency_key": written.idempotency_key,
            },
            msg.correlation_id,
        )


def _state_request(
    ctx: Context, conn: WsConnection, msg: Inbound
) -> states.SnapshotWrite | states.StateChanges:
    """The STATE_UPDATE payload as the operation's request."""
    p, key = msg.payload, msg.idempotency_key or None
    base = p.get("base_version")
    if base is not None and not _is_int(base):
        raise ApiError(400, "INVALID_ARGUMENT", "base_version must be an integer")
    common: dict[str, Any] = {
        "session_id": conn.session_id,
        "device_id": conn.device_id,
        "idempotency_key": key,
    }
    if "state" in p or "state_data" in p:
        state, version = p.get("state", p.get("state_data")), p.get("version")
        if not isinstance(state, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "state must be an object")
        if version is not None and not _is_int(version):
            raise ApiError(400, "INVALID_ARGUMENT", "version must be an integer")
        app_version = identifier(str(p.get("app_version", "")), "app_version", ctx.config)
        return states.SnapshotWrite(state=state, version=version, app_version=app_version, **common)
    if "changes" in p or "deleted_keys" in p:
        changes, deleted = p.get("changes", {}), p.get("deleted_keys", [])
        if not isinstance(changes, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "changes must be an object")
        if not isinstance(deleted, list) or not all(isinstance(k, str) for k in deleted):
            raise ApiError(400, "INVALID_ARGUMENT", "deleted_keys must be a list of strings")
        return states.StateChanges(
            changes=changes, deleted_keys=deleted, base_version=base, **common
        )
    if "key" in p:
        name, op = p.get("key"), str(p.get("operation", "SET")).upper()
        if not isinstance(name, str) or not name:
            raise ApiError(400, "INVALID_ARGUMENT", "key must be a non-empty string")
        if op == "SET":
            return states.StateChanges(changes={name: p.get("value")}, base_version=base, **common)
        if op == "DELETE":
            return states.StateChanges(deleted_keys=[name], base_version=base, **common)
        raise ApiError(400, "INVALID_ARGUMENT", "operation must be SET or DELETE")
    raise ApiError(
        400,
        "INVALID_ARGUMENT",
        "STATE_UPDATE needs {key, value, operation}, {changes, deleted_keys} or {state}",
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _device_list(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    found = await devices.list_devices(ctx, conn.claims, conn.session_id)
    conn.reply(MessageType.DEVICE_LIST, {"devices": found}, msg.correlation_id)


async def _reconnect(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    since = _since(msg.payload.get("since"))
    if since is not None:
        await ctx.hub.resync(conn, since)
    conn.reply(
        MessageType.CONNECTION_STATE,
        {"state": "connected", "version": conn.last_version},
        msg.correlation_id,
    )


async def _start_simulator(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    p = msg.payload
    request: dict[str, Any] = {}
    symbols = p.get("initial_symbols", p.get("symbols"))
    if symbols is not None:
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise ApiError(400, "INVALID_ARGUMENT", "initial_symbols must be a list of strings")
        request["initial_symbols"] = symbols
    cash = p.get("initial_cash")
    if cash is not None:
        if not isinstance(cash, (int, float)) or isinstance(cash, bool):
            raise ApiError(400, "INVALID_ARGUMENT", "initial_cash must be a number")
        request["initial_cash"] = float(cash)
    started = await simulators.start_simulator(
        ctx,
        conn.claims,
        simulators.SimulatorStart(
            session_id=conn.session_id, idempotency_key=msg.idempotency_key or None, **request
        ),
    )
    # an acknowledgement, not a status: statuses come from the session's feed, versioned and
    # in order (an unversioned CREATING here could overtake the feed's STARTING)
    conn.reply(
        MessageType.START_SIMULATOR,
        {
            "simulator_id": started.simulator_id,
            "accepted": True,
            "version": started.session_version or None,
        },
        msg.correlation_id,
    )


async def _stop_simulator(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    named = msg.payload.get("simulator_id")
    stopped = await simulators.stop_simulator(
        ctx,
        conn.claims,
        simulators.SimulatorStop(
            session_id=conn.session_id,
            simulator_id=named if isinstance(named, str) else "",
            idempotency_key=msg.idempotency_key or None,
        ),
    )
    conn.reply(
        MessageType.STOP_SIMULATOR,
        {"simulator_id": stopped.simulator_id, "accepted": True},
        msg.correlation_id,
    )


async def _simulator_status(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    status: SimulatorView | dict[str, str]
    try:
        status = await simulators.simulator_status(ctx, conn.claims, conn.session_id)
    except ApiError as exc:
        if exc.code != "SIMULATOR_NOT_FOUND":
            raise
        status = {"status": "NONE"}
    conn.reply(MessageType.SIMULATOR_STATUS, status, msg.correlation_id)


async def _broadcast(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    await admin.broadcast(
        ctx,
        conn.claims,
        admin.Broadcast(payload=msg.payload, admin_only=msg.type is MessageType.ADMIN_UPDATE),
    )


async def _reauthenticate(ctx: Context, conn: WsConnection, msg: Inbound) -> None:
    """AUTH on an open connection: a new token of the same user extends its life (it is
    closed with 4401 TOKEN_EXPIRED once its token expires)."""
    claims = access.reauthenticate(ctx, conn.user_id, msg.payload.get("token"))
    conn.expires_at = claims.expires_at
    conn.is_admin = claims.is_admin
    conn.reply(
        MessageType.AUTH_SUCCESS,
        {
            "session_id": conn.session_id,
            "user_id": conn.user_id,
            "device_id": conn.device_id,
            "connection_id": conn.conn_id,
            "expires_at": claims.expires_at,
        },
        msg.correlation_id,
    )


_HANDLERS = {
    MessageType.HEARTBEAT: _heartbeat,
    MessageType.HEARTBEAT_ACK: _heartbeat_ack,
    MessageType.SNAPSHOT_REQUEST: _snapshot,
    MessageType.STATE_UPDATE: _state_update,
    MessageType.DEVICE_LIST: _device_list,
    MessageType.RECONNECT: _reconnect,
    MessageType.START_SIMULATOR: _start_simulator,
    MessageType.STOP_SIMULATOR: _stop_simulator,
    MessageType.SIMULATOR_STATUS: _simulator_status,
    MessageType.BROADCAST: _broadcast,
    MessageType.ADMIN_UPDATE: _broadcast,
    MessageType.AUTH: _reauthenticate,
}


async def _refuse(
    ctx: Context,
    send: Any,
    form: Form,
    error: ApiError,
    close: int,
    mtype: MessageType,
    correlation_id: str = "",
) -> None:
    """A refused handshake: the error (in the client's form), then the close code."""
    ctx.metrics.ws_errors.labels(error.code).inc()
    frame = encode_outbound(
        form, mtype, {"code": error.code, "message": error.message}, correlation_id=correlation_id
    )
    with contextlib.suppress(Exception):
        await send({"type": "websocket.send", "text": frame.decode()})
        await send({"type": "websocket.close", "code": close, "reason": error.code})


class _Closed(Exception):
    """The client went away during the handshake."""
