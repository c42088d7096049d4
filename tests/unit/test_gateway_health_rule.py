"""`/health`'s status rule: unhealthy when no write can be applied, degraded when something
fails but writes go on, healthy otherwise."""

from __future__ import annotations

import pytest

from gateway.health import DEGRADED, DRAINING, HEALTHY, UNHEALTHY, overall


def _checks(**statuses: str) -> dict[str, dict[str, str]]:
    base = {"redis": "ok", "postgres": "ok", "workers": "ok", "projector": "ok"}
    return {name: {"status": status} for name, status in {**base, **statuses}.items()}


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({}, HEALTHY),
        ({"redis": "unreachable"}, UNHEALTHY),
        ({"workers": "none"}, UNHEALTHY),
        ({"redis": "unreachable", "postgres": "unreachable"}, UNHEALTHY),
        ({"postgres": "unreachable"}, DEGRADED),
        ({"workers": "partial"}, DEGRADED),
        ({"projector": "degraded"}, DEGRADED),
        ({"projector": "unknown"}, DEGRADED),
    ],
)
def test_the_status_follows_the_documented_rule(statuses, expected) -> None:
    assert overall(_checks(**statuses)) == expected


def test_a_draining_gateway_says_so_whatever_the_checks() -> None:
    assert overall(_checks(redis="unreachable"), draining=True) == DRAINING
