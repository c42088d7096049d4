"""`sessiond partitions`: where each partition lives and who serves it now.

One line per partition: its Redis Cluster hash slot (every key of the partition carries the tag
`{pN}`, so the partition lives in that one slot), the node serving the slot now (the one server
on a single node), the worker holding its lease and the projector holding its lease ("-": none,
e.g. no process of that role runs). The first line says what `REDIS_URL` names: a single node or
a cluster of N masters. Use it to see how partitions spread over a cluster's masters, and after a
resharding or a failover, where they went.

Examples:
  sessiond partitions
  sessiond partitions --output json | jq '.partitions[] | select(.worker == null)'
"""

from __future__ import annotations

import argparse
from typing import Any

from infra.cli import add_store_options

__all__ = ["register", "render_text", "run"]

_COLUMNS = ("partition", "slot", "node", "worker", "projector")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "partitions",
        help="print each partition's slot, node, worker owner and projector owner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_options(p)
    p.add_argument(
        "--output",
        choices=["text", "json"],
        default="text",
        help="text (default: a table) or json",
    )
    p.set_defaults(handler=run)


async def collect(store: Any) -> dict[str, Any]:
    """What the store found, and per partition its slot, node and lease holders."""
    from actors.runtime.worker import ROLE as WORKER
    from projections.health import ROLE as PROJECTOR

    found = await store.connect()
    placements = await store.placements()
    workers = await store.leases.holders(WORKER)
    projectors = await store.leases.holders(PROJECTOR)
    rows = [
        {
            "partition": p,
            "slot": placements[p].slot,
            "node": placements[p].node,
            "worker": workers.get(p),
            "projector": projectors.get(p),
        }
        for p in range(store.partitions)
    ]
    return {"redis": found, "partitions": rows}


def render_text(doc: dict[str, Any]) -> str:
    """The store's mode on the first line, then an aligned table ("-" for no owner)."""
    cells = [
        [str(row[c]) if row[c] is not None else "-" for c in _COLUMNS] for row in doc["partitions"]
    ]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(_COLUMNS)]
    table = [list(_COLUMNS), *cells]
    lines = [f"redis: {doc['redis']}"]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> int:
    import sys

    from infra.cli import emit_json
    from infra.store import open_store

    settings = args.settings
    store = open_store(settings.require_redis_url(), settings.partitions, name="sd-partitions")
    try:
        doc = await collect(store)
    finally:
        await store.aclose()
    if args.output == "json":
        emit_json(doc)
    else:
        sys.stdout.write(render_text(doc))
    return 0
