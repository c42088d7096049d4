"""Sending commands to actors and waiting for their outcomes.

`CommandBus.send` XADDs a `CommandEnvelope` to the actor's partition command stream with a
command id (the idempotency key: a retry with the same id gets the first outcome and appends
nothing) and, when asked to wait, the name of this bus's reply channel. The worker PUBLISHes the
`Outcome` there; if the reply is missed (a race, a reconnect) the bus reads the outcome key,
which the worker stores with the append, before giving up.

The hot path bypasses redis-py (see `infra.redis_raw`): every XADD of one event-loop turn goes
out in one write on the bus's own connection, replies matched in order, and the reply channel
is read by a raw subscriber connection. Commands of one bus reach Redis in the order `send` was
called. When that connection breaks, the commands in flight fail with `StoreUnavailable` (they
may or may not have been queued: retrying with the same command id is safe) and the next
`send` reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import uuid
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from actors import keys
from events.base import Command
from events.codec import decode_outcome, encode, type_name
from events.envelope import CommandEnvelope, Outcome
from events.errors import StoreUnavailable
from infra.redis_raw import Endpoint, Pipeline, Subscriber, pack

__all__ = ["CommandBus", "build_envelope", "new_command_id"]

log = logging.getLogger("sessiond.client")

#: How often a waiting `send` re-checks the stored outcome in case the reply was missed.
_RECHECK_S = 1.0


class _CommandIds:
    """UUID-shaped command ids: a random per-process prefix (74 random bits, re-drawn in a
    forked child) and a counter. Globally unique like `uuid4`, without a `urandom` call each."""

    def __init__(self) -> None:
        self._reseed()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        h = os.urandom(10).hex()
        variant = "89ab"[int(h[15], 16) & 3]
        self.prefix = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{variant}{h[16:19]}-"
        self.counter = itertools.count(int(h[19], 16) << 40)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


#: A new globally unique command id (UUID-shaped).
new_command_id = _CommandIds()


def build_envelope(
    actor_id: str,
    session_id: str,
    command: Command,
    *,
    partitions: int = keys.DEFAULT_PARTITIONS,
    command_id: str | None = None,
    correlation_id: str = "",
    causation_id: str = "",
    reply_to: str = "",
    fingerprint: str = "",
) -> CommandEnvelope:
    """The envelope of `command` for `actor_id`; the partition follows from the session id.
    `fingerprint` (a digest of what the sender asked for) comes back in the outcome, so a
    sender reusing a command id for another request can tell."""
    cid = command_id or new_command_id()
    return CommandEnvelope(
        command_id=cid,
        actor_id=actor_id,
        partition=keys.partition_of(session_id, partitions),
        ts=command.at,
        type=type_name(command),
        data=msgspec.Raw(encode(command)),
        correlation_id=correlation_id or cid,
        causation_id=causation_id,
        reply_to=reply_to,
        fingerprint=fingerprint,
    )


def _expire(fut: asyncio.Future) -> None:
    """A waiting `send`'s re-check time came: wake it with None (no outcome yet)."""
    if not fut.done():
        fut.set_result(None)


class CommandBus:
    """Sends commands; one reply channel per bus (per process, typically).

    `redis` (a redis-py client) says where Redis is; the bus opens its own two connections
    there (commands, replies) and uses `redis` for nothing else.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        partitions: int = keys.DEFAULT_PARTITIONS,
        name: str | None = None,
    ) -> None:
        self.redis = redis
        self.partitions = partitions
        self.name = name or uuid.uuid4().hex
        self.channel = keys.reply_channel(self.name)
        self._waiters: dict[str, list[asyncio.Future[Outcome | None]]] = {}
        self._endpoint: Endpoint | None = None
        self._pipe: Pipeline | None = None
        self._sub: Subscriber | None = None
        self._starting: asyncio.Future[None] | None = None

    def _endpoint_of(self) -> Endpoint:
        if self._endpoint is None:
            self._endpoint = Endpoint.of(self.redis)
        return self._endpoint

    def _pipeline(self) -> Pipeline:
        pipe = self._pipe
        if pipe is None:
            pipe = self._pipe = Pipeline(self._endpoint_of(), name=f"sd-bus-{self.name}")
        return pipe

    async def start(self) -> None:
        """Subscribe the reply channel (idempotent)."""
        if self._sub is not None:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        finally:
            if starting.done() and self._starting is starting and self._sub is None:
                self._starting = None  # failed: the next call tries again

    async def _start(self) -> None:
        sub = Subscriber(self._endpoint_of(), self._on_reply, name=f"sd-bus-{self.name}-replies")
        try:
            await sub.start()
            await sub.subscribe(self.channel)
        except BaseException:
            await sub.close()
            raise
        self._sub = sub

    async def close(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
        if self._sub is not None:
            await self._sub.close()
            self._sub = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> CommandBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_reply(self, channel: bytes, data: bytes) -> None:
        try:
            outcome = decode_outcome(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("undecodable reply on %s", self.channel)
            return
        waiters = self._waiters.get(outcome.command_id)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(outcome)

    def _wait_for(self, cid: str) -> asyncio.Future[Outcome | None]:
        fut: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.get(cid)
        if waiters is None:
            self._waiters[cid] = [fut]
        else:  # the same command id sent again while the first is still waiting
            waiters.append(fut)
        return fut

    def _unwait(self, cid: str, fut: asyncio.Future) -> None:
        waiters = self._waiters.get(cid)
        if waiters is not None:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                del self._waiters[cid]

    async def _call(self, packed: bytes, what: str) -> Any:
        try:
            return await self._pipeline().submit(packed)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"could not {what}: {exc}") from exc

    async def send(
        self,
        actor_id: str,
        session_id: str,
        command: Command,
        *,
        command_id: str | None = None,
        correlation_id: str = "",
        wait: bool = True,
        timeout: float = 5.0,
        fingerprint: str = "",
    ) -> Outcome | None:
        """Send `command` to `actor_id` (in `session_id`'s partition).

        With `wait`, returns the `Outcome` (`ok` False = a domain error, see `error_code`);
        raises `StoreUnavailable` when Redis fails or no outcome arrives within `timeout`.
        Without `wait`, returns None once the command is durably queued. The outcome of a
        command id that was settled before is the first one, with the first `fingerprint`.
        """
        if wait and self._sub is None:
            try:
                await self.start()
            except (RedisError, OSError) as exc:
                raise StoreUnavailable(f"could not subscribe the reply channel: {exc}") from exc
        env = build_envelope(
            actor_id,
            session_id,
            command,
            partitions=self.partitions,
            command_id=command_id,
            correlation_id=correlation_id,
            reply_to=self.channel if wait else "",
            fingerprint=fingerprint,
        )
        packed = pack((b"XADD", keys.command_stream(env.partition), b"*", b"c", encode(env)))
        if not wait:
            await self._call(packed, "queue the command")
            return None
        cid = env.command_id
        fut = self._wait_for(cid)  # before the XADD: the reply may beat its acknowledgement
        try:
            await self._call(packed, "queue the command")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                if not fut.done():
                    timer = loop.call_later(min(deadline - loop.time(), _RECHECK_S),
                                            _expire, fut)
                    try:
                        await fut
                    finally:
                        timer.cancel()
                outcome = fut.result()
                if outcome is not None:
                    return outcome
                # no reply yet: maybe it was missed; the stored outcome tells
                stored = await self._stored_outcome(env.partition, cid)
                if stored is not None:
                    return stored
                if loop.time() >= deadline:
                    raise StoreUnavailable(
                        f"no outcome for command {cid} within {timeout:g}s "
                        "(is a worker running?)"
                    )
                self._unwait(cid, fut)
                fut = self._wait_for(cid)
        finally:
            self._unwait(cid, fut)

    async def outcome(self, session_id: str, command_id: str) -> Outcome | None:
        """The stored outcome of an earlier command, if it is settled (and not expired)."""
        return await self._stored_outcome(keys.partition_of(session_id, self.partitions),
                                          command_id)

    async def _stored_outcome(self, partition: int, command_id: str) -> Outcome | None:
        raw = await self._call(pack((b"GET", keys.outcome_key(partition, command_id))),
                               "read the outcome")
        return decode_outcome(raw) if raw else None
