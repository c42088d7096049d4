"""The backend-neutral half of a command sender: envelopes, waiters and the wait for an outcome.

`send` queues a `CommandEnvelope` on the actor's partition command stream with a command id
(the idempotency key: a retry with the same id gets the first outcome and appends nothing) and,
when asked to wait, the sender's reply channel. The worker publishes the `Outcome` there; if the
reply is missed (a race, a reconnect) the sender reads the stored outcome before giving up.
A backend supplies the transport: `_queue`, `_stored`, `_subscribe` and `_close_transport`, and
calls `_on_reply` with each reply it receives.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from abc import ABC, abstractmethod

import msgspec

from events.base import Command
from events.codec import decode_outcome, encode
from events.envelope import Outcome
from events.errors import StoreUnavailable
from infra.store.envelopes import build_envelope
from infra.store.routing import partition_of
from infra.tracing import traceparent

__all__ = ["RECHECK_S", "SenderBase"]

log = logging.getLogger("sessiond.store")

#: How often a waiting `send` re-checks the stored outcome in case the reply was missed.
RECHECK_S = 1.0


def _expire(fut: asyncio.Future) -> None:
    """A waiting `send`'s re-check time came: wake it with None (no outcome yet)."""
    if not fut.done():
        fut.set_result(None)


class SenderBase(ABC):
    """See `api.CommandSender`; `channel` is what envelopes name as `reply_to`."""

    recheck_s = RECHECK_S

    def __init__(self, partitions: int, name: str | None) -> None:
        self.partitions = partitions
        self.name = name or uuid.uuid4().hex
        self.channel = self._channel_name()
        self._waiters: dict[str, list[asyncio.Future[Outcome | None]]] = {}
        self._started = False
        self._starting: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ the backend's part
    @abstractmethod
    def _channel_name(self) -> str: ...

    @abstractmethod
    async def _queue(self, partition: int, payload: bytes) -> None:
        """Append `payload` to the partition's command stream (raises StoreUnavailable)."""

    @abstractmethod
    async def _stored(self, partition: int, command_id: str) -> bytes | None:
        """The stored outcome of a command id."""

    @abstractmethod
    async def _subscribe(self) -> None:
        """Start receiving replies on `channel` (raises StoreUnavailable)."""

    @abstractmethod
    async def _close_transport(self) -> None: ...

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._started:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._subscribe())
        starting = self._starting
        try:
            await asyncio.shield(starting)
            self._started = True
        finally:
            if starting.done() and self._starting is starting and not self._started:
                self._starting = None  # failed: the next call tries again

    async def close(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
        self._started = False
        await self._close_transport()
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> SenderBase:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ replies
    def _on_reply(self, data: bytes) -> None:
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

    # ------------------------------------------------------------------ sending
    async def enqueue(self, partition: int, payload: bytes) -> None:
        await self._queue(partition, payload)

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
        if wait and not self._started:
            await self.start()
        env = build_envelope(
            actor_id,
            session_id,
            command,
            partitions=self.partitions,
            command_id=command_id,
            correlation_id=correlation_id,
            reply_to=self.channel if wait else "",
            fingerprint=fingerprint,
            traceparent=traceparent(),  # the caller's span, if any: the worker's parent
        )
        if not wait:
            await self._queue(env.partition, encode(env))
            return None
        cid = env.command_id
        fut = self._wait_for(cid)  # before queueing: the reply may beat the acknowledgement
        try:
            await self._queue(env.partition, encode(env))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                if not fut.done():
                    timer = loop.call_later(
                        min(deadline - loop.time(), self.recheck_s), _expire, fut
                    )
                    try:
                        await fut
                    finally:
                        timer.cancel()
                outcome = fut.result()
                if outcome is not None:
                    return outcome
                # no reply yet: maybe it was missed; the stored outcome tells
                stored = await self._stored(env.partition, cid)
                if stored is not None:
                    return decode_outcome(stored)
                if loop.time() >= deadline:
                    raise StoreUnavailable(
                        f"no outcome for command {cid} within {timeout:g}s (is a worker running?)"
                    )
                self._unwait(cid, fut)
                fut = self._wait_for(cid)
        finally:
            self._unwait(cid, fut)

    async def outcome(self, session_id: str, command_id: str) -> Outcome | None:
        raw = await self._stored(partition_of(session_id, self.partitions), command_id)
        return decode_outcome(raw) if raw else None
