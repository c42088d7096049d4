"""The gateway's shared resources and the few operations every edge (REST, WS, SSE) uses.

One `Gateway` per process, built in the Starlette lifespan: the event store, PostgreSQL pool,
command sender, token service, connection hub, metrics. It keeps no authoritative state: writes
are commands to actors (answered with their outcome), reads come from the projections and the
store (events, the connection registry, the device index).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import msgspec

from events.codec import decode_event
from events.envelope import Outcome
from events.errors import StoreUnavailable
from events.ids import session_actor, simulator_actor
from events.session import (
    CreateSession,
    JoinDevice,
    LeaveDevice,
    ReserveSimulator,
    TouchDevices,
    Transport,
)
from gateway.archive import PostgresArchive
from gateway.auth import Claims, TokenService
from gateway.config import GatewayConfig
from gateway.errors import ApiError, from_outcome
from gateway.hub import Connection, EventHistory, Hub
from gateway.idempotency import IdempotencyKey, check_key, new_key, outcome_unknown, reused
from gateway.metrics import GatewayMetrics
from gateway.ratelimit import KeyedLimiter
from gateway.rotation import Rotation
from gateway.slots import ConnectionSlots
from infra.postgres import Database, DatabaseUnavailable, Outage
from infra.store import CommandSender, Store

__all__ = ["Gateway", "now_ms", "parse_uuid"]

log = logging.getLogger("sessiond.gateway")

#: How long the user+device -> session index keeps an entry (a week).
DEVICE_INDEX_TTL_S = 7 * 24 * 3600

#: How often the maintenance loop takes its next share of heartbeats and touches (`Rotation`):
#: the finer, the smaller each burst; a tick with nothing to do costs one timer wake-up.
MAINTENANCE_TICK_S = 0.1

_NS = uuid.UUID("6f1d8a52-3c1b-4d7e-9a55-0c5d2b7e9f10")


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_uuid(value: Any, field: str) -> str:
    """`value` as a canonical UUID string, or a 400 INVALID_ARGUMENT naming `field`."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, "INVALID_ARGUMENT", f"{field} is required and must be a UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"{field} must be a UUID, got {value!r}") from None


class Gateway:
    """Everything a request handler needs, shared by the whole process."""

    def __init__(self, config: GatewayConfig, store: Store, pool: Any,
                 bus: CommandSender) -> None:
        self.config = config
        self.store = store
        # reads of the projections: an outage raises DatabaseUnavailable (503) and is logged
        # once, with a reminder a minute and a line when it ends, not once per request
        self.pool = Database(pool, Outage("gateway: PostgreSQL", log)) if pool is not None \
            else None
        if self.pool is not None and store.archive is None:
            store.archive = PostgresArchive(self.pool)  # what Redis no longer holds
        self.bus = bus
        self.tokens = TokenService(config)
        self.metrics = GatewayMetrics()
        self.history = EventHistory(store)
        self.hub = Hub(store.feed, self.history, metrics=self.metrics,
                       reset_state=self.reset_state)
        self.started_at = time.time()
        self.draining = False
        self._tasks: list[asyncio.Task] = []
        self.handlers: set[asyncio.Task] = set()
        #: REST requests per user (this process), the WS messages' mechanism
        self.rest_limiter = KeyedLimiter(config.rest_rate_per_s, config.rest_rate_burst)
        self.user_slots = ConnectionSlots(config.max_connections_per_user)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.hub.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._maintenance()))
        await self._register_gateway()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self.hub.close()
        with contextlib.suppress(Exception):
            await self.store.connections.remove_gateway(self.config.gateway_id)

    async def _register_gateway(self) -> None:
        with contextlib.suppress(Exception):
            await self.store.connections.announce(self.config.gateway_id)

    async def _maintenance(self) -> None:
        """One loop for all connections: server heartbeats, idle checks, presence touches and
        the connection registry's TTL. No per-connection timers, and no bursts: every tick
        (`MAINTENANCE_TICK_S`) handles the next share of the connections (`Rotation`), so each
        still gets its heartbeat every `heartbeat_interval_s` and each session its touch every
        `touch_interval_s`, but a tick writes to a dozen sockets, not to thousands."""
        cfg = self.config
        tick_s = min(MAINTENANCE_TICK_S, cfg.heartbeat_interval_s, cfg.touch_interval_s)
        beats = Rotation(round(cfg.heartbeat_interval_s / tick_s), lambda: self.hub.conns)
        touches = Rotation(round(cfg.touch_interval_s / tick_s), lambda: self.hub.feeds)
        while True:
            await asyncio.sleep(tick_s)
            try:
                self._heartbeat(time.monotonic(), beats.share())
                renew = touches.period_starts  # the registry's TTL: once per touch interval
                await self._touch(touches.share(), registry=renew)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("gateway maintenance round failed", exc_info=True)

    def _heartbeat(self, now: float, conn_ids: list[str]) -> None:
        """A server heartbeat (or an SSE keep-alive) to each of these connections, and the idle
        ones closed."""
        from gateway.protocol import MessageType
        from gateway.push import Push

        beat = Push(MessageType.HEARTBEAT, {"server_time": now_ms()})
        admin = Push(MessageType.ADMIN_UPDATE, {
            "gateway": self.config.gateway_id, "connections": len(self.hub.conns),
            "sessions": len(self.hub.feeds), "draining": self.draining,
            "uptime_s": int(time.time() - self.started_at)})
        conns = self.hub.conns
        wall = time.time()
        for conn_id in conn_ids:
            conn = conns.get(conn_id)
            if conn is None:
                continue
            if conn.is_admin:
                conn.deliver(admin)
            if self.token_expired(conn, wall):
                conn.close_soon(4401, "TOKEN_EXPIRED")
            elif now - conn.last_rx > self.config.idle_timeout_s:
                conn.close_soon(4408, "IDLE_TIMEOUT")
            elif conn.transport == "ws":
                conn.deliver(beat)
            else:
                conn.send(b": keep-alive\n\n")

    def token_expired(self, conn: Connection, wall: float | None = None) -> bool:
        """Whether the token `conn` was opened (or last re-authenticated) with has expired,
        `token_grace_s` allowed: such a connection is closed (4401 TOKEN_EXPIRED) by the
        maintenance loop, within one heartbeat interval, and a WS message on it is refused."""
        exp = conn.expires_at
        return bool(exp) and (time.time() if wall is None else wall) >= \
            exp + self.config.token_grace_s

    def rate_limit(self, user_id: str) -> None:
        """A REST request of `user_id`: 429 RATE_LIMITED (with `Retry-After`) when the user's
        bucket is empty (`GATEWAY_REST_RATE_PER_S` sustained, `GATEWAY_REST_RATE_BURST`)."""
        wait = self.rest_limiter.check(user_id, time.monotonic())
        if wait:
            raise ApiError(
                429, "RATE_LIMITED",
                f"more than {self.config.rest_rate_per_s:g} requests/s for this user",
                headers={"Retry-After": str(wait)}, extra={"retry_after": wait})

    async def _touch(self, session_ids: list[str], *, registry: bool) -> None:
        """A presence touch of each of these sessions' connected devices; with `registry`
        (once per touch interval), the connection registry's TTL is renewed too."""
        for session_id in session_ids:
            feed = self.hub.feeds.get(session_id)
            devices = sorted({c.device_id for c in feed.conns}) if feed is not None else []
            if devices:
                await self.command(session_id, TouchDevices(at=now_ms(), device_ids=devices),
                                   wait=False)
        if registry:
            await self.store.connections.refresh(self.config.gateway_id,
                                                 self.config.registry_ttl_s)

    # ------------------------------------------------------------------ commands
    async def reserve_simulator(
        self,
        session_id: str,
        user_id: str,
        simulator_id: str,
        symbols: list[str],
        cash: float,
        *,
        idempotency: IdempotencyKey | None = None,
    ) -> Outcome | None:
        """Claim the session's simulator slot (REST and WS alike), with the configured timeouts."""
        return await self.command(
            session_id,
            ReserveSimulator(
                at=now_ms(),
                user_id=user_id,
                simulator_id=simulator_id,
                initial_symbols=symbols,
                initial_cash=cash,
                heartbeat_timeout_ms=self.config.simulator_heartbeat_timeout_ms,
                idle_timeout_ms=self.config.simulator_idle_timeout_ms,
            ),
            idempotency=idempotency,
        )

    async def command(
        self,
        session_id: str,
        command: Any,
        *,
        actor_id: str | None = None,
        command_id: str | None = None,
        correlation_id: str = "",
        wait: bool = True,
        idempotency: IdempotencyKey | None = None,
    ) -> Outcome | None:
        """Send `command` to the session (or `actor_id` of its partition); a refusal raises the
        ApiError its code maps to, a store problem a 503.

        A client's write comes with its `idempotency` key (its command id and the request's
        fingerprint): a stored outcome of another request under that key is 422
        IDEMPOTENCY_KEY_REUSED, and a store problem is 503 OUTCOME_UNKNOWN carrying the key to
        retry with (the command may have been queued: it may be applied later)."""
        started = time.perf_counter()
        if idempotency is not None:
            command_id = idempotency.command_id
        try:
            outcome = await self.bus.send(
                actor_id or session_actor(session_id),
                session_id,
                command,
                command_id=command_id,
                correlation_id=correlation_id,
                wait=wait,
                timeout=self.config.command_timeout_s,
                fingerprint=idempotency.fingerprint if idempotency is not None else "",
            )
        except (StoreUnavailable, TimeoutError, ConnectionError):
            if idempotency is not None:
                self.metrics.command_errors.labels("OUTCOME_UNKNOWN").inc()
                raise outcome_unknown(idempotency, self.config.retry_after_s) from None
            self.metrics.command_errors.labels("UNAVAILABLE").inc()
            raise ApiError(503, "STORE_UNAVAILABLE",
                           "the session store did not answer in time, retry later") from None
        if wait:
            self.metrics.command_seconds.observe(time.perf_counter() - started)
        self.metrics.commands.labels(type(command).__name__).inc()
        if outcome is not None and idempotency is not None and reused(idempotency,
                                                                       outcome.fingerprint):
            self.metrics.command_errors.labels("IDEMPOTENCY_KEY_REUSED").inc()
            raise ApiError(422, "IDEMPOTENCY_KEY_REUSED",
                           "this idempotency key was already used for another request; "
                           "nothing was written for this one (use a new key)")
        if outcome is not None and not outcome.ok:
            self.metrics.command_errors.labels(outcome.error_code).inc()
            raise from_outcome(outcome.error_code, outcome.error_message)
        return outcome

    async def events_of(self, session_id: str, outcome: Outcome) -> list[Any]:
        """The events a successful command appended (outcome.events of them, ending at
        outcome.version)."""
        if outcome.events <= 0:
            return []
        envs = await self.store.actors.read(
            self.store.partition_of(session_id), outcome.actor_id,
            after=outcome.version - outcome.events, upto=outcome.version,
        )
        return [decode_event(env.data, env.type) for env in envs]

    # ------------------------------------------------------------------ sessions
    def authorize(self, claims: Claims, owner: str | None) -> None:
        """A user reaches only their own sessions (admins reach all)."""
        if owner is not None and owner != claims.user_id and not claims.is_admin:
            raise ApiError(403, "SESSION_FORBIDDEN", "this session belongs to another user")

    async def session_owner(self, session_id: str) -> str | None:
        """The session's user id from the projection, or from its first event when the
        projection has not caught up; None when the session does not exist.

        While PostgreSQL is unreachable, the first event alone answers, when Redis still holds
        it (version 1): writes to existing sessions go on. Without it (no events, or trimmed),
        "does not exist" cannot be told from "not known here": DatabaseUnavailable (503)."""
        outage: DatabaseUnavailable | None = None
        if self.pool is not None:
            try:
                owner = await self.pool.fetchval(
                    "SELECT user_id FROM session.active_sessions WHERE session_id = $1",
                    session_id,
                )
            except DatabaseUnavailable as exc:
                outage, owner = exc, None
            if owner is not None:
                return owner
        try:  # version 1 from Redis, else from the archive (when it was trimmed)
            first = await self.store.actors.read(
                self.store.partition_of(session_id), session_actor(session_id), upto=1)
        except DatabaseUnavailable as exc:
            raise outage or exc from None
        if not first:
            if outage is not None:
                raise outage
            return None
        return getattr(decode_event(first[0].data, first[0].type), "user_id", None)

    async def check_owner(self, claims: Claims, session_id: str, *, must_exist: bool = True
                          ) -> str | None:
        owner = await self.session_owner(session_id)
        if owner is None and must_exist:
            raise ApiError(404, "SESSION_NOT_FOUND", f"session {session_id} does not exist")
        self.authorize(claims, owner)
        return owner

    async def session_for_device(self, claims: Claims, device_id: str, *,
                                 ip_address: str = "", idempotency_key: str | None = None
                                 ) -> tuple[str, bool]:
        """The user's active session on `device_id` (reused), else a new one.
        Returns (session_id, created).

        A new session's id follows from the user, the device and the idempotency key (one is
        generated when the client sent none), so a retry with the key that OUTCOME_UNKNOWN
        returned names the same session, and the same key on another device another one."""
        if not device_id or len(device_id) > 200:
            raise ApiError(400, "INVALID_ARGUMENT", "device_id is required (at most 200 chars)")
        key = new_key() if idempotency_key is None else check_key(idempotency_key)
        devices = self.store.devices
        existing = await devices.get(claims.user_id, device_id)
        if existing is None and self.pool is not None:
            existing = await self.pool.fetchval(
                "SELECT s.session_id FROM session.active_sessions s"
                " JOIN session.session_metadata m ON m.session_id = s.session_id"
                " WHERE s.user_id = $1 AND s.status <> 'EXPIRED' AND s.expires_at > now()"
                " AND (m.metadata->>'device_id' = $2 OR EXISTS (SELECT 1 FROM session.devices d"
                "      WHERE d.session_id = s.session_id AND d.device_id = $2))"
                " ORDER BY s.last_active DESC LIMIT 1",
                claims.user_id, device_id,
            )
        stale = None
        if existing is not None:
            sid = str(existing)
            if await self._usable(claims, sid, wait_s=2.0):
                return sid, False
            stale = sid
        sid = str(uuid.uuid5(_NS, f"{claims.user_id}/{device_id}/{key}"))
        ttl = DEVICE_INDEX_TTL_S
        if stale is None and not await devices.claim(claims.user_id, device_id, sid, ttl):
            # another request for the same user and device is creating one right now: use it
            other = await devices.get(claims.user_id, device_id)
            if other and await self._usable(claims, other, wait_s=2.0):
                return other, False
        await devices.put(claims.user_id, device_id, sid, ttl)
        await self.create_session(
            claims, sid, device_id=device_id, ip_address=ip_address,
            idempotency=IdempotencyKey(key=key, command_id=f"create:{sid}", fingerprint="",
                                       generated=idempotency_key is None))
        return sid, True

    async def _usable(self, claims: Claims, session_id: str, *, wait_s: float = 0.0) -> bool:
        """Whether the session is live and the user's. A session not found yet may be being
        created by a concurrent request (its id is claimed first): wait up to `wait_s` for it.
        A store failure is raised, not read as False."""
        from events.session import ValidateSession

        deadline = time.monotonic() + wait_s
        while True:
            try:
                await self.command(session_id,
                                   ValidateSession(at=now_ms(), user_id=claims.user_id))
                return True
            except ApiError as exc:
                if exc.status >= 500:
                    raise
                if exc.code != "SESSION_NOT_FOUND" or time.monotonic() >= deadline:
                    return False
            await asyncio.sleep(0.05)

    async def create_session(self, claims: Claims, session_id: str, *, device_id: str = "",
                             router_id: str = "", restart: bool = False, ip_address: str = "",
                             idempotency: IdempotencyKey | None = None) -> Outcome | None:
        return await self.command(
            session_id,
            CreateSession(
                at=now_ms(), user_id=claims.user_id, session_id=session_id, device_id=device_id,
                router_id=router_id, restart=restart, pod_name=self.config.pod_name,
                ip_address=ip_address, ttl_ms=self.config.session_ttl_ms,
            ),
            idempotency=idempotency,
        )

    # ------------------------------------------------------------------ presence
    async def join(self, conn: Connection, *, device_type: str = "", device_name: str = "",
                   os_name: str = "", ip_address: str = "", attempt: int = 0) -> Outcome | None:
        """Join `conn`'s device to its session, within the limits: connections of the user on
        this process (checked here), connections and devices of the session (checked by the
        session actor, which also forgets the device `device_retention_s` after it left).
        A successful join is paired with one `leave`."""
        transport = Transport.SSE if conn.transport == "sse" else Transport.WS
        cfg = self.config
        if not self.user_slots.take(conn.user_id):
            self.metrics.command_errors.labels("TOO_MANY_CONNECTIONS").inc()
            raise ApiError(429, "TOO_MANY_CONNECTIONS", f"this user already has "
                           f"{cfg.max_connections_per_user} open connections on this gateway")
        try:
            outcome = await self.command(
                conn.session_id,
                JoinDevice(
                    at=now_ms(), user_id=conn.user_id, device_id=conn.device_id,
                    connection_id=conn.conn_id, transport=transport, device_type=device_type,
                    device_name=device_name, os=os_name, pod_name=cfg.pod_name,
                    ip_address=ip_address, max_connections=cfg.max_connections_per_session,
                    max_devices=cfg.max_devices_per_session,
                    retention_ms=round(cfg.device_retention_s * 1000),
                ),
                command_id=f"join:{conn.conn_id}:{attempt}",
            )
        except BaseException:
            self.user_slots.give_back(conn.user_id)
            raise
        with contextlib.suppress(Exception):
            await self.store.connections.register(
                self.config.gateway_id, conn.conn_id, msgspec.json.encode({
                    "session_id": conn.session_id, "user_id": conn.user_id,
                    "device_id": conn.device_id, "transport": conn.transport,
                    "connected_at": int(conn.connected_at), "gateway": self.config.gateway_id,
                }), self.config.registry_ttl_s)
        self.metrics.connections.labels(conn.transport).inc()
        return outcome

    async def leave(self, conn: Connection) -> None:
        self.user_slots.give_back(conn.user_id)
        self.metrics.connections.labels(conn.transport).dec()
        with contextlib.suppress(Exception):
            await self.store.connections.unregister(self.config.gateway_id, conn.conn_id)
        try:
            await self.command(
                conn.session_id,
                LeaveDevice(at=now_ms(), user_id=conn.user_id, device_id=conn.device_id,
                            connection_id=conn.conn_id),
                command_id=f"leave:{conn.conn_id}",
                wait=self.draining,
            )
        except ApiError as exc:
            log.warning("leave of %s failed: %s", conn.conn_id, exc.message)

    # ------------------------------------------------------------------ reads
    async def reset_state(self, session_id: str) -> tuple[dict, int]:
        """The session's current state as the projections hold it, and its version."""
        snap = await self.snapshot(session_id)
        devices = await self.devices(session_id)
        sim = await self.simulator(session_id)
        return ({"session": snap, "devices": devices, "simulator": sim},
                int(snap.get("session_version") or 0))

    async def snapshot(self, session_id: str) -> dict[str, Any]:
        if self.pool is None:
            raise ApiError(503, "STORE_UNAVAILABLE", "no projection database configured")
        row = await self.pool.fetchrow(
            "SELECT s.session_id, s.user_id, s.status, s.created_at, s.last_active, s.expires_at,"
            " st.state, coalesce(st.state_version, 0) AS state_version, st.device_id,"
            " st.app_version, st.updated_at, coalesce(v.version, 0) AS session_version"
            " FROM session.active_sessions s"
            " LEFT JOIN session.state_snapshots st ON st.session_id = s.session_id"
            " LEFT JOIN projection.actor_versions v ON v.actor_id = 'session:' || s.session_id"
            " WHERE s.session_id = $1",
            session_id,
        )
        if row is None:
            raise ApiError(404, "SESSION_NOT_FOUND", f"session {session_id} does not exist")
        state = row["state"]
        return {
            "session_id": row["session_id"],
            "user_id": row["user_id"],
            "status": row["status"],
            "state_data": _json(state) if state is not None else {},
            "version": row["state_version"],
            "session_version": row["session_version"],
            "device_id": row["device_id"] or "",
            "app_version": row["app_version"] or "",
            "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"] or row["last_active"]),
            "expires_at": _iso(row["expires_at"]),
        }

    async def devices(self, session_id: str) -> list[dict[str, Any]]:
        if self.pool is None:
            return []
        rows = await self.pool.fetch(
            "SELECT device_id, device_type, device_name, os, status, connections,"
            " ws_connections, sse_connections, pod_name, joined_at, last_seen, left_reason"
            " FROM session.devices WHERE session_id = $1 ORDER BY joined_at",
            session_id,
        )
        return [
            {
                "device_id": r["device_id"], "device_type": r["device_type"],
                "device_name": r["device_name"], "os": r["os"], "status": r["status"],
                "online": r["status"] == "online", "connections": r["connections"],
                "ws_connections": r["ws_connections"], "sse_connections": r["sse_connections"],
                "pod_name": r["pod_name"], "joined_at": _iso(r["joined_at"]),
                "last_seen": _iso(r["last_seen"]), "left_reason": r["left_reason"],
            }
            for r in rows
        ]

    async def simulator(self, session_id: str) -> dict[str, Any] | None:
        if self.pool is None:
            return None
        r = await self.pool.fetchrow(
            "SELECT simulator_id, session_id, user_id, status, endpoint, created_at, last_active,"
            " initial_symbols, initial_cash FROM simulator.instances WHERE session_id = $1"
            " ORDER BY created_at DESC LIMIT 1",
            session_id,
        )
        if r is None:
            return None
        return {
            "simulator_id": r["simulator_id"], "session_id": r["session_id"],
            "user_id": r["user_id"], "status": r["status"], "endpoint": r["endpoint"],
            "created_at": _iso(r["created_at"]), "last_active": _iso(r["last_active"]),
            "initial_symbols": _json(r["initial_symbols"]) if r["initial_symbols"] else [],
            "initial_cash": r["initial_cash"],
        }

    async def wait_projected(self, session_id: str, version: int, timeout: float = 2.0) -> None:
        """Read-your-writes: wait (bounded) until the projections reflect `version`."""
        if self.pool is None or version <= 0:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = await self.pool.fetchval(
                "SELECT version FROM projection.actor_versions WHERE actor_id = $1",
                session_actor(session_id),
            )
            if v is not None and v >= version:
                return
            await asyncio.sleep(0.01)

    async def ready(self) -> dict[str, Any]:
        """Readiness: this gateway can serve (see `gateway.health`)."""
        from gateway.health import readiness

        return await readiness(self)

    def simulator_actor_id(self, simulator_id: str) -> str:
        return simulator_actor(simulator_id)


def _json(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        return msgspec.json.decode(value)
    return value


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
