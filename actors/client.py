"""Sending commands to actors and waiting for their outcomes.

`CommandBus.send` XADDs a `CommandEnvelope` to the actor's partition command stream with a
command id (the idempotency key: a retry with the same id gets the first outcome and appends
nothing) and, when asked to wait, the name of this bus's reply channel. The worker PUBLISHes the
`Outcome` there; if the reply is missed (a race, a reconnect) the bus reads the outcome key,
which the worker stores with the append, before giving up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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

__all__ = ["CommandBus", "build_envelope"]

log = logging.getLogger("sessiond.client")

#: How often a waiting `send` re-checks the stored outcome in case the reply was missed.
_RECHECK_S = 1.0


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
) -> CommandEnvelope:
    """The envelope of `command` for `actor_id`; the partition follows from the session id."""
    cid = command_id or str(uuid.uuid4())
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
    )


class CommandBus:
    """Sends commands; one reply channel per bus (per process, typically)."""

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
        self._waiters: dict[str, asyncio.Future[Outcome]] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def start(self) -> None:
        """Subscribe the reply channel (idempotent)."""
        if self._reader is not None:
            await self._started.wait()
            return
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel)
        self._reader = asyncio.create_task(self._read_replies(), name=f"replies-{self.name}")
        self._started.set()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(self.channel)
                await self._pubsub.aclose()
            self._pubsub = None
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> CommandBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read_replies(self) -> None:
        backoff = 0.05
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        outcome = decode_outcome(message["data"])
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        log.warning("undecodable reply on %s", self.channel)
                        continue
                    fut = self._waiters.get(outcome.command_id)
                    if fut is not None and not fut.done():
                        fut.set_result(outcome)
                    backoff = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # waiters fall back to reading outcome keys; keep trying to resubscribe
                log.warning("reply channel %s lost: %s", self.channel, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.subscribe(self.channel)

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
    ) -> Outcome | None:
        """Send `command` to `actor_id` (in `session_id`'s partition).

        With `wait`, returns the `Outcome` (`ok` False = a domain error, see `error_code`);
        raises `StoreUnavailable` when Redis fails or no outcome arrives within `timeout`.
        Without `wait`, returns None once the command is durably queued.
        """
        if wait and self._reader is None:
            await self.start()
        env = build_envelope(
            actor_id,
            session_id,
            command,
            partitions=self.partitions,
            command_id=command_id,
            correlation_id=correlation_id,
            reply_to=self.channel if wait else "",
        )
        stream = keys.command_stream(env.partition)
        if not wait:
            try:
                await self.redis.xadd(stream, {"c": encode(env)})
            except (RedisError, OSError) as exc:
                raise StoreUnavailable(f"could not queue the command: {exc}") from exc
            return None
        cid = env.command_id
        fut = self._waiters.get(cid)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            self._waiters[cid] = fut
        try:
            try:
                await self.redis.xadd(stream, {"c": encode(env)})
            except (RedisError, OSError) as exc:
                raise StoreUnavailable(f"could not queue the command: {exc}") from exc
            return await self._await_outcome(fut, env, timeout)
        finally:
            if self._waiters.get(cid) is fut:
                del self._waiters[cid]

    async def _await_outcome(
        self, fut: asyncio.Future[Outcome], env: CommandEnvelope, timeout: float
    ) -> Outcome:
        deadline = time.monotonic() + timeout
        okey = keys.outcome_key(env.partition, env.command_id)
        while True:
            left = deadline - time.monotonic()
            try:
                return await asyncio.wait_for(asyncio.shield(fut), min(left, _RECHECK_S))
            except TimeoutError:
                pass
            try:
                stored = await self.redis.get(okey)
            except (RedisError, OSError) as exc:
                raise StoreUnavailable(f"could not read the outcome: {exc}") from exc
            if stored:
                return decode_outcome(stored)
            if time.monotonic() >= deadline:
                raise StoreUnavailable(
                    f"no outcome for command {env.command_id} within {timeout:g}s "
                    "(is a worker running?)"
                )

    async def outcome(self, session_id: str, command_id: str) -> Outcome | None:
        """The stored outcome of an earlier command, if it is settled (and not expired)."""
        part = keys.partition_of(session_id, self.partitions)
        raw = await self.redis.get(keys.outcome_key(part, command_id))
        return decode_outcome(raw) if raw else None
