"""`sessiond events`: print an actor's events, oldest first (from the archive where Redis no
longer holds them).

Examples:
  sessiond events session:<id>                 # a readable table
  sessiond events session:<id> --json          # one JSON object per line
  sessiond events session:<id> --since 10 --follow
  sessiond events simulator:<sim> --session <id>
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from typing import Any

from infra.cli import add_store_options

__all__ = ["event_row", "register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "events",
        help="print an actor's events (version, time, type, command and correlation ids, data)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("actor_id", metavar="ACTOR_ID", help="session:<uuid> or simulator:<uuid>")
    p.add_argument("--since", type=int, default=0, help="only versions after V (default 0)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.add_argument(
        "--session",
        default=None,
        help="session id of a simulator actor (default: found by probing partitions)",
    )
    add_store_options(p)
    p.set_defaults(handler=run)


def _iso(ms: int) -> str:
    return (
        datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def event_row(env: Any) -> dict[str, Any]:
    """An event envelope as a JSON-able dict, with `time` in ISO 8601 beside `ts`."""
    from events.codec import envelope_to_json

    doc = envelope_to_json(env)
    doc["time"] = _iso(env.ts)
    return doc


def _print(doc: dict[str, Any], as_json: bool, out: Any) -> None:
    import msgspec

    if as_json:
        out.write(msgspec.json.encode(doc).decode() + "\n")
    else:
        data = msgspec.json.encode(doc["data"]).decode()
        out.write(
            f"{doc['version']:>7}  {doc['time']:<24}  {doc['type']:<26}  "
            f"{doc['command_id']:<36}  {doc['correlation_id']:<36}  {data}\n"
        )
    out.flush()


async def run(args: argparse.Namespace) -> int:
    from events.errors import SessiondError
    from infra.store import open_store
    from projections.archive import PostgresArchive

    if ":" not in args.actor_id:
        raise SessiondError(f"ACTOR_ID must look like session:<uuid>, got {args.actor_id!r}")
    settings = args.settings
    archive = PostgresArchive(settings.database_url)
    store = open_store(settings.require_redis_url(), settings.partitions, archive=archive)
    out = sys.stdout
    try:
        partition = await store.actors.find_partition(args.actor_id, args.session)
        if partition is None and not args.follow:
            raise SessiondError(f"no events for {args.actor_id} (wrong --session?)")
        if partition is None:
            raise SessiondError("--session is required to follow a simulator with no events yet")
        last = args.since
        envs = await store.actors.read(partition, args.actor_id, after=args.since)
        if not envs and not args.follow and args.since == 0:
            raise SessiondError(f"no events for {args.actor_id}")
        if not args.json:
            out.write(
                f"{'VERSION':>7}  {'TIME':<24}  {'TYPE':<26}  {'COMMAND_ID':<36}  "
                f"{'CORRELATION_ID':<36}  DATA\n"
            )
        for env in envs:
            _print(event_row(env), args.json, out)
            last = env.version
        if args.follow:
            try:
                async for env in store.actors.follow(partition, args.actor_id, after=last):
                    _print(event_row(env), args.json, out)
            except asyncio.CancelledError:
                pass
    finally:
        await store.aclose()
        await archive.close()
    return 0
