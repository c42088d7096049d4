"""`sessiond token`: mint a development JWT (access by default) and print it on its last line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "token",
        help="mint a JWT for a user (printed alone on the last line)",
        description=(
            "Mint a JWT signed with the gateway's configured key (JWT_SECRET for HS256, "
            "JWT_PRIVATE_KEY for RS256). The token is printed alone on the last line, so "
            "scripts can use TOKEN=$(sessiond token --user alice | tail -n1)."
        ),
    )
    p.add_argument("--user", required=True, help="user id (the token's `sub`)")
    p.add_argument(
        "--role", action="append", default=[], help="a role to grant (repeatable), e.g. admin"
    )
    p.add_argument("--refresh", action="store_true", help="mint a refresh token (7 days)")
    p.add_argument("--ttl", type=int, default=None, help="lifetime in seconds (default 15 min)")
    p.set_defaults(func=run, handler=run)


def run(args: argparse.Namespace) -> int:
    from gateway.auth import TokenService
    from gateway.errors import ApiError

    try:
        service = TokenService(args.settings.gateway)
        token = service.issue(
            args.user, tuple(args.role), "refresh" if args.refresh else "access", ttl_s=args.ttl
        )
    except ApiError as exc:
        print(f"sessiond token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0
