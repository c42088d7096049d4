"""`sessiond projections`: operate the PostgreSQL read models.

sessiond projections status [--output json] lag per partition, dead letters, projectors
sessiond projections rebuild [--name N]     read models again from events.archive, swapped in
sessiond projections trim [--keep N] [--dry-run]
                                            trim Redis below what is archived and snapshotted
sessiond projections verify                 compare the tables with a fold of the Redis logs
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from infra.cli import add_knob_option, add_output_option, add_store_options

    p = subparsers.add_parser(
        "projections",
        help="read models: status (lag), rebuild from the archive, trim Redis, verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", title="actions")
    p.set_defaults(handler=_missing_action(p))

    status = sub.add_parser(
        "status",
        help="lag per partition, dead letters, projectors",
        description="Projection lag of every partition: the checkpoint, "
        "log entries after it, age of the oldest unprojected event, dead "
        "letters, owner; the latest dead letters; every running projector's "
        "own status (e.g. 'cannot reach PostgreSQL since T'). Exit code 1 "
        "when PostgreSQL cannot be reached.",
    )
    add_store_options(status, database=True)
    add_output_option(status)
    status.set_defaults(handler=_status)

    rebuild = sub.add_parser(
        "rebuild",
        help="rebuild read models from events.archive into fresh tables, swap in",
        description="Fold events.archive through the projection into fresh tables (COPY), with "
        "a progress bar and events/s on stderr, then swap them in atomically. Live projectors "
        "keep running; events archived meanwhile are folded in at the swap.",
    )
    add_store_options(rebuild, redis=False, database=True)
    rebuild.add_argument(
        "--name",
        default="all",
        help="projection to rebuild: all (default), sessions, actor_versions",
    )
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    add_knob_option(
        rebuild,
        "--workers",
        "projector.rebuild_workers",
        metavar="N",
        help="folding processes, each taking a share of the partitions "
        "(default: $SESSIOND_REBUILD_WORKERS or 1)",
    )
    rebuild.set_defaults(handler=_rebuild)

    trim = sub.add_parser(
        "trim",
        help="trim Redis logs and actor streams below what is archived and snapshotted",
        description="Trim each partition log below the projector checkpoint (and below what "
        "every consumer group still needs), and each actor's events below min(archived "
        "version, snapshot version), keeping the newest --keep versions. History stays in the "
        "archive.",
    )
    add_store_options(trim, database=True)
    trim.add_argument(
        "--keep",
        type=int,
        default=100,
        help="versions kept per actor stream regardless (default 100)",
    )
    trim.add_argument("--dry-run", action="store_true", help="only report what would go")
    trim.add_argument("--quiet", action="store_true", help="no progress on stderr")
    trim.set_defaults(handler=_trim)

    verify = sub.add_parser(
        "verify",
        help="compare the projected tables with a fold of the Redis partition logs",
        description="Fold every partition log in memory and compare with the tables (only "
        "meaningful while Redis still holds the full logs, i.e. before any trim). Entries the "
        "projector dead-lettered are left out of the fold and counted in the report.",
    )
    add_store_options(verify, database=True)
    verify.add_argument("--quiet", action="store_true", help="no progress on stderr")
    verify.set_defaults(handler=_verify)


def _missing_action(p: argparse.ArgumentParser):
    def handler(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    return handler


async def _status(args: argparse.Namespace) -> int:
    import asyncpg

    from infra.cli import emit_json
    from infra.postgres import unreachable
    from infra.store import open_store
    from projections.dead_letters import dead_letter_summary
    from projections.health import as_dict, read_statuses
    from projections.projector import CHECKPOINT_NAME
    from projections.status import partition_status

    settings = args.settings
    redis_url, database_url = settings.require_redis_url(), settings.require_database_url()
    store = open_store(redis_url, settings.partitions)
    rows: list[dict] = []
    dead: dict = {"total": 0, "per_partition": {}, "latest": []}
    pg_error = ""
    try:
        projectors = [as_dict(s) for s in await read_statuses(store)]
        try:
            conn = await asyncpg.connect(database_url, timeout=5)
        except Exception as e:
            if not unreachable(e):
                raise
            pg_error = f"{type(e).__name__}: {e}"
        else:
            try:
                rows = await partition_status(store, conn)
                dead = await dead_letter_summary(conn, CHECKPOINT_NAME)
            finally:
                await conn.close()
    finally:
        await store.aclose()
    if args.output == "json":
        for row in rows:
            emit_json({"kind": "partition", **row})
        for projector in projectors:
            emit_json({"kind": "projector", **projector})
        for letter in dead["latest"]:
            emit_json({"kind": "dead_letter", **letter})
        if pg_error:
            emit_json({"kind": "error", "postgres": "unreachable", "error": pg_error})
        return 1 if pg_error else 0
    if pg_error:
        print(f"PostgreSQL unreachable ({pg_error}): checkpoints and dead letters unknown")
    else:
        _print_partitions(rows)
        _print_dead_letters(dead)
    print(f"projectors: {len(projectors) or 'none running'}")
    for s in projectors:
        print(
            f"  {s['owner']}: {s['status']}; projecting {len(s['projecting'])} of"
            f" {len(s['leases'])} leased partitions, lag {s['lag_seconds']:.1f} s,"
            f" {s['events_projected']} events and {s['dead_letters']} dead letters since"
            " start"
        )
    return 1 if pg_error else 0


def _print_partitions(rows: list[dict]) -> None:
    print(
        f"{'PART':>4}  {'CHECKPOINT':<22}  {'EPOCH':>5}  {'PROJECTED':>10}  {'BEHIND':>8}"
        f"  {'SECONDS':>8}  {'DEAD':>5}  OWNER"
    )
    for r in rows:
        print(
            f"{r['partition']:>4}  {r['checkpoint']:<22}  {r['epoch']:>5}  {r['projected']:>10}"
            f"  {r['events_behind']:>8}  {r['seconds_behind']:>8.1f}  {r['dead_letters']:>5}"
            f"  {r['owner'] or '-'}"
        )
    total = sum(r["events_behind"] for r in rows)
    worst = max((r["seconds_behind"] for r in rows), default=0.0)
    print(f"total: {total} events behind, oldest unprojected event {worst:.1f} s old")


def _print_dead_letters(dead: dict) -> None:
    if not dead["total"]:
        print("dead letters: none")
        return
    parts = ", ".join(f"partition {p}: {n}" for p, n in sorted(dead["per_partition"].items()))
    print(
        f"dead letters: {dead['total']} ({parts}); the latest"
        " (projection.dead_letters holds them all, raw entries included):"
    )
    for d in dead["latest"]:
        print(
            f"  {d['created_at']}  partition {d['partition']} entry {d['log_id']}"
            f"  {d['actor_id'] or '?'} v{d['version']} {d['type'] or '?'}: {d['error']}"
        )


async def _rebuild(args: argparse.Namespace) -> int:
    from events.errors import SessiondError
    from infra.cli import emit_json
    from infra.gctune import tune_gc
    from projections.rebuild import rebuild

    database_url = args.settings.require_database_url()
    tune_gc()  # the fold keeps every aggregate alive: see infra.gctune
    try:
        stats = await rebuild(
            database_url,
            args.name,
            progress=None if args.quiet else sys.stderr,
            workers=args.settings.projector.rebuild_workers,
        )
    except ValueError as e:
        raise SessiondError(str(e)) from e
    emit_json(
        {
            "rebuilt": args.name,
            "events": stats.events,
            "seconds": round(stats.seconds, 3),
            "events_per_second": round(stats.rate),
            "caught_up": stats.caught_up,
            "phases": stats.phases,
            "workers": stats.workers,
        }
    )
    return 0


async def _trim(args: argparse.Namespace) -> int:
    import asyncpg

    from infra.cli import Progress, emit_json
    from infra.store import open_store
    from projections.retention import trim_partition

    settings = args.settings
    redis_url, database_url = settings.require_redis_url(), settings.require_database_url()
    store = open_store(redis_url, settings.partitions)
    conn = await asyncpg.connect(database_url)
    progress = Progress(
        "trim", settings.partitions, "partitions", None if args.quiet else sys.stderr
    )
    try:
        for p in range(settings.partitions):
            emit_json(await trim_partition(store, conn, p, keep=args.keep, dry_run=args.dry_run))
            progress.advance()
        progress.finish()
    finally:
        await conn.close()
        await store.aclose()
    return 0


async def _verify(args: argparse.Namespace) -> int:
    import asyncpg

    from infra.cli import Progress, emit_json
    from infra.store import open_store
    from projections.dead_letters import dead_letter_keys, dead_letter_summary
    from projections.projector import CHECKPOINT_NAME
    from projections.store import load_model
    from projections.verify import fold_logs, log_length

    settings = args.settings
    redis_url, database_url = settings.require_redis_url(), settings.require_database_url()
    store = open_store(redis_url, settings.partitions)
    conn = await asyncpg.connect(database_url)
    try:
        dead = await dead_letter_summary(conn, CHECKPOINT_NAME)
        skip = await dead_letter_keys(conn, CHECKPOINT_NAME) if dead["total"] else set()
        # the projector recorded its dead letters instead of projecting them: leave them out
        progress = Progress(
            "verify", await log_length(store), "log entries", None if args.quiet else sys.stderr
        )
        expected = await fold_logs(store, skip, on_progress=progress.advance)
        progress.finish()
        actual = await load_model(conn)
    finally:
        await conn.close()
        await store.aclose()
    keys = expected.sessions.keys() | actual.sessions.keys()
    bad = sorted(k for k in keys if expected.sessions.get(k) != actual.sessions.get(k))
    bad_actors = sorted(
        k
        for k in expected.actors.keys() | actual.actors.keys()
        if expected.actors.get(k) != actual.actors.get(k)
    )
    emit_json(
        {
            "sessions": len(expected.sessions),
            "actors": len(expected.actors),
            "sessions_differing": bad[:20],
            "actors_differing": bad_actors[:20],
            "dead_letters": dead["total"],
            "dead_letters_per_partition": dead["per_partition"],
            "ok": not bad and not bad_actors,
        }
    )
    if dead["total"]:
        print(
            f"{dead['total']} log entries were dead-lettered by the projector and are left"
            " out of the comparison: see `sessiond projections status`",
            file=sys.stderr,
        )
    return 0 if not bad and not bad_actors else 1
