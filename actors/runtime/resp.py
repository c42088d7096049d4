"""Sending one big command without redis-py's per-argument packing.

DESIGN.md measured the redis-py client as the bottleneck of the hot path; most of that is
`pack_command` encoding each argument in Python. A batch append has thousands of arguments, so
the runtime frames it in RESP itself (all arguments are bytes, str or int) and sends it on a
pooled connection. Replies are returned raw (no response callbacks), errors raised as redis-py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

__all__ = ["execute_packed", "execute_packed_many", "pack"]


def pack(args: Sequence[Any]) -> bytes:
    """RESP framing of one command (`args[0]` is the command name)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        cls = arg.__class__
        if cls is bytes:
            pass
        elif cls is str:
            arg = arg.encode()
        elif cls is int:
            arg = b"%d" % arg
        elif cls is bytearray or cls is memoryview:
            arg = bytes(arg)
        else:
            arg = str(arg).encode()
        append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


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
