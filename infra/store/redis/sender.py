"""The command sender on Redis: XADD to `sd:{pN}:cmd`, replies on `sd:reply:<name>`.

The sender writes on a raw pipelined connection of its own (every XADD of one event-loop turn
in one socket write, order kept) and reads replies on a raw subscriber connection. When the
command connection breaks, the commands in flight fail with `StoreUnavailable` (they may or may
not have been queued: retrying with the same command id is safe) and the next send reconnects.
"""

from __future__ import annotations

from infra.store import layout
from infra.store.redis.connection import Endpoint, Pipeline, Subscriber
from infra.store.redis.resp import pack
from infra.store.sending import SenderBase

__all__ = ["RedisCommandSender"]


class RedisCommandSender(SenderBase):
    """See `api.CommandSender`."""

    def __init__(self, endpoint: Endpoint, partitions: int, name: str | None = None) -> None:
        self._endpoint = endpoint
        self._pipe: Pipeline | None = None
        self._sub: Subscriber | None = None
        super().__init__(partitions, name)

    def _channel_name(self) -> str:
        return layout.reply_channel(self.name)

    def _pipeline(self) -> Pipeline:
        pipe = self._pipe
        if pipe is None:
            pipe = self._pipe = Pipeline(self._endpoint, name=f"sd-bus-{self.name}")
        return pipe

    async def _queue(self, partition: int, payload: bytes) -> None:
        await self._pipeline().submit(
            pack((b"XADD", layout.command_stream(partition), b"*", b"c", payload))
        )

    async def _stored(self, partition: int, command_id: str) -> bytes | None:
        return await self._pipeline().submit(
            pack((b"GET", layout.outcome_key(partition, command_id)))
        )

    def _on_message(self, channel: bytes, data: bytes) -> None:
        self._on_reply(data)

    async def _subscribe(self) -> None:
        sub = Subscriber(self._endpoint, self._on_message, name=f"sd-bus-{self.name}-replies")
        try:
            await sub.start()
            await sub.subscribe(self.channel)
        except BaseException:
            await sub.close()
            raise
        self._sub = sub

    async def _close_transport(self) -> None:
        if self._sub is not None:
            await self._sub.close()
            self._sub = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
