"""Where each command of the store goes: the one server, or the cluster master that serves the
slot of its key.

`Router` finds out on first use what `REDIS_URL` names (`INFO server`): a single node, or a
node of a Redis / Valkey Cluster, whose slot map it then reads (`CLUSTER SLOTS`) from that node.
It refuses servers the store cannot use (Redis < 7.0, Valkey < 7.2) and logs what it found,
once. On a cluster it keeps the slot map current: a MOVED reply corrects one slot at once and
asks for a fresh map, a lost connection asks for one too (its master may have failed over), and
the map is read again every `REFRESH_S` anyway. So a resharding or a failover is followed
without a restart.

`Link`: connections of one's own, one per node (one in all on a single node), each pipelined
as `Pipeline` is. A command sent with its slot goes to that slot's master; its reply is handed
back unless it is a redirection: MOVED (send it to the node named, for good), ASK (send ASKING
and the command to the node named, this once: the slot is being migrated), or a "try again"
(TRYAGAIN while a migration splits a multi-key command's keys, CLUSTERDOWN during a failover,
...), retried for about `RETRY_FOR_S`. A redirected command was not executed, so sending it
again is safe; a command whose connection was lost may have been, so that one fails
(`ConnectionLost`) and its caller decides (the store's callers retry with the same command id).
A link bound to one slot (a writer's connection, a blocking read) follows its slot when it
moves and closes the connection it leaves once its replies are in.

On a single node none of this costs anything: a link is a plain `Pipeline`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable

from events.errors import StoreUnavailable
from infra.store.redis.cluster import Address, ServerInfo, SlotMap, parse_redirect
from infra.store.redis.connection import ConnectionLost, Endpoint, Pipeline, ReplyError
from infra.store.redis.resp import pack

__all__ = ["REFRESH_S", "RETRY_FOR_S", "Link", "Router"]

log = logging.getLogger("sessiond.store")

#: How often a cluster's slot map is read again when nothing asked for it.
REFRESH_S = 5.0
#: How long a command told to try again (a migration, a failover) keeps being retried.
RETRY_FOR_S = 10.0
#: The least time between two reads of the slot map.
_REFRESH_GAP_S = 0.1

_ASKING = pack(("ASKING",))
_SLOTS = pack(("CLUSTER", "SLOTS"))
_PING = pack(("PING",))


def _retry_delay(tries: int) -> float:
    return min(0.2, 0.005 * 2**tries)


#: tries of one command: enough redirections for any migration, and retries for RETRY_FOR_S
_MAX_TRIES = 6 + int(RETRY_FOR_S / 0.2)


def _forward(inner: asyncio.Future, outer: asyncio.Future) -> None:
    """Hand `inner`'s outcome to `outer` (left alone when its caller gave up)."""
    if inner.cancelled():
        if not outer.done():
            outer.cancel()
        return
    exc = inner.exception()
    if outer.done():
        return
    if exc is not None:
        _fail(outer, exc)
    else:
        outer.set_result(inner.result())


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    """Fail `fut`; its caller may have stopped looking: no "never retrieved" warning."""
    fut.set_exception(exc)
    fut.exception()


def _ignore(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


class Router:
    """One store's view of its Redis: single node or cluster, and the cluster's slot map (see
    the module). `shared` is the store's shared link; others make their own with `link`."""

    def __init__(self, seed: Endpoint, name: str) -> None:
        self.seed = seed
        self.name = name
        self.info: ServerInfo | None = None
        #: the connection of the shared link, on a single node
        self.single: Pipeline | None = None
        #: the slot map, on a cluster
        self.slots: SlotMap | None = None
        self.refresh_s = REFRESH_S
        self.redirects = 0  # MOVED and ASK replies followed
        self.refreshes = 0  # slot maps read
        self.shared = Link(self, name)
        self._discovery: asyncio.Task | None = None
        self._refreshing: asyncio.Task | None = None
        self._periodic: asyncio.Task | None = None
        self._last_refresh = 0.0
        self._closed = False

    # ------------------------------------------------------------------ discovery
    def describe(self) -> str:
        """ "single node" or "cluster: N masters", with the server's name and version."""
        info = self.info
        if info is None:
            return "not connected yet"
        server = f"{info.name} {info.version_text}"
        if self.slots is None:
            return f"single node ({server})"
        return f"cluster: {len(self.slots.masters())} masters ({server})"

    async def ready(self) -> None:
        """Connect and find out what the URL names (once); raises `StoreUnavailable`."""
        if self.info is None:
            await asyncio.shield(self._discover_task())

    def _discover_task(self) -> asyncio.Task:
        if self._closed:
            raise ConnectionLost("connection closed")
        if self._discovery is None:
            self._discovery = asyncio.get_running_loop().create_task(
                self._discover(), name=f"discover-{self.name}"
            )
        return self._discovery

    async def _discover(self) -> None:
        pipe = Pipeline(self.seed, name=self.name)
        try:
            info = ServerInfo.parse(await pipe.submit(pack(("INFO", "server"))))
            refusal = info.refusal()
            if refusal is not None:
                raise StoreUnavailable(refusal)
            if info.cluster:
                host = self.seed.host if not self.seed.path else "127.0.0.1"
                slots = SlotMap.parse(await pipe.submit(_SLOTS), host)
                if not slots.masters():
                    raise StoreUnavailable(f"the cluster at {self.seed!r} serves no slots yet")
                pipe.close()
                self.slots = slots
                self._last_refresh = time.monotonic()
                self._periodic = asyncio.get_running_loop().create_task(
                    self._refresh_every(), name=f"slots-{self.name}"
                )
            else:
                self.single = pipe
            self.info = info
        except BaseException as exc:
            pipe.close()
            self._discovery = None  # the next use tries again
            if isinstance(exc, StoreUnavailable) or not isinstance(exc, Exception):
                raise
            raise ConnectionLost(f"could not reach Redis at {self.seed!r}: {exc}") from exc
        log.info("store %s: %s", self.name, self.describe())

    def after_discovery(self, send: Callable[[], asyncio.Future]) -> asyncio.Future:
        """`send()`'s reply once the mode is known (commands keep the order they came in)."""
        outer = asyncio.get_running_loop().create_future()
        task = self._discover_task()

        def go(done: asyncio.Task) -> None:
            if outer.done():
                return
            if done.cancelled():
                _fail(outer, ConnectionLost("connection closed"))
                return
            exc = done.exception()
            if exc is not None:
                _fail(outer, exc)
                return
            try:
                inner = send()
            except StoreUnavailable as error:
                _fail(outer, error)
                return
            inner.add_done_callback(functools.partial(_forward, outer=outer))

        task.add_done_callback(go)
        return outer

    # ------------------------------------------------------------------ the slot map
    def masters(self) -> list[Address]:
        """The masters serving slots (a single node: its own address)."""
        if self.slots is None:
            return [self.seed.address]
        return self.slots.masters()

    def owner(self, slot: int | None) -> Address:
        """The master serving `slot` (None: any master)."""
        slots = self.slots
        assert slots is not None
        if slot is None:
            return slots.masters()[0]
        address = slots.owner(slot)
        if address is None:
            raise StoreUnavailable(f"no node of the cluster serves slot {slot}")
        return address

    def refresh_soon(self) -> None:
        """Read the slot map again, in the background (at most one read at a time)."""
        if self.slots is None or self._closed or self._refreshing is not None:
            return
        self._refreshing = asyncio.get_running_loop().create_task(
            self._refresh(), name=f"refresh-{self.name}"
        )

    async def refresh(self) -> None:
        """Read the slot map again now."""
        self.refresh_soon()
        task = self._refreshing
        if task is not None:
            await asyncio.shield(task)

    async def _refresh(self) -> None:
        try:
            gap = self._last_refresh + _REFRESH_GAP_S - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            fresh = await self._read_slots()
            if fresh is not None:
                self.slots = fresh
                self.refreshes += 1
                self.shared.keep_only(set(fresh.masters()))
        except Exception:  # never let a background refresh die loudly: the next one retries
            log.exception("store %s: reading the cluster's slot map failed", self.name)
        finally:
            self._last_refresh = time.monotonic()
            self._refreshing = None

    async def _read_slots(self) -> SlotMap | None:
        """The slot map as the first node that answers tells it (masters first)."""
        slots = self.slots
        assert slots is not None
        candidates = list(dict.fromkeys([*slots.masters(), *slots.nodes, self.seed.address]))
        for address in candidates:
            endpoint = self.seed if address == self.seed.address else self.seed.at(*address)
            pipe = Pipeline(endpoint, name=f"{self.name}-slots")
            try:
                async with asyncio.timeout(2.0):
                    reply = await pipe.submit(_SLOTS)
            except (StoreUnavailable, TimeoutError):
                continue
            finally:
                pipe.close()
            fresh = SlotMap.parse(reply, address[0])
            if fresh.masters():
                return fresh
        log.warning("store %s: no node of the cluster answered CLUSTER SLOTS", self.name)
        return None

    async def _refresh_every(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            self.refresh_soon()

    # ------------------------------------------------------------------ sending
    def link(self, name: str, slot: int | None = None) -> Link:
        """Connections of one's own (bound to `slot` when given); the caller closes it."""
        return Link(self, name, slot)

    def dispatch(self, link: Link, slot: int | None, packed: bytes) -> asyncio.Future:
        """Send one framed command to the master of `slot` on `link`'s connections, following
        redirections (see the module)."""
        outer = asyncio.get_running_loop().create_future()
        self._send(link, slot, packed, outer, 0, None)
        return outer

    def _send(
        self,
        link: Link,
        slot: int | None,
        packed: bytes,
        outer: asyncio.Future,
        tries: int,
        ask: Address | None,
    ) -> None:
        if outer.done():
            return
        try:
            if ask is not None:
                pipe = link.pipe_for(ask)
                pipe.submit(_ASKING).add_done_callback(_ignore)
            else:
                pipe = link.pipe_for(self.owner(slot), owner=True)
            inner = pipe.submit(packed)
        except StoreUnavailable as exc:
            _fail(outer, exc)
            return
        inner.add_done_callback(functools.partial(self._settle, link, slot, packed, outer, tries))

    def _settle(
        self,
        link: Link,
        slot: int | None,
        packed: bytes,
        outer: asyncio.Future,
        tries: int,
        inner: asyncio.Future,
    ) -> None:
        if inner.cancelled():
            if not outer.done():
                outer.cancel()
            return
        exc = inner.exception()
        if outer.done():
            return
        if exc is None:
            outer.set_result(inner.result())
            return
        if isinstance(exc, ReplyError) and tries < _MAX_TRIES:
            redirect = parse_redirect(exc.reply, self.seed.host)
            if redirect is not None:
                if redirect.kind == "MOVED":
                    assert self.slots is not None and redirect.address is not None
                    self.slots.assign(redirect.slot, redirect.address)
                    self.redirects += 1
                    self.refresh_soon()
                    self._send(link, slot, packed, outer, tries + 1, None)
                elif redirect.kind == "ASK":
                    self.redirects += 1
                    self._send(link, slot, packed, outer, tries + 1, redirect.address)
                else:
                    if not exc.reply.startswith("TRYAGAIN"):
                        self.refresh_soon()
                    asyncio.get_running_loop().call_later(
                        _retry_delay(tries), self._send, link, slot, packed, outer, tries + 1, None
                    )
                return
        elif isinstance(exc, ConnectionLost):
            self.refresh_soon()  # its node may be gone: a replica may serve its slots now
        _fail(outer, exc)

    async def ping(self) -> None:
        """PING every master; raises `StoreUnavailable` unless all answer."""
        await self.ready()
        if self.single is not None:
            await self.single.submit(_PING)
            return
        replies = [self.shared.pipe_for(a).submit(_PING) for a in self.masters()]
        for reply in replies:
            await reply

    async def on_every_master(self, packed: bytes) -> list:
        """One command on each master (SCRIPT LOAD); the replies."""
        await self.ready()
        if self.single is not None:
            return [await self.single.submit(packed)]
        return list(
            await asyncio.gather(*(self.shared.pipe_for(a).submit(packed) for a in self.masters()))
        )

    def close(self) -> None:
        self._closed = True
        for task in (self._discovery, self._refreshing, self._periodic):
            if task is not None and not task.done():
                task.cancel()
        self.shared.close()
        if self.single is not None:
            self.single.close()


class Link:
    """Connections of one's own: one per node of a cluster, one in all on a single node (see
    the module). `submit` sends to the link's own slot, `send` to any."""

    __slots__ = ("_closed", "_pipes", "_plain", "name", "router", "slot")

    def __init__(self, router: Router, name: str, slot: int | None = None) -> None:
        self.router = router
        self.name = name
        self.slot = slot
        self._plain: Pipeline | None = None
        self._pipes: dict[Address, Pipeline] = {}
        self._closed = False

    def submit(self, packed: bytes) -> asyncio.Future:
        """One framed command to the link's slot; the future gets its reply."""
        plain = self._plain
        if plain is not None:
            return plain.submit(packed)
        return self.send(self.slot, packed)

    def send(self, slot: int | None, packed: bytes) -> asyncio.Future:
        """One framed command to the master of `slot` (None: any node)."""
        plain = self._plain
        if plain is not None:
            return plain.submit(packed)
        router = self.router
        if router.slots is not None:
            return router.dispatch(self, slot, packed)
        if router.single is not None:
            if self._closed:
                raise ConnectionLost("connection closed")
            if self is router.shared:
                plain = router.single
            else:
                plain = Pipeline(router.seed, name=self.name)
            self._plain = plain
            return plain.submit(packed)
        if self._closed:
            raise ConnectionLost("connection closed")
        return router.after_discovery(lambda: self.send(slot, packed))

    def pipe_for(self, address: Address, *, owner: bool = False) -> Pipeline:
        """The link's connection to a cluster node; with `owner` (the node now serving the
        link's own slot) the connections to other nodes close once idle."""
        if self._closed:
            raise ConnectionLost("connection closed")
        pipe = self._pipes.get(address)
        if pipe is None:
            pipe = self._pipes[address] = Pipeline(self.router.seed.at(*address), name=self.name)
        if owner and self.slot is not None and len(self._pipes) > 1:
            for other in [a for a in self._pipes if a != address]:
                self._pipes.pop(other).close_when_idle()
        return pipe

    def keep_only(self, addresses: Iterable[Address]) -> None:
        """Close the connections to nodes that serve no slot any more (a failed master)."""
        keep = set(addresses)
        for address in [a for a in self._pipes if a not in keep]:
            self._pipes.pop(address).close_when_idle()

    @property
    def connected(self) -> bool:
        if self._plain is not None:
            return self._plain.connected
        return any(p.connected for p in self._pipes.values())

    def close(self) -> None:
        self._closed = True
        if self._plain is not None and self._plain is not self.router.single:
            self._plain.close()
        self._plain = None
        pipes, self._pipes = self._pipes, {}
        for pipe in pipes.values():
            pipe.close()
