"""The command sender on Redis: XADD to `sd:{pN}:cmd`, replies on `sd:{pN}:reply:<name>`.

A sender's reply address (`channel`, what envelopes carry as `reply_to`) is its name; the
append script publishes each outcome to the shard channel of that name in the command's own
partition (`layout.reply_channel`), so the publish stays in the script's slot on a cluster. The
sender subscribes its channel of every partition (sharded: one connection per master).

Commands go out on links of the sender's own (one connection per master; every XADD of one
event-loop turn to a node in one socket write, order kept per partition). When a connection
breaks, the commands in flight fail with `StoreUnavailable` (they may or may not have been
queued: retrying with the same command id is safe) and the next send reconnects.
"""

from __future__ import annotations

from infra.store import layout
from infra.store.redis.client import RedisClient
from infra.store.redis.cluster import key_slot
from infra.store.redis.resp import pack
from infra.store.redis.router import Link
from infra.store.redis.subscriber import Subscriber
from infra.store.sending import SenderBase

__all__ = ["RedisCommandSender"]


class RedisCommandSender(SenderBase):
    """See `api.CommandSender`."""

    def __init__(self, client: RedisClient, partitions: int, name: str | None = None) -> None:
        self._client = client
        self._link: Link | None = None
        self._sub: Subscriber | None = None
        super().__init__(partitions, name)
        self._streams = [layout.command_stream(p).encode() for p in range(partitions)]
        self._slots = [key_slot(s) for s in self._streams]

    def _channel_name(self) -> str:
        return self.name

    def _links(self) -> Link:
        link = self._link
        if link is None:
            link = self._link = self._client.router.link(f"sd-bus-{self.name}")
        return link

    async def _queue(self, partition: int, payload: bytes) -> None:
        await self._links().send(
            self._slots[partition], pack((b"XADD", self._streams[partition], b"*", b"c", payload))
        )

    async def _stored(self, partition: int, command_id: str) -> bytes | None:
        return await self._links().send(
            self._slots[partition], pack((b"GET", layout.outcome_key(partition, command_id)))
        )

    def _on_message(self, channel: bytes, data: bytes) -> None:
        self._on_reply(data)

    async def _subscribe(self) -> None:
        sub = Subscriber(self._client.router, self._on_message, name=f"sd-bus-{self.name}-replies")
        try:
            await sub.start()
            await sub.subscribe(
                *(layout.reply_channel(p, self.channel) for p in range(self.partitions))
            )
        except BaseException:
            await sub.close()
            raise
        self._sub = sub

    async def _close_transport(self) -> None:
        if self._sub is not None:
            await self._sub.close()
            self._sub = None
        if self._link is not None:
            self._link.close()
            self._link = None
