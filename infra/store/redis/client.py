"""The Redis store's shared connection: commands, pipelines and scripts, raw replies.

One `Pipeline` connection carries every non-blocking command of a store (commands submitted in
the same event-loop turn go out in one write); blocking reads take a connection of their own
(`dedicated`). Scripts are called by their SHA1 and loaded on NOSCRIPT (a restart, SCRIPT
FLUSH), once, then retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from infra.store.redis.connection import Endpoint, Pipeline, ReplyError
from infra.store.redis.lua import Script
from infra.store.redis.resp import pack

__all__ = ["RedisClient", "as_str", "flat_pairs"]


def as_str(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def flat_pairs(reply: list[Any]) -> dict[bytes, Any]:
    """A flat [name, value, ...] reply (XINFO, field lists) as a dict."""
    return {reply[i]: reply[i + 1] for i in range(0, len(reply) - 1, 2)}


class RedisClient:
    """The store's shared connection (see the module)."""

    def __init__(self, endpoint: Endpoint, name: str) -> None:
        self.endpoint = endpoint
        self.name = name
        self.pipe = Pipeline(endpoint, name=name)

    def submit(self, *args: Any) -> asyncio.Future:
        """Queue one command; the future gets its raw reply."""
        return self.pipe.submit(pack(args))

    async def call(self, *args: Any) -> Any:
        return await self.pipe.submit(pack(args))

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Several commands in one write; their replies in order (the first error raised
        once all are answered)."""
        futures = [self.pipe.submit(pack(c)) for c in commands]
        return list(await asyncio.gather(*futures))

    def dedicated(self, name: str) -> Pipeline:
        """A connection of its own (for blocking reads); the caller closes it."""
        return Pipeline(self.endpoint, name=f"{self.name}-{name}" if name else self.name)

    @staticmethod
    def evalsha(script: Script, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
        """The framed EVALSHA of `script`."""
        return pack(("EVALSHA", script.sha, len(keys), *keys, *args))

    async def load(self, script: Script) -> None:
        await self.call("SCRIPT", "LOAD", script.source)

    async def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Call `script` (loading it on NOSCRIPT)."""
        packed = self.evalsha(script, keys, args)
        try:
            return await self.pipe.submit(packed)
        except ReplyError as exc:
            if not exc.reply.startswith("NOSCRIPT"):
                raise
        await self.load(script)
        return await self.pipe.submit(packed)

    async def run_many(
        self, script: Script, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """`script` once per (keys, args), in one write (loading it on NOSCRIPT)."""
        packed = [self.evalsha(script, k, a) for k, a in calls]
        for attempt in (0, 1):
            futures = [self.pipe.submit(p) for p in packed]
            results = await asyncio.gather(*futures, return_exceptions=True)
            missing = any(
                isinstance(r, ReplyError) and r.reply.startswith("NOSCRIPT") for r in results
            )
            if not missing or attempt:
                break
            await self.load(script)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)

    def close(self) -> None:
        self.pipe.close()
