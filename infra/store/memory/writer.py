"""The memory store's partition writer: the same batch semantics as the Redis `APPEND` script,
on Python structures (one event loop, no await inside a write: each write is atomic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from events.errors import Fenced
from infra.store.api import (
    APPENDED,
    UNSETTLED,
    AppendResult,
    CommandEntry,
    DueTimer,
    Snapshot,
    TimerFire,
)
from infra.store.memory.streams import position, wait_any

if TYPE_CHECKING:
    from infra.store.memory.store import MemoryStore

__all__ = ["MemoryAppendBatch", "MemoryPartitionWriter"]

GROUP = "workers"

# command kinds of a batch
_ACK, _REPEAT, _REFUSE, _SETTLE, _APPEND = range(5)


class MemoryAppendBatch:
    """See `api.AppendBatch`: the commands as plain values."""

    def __init__(self) -> None:
        self.slots: dict[str, int] = {}
        self.actor_ids: list[str] = []
        self.commands: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self.commands)

    def actor(self, actor_id: str) -> int:
        slot = self.slots.get(actor_id)
        if slot is None:
            slot = self.slots[actor_id] = len(self.slots) + 1
            self.actor_ids.append(actor_id)
        return slot

    def acknowledge(self, entry_id: bytes) -> None:
        self.commands.append((_ACK, entry_id, "", 0, -1, "", b"", (), (), (), (), None, None))

    def repeat(self, entry_id: bytes, command_id: str, reply_to: str) -> None:
        self.commands.append(
            (_REPEAT, entry_id, command_id, 0, -2, reply_to, b"", (), (), (), (), None, None)
        )

    def refuse(self, entry_id: bytes, command_id: str, reply_to: str, outcome: bytes) -> None:
        self.commands.append(
            (_REFUSE, entry_id, command_id, 0, -1, reply_to, outcome, (), (), (), (), None, None)
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
        self.commands.append(
            (
                _SETTLE,
                entry_id,
                command_id,
                actor,
                expected,
                reply_to,
                outcome,
                (),
                (),
                (),
                (),
                None,
                None,
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
        self.commands.append(
            (
                _APPEND,
                entry_id,
                command_id,
                actor,
                expected,
                reply_to,
                outcome,
                tuple(events),
                tuple(routed),
                tuple(timers_set),
                tuple(timers_removed),
                snapshot,
                change,
            )
        )


class MemoryPartitionWriter:
    """See `api.PartitionWriter`."""

    def __init__(
        self, store: MemoryStore, partition: int, epoch: int, consumer: str, *, outcome_ttl_ms: int
    ) -> None:
        self.store = store
        self.partition = partition
        self.epoch = epoch
        self.consumer = consumer
        self.outcome_ttl_ms = outcome_ttl_ms
        self.commands = store.command_stream(partition)
        self.commands.create_group(GROUP)

    @property
    def reading_ahead(self) -> bool:
        return False

    def _entries(self, got: list[tuple[str, Any]]) -> list[CommandEntry]:
        return [(pos.encode(), value) for pos, value in got]

    async def read_commands(self, count: int, block_ms: int) -> list[CommandEntry]:
        got = self.commands.read_new(GROUP, self.consumer, count)
        if not got and block_ms > 0:
            await wait_any([self.commands], block_ms)
            got = self.commands.read_new(GROUP, self.consumer, count)
        return self._entries(got)

    async def read_own_pending(self, count: int) -> list[CommandEntry]:
        return self._entries(self.commands.read_pending(GROUP, self.consumer, (0, 0), count))

    async def claim_pending(self, start: str, count: int) -> tuple[str, list[CommandEntry]]:
        after, got = self.commands.claim(GROUP, self.consumer, 0, position(start), count)
        return after, self._entries(got)

    def new_batch(self) -> MemoryAppendBatch:
        return MemoryAppendBatch()

    def _check_epoch(self) -> None:
        store = self.store
        if store.epochs.get(("worker", self.partition), 0) != self.epoch:
            key = ("worker", self.partition)
            store.fenced[key] = store.fenced.get(key, 0) + 1
            raise Fenced(f"partition {self.partition} epoch {self.epoch} fenced")

    async def append(
        self,
        batch: MemoryAppendBatch,
        *,
        read_ahead: bool = False,  # type: ignore[override]
    ) -> list[AppendResult]:
        self._check_epoch()
        store, p = self.store, self.partition
        versions: dict[int, int] = {}
        failed: set[int] = set()
        results: list[AppendResult] = []
        acks = []
        for (
            kind,
            entry_id,
            cid,
            actor,
            expected,
            reply_to,
            outcome,
            events,
            routed,
            tset,
            tremoved,
            snapshot,
            change,
        ) in batch.commands:
            stored = store.outcomes.get((p, cid)) if kind != _ACK else None
            if stored is not None:
                if reply_to:
                    store.publish(reply_to, stored)
                acks.append(entry_id)
                results.append(stored)
                continue
            if kind == _REPEAT:
                results.append(UNSETTLED)
                continue
            actor_id = batch.actor_ids[actor - 1] if actor else ""
            if actor and actor in failed:
                results.append(-(versions[actor] + 1))
                continue
            if actor and actor not in versions:
                versions[actor] = store.last_version(p, actor_id)
            if actor and expected >= 0 and versions[actor] != expected:
                failed.add(actor)
                results.append(-(versions[actor] + 1))
                continue
            if events:
                stream = store.event_stream(p, actor_id)
                log = store.log_stream(p)
                for k, event in enumerate(events):
                    stream.add(event, (expected + k + 1, 0))
                    log.add(event)
                versions[actor] = expected + len(events)
            for command in routed:
                self.commands.add(command)
            timers = store.timers.setdefault(p, {})
            for key, due in tset:
                timers[(actor_id, key)] = due
            for key in tremoved:
                timers.pop((actor_id, key), None)
            if snapshot is not None:
                store.snapshots[(p, actor_id)] = snapshot
            if change is not None:
                store.publish_change(*change)
            if outcome:
                store.outcomes.set((p, cid), outcome, self.outcome_ttl_ms)
                if reply_to:
                    store.publish(reply_to, outcome)
            acks.append(entry_id)
            results.append(APPENDED)
        self.commands.ack(GROUP, [position(a.decode()) for a in acks])
        return results

    async def due_timers(self, now: int, limit: int) -> list[DueTimer]:
        timers = self.store.timers.get(self.partition, {})
        due = sorted((d, a, k) for (a, k), d in timers.items() if d <= now)
        return [DueTimer(a, k, d) for d, a, k in due[:limit]]

    async def fire_timers(self, fires: Sequence[TimerFire]) -> int:
        if not fires:
            return 0
        self._check_epoch()
        timers = self.store.timers.setdefault(self.partition, {})
        fired = 0
        for fire in fires:
            member = (fire.actor_id, fire.key)
            if timers.get(member) == fire.due:
                if fire.command is not None:
                    self.commands.add(fire.command)
                    fired += 1
                del timers[member]
        return fired

    async def trim_commands(self) -> int:
        group = self.commands.groups[GROUP]
        floor = min(group.pending) if group.pending else (group.last[0], group.last[1])
        if floor == (0, 0):
            return 0
        return self.commands.trim_below(floor)

    async def close(self) -> None:
        return None
