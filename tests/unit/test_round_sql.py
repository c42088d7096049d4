"""The projector's one-statement round holds only the parts a round has rows for: every subset
of parts must number its parameters $1..$N with no gap (PostgreSQL refuses a parameter it
cannot type, and asyncpg one it is not given)."""

from __future__ import annotations

import itertools
import re

from projections.store import _ROUND_PARTS, round_sql


def _params(sql: str) -> set[int]:
    return {int(n) for n in re.findall(r"\$(\d+)", sql)}


def test_every_subset_of_parts_numbers_its_parameters_without_gaps() -> None:
    names = [name for name, _, _ in _ROUND_PARTS]
    arity = {name: a for name, a, _ in _ROUND_PARTS}
    for k in range(len(names) + 1):
        for subset in itertools.combinations(names, k):
            sql = round_sql(frozenset(subset))
            expected = 7 + sum(arity[n] for n in subset)
            assert _params(sql) == set(range(1, expected + 1)), subset


def test_a_state_update_round_leaves_the_other_tables_out() -> None:
    sql = round_sql(frozenset({"archive", "states", "actors"}))
    assert "state_snapshots" in sql and "events.archive" in sql
    assert "devices" not in sql and "handoffs" not in sql and "DELETE" not in sql
    every = round_sql(frozenset(name for name, _, _ in _ROUND_PARTS))
    assert every.count(" AS (") + every.count(" AS MATERIALIZED (") > sql.count(
        " AS ("
    ) + sql.count(" AS MATERIALIZED (")
