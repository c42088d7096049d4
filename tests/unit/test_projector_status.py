"""What a projector's status record says to people (`projections.health.describe`)."""

from __future__ import annotations

from projections.health import ProjectorStatus, describe


def test_a_projector_projecting_all_it_leases_is_ok() -> None:
    status = ProjectorStatus(owner="p1", leases=[0, 1], projecting=[0, 1])
    assert describe(status) == "ok" and status.healthy


def test_an_outage_names_its_start() -> None:
    status = ProjectorStatus(
        owner="p1", postgres="unreachable", postgres_down_since=1_800_000_000_000
    )
    assert describe(status) == "cannot reach PostgreSQL since 2027-01-15T08:00:00Z"
    assert not status.healthy


def test_leased_partitions_whose_claim_failed_are_named() -> None:
    status = ProjectorStatus(owner="p1", leases=[0, 1, 2], projecting=[0], unclaimed=[1, 2])
    assert describe(status) == "leases partitions [1, 2] but cannot claim their checkpoints"
    assert not status.healthy


def test_a_partition_being_claimed_right_now_is_no_problem() -> None:
    status = ProjectorStatus(owner="p1", leases=[0, 1], projecting=[0])
    assert describe(status) == "ok"
