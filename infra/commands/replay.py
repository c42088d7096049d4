"""`sessiond replay`: fold an actor's events through its decider and show the state.

Examples:
  sessiond replay session:<id>                      # the state now (readable JSON)
  sessiond replay session:<id> --to-version 12      # the state right after version 12
  sessiond replay session:<id> --at 2026-11-21T08:00:00Z
  sessiond replay session:<id> --diff               # what each event changed, one line each
  sessiond replay --file history.jsonl --output json   # an `sessiond export` file, elsewhere
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

__all__ = ["parse_time_ms", "register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        help="fold an actor's events through evolve: state at a version/time, or each step's diff",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "actor_id",
        metavar="ACTOR_ID",
        nargs="?",
        help="session:<uuid> or simulator:<uuid> (optional with --file: filters it)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--to-version", type=int, default=None, metavar="V", help="stop after version V"
    )
    where.add_argument(
        "--at",
        default=None,
        metavar="TIME",
        help="stop after the last event at or before TIME (ISO 8601 or ms)",
    )
    p.add_argument("--diff", action="store_true", help="print each step's state difference")
    p.add_argument("--file", default=None, help="replay an exported JSONL file instead")
    from infra.cli import add_output_option, add_store_options

    add_output_option(p)
    p.add_argument("--session", default=None, help="session id of a simulator actor")
    add_store_options(p, database=True)
    p.set_defaults(handler=run)


def parse_time_ms(text: str) -> int:
    if text.strip().lstrip("-").isdigit():
        return int(text)
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("give the time zone (e.g. 2026-11-21T08:00:00Z)")
    return int(value.timestamp() * 1000)


def _show(actor_id: str, envs: list[Any], args: argparse.Namespace, out: Any) -> None:
    import msgspec

    from actors.registry import decider_for
    from infra.cli import emit_json
    from projections.history import diff_states, fold_steps, state_json

    decider = decider_for(actor_id)
    stop_at = parse_time_ms(args.at) if args.at else None
    previous = state_json(decider.initial_state)
    version, ts, state = 0, None, previous
    for env, after in fold_steps(decider, envs):
        if args.to_version is not None and env.version > args.to_version:
            break
        if stop_at is not None and env.ts > stop_at:
            break
        state = state_json(after)
        version, ts = env.version, env.ts
        if args.diff:
            changes = diff_states(previous, state)
            if args.output == "json":
                emit_json(
                    {
                        "actor_id": actor_id,
                        "version": env.version,
                        "ts": env.ts,
                        "type": env.type,
                        "changes": changes,
                    },
                    out,
                )
            else:
                out.write(f"{env.version:>6}  {env.type}\n")
                for path, (old, new) in changes.items():
                    old_s = msgspec.json.encode(old).decode()
                    new_s = msgspec.json.encode(new).decode()
                    out.write(f"        {path}: {old_s} -> {new_s}\n")
        previous = state
    if args.to_version is not None and version < args.to_version:
        raise SystemExit(
            f"sessiond replay: {actor_id} has no version {args.to_version} (last: {version})"
        )
    if args.diff:
        return
    if args.output == "json":
        emit_json({"actor_id": actor_id, "version": version, "ts": ts, "state": state}, out)
    else:
        pretty = msgspec.json.format(msgspec.json.encode(state), indent=2).decode()
        out.write(f"{actor_id} at version {version}:\n{pretty}\n")


async def run(args: argparse.Namespace) -> int:
    import msgspec

    from events.errors import SessiondError
    from projections.history import envelope_from_json

    out = sys.stdout
    if args.file:
        per_actor: dict[str, list[Any]] = {}
        with open(args.file, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    env = envelope_from_json(msgspec.json.decode(line))
                except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as e:
                    raise SessiondError(f"{args.file}:{n}: not an exported event: {e}") from e
                per_actor.setdefault(env.actor_id, []).append(env)
        if args.actor_id:
            if args.actor_id not in per_actor:
                raise SessiondError(f"{args.file} has no events of {args.actor_id}")
            per_actor = {args.actor_id: per_actor[args.actor_id]}
        for actor_id, envs in per_actor.items():
            envs.sort(key=lambda e: e.version)
            _show(actor_id, envs, args, out)
        return 0
    if not args.actor_id or ":" not in args.actor_id:
        raise SessiondError("give ACTOR_ID (session:<uuid> or simulator:<uuid>) or --file")
    from infra.store import open_store
    from projections.archive import PostgresArchive

    settings = args.settings
    archive = PostgresArchive(settings.database_url)
    store = open_store(settings.require_redis_url(), settings.partitions, archive=archive)
    try:
        p = await store.actors.find_partition(args.actor_id, args.session)
        if p is None:  # Redis holds nothing of it: the archive may
            envs = await archive.events(args.actor_id, 0, None)
        else:
            envs = await store.actors.read(p, args.actor_id)
        if not envs:
            raise SessiondError(f"no events for {args.actor_id}")
        _show(args.actor_id, envs, args, out)
    finally:
        await store.aclose()
        await archive.close()
    return 0
