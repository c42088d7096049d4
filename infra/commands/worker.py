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

from infra.cli import add_store_options, store_target

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
    p.add_argument(
        "--lease-ttl-ms",
        type=int,
        default=None,
        help="lease time-to-live; a dead worker's partitions move after about this "
        "long (default: $LEASE_TTL_MS)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="commands per partition read and appended at once (default 500)",
    )
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from actors.runtime.config import load_runtime_config
    from actors.runtime.worker import Worker
    from events.errors import SessiondError
    from infra.config import load_settings
    from infra.store import open_store

    settings = load_settings()
    url, partitions = store_target(args, settings)
    if partitions < 1:
        raise SessiondError("--partitions must be at least 1")
    try:
        config = load_runtime_config(
            lease_ttl_ms=args.lease_ttl_ms or settings.lease_ttl_ms,
            batch_size=args.batch_size,
        )
    except ValueError as exc:
        raise SessiondError(str(exc)) from None
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1")
    from infra.gctune import tune_gc

    tune_gc()  # the actor cache is long-lived data: see infra.gctune
    store = open_store(url, partitions, name=f"sd-{args.worker_id or 'worker'}")
    try:
        await serve(Worker(store, worker_id=args.worker_id, config=config))
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
