"""The session's exchange simulator (seed 000 / 002): start, stop, status, latest quotes.

Starting claims the session's single simulator slot (the session actor decides; its policy
creates the simulator actor); the simulator's id follows from the write's idempotency key, so a
retry names the same simulator. Stopping is a command to the simulator actor, which checks its
owner. The status and the quotes are reads.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import msgspec

from events.ids import simulator_actor
from events.session import ReserveSimulator
from events.simulator import StopSimulator
from gateway.auth import Claims
from gateway.errors import ApiError
from gateway.operations.commands import WriteResult, idempotency, now_ms, send, written
from gateway.operations.reads import SimulatorView, authorize_read, simulator_row

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = [
    "DEFAULT_CASH",
    "DEFAULT_SYMBOLS",
    "Quotes",
    "SimulatorStart",
    "SimulatorStarted",
    "SimulatorStop",
    "SimulatorStopped",
    "latest_quotes",
    "simulator_status",
    "start_simulator",
    "stop_simulator",
]

#: What a simulator trades and holds when the client does not say.
DEFAULT_SYMBOLS = ("AAPL", "MSFT", "GOOG")
DEFAULT_CASH = 100000.0


class SimulatorStart(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    initial_symbols: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    initial_cash: float = DEFAULT_CASH
    idempotency_key: str | None = None


class SimulatorStop(msgspec.Struct, frozen=True, kw_only=True):
    """`simulator_id` "": the session's newest simulator (from the read model)."""

    session_id: str
    simulator_id: str = ""
    idempotency_key: str | None = None


class SimulatorStarted(WriteResult, frozen=True, kw_only=True):
    """Accepted: the simulator is CREATING; its later statuses reach the session's feed."""

    simulator_id: str
    initial_symbols: list[str]
    initial_cash: float


class SimulatorStopped(WriteResult, frozen=True, kw_only=True):
    """Accepted: the simulator is STOPPING. `simulator` is its read-model row when the stop
    looked it up (None when the caller named it)."""

    simulator_id: str
    simulator: SimulatorView | None = None


class Quotes(msgspec.Struct, frozen=True, kw_only=True):
    """The newest tick of the session's simulator (`tick`: its JSON as the engine wrote it,
    None before the first one)."""

    simulator_id: str
    status: str
    tick: msgspec.Raw | None


async def start_simulator(ctx: Context, claims: Claims, req: SimulatorStart) -> SimulatorStarted:
    key = idempotency(
        claims,
        req.session_id,
        "start_simulator",
        req.idempotency_key,
        req.initial_symbols,
        req.initial_cash,
    )
    simulator_id = str(uuid.uuid5(uuid.NAMESPACE_URL, key.command_id))  # a retry: the same
    outcome = await send(
        ctx,
        req.session_id,
        ReserveSimulator(
            at=now_ms(),
            user_id=claims.user_id,
            admin=claims.is_admin,
            simulator_id=simulator_id,
            initial_symbols=req.initial_symbols,
            initial_cash=req.initial_cash,
            heartbeat_timeout_ms=ctx.config.simulator_heartbeat_timeout_ms,
            idle_timeout_ms=ctx.config.simulator_idle_timeout_ms,
        ),
        idempotency=key,
    )
    return SimulatorStarted(
        **written(outcome, key),
        simulator_id=simulator_id,
        initial_symbols=req.initial_symbols,
        initial_cash=req.initial_cash,
    )


async def stop_simulator(ctx: Context, claims: Claims, req: SimulatorStop) -> SimulatorStopped:
    """Stop the named simulator, or the session's newest one (a read, authorized as one)."""
    row = None
    simulator_id = req.simulator_id
    if not simulator_id:
        row = await simulator_status(ctx, claims, req.session_id)
        simulator_id = row.simulator_id
    key = idempotency(claims, req.session_id, "stop_simulator", req.idempotency_key, simulator_id)
    outcome = await send(
        ctx,
        req.session_id,
        StopSimulator(at=now_ms(), user_id=claims.user_id, admin=claims.is_admin),
        actor_id=simulator_actor(simulator_id),
        idempotency=key,
    )
    return SimulatorStopped(**written(outcome, key), simulator_id=simulator_id, simulator=row)


async def simulator_status(ctx: Context, claims: Claims, session_id: str) -> SimulatorView:
    """The session's newest simulator; 404 SIMULATOR_NOT_FOUND when it never had one."""
    await authorize_read(ctx, claims, session_id)
    row = await simulator_row(ctx, session_id)
    if row is None:
        raise ApiError(404, "SIMULATOR_NOT_FOUND", "this session has no simulator")
    return row


async def latest_quotes(ctx: Context, claims: Claims, session_id: str) -> Quotes:
    """The newest tick of the session's simulator, for clients that poll."""
    sim = await simulator_status(ctx, claims, session_id)
    latest = await ctx.store.market_data.latest(sim.simulator_id)
    raw = latest[1] if latest is not None else None
    return Quotes(
        simulator_id=sim.simulator_id, status=sim.status, tick=msgspec.Raw(raw) if raw else None
    )
