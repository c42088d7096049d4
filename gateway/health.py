"""What `/health` and `/ready` report: real checks of what the gateway and the system need.

`/ready` is the gateway's own ability to serve, for a load balancer or a Kubernetes Service:
Redis and PostgreSQL answer, and the gateway is not draining. It does not depend on the workers'
leases: one worker failing over must not take every gateway out of the Service at once (a
command to a partition without an owner waits for the next one, bounded by the command timeout).

`/health` keeps seed 004's fields and adds `checks`, one entry per dependency, and a `status`:

- ``unhealthy`` (HTTP 503): no write can be applied: Redis does not answer, or no worker holds
  any partition lease;
- ``degraded`` (HTTP 200): some things fail, the rest works: PostgreSQL does not answer (reads
  and new connections get 503, writes still go through), some partitions have no worker, or the
  projection falls behind (no projector running, a projector that cannot reach PostgreSQL or
  cannot claim its partitions, partitions without a projector, lag above
  `health_max_lag_s`, GATEWAY_HEALTH_MAX_LAG_S);
- ``healthy`` otherwise; ``draining`` while the gateway shuts down.

Dead letters are reported (count) but do not degrade the status: they are past events, already
counted by `sessiond_projector_dead_letters_total` and listed by `projections status`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from projections.health import ROLE as PROJECTOR_ROLE
from projections.health import describe, read_statuses

if TYPE_CHECKING:
    from gateway.operations import Context

__all__ = [
    "DEGRADED",
    "DRAINING",
    "HEALTHY",
    "UNHEALTHY",
    "health_checks",
    "overall",
    "probe_checks",
    "readiness",
]

HEALTHY, DEGRADED, UNHEALTHY, DRAINING = "healthy", "degraded", "unhealthy", "draining"

#: How long one check may take before it counts as failed.
CHECK_TIMEOUT_S = 1.0


async def _timed(coro: Any) -> Any:
    return await asyncio.wait_for(coro, CHECK_TIMEOUT_S)


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _store(ctx: Context) -> dict[str, Any]:
    try:
        await _timed(ctx.store.ping())
    except Exception as exc:
        return {"status": "unreachable", "error": _failure(exc)}
    return {"status": "ok"}


async def _postgres(ctx: Context) -> dict[str, Any]:
    if ctx.db is None:
        return {"status": "unconfigured", "error": "no DATABASE_URL"}
    try:
        await _timed(ctx.db.fetchval("SELECT 1"))
    except Exception as exc:
        out = {"status": "unreachable", "error": _failure(exc)}
        since = ctx.db.outage.down_since
        if since is not None:
            out["since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        return out
    return {"status": "ok"}


async def _leases_held(ctx: Context, role: str) -> int:
    return len(await _timed(ctx.store.leases.holders(role)))


async def _workers(ctx: Context) -> dict[str, Any]:
    partitions = ctx.config.partitions
    try:
        held = await _leases_held(ctx, "worker")
    except Exception as exc:
        return {"status": "unknown", "error": _failure(exc)}
    status = "ok" if held == partitions else ("none" if held == 0 else "partial")
    return {"status": status, "leases": f"{held}/{partitions}"}


async def _dead_letters(ctx: Context) -> int | None:
    try:
        return await _timed(ctx.db.fetchval("SELECT count(*) FROM projection.dead_letters"))
    except Exception:  # unreachable meanwhile, or migration 006 not applied yet
        return None


async def _projectors(ctx: Context, postgres_ok: bool) -> dict[str, Any]:
    partitions = ctx.config.partitions
    try:
        statuses = await _timed(read_statuses(ctx.store))
        held = await _leases_held(ctx, PROJECTOR_ROLE)
    except Exception as exc:
        return {"status": "unknown", "error": _failure(exc)}
    problems = [f"{s.owner}: {describe(s)}" for s in statuses if describe(s) != "ok"]
    lag = max((s.lag_seconds for s in statuses), default=0.0)
    if not statuses:
        problems.append("no projector is running")
    if held < partitions:
        problems.append(f"{partitions - held} partitions have no projector")
    if lag > ctx.config.health_max_lag_s:
        problems.append(f"projection lag {lag:.1f} s (over {ctx.config.health_max_lag_s:g} s)")
    out: dict[str, Any] = {
        "status": "ok" if not problems else "degraded",
        "running": len(statuses),
        "leases": f"{held}/{partitions}",
        "lag_seconds": round(lag, 3),
    }
    if problems:
        out["problems"] = problems
    if postgres_ok and ctx.db is not None:
        out["dead_letters"] = await _dead_letters(ctx)
    return out


def overall(checks: dict[str, dict[str, Any]], *, draining: bool = False) -> str:
    """The status the checks add up to, by the rule in this module's docstring."""
    if draining:
        return DRAINING
    if checks["redis"]["status"] != "ok" or checks["workers"]["status"] == "none":
        return UNHEALTHY
    if any(checks[name]["status"] != "ok" for name in ("postgres", "workers", "projector")):
        return DEGRADED
    return HEALTHY


async def health_checks(ctx: Context) -> tuple[str, dict[str, dict[str, Any]]]:
    """(status, checks): every dependency checked at once, each within CHECK_TIMEOUT_S."""
    store, postgres, workers = await asyncio.gather(_store(ctx), _postgres(ctx), _workers(ctx))
    projector = await _projectors(ctx, postgres["status"] == "ok")
    checks = {"redis": store, "postgres": postgres, "workers": workers, "projector": projector}
    return overall(checks, draining=ctx.draining), checks


async def readiness(ctx: Context) -> dict[str, Any]:
    """Whether this gateway can serve: Redis and PostgreSQL answer, and it is not draining.
    Worker lease coverage is reported, not required (see the module docstring)."""
    store, postgres, workers = await asyncio.gather(_store(ctx), _postgres(ctx), _workers(ctx))
    checks = {
        "redis": store["status"],
        "postgres": postgres["status"],
        "worker_leases": workers.get("leases", workers["status"]),
    }
    ok = store["status"] == "ok" and postgres["status"] == "ok" and not ctx.draining
    return {"ready": ok, "draining": ctx.draining, "checks": checks}


def probe_checks(ctx: Context) -> dict[str, Callable[[], Awaitable[str | None]]]:
    """The checks of the gateway's ``/healthz`` on SESSIOND_METRICS_ADDR (`infra.probe`): those
    of `/ready`, each a failure line or None."""

    async def redis() -> str | None:
        found = await _store(ctx)
        return found.get("error") if found["status"] != "ok" else None

    async def postgres() -> str | None:
        found = await _postgres(ctx)
        return found.get("error", found["status"]) if found["status"] != "ok" else None

    async def serving() -> str | None:
        return "draining: shutting down" if ctx.draining else None

    return {"redis": redis, "postgres": postgres, "serving": serving}
