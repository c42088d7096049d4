"""`sessiond worker`: run actors for a share of the partitions (a Procfile process).

Start as many as you like: they share the partitions through fenced leases and rebalance as
workers come and go. SIGTERM/SIGINT: finish the current batches, release the leases, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from infra.cli import add_knob_option, add_store_options

if TYPE_CHECKING:
    from actors.runtime.worker import Worker

__all__ = ["register", "run", "serve"]

log = logging.getLogger("sessiond.worker")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run the actor runtime for a share of the partitions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_options(p, metrics=True)
    p.add_argument(
        "--id",
        dest="worker_id",
        default=None,
        help="worker name in logs and leases (default: worker-<pid>)",
    )
    add_knob_option(
        p,
        "--lease-ttl-ms",
        "runtime.lease_ttl_ms",
        metavar="MS",
        help="lease time-to-live; a dead worker's partitions move after about this "
        "long (default: $LEASE_TTL_MS)",
    )
    add_knob_option(
        p,
        "--batch-size",
        "runtime.batch_size",
        metavar="N",
        help="commands per partition read and appended at once (default: $SESSIOND_BATCH_SIZE "
        "or 500)",
    )
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from actors.runtime.worker import Worker
    from infra.gctune import tune_gc
    from infra.preflight import check_redis
    from infra.probe import answers, probe_server
    from infra.store import open_store

    settings = args.settings
    url = settings.require_redis_url()
    tune_gc()  # the actor cache is long-lived data: see infra.gctune
    store = open_store(url, settings.partitions, name=f"sd-{args.worker_id or 'worker'}")
    try:
        from projections.changes import live_change

        await check_redis(store, settings.env)
        worker = Worker(store, worker_id=args.worker_id, config=settings.runtime, live=live_change)
        checks = {"redis": answers(store.ping), "leases": worker.lease_loop_check}
        async with probe_server(settings.metrics_addr, checks, partitions=settings.partitions):
            await serve(worker)
    finally:
        await store.aclose()
    return 0


async def serve(worker: Worker) -> None:
    """Run `worker` until SIGTERM / SIGINT (then it finishes its batches and gives its leases
    back). The caller closes the worker's store."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
