"""The chaos suite's judges, judged: a checker that misreads the log fails good runs (it once
counted writes followed by `SessionRefreshed` as lost) or passes bad ones."""

from __future__ import annotations

from tests.chaos.clients import Ack
from tests.chaos.invariants import (
    COMMAND_ID,
    lost_writes,
    pushes_while_only_a_projector_was_down,
)

SID = "s1"


def changed(version: int, key: str, value: int, command: str) -> tuple[int, str, dict]:
    return (version, "StateChanged", {"changes": {key: value}, COMMAND_ID: command})


def refreshed(version: int, command: str) -> tuple[int, str, dict]:
    return (version, "SessionRefreshed", {COMMAND_ID: command})


def ack(version: int, key: str, value: int) -> Ack:
    return Ack(SID, version, key, value, "ws", 0.0)


def test_a_write_at_its_acknowledged_version_is_kept() -> None:
    logs = {SID: [changed(1, "a", 1, "c1"), changed(2, "b", 2, "c2")]}
    assert lost_writes([ack(1, "a", 1), ack(2, "b", 2)], logs) == []


def test_a_write_that_kept_its_session_alive_is_acknowledged_after_its_refresh() -> None:
    logs = {SID: [changed(1, "a", 1, "c1"), refreshed(2, "c1"), changed(3, "b", 2, "c2")]}
    assert lost_writes([ack(2, "a", 1), ack(3, "b", 2)], logs) == []


def test_an_ack_past_another_commands_event_is_a_wrong_ack() -> None:
    logs = {SID: [changed(1, "a", 1, "c1"), changed(2, "b", 2, "c2")]}
    assert lost_writes([ack(2, "a", 1)], logs) == [ack(2, "a", 1)]


def test_an_ack_before_its_event_is_a_wrong_ack() -> None:
    logs = {SID: [changed(1, "b", 2, "c2"), changed(2, "a", 1, "c1")]}
    assert lost_writes([ack(1, "a", 1)], logs) == [ack(1, "a", 1)]


def test_a_missing_write_a_wrong_value_and_a_write_appended_twice_are_lost() -> None:
    logs = {SID: [changed(1, "a", 1, "c1"), changed(2, "b", 9, "c2"), changed(3, "a", 1, "c3")]}
    missing, wrong, twice = ack(4, "z", 1), ack(2, "b", 2), ack(1, "a", 1)
    assert lost_writes([missing, wrong, twice], logs) == [missing, wrong, twice]


def test_a_write_of_a_session_that_has_no_log_is_lost() -> None:
    assert lost_writes([ack(1, "a", 1)], {}) == [ack(1, "a", 1)]


def test_a_push_delayed_by_another_fault_is_not_charged_to_the_projector() -> None:
    windows = [(10.0, 15.0, "stop:projector"), (14.0, 20.0, "kill:worker")]
    delays = [
        (11.0, 0.01),  # the projector alone was down: counted
        (12.0, 2.5),  # a worker was killed before it arrived: not counted
        (14.5, 0.2),  # sent while both were down: not counted
        (25.0, 0.3),  # no fault: not counted
    ]
    assert pushes_while_only_a_projector_was_down(delays, windows) == [0.01]


def test_a_slow_push_while_only_a_projector_is_down_is_counted() -> None:
    windows = [(10.0, 15.0, "kill:projector")]
    assert pushes_while_only_a_projector_was_down([(11.0, 2.0)], windows) == [2.0]


def test_a_fault_off_the_push_path_does_not_hide_a_projector_fault() -> None:
    windows = [(10.0, 15.0, "kill:projector"), (9.0, 14.0, "stop:reactor")]
    windows += [(12.0, 16.0, "kill:postgres"), (11.0, 13.0, "kill:simulators")]
    assert pushes_while_only_a_projector_was_down([(12.5, 1.5)], windows) == [1.5]
