"""`sessiond worker` with faults the test that starts it injects (none of it is in the product):

- `--append-delay-ms`: every decided batch is held this long before its append (a slow or paused
  worker with commands in hand), by a store whose writers wait before appending;
- `--no-local-lease-check`: the worker writes even after its lease's local validity ran out (the
  process that pauses between its lease check and its write: only the fencing epoch stops it).

    python -m tests.integration.faulty_worker --redis-url URL --partitions 4 --id wa \
        --lease-ttl-ms 1000 --append-delay-ms 300 --no-local-lease-check
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec

from actors.runtime.worker import PartitionRunner, Worker
from infra.commands.worker import serve
from infra.config import load_settings
from infra.logging import setup_logging
from infra.store import open_store


class _SlowWriter:
    """A partition writer whose appends wait `delay_s` first."""

    def __init__(self, writer: Any, delay_s: float) -> None:
        self._writer = writer
        self._delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    async def append(self, batch: Any, *, read_ahead: bool = False) -> Any:
        await asyncio.sleep(self._delay_s)
        return await self._writer.append(batch, read_ahead=read_ahead)


class SlowAppends:
    """A store whose partition writers hold every batch `delay_ms` before appending it."""

    def __init__(self, store: Any, delay_ms: int) -> None:
        self._store = store
        self._delay_s = delay_ms / 1000

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def open_partition(self, *args: Any, **kw: Any) -> Any:
        return _SlowWriter(self._store.open_partition(*args, **kw), self._delay_s)


def skip_local_lease_check() -> None:
    """Every runner of this process believes its lease valid, however long ago it was renewed
    (the process paused between its check and its write)."""
    PartitionRunner.lease_valid = lambda self: True  # type: ignore[method-assign]


async def main(args: argparse.Namespace) -> None:
    if not args.local_lease_check:
        skip_local_lease_check()
    store = open_store(args.redis_url, args.partitions)
    faulty = SlowAppends(store, args.append_delay_ms) if args.append_delay_ms else store
    # configured as `sessiond worker` is, from the environment
    config = msgspec.structs.replace(load_settings().runtime, lease_ttl_ms=args.lease_ttl_ms)
    worker = Worker(faulty, worker_id=args.id, config=config)  # type: ignore[arg-type]
    try:
        await serve(worker)
    finally:
        await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--lease-ttl-ms", type=int, required=True)
    parser.add_argument("--append-delay-ms", type=int, default=0)
    parser.add_argument("--no-local-lease-check", dest="local_lease_check", action="store_false")
    setup_logging("INFO", service="worker")
    asyncio.run(main(parser.parse_args()))
