"""The generic shape every actor kind has: a pure decider (after Chassaing's "Decider").

The runtime is "many deciders keyed by actor id": it keeps `(version, state)` per actor, calls
`decide` with each command, appends the events with the expected version, and folds them with
`evolve`. Nothing here (or in any decider) reads a clock, does I/O or draws random numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from events.base import Command, Event

__all__ = ["Decider", "Routed", "Timer"]

S = TypeVar("S")


class Timer(msgspec.Struct, frozen=True):
    """A durable deadline: at `due` (ms) the runtime sends `command` to the actor, once.

    `key` names the deadline within the actor (e.g. "expiry", "presence:<device>"); a newer
    `due` for the same key replaces the old one.
    """

    key: str
    due: int
    command: Command


class Routed(msgspec.Struct, frozen=True):
    """A command a policy sends to another actor of the same partition, as a consequence."""

    actor_id: str
    command: Command


@dataclass(frozen=True)
class Decider(Generic[S]):
    """One actor kind. `react` is the kind's policy: events -> commands to other actors.

    `result(command, events, state)` (optional) says what the sender's answer needs from the
    events a command caused (`state` is the state after them); the runtime stores it in the
    command's `Outcome.result`, so the edge answers from the outcome instead of reading the
    events back. Pure, like the rest."""

    kind: str
    initial_state: S
    decide: Callable[[Any, S], list[Event]]
    evolve: Callable[[S, Any], S]
    is_terminal: Callable[[S], bool]
    deadlines: Callable[[S], list[Timer]]
    react: Callable[[S, Any], list[Routed]]
    result: Callable[[Any, list[Event], S], dict[str, Any]] | None = None

    def fold(self, events: Iterable[Event], state: S | None = None) -> S:
        """The state after `events`, starting from `state` (default: the initial state)."""
        current = self.initial_state if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current

    def run(self, command: Command, state: S) -> tuple[list[Event], S]:
        """Decide and fold in one step: what the runtime does per command."""
        events = self.decide(command, state)
        return events, self.fold(events, state)
