"""`/ws`: a plain ASGI WebSocket endpoint (no Starlette wrapper, no per-connection task or queue).

Two ways in, one protocol after:
- seed 000: `/ws?session_id=..&device_id=..&token=..` (the session is created when needed), the
  server answers `connected`;
- seed 004: connect, then send AUTH (type 7 or "auth") first with `token` and `device_id`
  (optionally `session_id`, `since`); the server answers AUTH_SUCCESS (8) or AUTH_FAILURE (9).
`since=<version>` (query or AUTH payload) resumes: every change after it, in order, once.

A `correlation_id` only correlates: it is echoed on the answer. A write (state_update,
start_simulator, stop_simulator) is made retry-safe by an optional `idempotency_key`, scoped to
the user, the session and the message type (gateway/idempotency.py); such a write is answered
with its own type `{accepted, version, idempotency_key}`. An AUTH message on an open
connection re-authenticates it (same user): the connection lives until the new token expires.

Close codes: 4400 bad request, 4401 auth failed or token expired, 4403 forbidden, 4408
idle/auth timeout, 4429 rate limited or too many connections, 1008 slow client / origin
refused, 1012 server draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

import msgspec

from events.session import (
    ApplyStateChanges,
    ChangeConnectionQuality,
    ConnectionQuality,
    ReplaceState,
)
from events.simulator import StopSimulator
from gateway.auth import Claims, bearer
from gateway.errors import ApiError, from_exception
from gateway.hub import Connection, ConnState
from gateway.idempotency import IdempotencyKey, check_key, scoped
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
from gateway.service import Gateway, now_ms, parse_uuid
from gateway.validate import identifier, version_param

__all__ = ["WebSocketEndpoint", "WsConnection", "quality_for"]

log = logging.getLogger("sessiond.gateway.ws")

#: How long a close frame may take to leave: a client that does not read it in time (a slow
#: client, by definition) has its socket dropped, so that its device goes offline at once.
CLOSE_GRACE_S = 1.0


def quality_for(rtt_ms: float, good_ms: float, poor_ms: float) -> str:
    if rtt_ms < good_ms:
        return "GOOD"
    if rtt_ms < poor_ms:
        return "DEGRADED"
    return "POOR"


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
            self.state = ConnState.CLOSED
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
        self.state = ConnState.CLOSED
        try:
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason}),
                CLOSE_GRACE_S)
            if reason != "SLOW_CLIENT":
                return
            await asyncio.sleep(CLOSE_GRACE_S)
        except Exception:  # timed out (the client reads nothing), or it is gone already
            pass
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        if transport is not None:
            transport.abort()

    def reply(self, mtype: MessageType, payload: Any, correlation_id: str = "",
              version: int | None = None) -> None:
        self.send(encode_outbound(
            self.form, mtype, payload, session_id=self.session_id, user_id=self.user_id,
            device_id=self.device_id, correlation_id=correlation_id, version=version,
        ).decode())

    def error(self, code: str, message: str, correlation_id: str = "",
              extra: dict[str, Any] | None = None) -> None:
        self.reply(MessageType.ERROR, {"code": code, "message": message, **(extra or {})},
                   correlation_id)


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


def _since(value: Any) -> int | None:
    return version_param(value, "since")


class WebSocketEndpoint:
    """The ASGI callable mounted at `/ws`."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        gw: Gateway = scope["app"].state.gateway
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if gw.draining or not gw.config.origin_allowed(headers.get("origin")):
            await send({"type": "websocket.close", "code": 1008})  # -> HTTP 403
            return
        await send({"type": "websocket.accept"})
        task = asyncio.current_task()
        if task is not None:
            gw.handlers.add(task)
        try:
            # The handshake's locals (headers, query, claims...) die with `_open`'s frame:
            # only `conn` and this frame stay alive for the connection's lifetime.
            conn = await self._open(gw, scope, receive, send, headers)
            del headers, event
            if conn is None:
                return
            try:
                await self._loop(gw, conn, receive)
            finally:
                await gw.hub.detach(conn)
                await gw.leave(conn)
        finally:
            if task is not None:
                gw.handlers.discard(task)

    async def _open(self, gw: Gateway, scope: dict, receive: Any, send: Any,
                    headers: dict[str, str]) -> WsConnection | None:
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        form = Form.NUMBERS if query.get("protocol") in ("numbers", "numeric", "004") \
            else Form.NAMES

        async def refuse(code: str, message: str, close: int, mtype: MessageType,
                         correlation_id: str = "") -> None:
            gw.metrics.ws_errors.labels(code).inc()
            frame = encode_outbound(form, mtype, {"code": code, "message": message},
                                    correlation_id=correlation_id)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.send", "text": frame.decode()})
                await send({"type": "websocket.close", "code": close, "reason": code})

        try:
            hs = await self._handshake(gw, query, headers, receive, form)
        except _Closed:
            return None
        except ProtocolError as exc:
            await refuse(exc.code, exc.message, 4400, MessageType.ERROR, exc.correlation_id)
            return None
        except ApiError as exc:
            form = getattr(exc, "form", form)
            mtype = MessageType.AUTH_FAILURE if exc.status == 401 else MessageType.ERROR
            close = {401: 4401, 403: 4403, 408: 4408}.get(exc.status, 4400)
            await refuse(exc.code, exc.message, close, mtype)
            return None
        form = hs.form
        conn = WsConnection(
            send, hs.session_id, hs.claims.user_id, hs.device_id, form=form,
            max_outgoing=gw.config.max_outgoing_bytes, is_admin=hs.claims.is_admin,
            rate_burst=gw.config.rate_burst,
        )
        conn.expires_at = hs.claims.expires_at
        client = scope.get("client") or ("", 0)
        try:
            outcome = await self._establish(gw, hs, conn, client[0])
        except Exception as exc:
            err = from_exception(exc)
            # 1013 "try again later" for a store that is down (503), 1011 for a server error
            close = {401: 4401, 403: 4403, 429: 4429, 503: 1013}.get(
                err.status, 4400 if err.status < 500 else 1011)
            await refuse(err.code, err.message, close,
                         MessageType.AUTH_FAILURE if hs.via_auth else MessageType.ERROR)
            return None
        joined_version = outcome.version if outcome is not None else 0
        welcome = {
            "session_id": conn.session_id, "user_id": conn.user_id, "device_id": conn.device_id,
            "connection_id": conn.conn_id, "version": joined_version,
            "resumed_from": hs.since, "heartbeat_interval": gw.config.heartbeat_interval_s,
            "gateway": gw.config.gateway_id,
        }
        conn.reply(MessageType.AUTH_SUCCESS if hs.via_auth else MessageType.CONNECTED, welcome,
                   hs.correlation_id)
        try:
            await gw.hub.attach(conn, hs.since if hs.since is not None else joined_version)
            if hs.since is None:
                sim = await _quiet(gw.simulator(conn.session_id))
                if sim is not None:
                    conn.reply(MessageType.SIMULATOR_STATUS, sim)
        except BaseException:
            await gw.hub.detach(conn)
            await gw.leave(conn)
            raise
        return conn

    async def _handshake(self, gw: Gateway, query: dict[str, str], headers: dict[str, str],
                         receive: Any, form: Form) -> _Handshake:
        token = query.get("token") or bearer(headers.get("authorization"))
        if token:
            claims = gw.tokens.verify(token)
            return _Handshake(
                claims=claims,
                session_id=parse_uuid(query["session_id"], "session_id")
                if query.get("session_id") else "",
                device_id=query.get("device_id", ""),
                since=_since(query.get("since")),
                form=form, via_auth=False,
                device_type=query.get("device_type", ""),
                device_name=query.get("device_name", ""),
            )
        # seed 004: the first message must be AUTH
        try:
            event = await asyncio.wait_for(receive(), gw.config.auth_timeout_s)
        except TimeoutError:
            raise ApiError(408, "AUTH_TIMEOUT", "send AUTH as the first message") from None
        if event["type"] == "websocket.disconnect":
            raise _Closed
        data = event.get("text") if event.get("text") is not None else event.get("bytes", b"")
        if len(data) > gw.config.max_ws_message:
            raise ApiError(400, "MESSAGE_TOO_LARGE", "the AUTH message is too large")
        msg = decode_inbound(data, gw.config)
        try:
            return self._auth_message(gw, query, msg)
        except ApiError as exc:
            exc.form = msg.form  # type: ignore[attr-defined] - answer in the client's form
            raise

    def _auth_message(self, gw: Gateway, query: dict[str, str], msg: Inbound) -> _Handshake:
        if msg.type is not MessageType.AUTH:
            raise ApiError(401, "AUTH_REQUIRED", "the first message must be AUTH with a token")
        p = msg.payload
        tok = p.get("token")
        if not isinstance(tok, str):
            raise ApiError(401, "TOKEN_MISSING", "AUTH payload needs a `token` string")
        claims = gw.tokens.verify(tok)
        sid = p.get("session_id") or msg.session_id or query.get("session_id") or ""
        device = p.get("device_id") or msg.device_id or query.get("device_id") or ""
        for name, value in (("device_id", device), ("device_type", p.get("device_type", "")),
                            ("device_name", p.get("device_name", "")), ("os", p.get("os", ""))):
            if not isinstance(value, str):
                raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be a string")
        return _Handshake(
            claims=claims,
            session_id=parse_uuid(sid, "session_id") if sid else "",
            device_id=device,
            since=_since(p.get("since", query.get("since"))),
            form=msg.form, via_auth=True,
            device_type=p.get("device_type", ""), device_name=p.get("device_name", ""),
            os=p.get("os", ""), correlation_id=msg.correlation_id,
        )

    async def _establish(self, gw: Gateway, hs: _Handshake, conn: WsConnection, ip: str) -> Any:
        """Make sure the session exists and is the user's, then join the device."""
        identifier(hs.device_id, "device_id", gw.config, required=True)
        for name, value in (("device_type", hs.device_type), ("device_name", hs.device_name),
                            ("os", hs.os)):
            identifier(value, name, gw.config)
        if not hs.session_id:
            sid, _ = await gw.session_for_device(hs.claims, hs.device_id, ip_address=ip)
            conn.session_id = sid
        else:
            owner = await gw.session_owner(hs.session_id)
            gw.authorize(hs.claims, owner)
        try:
            return await gw.join(conn, device_type=hs.device_type, device_name=hs.device_name,
                                 os_name=hs.os, ip_address=ip)
        except ApiError as exc:
            if exc.code not in ("SESSION_NOT_FOUND", "SESSION_ENDED", "SESSION_EXPIRED"):
                raise
        # seed 000: "creates session if needed"
        await gw.create_session(hs.claims, conn.session_id, device_id=hs.device_id,
                                ip_address=ip)
        return await gw.join(conn, device_type=hs.device_type, device_name=hs.device_name,
                             os_name=hs.os, ip_address=ip, attempt=1)

    async def _loop(self, gw: Gateway, conn: WsConnection, receive: Any) -> None:
        cfg = gw.config
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
                gw.metrics.ws_errors.labels("RATE_LIMITED").inc()
                conn.error("RATE_LIMITED", f"more than {cfg.rate_per_s:g} messages/s")
                if conn.bucket.tokens < -cfg.rate_burst:
                    conn.close_soon(4429, "RATE_LIMITED")
                continue
            if len(data) > cfg.max_ws_message:
                gw.metrics.ws_errors.labels("MESSAGE_TOO_LARGE").inc()
                conn.error("MESSAGE_TOO_LARGE",
                           f"messages are limited to {cfg.max_ws_message} bytes")
                continue
            try:
                msg = decode_inbound(data, gw.config)
            except ProtocolError as exc:
                gw.metrics.ws_errors.labels(exc.code).inc()
                conn.error(exc.code, exc.message, exc.correlation_id)
                continue
            conn.form = msg.form
            gw.metrics.ws_messages.labels(msg.type.name).inc()
            if msg.type is not MessageType.AUTH and gw.token_expired(conn):
                gw.metrics.ws_errors.labels("TOKEN_EXPIRED").inc()
                conn.error("TOKEN_EXPIRED", "the connection's token has expired: send AUTH with"
                           " a new token, or reconnect", msg.correlation_id)
                conn.close_soon(4401, "TOKEN_EXPIRED")
                continue
            try:
                await self._dispatch(gw, conn, msg)
            except Exception as exc:
                err = from_exception(exc)
                gw.metrics.ws_errors.labels(err.code).inc()
                conn.error(err.code, err.message, msg.correlation_id, err.extra)

    async def _dispatch(self, gw: Gateway, conn: WsConnection, msg: Inbound) -> None:
        t, p, cid = msg.type, msg.payload, msg.correlation_id
        if msg.session_id and msg.session_id != conn.session_id:
            raise ApiError(403, "SESSION_MISMATCH",
                           "this connection is bound to another session_id")
        if t is MessageType.HEARTBEAT:
            conn.reply(MessageType.HEARTBEAT_ACK,
                       {"client_time": p.get("client_time"), "server_time": now_ms()}, cid)
            rtt = p.get("rtt_ms", p.get("latency_ms"))
            if isinstance(rtt, (int, float)) and not isinstance(rtt, bool):
                await self._quality(gw, conn, float(rtt))
        elif t is MessageType.HEARTBEAT_ACK:
            st = p.get("server_time")
            if isinstance(st, (int, float)) and not isinstance(st, bool):
                await self._quality(gw, conn, max(0.0, now_ms() - float(st)))
        elif t is MessageType.SNAPSHOT_REQUEST:
            snap = await gw.snapshot(conn.session_id)
            conn.reply(MessageType.SNAPSHOT_RESPONSE, snap, cid, version=snap["session_version"])
        elif t is MessageType.STATE_UPDATE:
            await self._state_update(gw, conn, p, cid, _idem(conn, msg))
        elif t is MessageType.DEVICE_LIST:
            conn.reply(MessageType.DEVICE_LIST, {"devices": await gw.devices(conn.session_id)},
                       cid)
        elif t is MessageType.RECONNECT:
            since = _since(p.get("since"))
            if since is not None:
                await gw.hub.resync(conn, since)
            conn.reply(MessageType.CONNECTION_STATE,
                       {"state": "connected", "version": conn.last_version}, cid)
        elif t is MessageType.START_SIMULATOR:
            symbols = p.get("initial_symbols", p.get("symbols", ["AAPL", "MSFT", "GOOG"]))
            cash = p.get("initial_cash", 100000.0)
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                raise ApiError(400, "INVALID_ARGUMENT", "initial_symbols must be a list of strings")
            if not isinstance(cash, (int, float)) or isinstance(cash, bool):
                raise ApiError(400, "INVALID_ARGUMENT", "initial_cash must be a number")
            key = _idem(conn, msg)
            sim_id = str(uuid.uuid5(uuid.NAMESPACE_URL, key.command_id))  # a retry: the same
            outcome = await gw.reserve_simulator(conn.session_id, conn.user_id, sim_id, symbols,
                                                 float(cash), idempotency=key)
            # an acknowledgement, not a status: statuses come from the session's feed, versioned
            # and in order (an unversioned CREATING here could overtake the feed's STARTING)
            conn.reply(MessageType.START_SIMULATOR,
                       {"simulator_id": sim_id, "accepted": True,
                        "version": outcome.version if outcome else None}, cid)
        elif t is MessageType.STOP_SIMULATOR:
            sim = p.get("simulator_id") or ((await gw.simulator(conn.session_id)) or {}).get(
                "simulator_id")
            if not isinstance(sim, str) or not sim:
                raise ApiError(404, "SIMULATOR_NOT_FOUND", "this session has no simulator")
            await gw.command(conn.session_id, StopSimulator(at=now_ms(), user_id=conn.user_id),
                             actor_id=gw.simulator_actor_id(sim),
                             idempotency=_idem(conn, msg, sim))
            conn.reply(MessageType.STOP_SIMULATOR, {"simulator_id": sim, "accepted": True}, cid)
        elif t is MessageType.SIMULATOR_STATUS:
            conn.reply(MessageType.SIMULATOR_STATUS, await gw.simulator(conn.session_id) or {
                "status": "NONE"}, cid)
        elif t in (MessageType.BROADCAST, MessageType.ADMIN_UPDATE):
            if not conn.is_admin:
                raise ApiError(403, "ADMIN_REQUIRED", "only admins may broadcast")
            await gw.store.feed.broadcast(msgspec.json.encode(
                {"payload": p, "admin_only": t is MessageType.ADMIN_UPDATE}))
        elif t is MessageType.AUTH:
            self._reauth(gw, conn, p, cid)
        else:
            raise ApiError(400, "UNEXPECTED_TYPE",
                           f"{t.name} is sent by the server, not accepted from clients")

    def _reauth(self, gw: Gateway, conn: WsConnection, p: dict, cid: str) -> None:
        """AUTH on an open connection: a new token of the same user extends its life (it is
        closed with 4401 TOKEN_EXPIRED once its token expires)."""
        tok = p.get("token")
        if not isinstance(tok, str):
            raise ApiError(401, "TOKEN_MISSING", "AUTH payload needs a `token` string")
        claims = gw.tokens.verify(tok)
        if claims.user_id != conn.user_id:
            raise ApiError(403, "AUTH_USER_MISMATCH",
                           "a connection re-authenticates with a token of its own user only")
        conn.expires_at = claims.expires_at
        conn.is_admin = claims.is_admin
        conn.reply(MessageType.AUTH_SUCCESS, {
            "session_id": conn.session_id, "user_id": conn.user_id, "device_id": conn.device_id,
            "connection_id": conn.conn_id, "expires_at": claims.expires_at}, cid)

    async def _state_update(self, gw: Gateway, conn: WsConnection, p: dict, cid: str,
                            idem: IdempotencyKey) -> None:
        try:
            msgspec.msgpack.encode(p)
        except OverflowError:
            raise ApiError(400, "INVALID_ARGUMENT", "integers must fit in 64 bits") from None
        size = len(msgspec.json.encode(p))
        if size > gw.config.max_state_bytes:
            raise ApiError(413, "STATE_TOO_LARGE",
                           f"state updates are limited to {gw.config.max_state_bytes} bytes")
        base = p.get("base_version")
        if base is not None and (not isinstance(base, int) or isinstance(base, bool)):
            raise ApiError(400, "INVALID_ARGUMENT", "base_version must be an integer")
        if "state" in p or "state_data" in p:
            state = p.get("state", p.get("state_data"))
            version = p.get("version")
            if not isinstance(state, dict):
                raise ApiError(400, "INVALID_ARGUMENT", "state must be an object")
            if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
                raise ApiError(400, "INVALID_ARGUMENT", "version must be an integer")
            cmd: Any = ReplaceState(at=now_ms(), user_id=conn.user_id,
                                    session_id=conn.session_id, state=state, version=version,
                                    device_id=conn.device_id,
                                    app_version=identifier(str(p.get("app_version", "")),
                                                           "app_version", gw.config))
        elif "changes" in p or "deleted_keys" in p:
            changes = p.get("changes", {})
            deleted = p.get("deleted_keys", [])
            if not isinstance(changes, dict):
                raise ApiError(400, "INVALID_ARGUMENT", "changes must be an object")
            if not isinstance(deleted, list) or not all(isinstance(k, str) for k in deleted):
                raise ApiError(400, "INVALID_ARGUMENT", "deleted_keys must be a list of strings")
            cmd = ApplyStateChanges(at=now_ms(), user_id=conn.user_id, changes=changes,
                                    deleted_keys=deleted, base_version=base,
                                    device_id=conn.device_id)
        elif "key" in p:
            key, op = p.get("key"), str(p.get("operation", "SET")).upper()
            if not isinstance(key, str) or not key:
                raise ApiError(400, "INVALID_ARGUMENT", "key must be a non-empty string")
            if op == "SET":
                cmd = ApplyStateChanges(at=now_ms(), user_id=conn.user_id,
                                        changes={key: p.get("value")}, base_version=base,
                                        device_id=conn.device_id)
            elif op == "DELETE":
                cmd = ApplyStateChanges(at=now_ms(), user_id=conn.user_id, changes={},
                                        deleted_keys=[key], base_version=base,
                                        device_id=conn.device_id)
            else:
                raise ApiError(400, "INVALID_ARGUMENT", "operation must be SET or DELETE")
        else:
            raise ApiError(400, "INVALID_ARGUMENT",
                           "STATE_UPDATE needs {key, value, operation}, {changes, deleted_keys}"
                           " or {state}")
        outcome = await gw.command(conn.session_id, cmd, idempotency=idem, correlation_id=cid)
        if not idem.generated:  # a retry-aware client learns each attempt's outcome
            conn.reply(MessageType.STATE_UPDATE, {
                "accepted": True, "version": outcome.version if outcome else None,
                "idempotency_key": idem.key}, cid)

    async def _quality(self, gw: Gateway, conn: WsConnection, rtt: float) -> None:
        conn.rtt_ms = rtt
        q = quality_for(rtt, gw.config.rtt_good_ms, gw.config.rtt_poor_ms)
        if q == conn.quality:
            return
        conn.quality = q
        await gw.command(conn.session_id, ChangeConnectionQuality(
            at=now_ms(), user_id=conn.user_id, quality=ConnectionQuality(q), rtt_ms=rtt,
            device_id=conn.device_id), wait=False)
        if q == "POOR":
            conn.deliver(Push(MessageType.RECONNECT, {
                "reason": "POOR_CONNECTION", "rtt_ms": rtt, "since": conn.last_version,
            }, session_id=conn.session_id))


def _idem(conn: WsConnection, msg: Inbound, *request: Any) -> IdempotencyKey:
    """A write's key: the message's `idempotency_key` (else a generated one), scoped to the
    user, the session and the message type; the payload (and `request`) fingerprinted."""
    key = msg.idempotency_key
    return scoped("ws", conn.user_id, conn.session_id, msg.type.name.lower(),
                  check_key(key, "idempotency_key") if key else None, msg.payload, *request)


class _Closed(Exception):
    pass


async def _quiet(coro: Any) -> Any:
    try:
        return await coro
    except Exception:
        return None
