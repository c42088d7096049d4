"""The Redis store's shared connections: commands, pipelines and scripts, raw replies.

Every non-blocking command of a store goes through its router's shared link (`router.Link`):
one connection on a single node, one per master on a cluster, each command sent to the master
of its key's slot (commands submitted in the same event-loop turn to one node go out in one
write: a pipeline is grouped per node by construction). Blocking reads take links of their own
(`dedicated`), bound to their key's slot. Scripts are called by their SHA1 and loaded on
NOSCRIPT (a restart, SCRIPT FLUSH, a replica that became master), on the node that said it,
then retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from infra.store.redis.cluster import command_key, key_slot
from infra.store.redis.connection import Endpoint, ReplyError
from infra.store.redis.lua import Script
from infra.store.redis.resp import pack
from infra.store.redis.router import Link, Router

__all__ = ["RedisClient", "as_str", "flat_pairs", "slot_of"]


def as_str(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def flat_pairs(reply: list[Any]) -> dict[bytes, Any]:
    """A flat [name, value, ...] reply (XINFO, field lists) as a dict."""
    return {reply[i]: reply[i + 1] for i in range(0, len(reply) - 1, 2)}


def slot_of(args: Sequence[Any]) -> int | None:
    """The slot a command goes to (None: any node)."""
    key = command_key(args)
    return None if key is None else key_slot(key)


class RedisClient:
    """The store's shared link and its router (see the module)."""

    def __init__(self, endpoint: Endpoint, name: str) -> None:
        self.endpoint = endpoint
        self.name = name
        self.router = Router(endpoint, name)
        self.link = self.router.shared

    def submit(self, *args: Any) -> asyncio.Future:
        """Queue one command; the future gets its raw reply."""
        single = self.router.single
        if single is not None:
            return single.submit(pack(args))
        return self.link.send(slot_of(args), pack(args))

    def send(self, slot: int | None, packed: bytes) -> asyncio.Future:
        """Queue one framed command for the master of `slot`."""
        return self.link.send(slot, packed)

    async def call(self, *args: Any) -> Any:
        return await self.submit(*args)

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Several commands, one write per node; their replies in order (the first error
        raised once all are answered)."""
        futures = [self.submit(*c) for c in commands]
        return list(await asyncio.gather(*futures))

    def dedicated(self, name: str, key: str | bytes | None = None) -> Link:
        """Connections of their own (for blocking reads) bound to `key`'s slot; the caller
        closes them."""
        return self.router.link(
            f"{self.name}-{name}" if name else self.name,
            None if key is None else key_slot(key),
        )

    @staticmethod
    def evalsha(script: Script, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
        """The framed EVALSHA of `script`."""
        return pack(("EVALSHA", script.sha, len(keys), *keys, *args))

    async def load(self, script: Script, slot: int | None = None) -> None:
        """Load `script` on the master of `slot` (None: on every master)."""
        packed = pack(("SCRIPT", "LOAD", script.source))
        if slot is None:
            await self.router.on_every_master(packed)
        else:
            await self.link.send(slot, packed)

    async def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Call `script` (loading it on NOSCRIPT)."""
        packed = self.evalsha(script, keys, args)
        slot = key_slot(keys[0]) if keys else None
        try:
            return await self.link.send(slot, packed)
        except ReplyError as exc:
            if not exc.reply.startswith("NOSCRIPT"):
                raise
        await self.load(script, slot)
        return await self.link.send(slot, packed)

    async def run_many(
        self, script: Script, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """`script` once per (keys, args), one write per node (loading it on NOSCRIPT)."""
        packed = [self.evalsha(script, k, a) for k, a in calls]
        slots = [key_slot(k[0]) if k else None for k, _ in calls]
        for attempt in (0, 1):
            futures = [self.link.send(s, p) for s, p in zip(slots, packed, strict=True)]
            results = await asyncio.gather(*futures, return_exceptions=True)
            missing = {
                s
                for s, r in zip(slots, results, strict=True)
                if isinstance(r, ReplyError) and r.reply.startswith("NOSCRIPT")
            }
            if not missing or attempt:
                break
            for slot in missing:
                await self.load(script, slot)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)

    async def ready(self) -> None:
        await self.router.ready()

    async def ping(self) -> None:
        await self.router.ping()

    def close(self) -> None:
        self.router.close()
