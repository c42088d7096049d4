"""`sessiond projector`: project partition logs into PostgreSQL, exactly once (Procfile process)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.sections import ProjectorConfig
    from projections.projector import Projector

__all__ = ["register", "run", "serve"]

log = logging.getLogger("sessiond.projector")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "projector",
        help="project events into the PostgreSQL read models and publish session changes",
        description=(
            "Hold projector leases on partitions (role 'projector' of the event store's "
            "leases), read each owned partition log from its checkpoint, write rows + archive "
            "+ checkpoints of every partition read in a round in one fenced transaction, then "
            "publish the changes on each session's change feed. Start more projectors to share "
            "the partitions. Env: "
            "SESSIOND_PROJECTOR_BATCH (2000), SESSIOND_PROJECTOR_ROUND_MIN_MS (5: rounds start "
            "at most this often, so events arriving meanwhile share one), "
            "SESSIOND_PROJECTOR_POOL (8), SESSIOND_PROJECTOR_CACHE_SESSIONS (200000), "
            "SESSIOND_PROJECTOR_LEASE_TTL_MS (LEASE_TTL_MS)."
        ),
    )
    from infra.cli import add_store_options

    add_store_options(p, database=True, metrics=True)
    p.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply pending migrations at start-up (always off when SESSIOND_ENV=prod)",
    )
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from infra.backoff import wait_until_up
    from infra.postgres import pg_outage
    from projections.migrate import migrate

    settings = args.settings
    settings.require_redis_url()
    database_url = settings.require_database_url()
    if settings.env != "prod" and not args.no_migrate:
        # PostgreSQL may be down or still starting: wait for it rather than exit
        await wait_until_up("PostgreSQL", lambda: migrate(database_url), log, retry_if=pg_outage)
    await serve(settings.projector, env=settings.env, metrics_addr=settings.metrics_addr)
    return 0


async def serve(
    config: ProjectorConfig,
    *,
    env: str = "dev",
    metrics_addr: str = "",
    before_commit: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Open the event store and the PostgreSQL pool, run a projector until SIGTERM / SIGINT
    (it then gives its leases back), close them. In prod, refuse unsafe servers first
    (`infra.preflight`). `metrics_addr`: where `/healthz` and `/metrics` are served.
    `before_commit`: see `Projector`. Redis or PostgreSQL away at start-up is waited for."""
    from infra.backoff import wait_until_up
    from infra.cli import wait_for_shutdown_signal
    from infra.gctune import tune_gc
    from infra.postgres import create_pool, pg_outage
    from infra.preflight import check_postgres, check_redis
    from infra.probe import answers, probe_server
    from infra.store import open_store
    from projections.projector import Projector, pool_settings

    store = open_store(config.redis_url, config.partitions)
    try:
        await wait_until_up("Redis", lambda: check_redis(store, env), log)
        pool = await wait_until_up(
            "PostgreSQL",
            lambda: create_pool(
                config.database_url,
                max_size=config.pool_size + 1,
                server_settings=pool_settings(config),
            ),
            log,
            retry_if=pg_outage,
        )
    except BaseException:
        await store.aclose()
        raise
    try:
        await check_postgres(pool, env)
        tune_gc()
        projector = Projector(config, store, pool, before_commit=before_commit)
        checks = {
            "redis": answers(store.ping),
            "postgres": answers(lambda: pool.fetchval("SELECT 1")),
            "projector": projector.health_check,
        }
        async with probe_server(metrics_addr, checks, partitions=config.partitions):
            await _run_until_signal(projector, wait_for_shutdown_signal)
    finally:
        await pool.close()
        await store.aclose()


async def _run_until_signal(projector: Projector, signalled: Callable[[], Awaitable[int]]) -> None:
    task = asyncio.create_task(projector.run())
    signal_task = asyncio.create_task(signalled())
    log.info("projector started", extra={"owner": projector.owner})
    try:
        await asyncio.wait({task, signal_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        projector.stop()
        signal_task.cancel()
        await task
