"""`sessiond export SESSION > file.jsonl`: a session's whole history, one JSON event per line.

The session actor's events, then those of every simulator it had, each in version order, from
Redis and (for trimmed history) the archive. `sessiond replay --file file.jsonl` folds it again
anywhere, with no server.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a session's whole history (session + simulators) as JSON lines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", metavar="SESSION", help="session id (or session:<uuid>)")
    from infra.cli import add_store_options

    add_store_options(p, database=True)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from events.codec import decode_event
    from events.errors import SessiondError
    from infra.cli import Progress, emit_json
    from infra.store import open_store
    from projections.archive import PostgresArchive
    from projections.history import envelope_json, read_history, session_simulators

    sid = args.session.removeprefix("session:")
    settings = args.settings
    archive = PostgresArchive(settings.database_url)
    store = open_store(settings.require_redis_url(), settings.partitions, archive=archive)
    try:
        session_events = await read_history(store, f"session:{sid}")
        if not session_events:
            raise SessiondError(f"no events for session {sid}")
        decoded = [(env, decode_event(env.data, env.type)) for env in session_events]
        out = sys.stdout
        progress = Progress(
            "export", len(session_events), "events", None if args.quiet else sys.stderr
        )
        for env in session_events:
            emit_json(envelope_json(env), out)
            progress.advance()
        for sim in session_simulators(decoded):
            sim_events = await read_history(store, sim, session_id=sid)
            progress.total += len(sim_events)
            for env in sim_events:
                emit_json(envelope_json(env), out)
                progress.advance()
        progress.finish()
    finally:
        await store.aclose()
        await archive.close()
    return 0
