"""Sharded pub/sub (`SSUBSCRIBE`): a set of channels kept subscribed where they live.

A shard channel lives in the slot of its name, like a key: on a cluster only the master serving
that slot delivers it (a publish reaches that shard only, not every node), so the subscriber
holds one connection per master that serves a wanted channel, and subscribes each channel
there (one SSUBSCRIBE per slot: channels of different slots may not share one). On a single
node (Valkey and Redis >= 7 serve sharded pub/sub standalone too) that is one connection.

Channels stay subscribed through everything that can happen to them: a lost connection (the
node restarted, or failed and its replica took over), a slot moved to another node (the server
says so with an unrequested `sunsubscribe`), a subscription refused (a MOVED error). Each time
the subscriber reads the slot map again, subscribes every wanted channel where it lives now,
and once all are confirmed calls `on_reconnect()`: messages published meanwhile are lost, and
the caller catches up from the events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable

from events.errors import StoreUnavailable
from infra.store.redis.cluster import Address
from infra.store.redis.connection import ConnectionLost, _Conn, _open
from infra.store.redis.resp import pack
from infra.store.redis.router import Router
from infra.store.routing import key_slot

__all__ = ["Subscriber"]

log = logging.getLogger("sessiond.store")

_PING = pack(("PING",))


class Subscriber:
    """Sharded subscriptions to a set of channels (see the module).

    `on_message(channel, data)` is called from the connection for every message, in order per
    channel; it must not block. `on_reconnect()` is called once every channel is subscribed
    again after something made the subscriber lose some.
    """

    #: a PING when nothing arrived for this long; the connection is dropped if the next
    #: interval also passes in silence
    HEALTH_S = 15.0

    def __init__(
        self,
        router: Router,
        on_message: Callable[[bytes, bytes], None],
        *,
        on_reconnect: Callable[[], None] | None = None,
        name: str = "",
        confirm_timeout: float = 5.0,
    ) -> None:
        self.router = router
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.name = name
        self.confirm_timeout = confirm_timeout
        self.reconnects = 0
        self._wanted: dict[bytes, int] = {}  # channel -> slot
        self._where: dict[bytes, Address] = {}  # channel -> the node it was subscribed on
        self._conns: dict[Address, _Conn] = {}
        self._watches: dict[Address, asyncio.Task] = {}
        self._opening: dict[Address, asyncio.Task] = {}
        self._confirm: dict[bytes, list[asyncio.Future]] = {}
        self._leaving: collections.Counter[bytes] = collections.Counter()
        self._resync: asyncio.Task | None = None
        self._closed = False

    @property
    def channels(self) -> set[bytes]:
        """The channels wanted now."""
        return set(self._wanted)

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect (raising `StoreUnavailable` when Redis cannot be reached)."""
        await self.router.ready()
        await self._conn(self._owner(None))

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._resync, *self._watches.values(), *self._opening.values()) if t]
        self._resync = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for conn in self._conns.values():
            conn.abort()
        self._conns.clear()
        self._watches.clear()
        for waiters in self._confirm.values():
            for fut in waiters:
                if not fut.done():
                    fut.cancel()
        self._confirm.clear()

    # -------------------------------------------------------------- channels
    async def subscribe(self, *channels: str | bytes) -> None:
        """Subscribe `channels` (kept through reconnects and slot moves); returns once Redis
        confirmed them. Raises `ConnectionLost` if that takes longer than `confirm_timeout`
        (they stay wanted and are subscribed when their node answers again)."""
        chans = [c.encode() if isinstance(c, str) else c for c in channels]
        if not chans:
            return
        waits = []
        for ch in chans:
            self._wanted[ch] = key_slot(ch)
            waits.append(self._waiter(ch))
        try:
            async with asyncio.timeout(self.confirm_timeout):
                try:
                    await self._subscribe_where_they_live(chans)
                except StoreUnavailable:
                    self._resync_soon()  # they are wanted: the resync subscribes them
                for fut in waits:
                    await fut
        except TimeoutError:
            raise ConnectionLost(
                f"Redis did not confirm the subscription to {len(chans)} channel(s)"
            ) from None
        finally:
            self._forget_waiters(chans, waits)

    async def unsubscribe(self, *channels: str | bytes) -> None:
        chans = [c.encode() if isinstance(c, str) else c for c in channels]
        by_node: dict[Address, list[bytes]] = {}
        for ch in chans:
            self._wanted.pop(ch, None)
            address = self._where.pop(ch, None)
            if address is not None:
                by_node.setdefault(address, []).append(ch)
        for address, group in by_node.items():
            conn = self._conns.get(address)
            if conn is not None and not conn.closed:
                self._leaving.update(group)
                self._send(conn, b"SUNSUBSCRIBE", group)

    # -------------------------------------------------------------- internals
    def _owner(self, slot: int | None) -> Address:
        if self.router.slots is None:
            return self.router.seed.address
        return self.router.owner(slot)

    def _waiter(self, channel: bytes) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(fut)
        return fut

    def _forget_waiters(self, chans: Iterable[bytes], waits: Iterable[asyncio.Future]) -> None:
        for ch, fut in zip(chans, waits, strict=True):
            waiters = self._confirm.get(ch)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._confirm[ch]

    def _send(self, conn: _Conn, command: bytes, chans: list[bytes]) -> None:
        """One (S)(UN)SUBSCRIBE per slot: channels of different slots may not share one on a
        cluster (a single node takes them all at once)."""
        if self.router.slots is None:
            conn.send_only(pack((command, *chans)))
            return
        by_slot: dict[int, list[bytes]] = {}
        for ch in chans:
            by_slot.setdefault(key_slot(ch), []).append(ch)
        for group in by_slot.values():
            conn.send_only(pack((command, *group)))

    async def _subscribe_where_they_live(self, chans: Iterable[bytes]) -> None:
        """Send the SSUBSCRIBEs of `chans` to the nodes serving them (confirmations arrive as
        pushes)."""
        await self.router.ready()
        by_node: dict[Address, list[bytes]] = {}
        for ch in chans:
            slot = self._wanted.get(ch)
            if slot is not None:
                by_node.setdefault(self._owner(slot), []).append(ch)
        for address, group in by_node.items():
            conn = await self._conn(address)
            group = [ch for ch in group if ch in self._wanted]  # unsubscribed meanwhile
            for ch in group:
                self._where[ch] = address
            if group:
                self._send(conn, b"SSUBSCRIBE", group)

    async def _conn(self, address: Address) -> _Conn:
        """The live connection to a node, opened if needed (raises `StoreUnavailable`)."""
        conn = self._conns.get(address)
        if conn is not None and not conn.closed:
            return conn
        if self._closed:
            raise ConnectionLost("subscriber closed")
        task = self._opening.get(address)
        if task is None:
            task = self._opening[address] = asyncio.get_running_loop().create_task(
                self._open(address), name=f"subscriber-{self.name}"
            )
        return await asyncio.shield(task)

    async def _open(self, address: Address) -> _Conn:
        router = self.router
        endpoint = router.seed if address == router.seed.address else router.seed.at(*address)
        try:
            conn = await _open(endpoint, self.name, functools.partial(self._on_push, address))
        finally:
            self._opening.pop(address, None)
        conn.on_error = functools.partial(self._on_error, address)
        self._conns[address] = conn
        self._watches[address] = asyncio.get_running_loop().create_task(
            self._watch(address, conn), name=f"subscriber-watch-{self.name}"
        )
        return conn

    def _on_push(self, address: Address, reply: list) -> None:
        kind = reply[0]
        if kind == b"smessage" or kind == b"message":
            try:
                self.on_message(reply[1], reply[2])
            except Exception:
                log.exception("subscriber %s: message handler failed", self.name)
        elif kind == b"ssubscribe":
            waiters = self._confirm.pop(reply[1], None)
            if waiters:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)
        elif kind == b"sunsubscribe":
            ch = reply[1]
            if self._leaving[ch] > 0:  # the answer to our own SUNSUBSCRIBE
                self._leaving[ch] -= 1
                if not self._leaving[ch]:
                    del self._leaving[ch]
            elif ch in self._wanted and self._where.get(ch) == address:
                # the server let it go: its slot moved to another node
                self._where.pop(ch, None)
                self._resync_soon()

    def _on_error(self, address: Address, reply: str) -> None:
        log.info("subscriber %s: %s refused a subscription: %s", self.name, address, reply)
        for ch in [c for c, a in self._where.items() if a == address]:
            self._where.pop(ch, None)
        self._resync_soon()

    def _lost(self, address: Address, conn: _Conn) -> None:
        if self._conns.get(address) is conn:
            del self._conns[address]
            self._watches.pop(address, None)
        lost = [ch for ch, a in self._where.items() if a == address]
        for ch in lost:
            del self._where[ch]
        log.warning("subscriber %s: connection to %s lost (%s)", self.name, address, conn.error)
        if lost:
            self._resync_soon()

    def _resync_soon(self) -> None:
        if self._resync is None and not self._closed:
            self._resync = asyncio.get_running_loop().create_task(
                self._resubscribe(), name=f"subscriber-resync-{self.name}"
            )

    async def _resubscribe(self) -> None:
        """Until every wanted channel is subscribed (confirmed) where it lives now; then
        `on_reconnect()`."""
        backoff = 0.05
        while True:
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
            try:
                if self.router.slots is not None:
                    await self.router.refresh()
                for ch, address in list(self._where.items()):
                    slot = self._wanted.get(ch)
                    if slot is not None and self._owner(slot) != address:
                        del self._where[ch]  # the node it is on no longer serves it
                missing = [ch for ch in self._wanted if ch not in self._where]
                if not missing:
                    break
                waits = [self._waiter(ch) for ch in missing]
                try:
                    await self._subscribe_where_they_live(missing)
                    async with asyncio.timeout(self.confirm_timeout):
                        for fut in waits:
                            await fut
                finally:
                    self._forget_waiters(missing, waits)
            except (StoreUnavailable, OSError, TimeoutError) as exc:
                log.warning("subscriber %s: re-subscribing failed: %s", self.name, exc)
                continue
            if all(ch in self._where for ch in self._wanted):
                break
        self._resync = None
        self.reconnects += 1
        log.info("subscriber %s: %d channel(s) subscribed again", self.name, len(self._wanted))
        if self.on_reconnect is not None:
            try:
                self.on_reconnect()
            except Exception:
                log.exception("subscriber %s: on_reconnect failed", self.name)

    async def _watch(self, address: Address, conn: _Conn) -> None:
        """Until `conn` is lost (then `_lost`); a PING keeps silence from hiding a dead peer."""
        pinged = False
        while not conn.closed:
            try:
                async with asyncio.timeout(self.HEALTH_S):
                    await asyncio.shield(conn.lost)
                break
            except TimeoutError:
                pass
            if time.monotonic() - conn.last_rx < self.HEALTH_S:
                pinged = False
                continue
            if pinged:
                conn.abort(ConnectionLost("no answer to PING"))
                break
            conn.send_only(_PING)
            pinged = True
        if not self._closed:
            self._lost(address, conn)
