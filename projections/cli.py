"""Shared plumbing of the projections' CLI commands (settings, connections, output)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

__all__ = ["add_store_options", "emit_json", "resolve"]


def add_store_options(p: argparse.ArgumentParser, *, redis: bool = True,
                      database: bool = True) -> None:
    if redis:
        p.add_argument("--redis-url", default=None, help="Redis URL (default: $REDIS_URL)")
        p.add_argument("--partitions", type=int, default=None,
                       help="partitions P (default: $SESSIOND_PARTITIONS or 16)")
    if database:
        p.add_argument("--database-url", default=None,
                       help="PostgreSQL DSN (default: $DATABASE_URL)")


class Resolved(msgspec.Struct, frozen=True):
    redis_url: str
    database_url: str
    partitions: int
    lease_ttl_ms: int
    env: str


def resolve(args: argparse.Namespace, *, redis: bool = True, database: bool = True) -> Resolved:
    """Command-line options over the environment (`infra.config.load_settings`)."""
    from infra.config import load_settings

    settings = load_settings()
    redis_url = getattr(args, "redis_url", None) or ""
    database_url = getattr(args, "database_url", None) or ""
    if redis and not redis_url:
        redis_url = settings.require_redis_url()
    if database and not database_url:
        database_url = settings.require_database_url()
    return Resolved(redis_url=redis_url, database_url=database_url,
                    partitions=getattr(args, "partitions", None) or settings.partitions,
                    lease_ttl_ms=settings.lease_ttl_ms, env=settings.env)


def emit_json(doc: Any, out: Any = None) -> None:
    """One JSON line; a reader that went away (`| head`) ends the command quietly."""
    out = out or sys.stdout
    try:
        out.write(msgspec.json.encode(doc).decode() + "\n")
        out.flush()
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
