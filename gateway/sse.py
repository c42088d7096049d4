"""The SSE adapter: `GET /api/sessions/{id}/events`, the session's change stream as Server-Sent
Events.

The same pushes as the WebSocket, in the same order: each record's `id` is the session version,
so a browser's automatic reconnect (`Last-Event-ID`) resumes gap-free. Browsers cannot set an
Authorization header on EventSource: they open the stream with `?ticket=`, a one-minute ticket
for this session minted by `POST /api/sessions/{id}/events/ticket` (gateway/auth.py says why);
`?token=<access token>` still works, answered with a `Deprecation` header. A request from an origin
outside the allow-list is refused (403 ORIGIN_FORBIDDEN) before anything is done: a browser
would not let the page read the stream, but the device would have joined.

It decodes the request, opens the connection through `gateway.operations.presence` (which
authorizes the watch and joins the device), hands it to the hub, and closes it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs

from gateway.auth import Claims, bearer
from gateway.errors import ApiError, error_body, from_exception
from gateway.hub import Connection, ConnState
from gateway.operations import Context, access, presence
from gateway.protocol import MessageType
from gateway.push import Push
from gateway.validate import identifier, parse_uuid, version_param

__all__ = ["SseConnection", "SseEndpoint"]


class SseConnection(Connection):
    transport = "sse"
    speaks = False
    __slots__ = ("_closed", "_send")

    def __init__(self, send: Any, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._send = send
        self._closed = asyncio.Event()

    def encode(self, push: Push) -> bytes:
        return push.sse()

    async def write(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def abort(self, code: int, reason: str) -> None:
        await self.drain(0.5)
        self.move_to(ConnState.CLOSED)
        self._closed.set()
        if reason == "SLOW_CLIENT":  # it reads nothing: drop the socket, no final chunk
            transport = getattr(getattr(self._send, "__self__", None), "transport", None)
            if transport is not None:
                transport.abort()

    async def closed(self) -> None:
        await self._closed.wait()


class SseEndpoint:
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        ctx: Context = scope["app"].state.context
        try:
            conn, since, joined, deprecation = await self._open(ctx, scope, send)
        except Exception as exc:
            err = from_exception(exc)
            headers = [(b"content-type", b"application/json")]
            headers += [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
            await send({"type": "http.response.start", "status": err.status, "headers": headers})
            await send({"type": "http.response.body", "body": error_body(err.code, err.message)})
            return
        task = asyncio.current_task()
        if task is not None:
            ctx.handlers.add(task)
        try:  # joined: whatever happens from here, the device leaves at the end
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                        (b"connection", b"keep-alive"),
                        *deprecation,
                    ],
                }
            )
            conn.send(
                Push(
                    MessageType.CONNECTED,
                    {
                        "session_id": conn.session_id,
                        "user_id": conn.user_id,
                        "device_id": conn.device_id,
                        "connection_id": conn.conn_id,
                        "version": joined,
                        "resumed_from": since,
                    },
                    session_id=conn.session_id,
                )
                .sse()
                .replace(b"id: None\n", b"")
            )
            await ctx.hub.attach(conn, since if since is not None else joined)
            await _until_gone(conn, receive)
        finally:
            await ctx.hub.detach(conn)
            await presence.close_connection(ctx, conn)
            if task is not None:
                ctx.handlers.discard(task)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _open(
        self, ctx: Context, scope: dict, send: Any
    ) -> tuple[SseConnection, int | None, int, list[tuple[bytes, bytes]]]:
        """Decode the request and join: (the connection, the version to resume after, the
        version joined at, the headers that mark a deprecated way in)."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        if not ctx.config.origin_allowed(headers.get("origin")):
            raise ApiError(403, "ORIGIN_FORBIDDEN", "this origin is not allowed")
        if ctx.draining:
            raise ApiError(503, "DRAINING", "this gateway is shutting down, reconnect")
        sid = parse_uuid(scope["path_params"]["session_id"], "session_id")
        claims = _caller(ctx, headers, query, sid)
        since_raw = headers.get("last-event-id") or query.get("since") or query.get("last_event_id")
        since = version_param(
            None if since_raw == "None" else since_raw,
            "Last-Event-ID" if headers.get("last-event-id") else "since",
        )
        device = identifier(query.get("device_id") or "", "device_id", ctx.config)
        conn = SseConnection(
            send,
            sid,
            claims.user_id,
            device,
            max_outgoing=ctx.config.max_outgoing_bytes,
            is_admin=claims.is_admin,
        )
        conn.expires_at = claims.expires_at  # the stream ends when the token expires
        if not conn.device_id:
            conn.device_id = f"sse-{conn.conn_id[:12]}"
        client = scope.get("client") or ("", 0)
        joined = await presence.open_connection(
            ctx, claims, conn, presence.Opening(ip_address=client[0])
        )
        return conn, since, joined, _deprecated(headers, query)


def _caller(ctx: Context, headers: dict[str, str], query: dict[str, str], sid: str) -> Claims:
    """Who opens the stream: `Authorization: Bearer`, an SSE ticket (`?ticket=`, what a
    browser's EventSource uses), or the deprecated `?token=<access token>`."""
    if "ticket" in query:
        return access.authenticate_sse(ctx, query["ticket"], sid)
    return access.authenticate(ctx, bearer(headers.get("authorization")) or query.get("token"))


def _deprecated(headers: dict[str, str], query: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers that mark an access token in the URL as deprecated (RFC 9745), pointing at
    the ticket endpoint that replaces it."""
    if "token" not in query or bearer(headers.get("authorization")):
        return []
    return [
        (b"deprecation", b"true"),
        (b"link", b'<./events/ticket>; rel="alternate"; title="POST for an SSE ticket"'),
    ]


async def _until_gone(conn: SseConnection, receive: Any) -> None:
    """Until the client disconnects or the connection is closed (idle, expired, drained)."""
    waiter = asyncio.ensure_future(receive())
    closed = asyncio.ensure_future(conn.closed())
    try:
        while True:
            done, _ = await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
            if closed in done or waiter.result()["type"] == "http.disconnect":
                return
            waiter = asyncio.ensure_future(receive())
    finally:
        for f in (waiter, closed):
            f.cancel()
