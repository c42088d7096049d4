"""The change feed on Redis pub/sub: `sd:chg:<session_id>` per session, and the admin broadcast.

One subscriber connection per `FeedSubscription` (a raw RESP subscriber: no redis-py on this
path); publishing goes through the store's shared connection.
"""

from __future__ import annotations

from collections.abc import Callable

from infra.store import layout
from infra.store.redis.client import RedisClient
from infra.store.redis.connection import Subscriber

__all__ = ["RedisChangeFeed", "RedisFeedSubscription"]

_PREFIX = layout.CHANGE_PREFIX
_CUT = len(_PREFIX)


class RedisFeedSubscription:
    """See `api.FeedSubscription`."""

    def __init__(
        self,
        client: RedisClient,
        on_change: Callable[[str, bytes], None],
        *,
        on_broadcast: Callable[[bytes], None] | None,
        on_reconnect: Callable[[], None] | None,
        name: str,
    ) -> None:
        self._on_change = on_change
        self._on_broadcast = on_broadcast
        self._sub = Subscriber(
            client.endpoint, self._on_message, on_reconnect=on_reconnect, name=name or "sd-feed"
        )

    @property
    def reconnects(self) -> int:
        return self._sub.reconnects

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel.startswith(_PREFIX):
            self._on_change(channel[_CUT:].decode(), data)
        elif self._on_broadcast is not None:
            self._on_broadcast(data)

    async def start(self) -> None:
        await self._sub.start()
        if self._on_broadcast is not None:
            await self._sub.subscribe(layout.ADMIN_CHANNEL)

    async def subscribe(self, session_id: str) -> None:
        await self._sub.subscribe(layout.change_channel(session_id))

    async def unsubscribe(self, session_id: str) -> None:
        await self._sub.unsubscribe(layout.change_channel(session_id))

    async def close(self) -> None:
        await self._sub.close()


class RedisChangeFeed:
    """See `api.ChangeFeed`."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def publish(self, session_id: str, payload: bytes) -> int:
        return int(await self.client.call("PUBLISH", layout.change_channel(session_id), payload))

    async def broadcast(self, payload: bytes) -> int:
        return int(await self.client.call("PUBLISH", layout.ADMIN_CHANNEL, payload))

    def subscriber(
        self,
        on_change: Callable[[str, bytes], None],
        *,
        on_broadcast: Callable[[bytes], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        name: str = "",
    ) -> RedisFeedSubscription:
        return RedisFeedSubscription(
            self.client, on_change, on_broadcast=on_broadcast, on_reconnect=on_reconnect, name=name
        )
