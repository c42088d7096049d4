"""The change feed on sharded pub/sub: `sd:{pN}:chg:<session_id>` per session (a shard channel
in the session's partition slot: a publish reaches that shard only, and the append script can
publish there), and the admin broadcast `sd:admin:broadcast` (a shard channel of its own).

One `Subscriber` per `FeedSubscription` (raw RESP, one connection per master serving a
subscribed channel); publishing goes through the store's shared link.
"""

from __future__ import annotations

from collections.abc import Callable

from infra.store import layout
from infra.store.redis.client import RedisClient
from infra.store.redis.subscriber import Subscriber
from infra.store.routing import partition_of

__all__ = ["RedisChangeFeed", "RedisFeedSubscription"]

_ADMIN = layout.ADMIN_CHANNEL.encode()


class RedisFeedSubscription:
    """See `api.FeedSubscription`."""

    def __init__(
        self,
        client: RedisClient,
        partitions: int,
        on_change: Callable[[str, bytes], None],
        *,
        on_broadcast: Callable[[bytes], None] | None,
        on_reconnect: Callable[[], None] | None,
        name: str,
    ) -> None:
        self._partitions = partitions
        self._on_change = on_change
        self._on_broadcast = on_broadcast
        self._sub = Subscriber(
            client.router, self._on_message, on_reconnect=on_reconnect, name=name or "sd-feed"
        )

    @property
    def reconnects(self) -> int:
        return self._sub.reconnects

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == _ADMIN:
            if self._on_broadcast is not None:
                self._on_broadcast(data)
            return
        session_id = layout.session_of_change_channel(channel)
        if session_id is not None:
            self._on_change(session_id, data)

    def _channel(self, session_id: str) -> str:
        return layout.change_channel(partition_of(session_id, self._partitions), session_id)

    async def start(self) -> None:
        await self._sub.start()
        if self._on_broadcast is not None:
            await self._sub.subscribe(_ADMIN)

    async def subscribe(self, session_id: str) -> None:
        await self._sub.subscribe(self._channel(session_id))

    async def unsubscribe(self, session_id: str) -> None:
        await self._sub.unsubscribe(self._channel(session_id))

    async def close(self) -> None:
        await self._sub.close()


class RedisChangeFeed:
    """See `api.ChangeFeed`."""

    def __init__(self, client: RedisClient, partitions: int) -> None:
        self.client = client
        self.partitions = partitions

    async def publish(self, session_id: str, payload: bytes) -> int:
        channel = layout.change_channel(partition_of(session_id, self.partitions), session_id)
        return int(await self.client.call("SPUBLISH", channel, payload))

    async def broadcast(self, payload: bytes) -> int:
        return int(await self.client.call("SPUBLISH", layout.ADMIN_CHANNEL, payload))

    def subscriber(
        self,
        on_change: Callable[[str, bytes], None],
        *,
        on_broadcast: Callable[[bytes], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        name: str = "",
    ) -> RedisFeedSubscription:
        return RedisFeedSubscription(
            self.client,
            self.partitions,
            on_change,
            on_broadcast=on_broadcast,
            on_reconnect=on_reconnect,
            name=name,
        )
