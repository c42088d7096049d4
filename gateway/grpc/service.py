"""The gRPC servicer: `sessiond.v1.SessionService`, one rpc per gateway operation.

Each rpc only decodes (the bearer token from the call's metadata, the request message into the
operation's request Struct, JSON text fields through the same checks as a REST body), calls the
operation of `gateway.operations` that REST, WS and SSE call, and encodes its result; a failure
ends the call with the status `gateway.grpc.status` maps it to. `Watch` is a read of the
session's changes through the gateway's hub, exactly what a WS or SSE client receives, resumed
after `since` gap-free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import msgspec

from events.session import ConflictStrategy
from gateway.auth import Claims, bearer
from gateway.errors import ApiError, from_exception
from gateway.grpc import sessiond_pb2 as pb
from gateway.grpc import sessiond_pb2_grpc as pb_grpc
from gateway.grpc.status import close_status, status_of, trailers_of
from gateway.hub import Connection, ConnState
from gateway.operations import Context, access, devices, handoffs, reads, sessions, simulators
from gateway.operations import state as states
from gateway.operations.commands import WriteResult, correlated
from gateway.protocol import name_of
from gateway.push import Push
from gateway.validate import decode_json, identifier, parse_uuid

__all__ = ["GrpcWatch", "SessionService"]

_json = msgspec.json.Encoder()
_STRATEGIES = {
    pb.SERVER_WINS: ConflictStrategy.SERVER_WINS,
    pb.CLIENT_WINS: ConflictStrategy.CLIENT_WINS,
    pb.MERGE: ConflictStrategy.MERGE,
}
#: Changes queued for a watch before its writes wait (the hub's backlog limit then applies).
WATCH_QUEUE = 256

Reply = TypeVar("Reply")


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    err = from_exception(exc)
    await context.abort(status_of(err), err.message, trailers_of(err))


def _metadata(context: grpc.aio.ServicerContext, name: str) -> str:
    """The call's text metadata `name` ('' when absent)."""
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return ""


def _token(context: grpc.aio.ServicerContext) -> str | None:
    return bearer(_metadata(context, "authorization"))


def _key(value: str) -> str | None:
    return value or None


def _ack(result: WriteResult) -> pb.WriteAck:
    return pb.WriteAck(
        session_version=result.session_version,
        idempotency_key=result.idempotency_key,
        key_generated=result.key_generated,
    )


def _object(ctx: Context, text: str, field: str, *, required: bool = True) -> dict[str, Any]:
    """A JSON object sent as text, through the REST body's checks (depth, 64-bit integers)."""
    if not text and not required:
        return {}
    value = decode_json(text or "null", ctx.config, field)
    if not isinstance(value, dict):
        raise ApiError(400, "INVALID_ARGUMENT", f"{field} must be a JSON object")
    return value


def _optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _text(value: str | None) -> str:
    return value or ""


def unary(
    fn: Callable[[Any, Context, Claims, Any], Awaitable[Reply]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]]:
    """An rpc: the caller authenticated (one request of their rate), the operation called,
    any failure the call's status."""

    async def rpc(self: SessionService, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        ctx = self.ctx
        try:
            claims = access.authenticate(ctx, _token(context))
            access.rate_limit(ctx, claims)
            with correlated(_metadata(context, "x-correlation-id")):
                return await fn(self, ctx, claims, request)
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    rpc.__name__ = fn.__name__
    rpc.__doc__ = fn.__doc__
    return rpc


class SessionService(pb_grpc.SessionServiceServicer):
    """The rpcs of `sessiond.proto`, on the gateway process's `Context`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # ------------------------------------------------------------------ seed 003
    @unary
    async def StartSession(self, ctx: Context, claims: Claims, req: Any) -> pb.WriteAck:
        result = await sessions.start_session(
            ctx,
            claims,
            sessions.SessionStart(
                session_id=parse_uuid(req.session_id, "session_id"),
                router_id=parse_uuid(req.router_id, "router_id"),
                restart=req.restart,
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return _ack(result)

    @unary
    async def EndSession(self, ctx: Context, claims: Claims, req: Any) -> pb.WriteAck:
        router = parse_uuid(req.router_id, "router_id") if req.router_id else ""
        result = await sessions.end_session(
            ctx,
            claims,
            sessions.SessionChange(
                session_id=parse_uuid(req.session_id, "session_id"),
                router_id=router,
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return _ack(result)

    @unary
    async def RefreshSession(self, ctx: Context, claims: Claims, req: Any) -> pb.WriteAck:
        result = await sessions.refresh_session(
            ctx,
            claims,
            sessions.SessionChange(
                session_id=parse_uuid(req.session_id, "session_id"),
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return _ack(result)

    @unary
    async def GetSession(self, ctx: Context, claims: Claims, req: Any) -> pb.Session:
        if req.min_version < 0:
            raise ApiError(400, "INVALID_ARGUMENT", "min_version must be at least 0")
        snap = await states.read_snapshot(
            ctx,
            claims,
            states.SnapshotRead(
                session_id=parse_uuid(req.session_id, "session_id"),
                min_version=req.min_version or None,
            ),
        )
        return pb.Session(
            session_id=snap.session_id,
            user_id=snap.user_id,
            status=snap.status,
            state_json=_json.encode(snap.state_data).decode(),
            version=snap.version,
            session_version=snap.session_version,
            device_id=snap.device_id,
            app_version=snap.app_version,
            created_at=_text(snap.created_at),
            updated_at=_text(snap.updated_at),
            expires_at=_text(snap.expires_at),
        )

    # ------------------------------------------------------------------ state
    @unary
    async def SaveSnapshot(self, ctx: Context, claims: Claims, req: Any) -> pb.StateWritten:
        written = await states.save_snapshot(
            ctx,
            claims,
            states.SnapshotWrite(
                session_id=parse_uuid(req.session_id, "session_id"),
                state=_object(ctx, req.state_json, "state_json"),
                version=_optional(req, "version"),
                device_id=identifier(req.device_id, "device_id", ctx.config),
                app_version=identifier(req.app_version, "app_version", ctx.config),
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return pb.StateWritten(ack=_ack(written), state_version=written.state_version)

    @unary
    async def ApplyChanges(self, ctx: Context, claims: Claims, req: Any) -> pb.StateWritten:
        written = await states.apply_changes(
            ctx,
            claims,
            states.StateChanges(
                session_id=parse_uuid(req.session_id, "session_id"),
                changes=_object(ctx, req.changes_json, "changes_json", required=False),
                deleted_keys=list(req.deleted_keys),
                base_version=_optional(req, "base_version"),
                device_id=identifier(req.device_id, "device_id", ctx.config),
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return pb.StateWritten(ack=_ack(written), state_version=written.state_version)

    @unary
    async def ResolveConflict(self, ctx: Context, claims: Claims, req: Any) -> pb.Resolved:
        strategy = _STRATEGIES.get(req.strategy)
        if strategy is None:
            raise ApiError(400, "INVALID_ARGUMENT", f"unknown strategy {req.strategy}")
        resolved = await states.resolve_conflict(
            ctx,
            claims,
            states.ConflictResolution(
                session_id=parse_uuid(req.session_id, "session_id"),
                client_state=_object(ctx, req.client_state_json, "client_state_json"),
                strategy=strategy,
                client_version=req.client_version,
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return pb.Resolved(
            ack=_ack(resolved),
            state_json=_json.encode(resolved.state).decode(),
            state_version=resolved.state_version,
        )

    # ------------------------------------------------------------------ handoffs
    @unary
    async def StartHandoff(self, ctx: Context, claims: Claims, req: Any) -> pb.HandoffIssued:
        issued = await handoffs.start_handoff(
            ctx,
            claims,
            handoffs.HandoffStart(
                session_id=parse_uuid(req.session_id, "session_id"),
                source_device=identifier(
                    req.source_device, "source_device", ctx.config, required=True
                ),
                target_device=identifier(
                    req.target_device, "target_device", ctx.config, required=True
                ),
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return pb.HandoffIssued(
            ack=_ack(issued),
            token=issued.token,
            source_device=issued.source_device,
            target_device=issued.target_device,
            expires_at=issued.expires_at,
            expires_in=issued.expires_in,
        )

    @unary
    async def AcceptHandoff(self, ctx: Context, claims: Claims, req: Any) -> pb.HandoffAccepted:
        accepted = await handoffs.accept_handoff(
            ctx,
            claims,
            handoffs.HandoffAcceptance(
                session_id=parse_uuid(req.session_id, "session_id"),
                token=identifier(req.token, "token", ctx.config, required=True),
                device_id=identifier(req.device_id, "device_id", ctx.config),
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return pb.HandoffAccepted(
            ack=_ack(accepted),
            token=accepted.token,
            source_device=accepted.source_device,
            target_device=accepted.target_device,
            state_json=_json.encode(accepted.state).decode(),
            state_version=accepted.state_version,
        )

    # ------------------------------------------------------------------ devices
    @unary
    async def ListDevices(self, ctx: Context, claims: Claims, req: Any) -> pb.DeviceList:
        sid = parse_uuid(req.session_id, "session_id")
        found = await devices.list_devices(ctx, claims, sid)
        return pb.DeviceList(
            session_id=sid,
            devices=[
                pb.Device(
                    **{
                        **msgspec.structs.asdict(d),
                        "joined_at": _text(d.joined_at),
                        "last_seen": _text(d.last_seen),
                        "left_reason": _text(d.left_reason),
                    }
                )
                for d in found
            ],
        )

    @unary
    async def DisconnectDevice(self, ctx: Context, claims: Claims, req: Any) -> pb.WriteAck:
        result = await devices.disconnect_device(
            ctx,
            claims,
            devices.DeviceDisconnect(
                session_id=parse_uuid(req.session_id, "session_id"),
                device_id=identifier(req.device_id, "device_id", ctx.config, required=True),
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return _ack(result)

    # ------------------------------------------------------------------ simulators
    @unary
    async def StartSimulator(self, ctx: Context, claims: Claims, req: Any) -> pb.SimulatorStarted:
        symbols = [
            identifier(s, "initial_symbols", ctx.config, required=True) for s in req.initial_symbols
        ] or list(simulators.DEFAULT_SYMBOLS)
        cash = _optional(req, "initial_cash")
        started = await simulators.start_simulator(
            ctx,
            claims,
            simulators.SimulatorStart(
                session_id=parse_uuid(req.session_id, "session_id"),
                initial_symbols=symbols,
                initial_cash=simulators.DEFAULT_CASH if cash is None else cash,
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return pb.SimulatorStarted(
            ack=_ack(started),
            simulator_id=started.simulator_id,
            initial_symbols=started.initial_symbols,
            initial_cash=started.initial_cash,
        )

    @unary
    async def StopSimulator(self, ctx: Context, claims: Claims, req: Any) -> pb.SimulatorStopped:
        sim = parse_uuid(req.simulator_id, "simulator_id") if req.simulator_id else ""
        stopped = await simulators.stop_simulator(
            ctx,
            claims,
            simulators.SimulatorStop(
                session_id=parse_uuid(req.session_id, "session_id"),
                simulator_id=sim,
                idempotency_key=_key(req.idempotency_key),
            ),
        )
        return pb.SimulatorStopped(ack=_ack(stopped), simulator_id=stopped.simulator_id)

    @unary
    async def GetSimulator(self, ctx: Context, claims: Claims, req: Any) -> pb.Simulator:
        row = await simulators.simulator_status(
            ctx, claims, parse_uuid(req.session_id, "session_id")
        )
        return pb.Simulator(
            simulator_id=row.simulator_id,
            session_id=row.session_id,
            status=row.status,
            user_id=row.user_id,
            endpoint=_text(row.endpoint),
            created_at=_text(row.created_at),
            last_active=_text(row.last_active),
            initial_symbols=row.initial_symbols,
            initial_cash=row.initial_cash,
        )

    # ------------------------------------------------------------------ the change stream
    async def Watch(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Change]:
        """The session's changes through the hub, after `since` (else from now on), first a
        `connected` message saying from which version; the stream ends OK when the session
        ends, UNAVAILABLE when this gateway drains (resume elsewhere from the last version)."""
        ctx = self.ctx
        try:
            claims, sid, since = await _open_watch(ctx, _token(context), request)
        except Exception as exc:
            await _abort(context, exc)
            return
        conn = GrpcWatch(
            sid,
            claims.user_id,
            "",
            max_outgoing=ctx.config.max_outgoing_bytes,
            is_admin=claims.is_admin,
        )
        conn.expires_at = claims.expires_at  # the stream ends when the token expires
        task = asyncio.current_task()
        if task is not None:
            ctx.handlers.add(task)
        try:
            start = since if since is not None else await ctx.hub.history.current_version(sid)
            yield _connected(ctx, conn, start, since)
            await ctx.hub.attach(conn, start)
            async for change in conn.changes():
                yield change
        except Exception as exc:
            await _abort(context, exc)
        finally:
            await ctx.hub.detach(conn)
            ctx.slots.give_back(conn.user_id)
            if task is not None:
                ctx.handlers.discard(task)
        status = close_status(conn.close_code)
        if status is not None:
            await context.abort(status, conn.close_reason)


async def _open_watch(
    ctx: Context, token: str | None, request: Any
) -> tuple[Claims, str, int | None]:
    """Authenticate and authorize a watch, and take the user's connection slot."""
    claims = access.authenticate(ctx, token)
    access.rate_limit(ctx, claims)
    if ctx.draining:
        raise ApiError(503, "DRAINING", "this gateway is shutting down, reconnect")
    sid = parse_uuid(request.session_id, "session_id")
    since = _optional(request, "since")
    if since is not None and since < 0:
        raise ApiError(400, "INVALID_ARGUMENT", "since must be at least 0")
    await reads.authorize_read(ctx, claims, sid)
    if not ctx.slots.take(claims.user_id):
        raise ApiError(
            429,
            "TOO_MANY_CONNECTIONS",
            f"this user already has {ctx.config.max_connections_per_user} open connections"
            " on this gateway",
        )
    return claims, sid, since


def _connected(ctx: Context, conn: GrpcWatch, start: int, since: int | None) -> pb.Change:
    payload = {
        "session_id": conn.session_id,
        "user_id": conn.user_id,
        "connection_id": conn.conn_id,
        "version": start,
        "resumed_from": since,
        "gateway": ctx.config.gateway_id,
    }
    return pb.Change(
        session_id=conn.session_id,
        type="connected",
        timestamp=int(time.time()),
        payload_json=_json.encode(payload).decode(),
    )


class _Frame:
    """A change ready to yield, with the size the hub counts against the backlog limit."""

    __slots__ = ("change", "size")

    def __init__(self, change: pb.Change) -> None:
        self.change = change
        self.size = change.ByteSize()

    def __len__(self) -> int:
        return self.size


class GrpcWatch(Connection):
    """A `Watch` stream as the hub sees it: a connection whose writes feed the stream through
    a bounded queue (a reader that falls behind by more than `max_outgoing` bytes is closed
    as SLOW_CLIENT, as any WS or SSE client). It joins no device: a service watching a session
    is an observer, not one of the user's devices. Keep-alives are HTTP/2's own (the server's
    keepalive pings), so the gateway's SSE keep-alive is dropped here."""

    transport = "grpc"
    speaks = False
    __slots__ = ("_closed", "_queue", "close_code", "close_reason")

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._queue: asyncio.Queue[_Frame] = asyncio.Queue(WATCH_QUEUE)
        self._closed = asyncio.Event()
        self.close_code = 4410
        self.close_reason = ""

    def encode(self, push: Push) -> _Frame:
        return _Frame(
            pb.Change(
                session_id=push.session_id or self.session_id,
                type=name_of(push.mtype),
                version=push.version,
                timestamp=push.timestamp,
                payload_json=_json.encode(push.payload).decode(),
            )
        )

    def send(self, data: Any) -> None:
        if isinstance(data, bytes):  # the SSE keep-alive of the upkeep: not for this stream
            return
        super().send(data)

    def write_now(self, data: Any) -> bool:
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            return False
        return True

    async def write(self, data: Any) -> None:
        await self._queue.put(data)

    async def abort(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        if reason != "SLOW_CLIENT":
            await self.drain(0.5)  # what was queued before the close is still delivered
        self.move_to(ConnState.CLOSED)
        self._closed.set()

    async def changes(self) -> AsyncIterator[pb.Change]:
        """The queued changes, in order, until the hub closes the connection."""
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            while True:
                if not self._queue.empty():
                    yield self._queue.get_nowait().change
                    continue
                if closed.done():
                    return
                getter = asyncio.ensure_future(self._queue.get())
                await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result().change
                else:
                    getter.cancel()
        finally:
            closed.cancel()
