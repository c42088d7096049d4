"""Time travel over one actor's history: the state after any version, and what it changed.

The state is the read model's view of the actor, folded with the projector's own pure code
(`projections.model`): for a session its aggregate (the session row with its metadata, its
devices, its shared state, its handoffs), for a simulator its `simulator.instances` row. The
console shows these because they are what every other page of it shows (and what the tables
held at that version); the deciders' `evolve` stays with the actors (the gateway, which serves
the console, may not import `actors/`), and `sessiond replay` prints the decider's state.

`Timeline` keeps the decoded events and a checkpoint of the state every `every` versions, so
the state at any version is a checkpoint plus fewer than `every` folds: microseconds, however
long the history. It grows by appending the events that arrived since (`extend`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from events.codec import decode_event
from events.envelope import EventEnvelope
from events.ids import actor_kind, actor_uuid
from projections.history import diff_states
from projections.model import SessionAggregate, project_session, simulator_row

__all__ = ["CHECKPOINT_EVERY", "Timeline", "TimelineError", "fold_state", "state_json"]

#: Versions between two kept states: a lookup folds at most this many events.
CHECKPOINT_EVERY = 128

#: Never shown: the creator's auth token recorded by `SessionCreated`.
_PRIVATE = frozenset({"token"})


class TimelineError(ValueError):
    """The events do not make one actor's gap-free history (or name an unknown actor kind)."""


def fold_state(actor_id: str, state: Any, event: Any) -> Any:
    """The actor's view after `event` (`state`: its view before, None at the start)."""
    kind = actor_kind(actor_id)
    if kind == "session":
        return project_session(state, actor_uuid(actor_id), event)
    if kind == "simulator":
        return simulator_row(state, actor_uuid(actor_id), event)
    raise TimelineError(f"unknown actor kind in {actor_id!r}")


def state_json(state: Any) -> Any:
    """A view as plain JSON-able data, without what must never be shown (auth tokens)."""
    doc = msgspec.to_builtins(state)
    if isinstance(state, SessionAggregate):
        doc["session"] = {k: v for k, v in doc["session"].items() if k not in _PRIVATE}
    return doc


class Timeline:
    """One actor's events (versions 1..n, gap-free) and its state every `every` versions."""

    __slots__ = ("_checkpoints", "_every", "_last", "actor_id", "envelopes")

    def __init__(self, actor_id: str, every: int = CHECKPOINT_EVERY) -> None:
        if actor_kind(actor_id) not in ("session", "simulator"):
            raise TimelineError(f"unknown actor kind in {actor_id!r}")
        self.actor_id = actor_id
        self.envelopes: list[EventEnvelope] = []
        self._every = every
        #: state after version k * every (index k); index 0 is the state before any event
        self._checkpoints: list[Any] = [None]
        self._last: Any = None  # the state after the newest event

    @property
    def version(self) -> int:
        return len(self.envelopes)

    def extend(self, envelopes: Iterable[EventEnvelope]) -> int:
        """Append the events after the current version (older ones are skipped); returns how
        many were added. A gap (a version missing) is refused: the history must be complete."""
        added = 0
        for env in envelopes:
            if env.version <= self.version:
                continue
            if env.version != self.version + 1 or env.actor_id != self.actor_id:
                raise TimelineError(
                    f"{self.actor_id}: expected version {self.version + 1} of this actor, got "
                    f"{env.actor_id} version {env.version}"
                )
            self._last = fold_state(self.actor_id, self._last, decode_event(env.data, env.type))
            self.envelopes.append(env)
            if env.version % self._every == 0:
                self._checkpoints.append(self._last)
            added += 1
        return added

    def state_at(self, version: int) -> Any:
        """The view after `version` (0: before the first event), folded from the nearest
        checkpoint at or below it."""
        if not 0 <= version <= self.version:
            raise TimelineError(f"{self.actor_id} has versions 0 to {self.version}, not {version}")
        if version == self.version:
            return self._last
        k = version // self._every
        state = self._checkpoints[k]
        for env in self.envelopes[k * self._every : version]:
            state = fold_state(self.actor_id, state, decode_event(env.data, env.type))
        return state

    def step(self, version: int) -> tuple[Any, dict[str, list[Any]]]:
        """The view after `version` as JSON data, and its difference from the view before it
        (path -> [old, new])."""
        if version == 0:
            return state_json(self.state_at(0)), {}
        before = self.state_at(version - 1)
        env = self.envelopes[version - 1]
        after = fold_state(self.actor_id, before, decode_event(env.data, env.type))
        after_json = state_json(after)
        return after_json, diff_states(state_json(before), after_json)
