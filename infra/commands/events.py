"""`sessiond events`: print an actor's events, oldest first (from the archive where Redis no
longer holds them), or every event one request caused (`--correlation-id`, from the archive).

Examples:
  sessiond events session:<id>                 # a readable table
  sessiond events session:<id> --output json   # one JSON object per line (also: --json)
  sessiond events session:<id> --since 10 --follow
  sessiond events session:<id> --type StateChanged --type DeviceJoined --limit 20
  sessiond events simulator:<sim> --session <id>
  sessiond events --correlation-id <id>        # every actor's events of one request
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from typing import Any

from infra.cli import add_output_option, add_store_options

__all__ = ["event_row", "register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "events",
        help="print an actor's events (version, time, type, command and correlation ids, data)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "actor_id",
        metavar="ACTOR_ID",
        nargs="?",
        help="session:<uuid> or simulator:<uuid> (not with --correlation-id)",
    )
    p.add_argument("--since", type=int, default=0, help="only versions after V (default 0)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument(
        "--correlation-id",
        default=None,
        metavar="ID",
        help="every archived event (of any actor) carrying this correlation id",
    )
    p.add_argument(
        "--type",
        action="append",
        default=None,
        metavar="TYPE",
        dest="types",
        help="only events of this type (repeat for several)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="print at most N events (with --follow: then stop)",
    )
    add_output_option(p)
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


class _Printer:
    """Prints the events that pass the filters (`--type`), up to `--limit`."""

    def __init__(self, args: argparse.Namespace, out: Any, with_actor: bool = False) -> None:
        self.with_actor = with_actor  # every actor's events: each table line names its actor
        self.as_json = args.output == "json"
        self.types = set(args.types or ())
        self.left = args.limit
        self.out = out
        if not self.as_json:
            out.write(f"{'ACTOR':<46}  " if with_actor else "")
            out.write(
                f"{'VERSION':>7}  {'TIME':<24}  {'TYPE':<26}  {'COMMAND_ID':<36}  "
                f"{'CORRELATION_ID':<36}  DATA\n"
            )

    @property
    def full(self) -> bool:
        return self.left is not None and self.left <= 0

    def __call__(self, env: Any) -> None:
        if self.full or (self.types and env.type not in self.types):
            return
        if self.with_actor and not self.as_json:
            self.out.write(f"{env.actor_id}  ")
        _print(event_row(env), self.as_json, self.out)
        if self.left is not None:
            self.left -= 1


async def _correlated(args: argparse.Namespace, printer: _Printer) -> int:
    import asyncpg

    from events.errors import SessiondError
    from projections.archive import correlated_events

    database_url = args.settings.require_database_url()
    conn = await asyncpg.connect(database_url)
    try:
        envs = await correlated_events(conn, args.correlation_id, args.limit or 100_000)
    except asyncpg.UndefinedTableError:
        envs = []
    finally:
        await conn.close()
    if not envs:
        raise SessiondError(f"no archived events carry correlation id {args.correlation_id!r}")
    for env in envs:
        printer(env)
    return 0


async def run(args: argparse.Namespace) -> int:
    from events.errors import SessiondError
    from infra.store import open_store
    from projections.archive import PostgresArchive

    if args.limit is not None and args.limit < 1:
        raise SessiondError("--limit must be at least 1")
    if args.correlation_id is not None:
        if args.actor_id or args.follow:
            raise SessiondError("--correlation-id reads every actor: give no ACTOR_ID, no --follow")
        return await _correlated(args, _Printer(args, sys.stdout, with_actor=True))
    if not args.actor_id or ":" not in args.actor_id:
        raise SessiondError(
            f"ACTOR_ID must look like session:<uuid>, got {args.actor_id!r}"
            if args.actor_id
            else "give ACTOR_ID (session:<uuid> or simulator:<uuid>) or --correlation-id"
        )
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
        printer = _Printer(args, out)
        for env in envs:
            printer(env)
            last = env.version
        if args.follow and not printer.full:
            try:
                async for env in store.actors.follow(partition, args.actor_id, after=last):
                    printer(env)
                    if printer.full:
                        break
            except asyncio.CancelledError:
                pass
    finally:
        await store.aclose()
        await archive.close()
    return 0
