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
    from projections.cli import add_store_options

    add_store_options(p)
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    import asyncpg
    from redis.asyncio import Redis  # until projections/ reads through the store

    from events.codec import decode_event
    from events.errors import SessiondError
    from projections.cli import emit_json, resolve
    from projections.history import envelope_json, read_history, session_simulators

    sid = args.session.removeprefix("session:")
    cfg = resolve(args, database=False)
    redis = Redis.from_url(cfg.redis_url)
    conn = None
    try:
        db = args.database_url
        if not db:
            from infra.config import load_settings

            db = load_settings().database_url
        if db:
            try:
                conn = await asyncpg.connect(db)
            except (OSError, asyncpg.PostgresError):
                conn = None
        session_events = await read_history(redis, conn, f"session:{sid}", cfg.partitions)
        if not session_events:
            raise SessiondError(f"no events for session {sid}")
        decoded = [(env, decode_event(env.data, env.type)) for env in session_events]
        out = sys.stdout
        for env in session_events:
            emit_json(envelope_json(env), out)
        for sim in session_simulators(decoded):
            for env in await read_history(redis, conn, sim, cfg.partitions, session_id=sid):
                emit_json(envelope_json(env), out)
    finally:
        if conn is not None:
            await conn.close()
        await redis.aclose()
    return 0
