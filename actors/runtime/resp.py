"""Sending one big command without redis-py's per-argument packing.

DESIGN.md measured the redis-py client as the bottleneck of the hot path; most of that is
`pack_command` encoding each argument in Python. A batch append has thousands of arguments, so
the runtime frames it in RESP itself (all arguments are bytes, str or int) and sends it on a
pooled connection. Replies are returned raw (no response callbacks), errors raised as redis-py's.
`pack` lives in `infra.redis_raw` (the gateway's raw RESP connections use it too).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from infra.redis_raw import pack

__all__ = ["execute_packed", "execute_packed_many", "pack"]


async def execute_packed(redis: aioredis.Redis, packed: bytes) -> Any:
    """Send a `pack`ed command on a pooled connection and return its raw reply."""
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(packed, check_health=False)
        return await conn.read_response()
    finally:
        await pool.release(conn)


async def execute_packed_many(redis: aioredis.Redis, packed: bytes, replies: int) -> list[Any]:
    """Send several `pack`ed commands at once (a raw pipeline); their replies, errors included
    as exception objects in place."""
    pool = redis.connection_pool
    conn = await pool.get_connection()
    out: list[Any] = []
    try:
        await conn.send_packed_command(packed, check_health=False)
        for _ in range(replies):
            try:
                out.append(await conn.read_response())
            except ResponseError as exc:
                out.append(exc)
        return out
    finally:
        await pool.release(conn)
