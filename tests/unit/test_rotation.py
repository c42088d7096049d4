"""`gateway.rotation.Rotation`: every member once per period, in equal shares, members that
join wait for the next period."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.rotation import Rotation


@given(n=st.integers(0, 3000), ticks=st.integers(1, 400))
def test_a_period_visits_every_member_once_in_shares_that_differ_by_at_most_one(n, ticks):
    members = list(range(n))
    rotation = Rotation(ticks, lambda: members)
    shares = [rotation.share() for _ in range(ticks)]
    assert [m for share in shares for m in share] == members
    sizes = {len(share) for share in shares}
    assert max(sizes) - min(sizes) <= 1
    assert rotation.period_starts


def test_members_that_join_mid_period_are_visited_from_the_next_period_on():
    members = {"a": 1, "b": 2, "c": 3}
    rotation = Rotation(3, lambda: members)
    assert rotation.period_starts
    first = rotation.share()
    members["d"] = 4  # joins mid-period
    del members["a"]  # leaves: still in this period's snapshot (the caller skips it)
    rest = rotation.share() + rotation.share()
    assert sorted(first + rest) == ["a", "b", "c"]
    assert rotation.period_starts
    second = rotation.share() + rotation.share() + rotation.share()
    assert sorted(second) == ["b", "c", "d"]


def test_fewer_than_one_tick_is_one_tick():
    rotation = Rotation(0, lambda: [1, 2])
    assert rotation.share() == [1, 2]
    assert rotation.share() == [1, 2]
