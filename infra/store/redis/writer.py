"""The Redis partition writer: command reads, the one-script batch append, timers.

The hot path runs on a connection of the writer's own, to the master of the partition's slot:
`read_commands` blocks there, and an append with `read_ahead` sends the next XREADGROUP in the
same socket write, so the runner is waiting for the next batch as soon as Redis has run the
append (one write and one wake-up less per batch). Everything else goes through the store's
shared link. `RedisAppendBatch`
frames the append script's arguments in RESP while the planner adds commands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import msgspec

from events.errors import Fenced, StoreUnavailable
from infra.store import layout
from infra.store.api import AppendResult, CommandEntry, DueTimer, Snapshot, TimerFire
from infra.store.redis.client import RedisClient, flat_pairs
from infra.store.redis.cluster import key_slot
from infra.store.redis.connection import ReplyError
from infra.store.redis.lua import APPEND, FIRE_TIMERS
from infra.store.redis.resp import EMPTY, frame, frame_int, frame_str, pack

__all__ = ["RedisAppendBatch", "RedisPartitionWriter", "command_entries"]

_encode = msgspec.msgpack.encode
_SMALL = [frame_int(i) for i in range(-2, 1025)]  # framed ints, index n + 2
_NONE = frame_int(0)
_NO_CHECK = frame_int(-1)
_REPEAT = frame_int(-2)
#: no events, routed, timers; no snapshot, no change to publish
_NOOP_TAIL = (_NONE, _NONE, _NONE, _NONE, EMPTY, EMPTY, EMPTY)
_EVALSHA = frame(b"EVALSHA")
_APPEND_SHA = frame_str(APPEND.sha)
#: framed stream and snapshot keys per actor, kept across batches (bounded)
_KEY_CACHE_MAX = 100_000


def command_entries(entries: Any) -> list[CommandEntry]:
    """(entry id, `c` field) of raw stream entries [[id, [field, value, ...]], ...]; an entry
    without fields (deleted) or without `c` gets None."""
    out: list[CommandEntry] = []
    for entry in entries or ():
        if not entry or entry[0] is None:
            continue
        entry_id, fields = entry[0], entry[1]
        if fields and fields[0] == b"c":
            out.append((entry_id, fields[1]))
        elif fields:
            out.append((entry_id, flat_pairs(fields).get(b"c")))
        else:
            out.append((entry_id, None))
    return out


def _read_entries(reply: Any) -> list[CommandEntry]:
    """The entries of a one-stream XREADGROUP reply ([[stream, entries]] or None)."""
    if not reply:
        return []
    return command_entries(reply[0][1])


class RedisAppendBatch:
    """One `APPEND` call being built (see `api.AppendBatch` and `lua.APPEND`'s layout): the
    keys and arguments are kept RESP-framed."""

    __slots__ = (
        "_keys",
        "_out_prefix",
        "_partition",
        "actor_ids",
        "actor_keys",
        "argv",
        "out_keys",
        "slots",
    )

    def __init__(self, partition: int, key_cache: dict[str, bytes]) -> None:
        self._partition = partition
        self._keys = key_cache
        self._out_prefix = layout.outcome_key(partition, "")
        self.slots: dict[str, int] = {}
        self.actor_ids: list[str] = []
        self.actor_keys: list[bytes] = []  # per actor: its stream and snapshot keys, framed
        self.out_keys: list[bytes] = []  # per command: its outcome key, framed
        self.argv: list[bytes] = []

    def __len__(self) -> int:
        return len(self.out_keys)

    def actor(self, actor_id: str) -> int:
        slot = self.slots.get(actor_id)
        if slot is None:
            slot = self.slots[actor_id] = len(self.slots) + 1
            framed = self._keys.get(actor_id)
            if framed is None:
                if len(self._keys) >= _KEY_CACHE_MAX:
                    self._keys.clear()
                p = self._partition
                framed = self._keys[actor_id] = frame_str(
                    layout.event_stream(p, actor_id)
                ) + frame_str(layout.snapshot_key(p, actor_id))
            self.actor_ids.append(actor_id)
            self.actor_keys.append(framed)
        return slot

    def _out_key(self, command_id: str) -> None:
        okey = (self._out_prefix + command_id).encode()
        self.out_keys.append(b"$%d\r\n%b\r\n" % (len(okey), okey))

    def acknowledge(self, entry_id: bytes) -> None:
        self._out_key("")  # a key no command has: nothing is stored there
        self.argv.extend((frame(entry_id), _NONE, _NO_CHECK, EMPTY, EMPTY, *_NOOP_TAIL))

    def repeat(self, entry_id: bytes, command_id: str, reply_to: str) -> None:
        self._out_key(command_id)
        self.argv.extend((frame(entry_id), _NONE, _REPEAT, frame_str(reply_to), EMPTY, *_NOOP_TAIL))

    def refuse(self, entry_id: bytes, command_id: str, reply_to: str, outcome: bytes) -> None:
        self._out_key(command_id)
        self.argv.extend(
            (frame(entry_id), _NONE, _NO_CHECK, frame_str(reply_to), frame(outcome), *_NOOP_TAIL)
        )

    def settle(
        self,
        entry_id: bytes,
        command_id: str,
        actor: int,
        expected: int,
        reply_to: str,
        outcome: bytes,
    ) -> None:
        self._out_key(command_id)
        self.argv.extend(
            (
                frame(entry_id),
                frame_int(actor),
                frame_int(expected),
                frame_str(reply_to) if reply_to else EMPTY,
                frame(outcome),
                *_NOOP_TAIL,
            )
        )

    def append(
        self,
        entry_id: bytes,
        command_id: str,
        actor: int,
        expected: int,
        reply_to: str,
        outcome: bytes,
        events: Sequence[bytes],
        routed: Sequence[bytes],
        timers_set: Sequence[tuple[str, int]],
        timers_removed: Sequence[str],
        snapshot: Snapshot | None,
        change: tuple[str, bytes] | None = None,
    ) -> None:
        # the hot path of planning: framed inline, small counts from the table
        okey = (self._out_prefix + command_id).encode()
        self.out_keys.append(b"$%d\r\n%b\r\n" % (len(okey), okey))
        small = _SMALL
        argv = self.argv
        n = len(events)
        argv.extend(
            (
                b"$%d\r\n%b\r\n" % (len(entry_id), entry_id),
                small[actor + 2] if actor <= 1024 else frame_int(actor),
                frame_int(expected),
                frame_str(reply_to) if reply_to else EMPTY,
                b"$%d\r\n%b\r\n" % (len(outcome), outcome),
                small[n + 2] if n <= 1024 else frame_int(n),
            )
        )
        if n == 1:
            event = events[0]
            argv.append(b"$%d\r\n%b\r\n" % (len(event), event))
        else:
            argv.extend([b"$%d\r\n%b\r\n" % (len(e), e) for e in events])
        if routed:
            argv.append(frame_int(len(routed)))
            argv.extend([b"$%d\r\n%b\r\n" % (len(r), r) for r in routed])
        else:
            argv.append(_NONE)
        if timers_set:
            argv.append(frame_int(len(timers_set)))
            prefix = self.actor_ids[actor - 1] + "|"
            for key, due in timers_set:
                argv.append(frame_str(prefix + key))
                argv.append(frame(b"%d" % due))
        else:
            argv.append(_NONE)
        if timers_removed:
            argv.append(frame_int(len(timers_removed)))
            prefix = self.actor_ids[actor - 1] + "|"
            argv.extend(frame_str(prefix + key) for key in timers_removed)
        else:
            argv.append(_NONE)
        if snapshot is None:
            argv.append(EMPTY)
        else:  # msgpack [version, state]: a 2-array header, then the two encoded values
            argv.append(frame(b"\x92" + _encode(snapshot.version) + snapshot.state))
        if change is None:
            argv.extend((EMPTY, EMPTY))
        else:
            session_id, message = change
            argv.append(frame_str(layout.change_channel(self._partition, session_id)))
            argv.append(b"$%d\r\n%b\r\n" % (len(message), message))

    def packed(self, fixed_keys: bytes, epoch: int, group: bytes, ttl_ms: int) -> bytes:
        """The whole EVALSHA of `APPEND`, RESP-framed (`fixed_keys`: the 5 partition keys)."""
        n_keys = 5 + 2 * len(self.actor_keys) + len(self.out_keys)
        argc = 3 + n_keys + 5 + len(self.argv)
        return b"".join(
            (
                b"*%d\r\n" % argc,
                _EVALSHA,
                _APPEND_SHA,
                frame_int(n_keys),
                fixed_keys,
                *self.actor_keys,
                *self.out_keys,
                frame_int(epoch),
                group,
                frame_int(ttl_ms),
                frame_int(len(self.slots)),
                frame_int(len(self.out_keys)),
                *self.argv,
            )
        )


class RedisPartitionWriter:
    """See `api.PartitionWriter`."""

    def __init__(
        self,
        client: RedisClient,
        partition: int,
        epoch: int,
        consumer: str,
        *,
        outcome_ttl_ms: int,
        key_cache: dict[str, bytes],
    ) -> None:
        self.client = client
        self.partition = partition
        self.epoch = epoch
        self.consumer = consumer
        self.outcome_ttl_ms = outcome_ttl_ms
        self._keys = key_cache
        self.stream = layout.command_stream(partition)
        p = partition
        self._fixed = b"".join(
            frame_str(k)
            for k in (
                layout.epoch_key(p),
                layout.partition_log(p),
                layout.command_stream(p),
                layout.timers_key(p),
                layout.fenced_key(p),
            )
        )
        self._group = frame_str(layout.COMMAND_GROUP)
        self._slot = key_slot(self.stream)
        self._pipe = client.dedicated(f"{consumer}-p{partition}", self.stream)
        self._next_read: asyncio.Future[Any] | None = None
        self._read_args = (500, 100)
        self._read_packed = self._pack_read(*self._read_args)
        self._group_ready = False

    # ------------------------------------------------------------------ reading
    def _pack_read(self, count: int, block_ms: int) -> bytes:
        return pack(
            (
                "XREADGROUP",
                "GROUP",
                layout.COMMAND_GROUP,
                self.consumer,
                "COUNT",
                count,
                "BLOCK",
                block_ms,
                "STREAMS",
                self.stream,
                ">",
            )
        )

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.call(
                "XGROUP", "CREATE", self.stream, layout.COMMAND_GROUP, "0", "MKSTREAM"
            )
        except ReplyError as exc:
            if not exc.reply.startswith("BUSYGROUP"):
                raise
        self._group_ready = True

    def _lost_group(self, exc: ReplyError) -> None:
        if exc.reply.startswith("NOGROUP"):  # Redis lost it (a restart without persistence)
            self._group_ready = False

    @property
    def reading_ahead(self) -> bool:
        return self._next_read is not None

    async def read_commands(self, count: int, block_ms: int) -> list[CommandEntry]:
        read, self._next_read = self._next_read, None
        if read is None:
            if (count, block_ms) != self._read_args:
                self._read_args = (count, block_ms)
                self._read_packed = self._pack_read(count, block_ms)
            await self._ensure_group()
            read = self._pipe.submit(self._read_packed)
        try:
            return _read_entries(await read)
        except ReplyError as exc:
            self._lost_group(exc)
            raise

    async def _drain(self) -> None:
        """Wait for a read sent ahead and drop its answer (its entries stay pending for us)."""
        read, self._next_read = self._next_read, None
        if read is not None:
            with contextlib.suppress(StoreUnavailable):
                await read

    async def read_own_pending(self, count: int) -> list[CommandEntry]:
        await self._drain()
        await self._ensure_group()
        try:
            reply = await self.client.call(
                "XREADGROUP",
                "GROUP",
                layout.COMMAND_GROUP,
                self.consumer,
                "COUNT",
                count,
                "STREAMS",
                self.stream,
                "0",
            )
        except ReplyError as exc:
            self._lost_group(exc)
            raise
        return _read_entries(reply)

    async def claim_pending(self, start: str, count: int) -> tuple[str, list[CommandEntry]]:
        await self._drain()
        await self._ensure_group()
        try:
            reply = await self.client.call(
                "XAUTOCLAIM",
                self.stream,
                layout.COMMAND_GROUP,
                self.consumer,
                0,
                start,
                "COUNT",
                count,
            )
        except ReplyError as exc:
            self._lost_group(exc)
            raise
        return reply[0].decode(), command_entries(reply[1])

    # ------------------------------------------------------------------ writing
    def new_batch(self) -> RedisAppendBatch:
        return RedisAppendBatch(self.partition, self._keys)

    def _fenced(self) -> Fenced:
        return Fenced(f"partition {self.partition} epoch {self.epoch} fenced")

    async def append(
        self,
        batch: RedisAppendBatch,
        *,
        read_ahead: bool = False,  # type: ignore[override]
    ) -> list[AppendResult]:
        packed = batch.packed(self._fixed, self.epoch, self._group, self.outcome_ttl_ms)
        if self._next_read is not None:
            # a read sent ahead may block our own connection until entries arrive
            reply = self.client.send(self._slot, packed)
        else:
            reply = self._pipe.submit(packed)
            if read_ahead:
                self._next_read = self._pipe.submit(self._read_packed)
        try:
            return await reply
        except ReplyError as exc:
            if _is_fenced(exc.reply):
                raise self._fenced() from None
            if not exc.reply.startswith("NOSCRIPT"):
                raise
        except StoreUnavailable:
            read = self._next_read
            if read is not None and read.done():  # failed with the append: nothing to wait for
                self._next_read = None
            raise
        # the server lost its scripts (a restart, SCRIPT FLUSH, a failover): load, append again
        await self.client.load(APPEND, self._slot)
        try:
            return await self.client.send(self._slot, packed)
        except ReplyError as exc:
            if _is_fenced(exc.reply):
                raise self._fenced() from None
            raise

    # ------------------------------------------------------------------ timers
    async def due_timers(self, now_ms: int, limit: int) -> list[DueTimer]:
        reply = await self.client.call(
            "ZRANGEBYSCORE",
            layout.timers_key(self.partition),
            "-inf",
            now_ms,
            "WITHSCORES",
            "LIMIT",
            0,
            limit,
        )
        out = []
        for i in range(0, len(reply), 2):
            actor_id, _, key = reply[i].decode().partition("|")
            out.append(DueTimer(actor_id, key, int(float(reply[i + 1]))))
        return out

    async def fire_timers(self, fires: Sequence[TimerFire]) -> int:
        if not fires:
            return 0
        p = self.partition
        args: list[Any] = [self.epoch, len(fires)]
        for fire in fires:
            args.extend(
                (layout.timer_member(fire.actor_id, fire.key), fire.due, fire.command or b"")
            )
        try:
            fired = await self.client.run(
                FIRE_TIMERS,
                [layout.epoch_key(p), layout.timers_key(p), self.stream, layout.fenced_key(p)],
                args,
            )
        except ReplyError as exc:
            if _is_fenced(exc.reply):
                raise self._fenced() from None
            raise
        return int(fired)

    # ------------------------------------------------------------------ housekeeping
    async def trim_commands(self) -> int:
        groups = await self.client.call("XINFO", "GROUPS", self.stream)
        info = next(
            (
                flat_pairs(g)
                for g in groups
                if flat_pairs(g).get(b"name") == layout.COMMAND_GROUP.encode()
            ),
            None,
        )
        if info is None:
            return 0
        if info.get(b"pending"):
            summary = await self.client.call("XPENDING", self.stream, layout.COMMAND_GROUP)
            minid = summary[1]
        else:
            minid = info.get(b"last-delivered-id")
        if not minid or minid == b"0-0":
            return 0
        return int(await self.client.call("XTRIM", self.stream, "MINID", minid))

    async def close(self) -> None:
        self._next_read = None
        self._pipe.close()


def _is_fenced(reply: str) -> bool:
    """Whether a script's error reply is the fencing refusal: ``FENCED`` from Redis 6, which
    Redis >= 7 and Valkey send as ``ERR FENCED`` (they prefix an error without a known code)."""
    return reply.startswith("FENCED") or reply.startswith("ERR FENCED")
