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
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from events.codec import decode_event
    from events.errors import SessiondError
    from infra.cli import emit_json
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
        for env in session_events:
            emit_json(envelope_json(env), out)
        for sim in session_simulators(decoded):
            for env in await read_history(store, sim, session_id=sid):
                emit_json(envelope_json(env), out)
    finally:
        await store.aclose()
        await archive.close()
    return 0
