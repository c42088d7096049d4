"""`sessiond migrate`: apply the read models' pending SQL migrations (idempotent)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "migrate",
        help="apply pending PostgreSQL migrations (projections/migrations/NNN_*.sql)",
        description=(
            "Apply every pending migration in order, each in its own transaction with its row in "
            "projection.schema_migrations. Safe to run again (nothing to do) and from several "
            "processes at once (an advisory lock makes them take turns)."
        ),
    )
    from infra.cli import add_store_options

    add_store_options(p, redis=False, database=True)
    p.add_argument("--json", action="store_true", help="one JSON object per applied migration")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from infra.cli import emit_json
    from projections.migrate import MigrationError, migrate

    try:
        applied = await migrate(args.settings.require_database_url())
    except MigrationError as e:
        print(f"sessiond migrate: {e}", file=sys.stderr)
        return 2
    for m in applied:
        if args.json:
            emit_json({"applied": m.version, "name": m.name})
        else:
            print(f"applied {m.version:03d}_{m.name}")
    if not applied and not args.json:
        print("schema is up to date")
    return 0
