"""`gateway.rotation.Rotation`: every member once per period, at the same tick of every period;
members that join wait for the next period."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from gateway.rotation import Rotation, bucket_of


@given(members=st.sets(st.text(max_size=12), max_size=300), ticks=st.integers(1, 60))
def test_a_period_visits_every_member_once_at_its_own_tick(members, ticks):
    current = sorted(members)
    rotation = Rotation(ticks, lambda: current)
    for _period in range(2):
        assert rotation.period_starts
        seen: list[str] = []
        for tick in range(ticks):
            share = rotation.share()
            assert all(bucket_of(m, ticks) == tick for m in share)
            seen += share
        assert sorted(seen) == current


def test_shares_of_ids_are_about_equal():
    ids = [str(uuid.UUID(int=i * 7919 + 13)) for i in range(2000)]
    rotation = Rotation(150, lambda: ids)
    sizes = [len(rotation.share()) for _ in range(150)]
    assert sum(sizes) == 2000
    assert max(sizes) < 3 * 2000 / 150


def test_members_that_join_mid_period_are_visited_from_the_next_period_on():
    members = {"a": 1, "b": 2, "c": 3}
    rotation = Rotation(4, lambda: members)
    first = [rotation.share() for _ in range(2)]
    members["d"] = 4  # joins mid-period
    del members["a"]  # leaves: still in this period's snapshot (the caller skips it)
    first += [rotation.share() for _ in range(2)]
    assert sorted(m for share in first for m in share) == ["a", "b", "c"]
    assert rotation.period_starts
    second = [m for _ in range(4) for m in rotation.share()]
    assert sorted(second) == ["b", "c", "d"]


def test_fewer_than_one_tick_is_one_tick():
    rotation = Rotation(0, lambda: ["x", "y"])
    assert rotation.share() == ["x", "y"]
    assert rotation.share() == ["x", "y"]
