"""`merge_changes`: the row changes of a round's batches (disjoint partitions) as one."""

from __future__ import annotations

from projections.model import RowChanges, StateRow
from projections.projector import merge_changes


def _state(sid: str, version: int) -> StateRow:
    return StateRow(
        session_id=sid,
        state={"v": version},
        state_version=version,
        device_id="d",
        app_version="1",
        updated_at=version,
    )


def test_merge_concatenates_every_table_in_batch_order():
    a = RowChanges(
        states=[_state("s1", 1), _state("s2", 1)],
        session_deletes=["s3"],
        device_deletes=[("s1", "old")],
    )
    b = RowChanges(
        states=[_state("s4", 7)], handoff_deletes=["t"], device_deletes=[("s4", "x"), ("s4", "y")]
    )
    merged = merge_changes([a, RowChanges(), b])
    assert merged.states == [_state("s1", 1), _state("s2", 1), _state("s4", 7)]
    assert merged.device_deletes == [("s1", "old"), ("s4", "x"), ("s4", "y")]
    assert merged.session_deletes == ["s3"] and merged.handoff_deletes == ["t"]
    assert not merged.sessions and not merged.devices and not merged.simulators
    # the inputs are left as they were
    assert a.states == [_state("s1", 1), _state("s2", 1)] and b.handoff_deletes == ["t"]


def test_merge_of_one_or_none():
    only = RowChanges(state_deletes=["s9"])
    assert merge_changes([RowChanges(), only]) is only
    empty = merge_changes([RowChanges(), RowChanges()])
    assert not empty and isinstance(empty, RowChanges)
    assert not merge_changes([])
