"""Housekeeping the product schedules itself (no manual step in production): seed 002's
`session.cleanup_expired_sessions()`, and Redis retention (`projections.retention`: the logs
and actor streams trimmed, never below what is archived and snapshotted).

The projector runs `housekeep` between two of its rounds every `housekeeping_interval_ms`
(SESSIOND_HOUSEKEEPING_INTERVAL_MS): it trims the partitions whose lease it holds, and the
holder of partition 0 also runs the cleanup, so each job has one runner at a time whatever the
number of projectors. Every run is counted in metrics and logged in one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from infra.metrics import counter
from infra.store import Store
from projections.retention import trim_partition

__all__ = ["Housekept", "housekeep"]

log = logging.getLogger("sessiond.housekeeping")

RUNS = counter("sessiond_housekeeping_runs_total", "Housekeeping runs, by outcome", ("outcome",))
SESSIONS_DELETED = counter(
    "sessiond_housekeeping_sessions_deleted_total",
    "Expired sessions deleted by session.cleanup_expired_sessions()",
)
TRIMMED = counter(
    "sessiond_housekeeping_trimmed_total",
    "Redis entries trimmed below what is archived and snapshotted, by stream kind",
    ("kind",),
)


class Housekept(dict[str, Any]):
    """What one run did (JSON-able): sessions deleted, entries trimmed, seconds."""


async def housekeep(
    store: Store,
    conn: asyncpg.Connection,
    partitions: Sequence[int],
    *,
    cleanup: bool,
    keep: int = 100,
) -> Housekept:
    """Trim `partitions` (the caller holds their leases) and, with `cleanup`, delete the
    expired sessions' rows; raises what the stores raise (counted as a failed run)."""
    started = time.monotonic()
    done = Housekept(sessions_deleted=0, log_entries_trimmed=0, actor_events_trimmed=0)
    try:
        if cleanup:
            deleted = int(await conn.fetchval("SELECT session.cleanup_expired_sessions()") or 0)
            done["sessions_deleted"] = deleted
            SESSIONS_DELETED.inc(deleted)
        for p in partitions:
            trimmed = await trim_partition(store, conn, p, keep=keep)
            done["log_entries_trimmed"] += trimmed["log_entries_removed"]
            done["actor_events_trimmed"] += trimmed["actor_events_removed"]
    except Exception:
        RUNS.labels("failed").inc()
        log.warning("housekeeping failed", exc_info=True)
        raise
    TRIMMED.labels("log").inc(done["log_entries_trimmed"])
    TRIMMED.labels("actor").inc(done["actor_events_trimmed"])
    RUNS.labels("ok").inc()
    done["seconds"] = round(time.monotonic() - started, 3)
    log.info(
        "housekeeping: %d expired session(s) deleted, %d log entries and %d actor events"
        " trimmed over %d partition(s) in %.3f s",
        done["sessions_deleted"],
        done["log_entries_trimmed"],
        done["actor_events_trimmed"],
        len(partitions),
        done["seconds"],
    )
    return done
