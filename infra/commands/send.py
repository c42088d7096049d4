"""`sessiond send`: send one command to an actor and print its outcome as JSON.

Examples:
  sessiond send create-session --user alice                  # new session, prints its id
  sessiond send session:<id> RefreshSession '{}' --user alice
  sessiond send session:<id> UpdateMetadata '{"values": {"pod_name": "p1"}}'
  sessiond send simulator:<sim> --session <id> StopSimulator '{"reason": "done"}'

TYPE is the command's tag (e.g. CreateSession, RefreshSession); JSON holds its fields. `at`
defaults to now (ms) and `user_id` to --user. Exit code 0 when the actor accepted the command,
1 when it refused it (a domain error, printed in the outcome), 2 on bad input or no worker.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

from infra.cli import add_store_options

__all__ = ["build_command", "register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "send",
        help="send a command to an actor and print its outcome",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target",
        metavar="ACTOR_ID",
        help="actor id (session:<uuid>, simulator:<uuid>) or the shortcut create-session",
    )
    p.add_argument(
        "rest",
        nargs="*",
        metavar="TYPE [JSON]",
        help="command type tag and its fields as a JSON object (default {})",
    )
    p.add_argument(
        "--session",
        default=None,
        help="session id (the partition key); default: the uuid of a session actor, "
        "or a new one for create-session",
    )
    p.add_argument("--user", default="", help="user_id of the command (default: the system, '')")
    p.add_argument("--at", type=int, default=None, help="command time in ms (default: now)")
    p.add_argument("--command-id", default=None, help="idempotency key (default: a new uuid)")
    p.add_argument("--correlation-id", default="", help="correlation id (default: command id)")
    p.add_argument("--no-wait", action="store_true", help="queue the command, do not wait")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    add_store_options(p)
    p.set_defaults(handler=run)


def build_command(type_: str, fields: dict[str, Any], *, at: int, user_id: str) -> Any:
    """The command struct of tag `type_` from JSON-ish `fields` (validated, clear errors)."""
    import msgspec

    from events.codec import COMMAND_TYPES, AnyCommand
    from events.errors import SessiondError

    tags = {t.lower(): t for t in COMMAND_TYPES}
    tag = tags.get(type_.replace("-", "").replace("_", "").lower())
    if tag is None:
        raise SessiondError(
            f"unknown command type {type_!r}; one of: {', '.join(sorted(COMMAND_TYPES))}"
        )
    body = {"at": at, "user_id": user_id, **fields, "type": tag}
    try:
        return msgspec.convert(body, AnyCommand)
    except msgspec.ValidationError as exc:
        raise SessiondError(f"invalid {tag}: {exc}") from None


def _parse_fields(raw: str) -> dict[str, Any]:
    import msgspec

    from events.errors import SessiondError

    try:
        fields = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise SessiondError(f"JSON is not valid: {exc}") from None
    if not isinstance(fields, dict):
        raise SessiondError("JSON must be an object of the command's fields")
    return fields


async def run(args: argparse.Namespace) -> int:
    import msgspec

    from events.errors import SessiondError
    from events.ids import actor_kind, actor_uuid, session_actor
    from infra.store import open_store

    settings = args.settings
    at = args.at if args.at is not None else int(time.time() * 1000)
    if args.target == "create-session":
        if len(args.rest) > 1:
            raise SessiondError("create-session takes at most one JSON argument")
        fields = _parse_fields(args.rest[0]) if args.rest else {}
        session_id = args.session or fields.get("session_id") or str(uuid.uuid4())
        fields["session_id"] = session_id
        actor_id = session_actor(session_id)
        command = build_command("CreateSession", fields, at=at, user_id=args.user)
    else:
        actor_id = args.target
        if ":" not in actor_id:
            raise SessiondError(f"ACTOR_ID must look like session:<uuid>, got {actor_id!r}")
        if not args.rest:
            raise SessiondError("missing TYPE (e.g. RefreshSession)")
        if len(args.rest) > 2:
            raise SessiondError("expected TYPE and one JSON object")
        fields = _parse_fields(args.rest[1]) if len(args.rest) == 2 else {}
        session_id = args.session
        if session_id is None:
            if actor_kind(actor_id) != "session":
                raise SessiondError("--session is required for a non-session actor")
            session_id = actor_uuid(actor_id)
        command = build_command(args.rest[0], fields, at=at, user_id=args.user)
    store = open_store(settings.require_redis_url(), settings.partitions)
    try:
        outcome = await store.commands.send(
            actor_id,
            session_id,
            command,
            command_id=args.command_id,
            correlation_id=args.correlation_id,
            wait=not args.no_wait,
            timeout=args.timeout,
        )
    finally:
        await store.aclose()
    if outcome is None:
        print(
            msgspec.json.encode(
                {"queued": True, "actor_id": actor_id, "session_id": session_id}
            ).decode()
        )
        return 0
    doc = msgspec.to_builtins(outcome)
    doc["session_id"] = session_id
    print(msgspec.json.encode(doc).decode())
    sys.stdout.flush()
    return 0 if outcome.ok else 1
