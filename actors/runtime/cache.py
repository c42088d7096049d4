"""The in-memory actor cache: `(version, state)` per actor, LRU-bounded, passivated when idle.

The cache is an optimisation only: the append script checks every expected version, so a stale
entry costs a reload, never a wrong write.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from actors.decider import Decider, Timer

__all__ = ["ActorCache", "CachedActor"]


class CachedActor:
    """One actor as the runtime last saw it durably appended."""

    __slots__ = (
        "actor_id",
        "decider",
        "last_used",
        "partition",
        "snap_version",
        "state",
        "timers",
        "version",
    )

    def __init__(
        self,
        actor_id: str,
        partition: int,
        decider: Decider[Any],
        version: int,
        state: Any,
        snap_version: int = 0,
        timers: dict[str, Timer] | None = None,
    ) -> None:
        self.actor_id = actor_id
        self.partition = partition
        self.decider = decider
        self.version = version
        self.state = state
        self.snap_version = snap_version
        self.timers = timers  # deadlines(state) by key, computed lazily
        self.last_used = time.monotonic()

    def deadlines(self) -> dict[str, Timer]:
        if self.timers is None:
            self.timers = {t.key: t for t in self.decider.deadlines(self.state)}
        return self.timers


class ActorCache:
    """LRU of `CachedActor`s by actor id, at most `max_actors`."""

    def __init__(self, max_actors: int) -> None:
        self.max_actors = max_actors
        self._actors: OrderedDict[str, CachedActor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._actors)

    def __iter__(self) -> Iterator[CachedActor]:
        return iter(list(self._actors.values()))

    def get(self, actor_id: str) -> CachedActor | None:
        actor = self._actors.get(actor_id)
        if actor is not None:
            self._actors.move_to_end(actor_id)
            actor.last_used = time.monotonic()
        return actor

    def put(self, actor: CachedActor) -> None:
        actor.last_used = time.monotonic()
        self._actors[actor.actor_id] = actor
        self._actors.move_to_end(actor.actor_id)
        while len(self._actors) > self.max_actors:
            self._actors.popitem(last=False)

    def discard(self, actor_id: str) -> None:
        self._actors.pop(actor_id, None)

    def drop_partition(self, partition: int) -> int:
        """Forget every actor of `partition` (its lease is gone: another owner may write)."""
        doomed = [a for a, e in self._actors.items() if e.partition == partition]
        for actor_id in doomed:
            del self._actors[actor_id]
        return len(doomed)

    def passivate(self, idle_s: float, now: float | None = None) -> int:
        """Evict actors unused for `idle_s` seconds (the LRU order makes this a prefix scan)."""
        limit = (time.monotonic() if now is None else now) - idle_s
        evicted = 0
        while self._actors:
            actor = next(iter(self._actors.values()))
            if actor.last_used > limit:
                break
            self._actors.popitem(last=False)
            evicted += 1
        return evicted
