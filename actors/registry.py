"""Which decider serves which actor: the kind is the actor id's prefix (`session:<uuid>`)."""

from __future__ import annotations

from typing import Any

from actors import session, simulator
from actors.decider import Decider
from events.errors import DomainError
from events.ids import actor_kind

__all__ = ["DECIDERS", "decider_for", "state_type"]

DECIDERS: dict[str, Decider[Any]] = {
    "session": session.decider,
    "simulator": simulator.decider,
}

_STATE_TYPES: dict[str, Any] = {
    "session": session.SessionState,
    "simulator": simulator.SimulatorState,
}


def decider_for(actor_id: str) -> Decider[Any]:
    """The decider of `actor_id`'s kind; an unknown kind is the sender's error."""
    try:
        return DECIDERS[actor_kind(actor_id)]
    except KeyError:
        raise DomainError("INVALID_COMMAND", f"unknown actor kind in {actor_id!r}") from None


def state_type(actor_id: str) -> Any:
    """The state union of `actor_id`'s kind, for decoding snapshots."""
    return _STATE_TYPES[actor_kind(actor_id)]
