"""Given / when / then for deciders: fold the given events, decide the command, compare."""

from __future__ import annotations

from typing import Any

import pytest

from actors.decider import Decider
from events.errors import DomainError

__all__ = ["Spec"]


class Spec:
    """`Spec(decider).given(*events).when(command).then(*events)` or `.fails("CODE")`."""

    def __init__(self, decider: Decider[Any]) -> None:
        self.decider = decider
        self.history: list[Any] = []
        self.command: Any = None

    def given(self, *events: Any) -> Spec:
        self.history = list(events)
        return self

    def when(self, command: Any) -> Spec:
        self.command = command
        return self

    @property
    def state(self) -> Any:
        return self.decider.fold(self.history)

    def then(self, *expected: Any) -> Any:
        events = self.decider.decide(self.command, self.state)
        assert events == list(expected)
        return self.decider.fold(events, self.state)

    def fails(self, code: str) -> DomainError:
        with pytest.raises(DomainError) as caught:
            self.decider.decide(self.command, self.state)
        assert caught.value.code == code
        return caught.value
