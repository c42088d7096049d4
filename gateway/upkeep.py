"""Connection upkeep: server heartbeats, idle and expired connections closed, presence touches
and the connection registry's TTL, in one loop for the whole process.

No per-connection timers, and no bursts: every tick (`TICK_S`) handles the next share of the
connections (`Rotation`), so each still gets its heartbeat every `heartbeat_interval_s` and each
session its touch every `touch_interval_s`, but a tick writes to a dozen sockets, not to
thousands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from events.session import TouchDevices
from gateway.operations.commands import now_ms, send
from gateway.protocol import MessageType
from gateway.push import Push
from gateway.rotation import Rotation

if TYPE_CHECKING:
    from gateway.operations import Context

__all__ = ["TICK_S", "heartbeat", "run", "touch"]

log = logging.getLogger("sessiond.gateway")

#: How often the loop takes its next share of heartbeats and touches: the finer, the smaller
#: each burst; a tick with nothing to do costs one timer wake-up.
TICK_S = 0.1


async def run(ctx: Context) -> None:
    """Until cancelled."""
    cfg = ctx.config
    tick_s = min(TICK_S, cfg.heartbeat_interval_s, cfg.touch_interval_s)
    beats = Rotation(round(cfg.heartbeat_interval_s / tick_s), lambda: ctx.hub.conns)
    touches = Rotation(round(cfg.touch_interval_s / tick_s), lambda: ctx.hub.feeds)
    while True:
        await asyncio.sleep(tick_s)
        try:
            heartbeat(ctx, time.monotonic(), beats.share())
            renew = touches.period_starts  # the registry's TTL: once per touch interval
            await touch(ctx, touches.share(), registry=renew)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("gateway upkeep round failed", exc_info=True)


def heartbeat(ctx: Context, now: float, conn_ids: list[str]) -> None:
    """A server heartbeat (or an SSE keep-alive) to each of these connections, the idle ones
    and those whose token expired closed; admins get the gateway's figures."""
    cfg = ctx.config
    beat = Push(MessageType.HEARTBEAT, {"server_time": now_ms()})
    admin = Push(
        MessageType.ADMIN_UPDATE,
        {
            "gateway": cfg.gateway_id,
            "connections": len(ctx.hub.conns),
            "sessions": len(ctx.hub.feeds),
            "draining": ctx.draining,
            "uptime_s": int(time.time() - ctx.started_at),
        },
    )
    conns = ctx.hub.conns
    wall = time.time()
    for conn_id in conn_ids:
        conn = conns.get(conn_id)
        if conn is None:
            continue
        if conn.is_admin:
            conn.deliver(admin)
        if conn.token_expired(cfg.token_grace_s, wall):
            conn.close_soon(4401, "TOKEN_EXPIRED")
        elif conn.speaks and now - conn.last_rx > cfg.idle_timeout_s:
            conn.close_soon(4408, "IDLE_TIMEOUT")
        elif conn.transport == "ws":
            conn.deliver(beat)
        else:
            conn.send(b": keep-alive\n\n")


async def touch(ctx: Context, session_ids: list[str], *, registry: bool) -> None:
    """A presence touch of each of these sessions' connected devices; with `registry` (once
    per touch interval), the connection registry's TTL is renewed too."""
    for session_id in session_ids:
        feed = ctx.hub.feeds.get(session_id)
        devices = sorted({c.device_id for c in feed.conns}) if feed is not None else []
        if devices:
            await send(ctx, session_id, TouchDevices(at=now_ms(), device_ids=devices), wait=False)
    if registry:
        await ctx.store.connections.refresh(ctx.config.gateway_id, ctx.config.registry_ttl_s)
