"""Dead letters: events the projector could not project, kept so their partition moves on.

An event whose rows PostgreSQL refuses (a U+0000 in a JSON string, a value too large for an
index, a broken reference) or that does not decode would otherwise stop its whole partition: the
projector would retry the same batch forever, for every user of the partition. Instead the
projector isolates that one event, writes it here in the same transaction that moves the
checkpoint past it (exactly once, like any row), and goes on. `projections status` lists them,
`projections verify` folds the log without them, and the raw entry stays for whoever fixes and
replays it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

__all__ = [
    "DeadLetter",
    "dead_letter",
    "dead_letter_keys",
    "dead_letter_summary",
    "pg_text",
    "write_dead_letters",
]

#: Longest error text kept per dead letter (a driver's message can quote the whole value).
ERROR_CHARS = 2000


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One refused log entry, as `projection.dead_letters` holds it."""

    partition: int
    log_id: str
    event_id: str = ""
    actor_id: str = ""
    version: int = 0
    type: str = ""
    error: str
    raw: bytes


def pg_text(value: str) -> str:
    """`value` as text PostgreSQL always accepts: U+0000 and lone surrogates escaped."""
    if "\x00" in value:
        value = value.replace("\x00", "\\u0000")
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def dead_letter(
    partition: int, log_id: str, envelope: Any, raw: bytes, error: BaseException | str
) -> DeadLetter:
    """The dead letter of one log entry; `envelope` is None when the entry did not decode."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    get = (
        (lambda name, default: getattr(envelope, name, default))
        if envelope is not None
        else (lambda name, default: default)
    )
    return DeadLetter(
        partition=partition,
        log_id=log_id,
        event_id=pg_text(str(get("event_id", ""))),
        actor_id=pg_text(str(get("actor_id", ""))),
        version=int(get("version", 0) or 0),
        type=pg_text(str(get("type", ""))),
        error=pg_text(reason)[:ERROR_CHARS],
        raw=raw,
    )


async def write_dead_letters(
    conn: asyncpg.Connection, name: str, rows: Sequence[DeadLetter]
) -> None:
    """Record dead letters (inside the caller's transaction, beside its checkpoint update)."""
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO projection.dead_letters (name, partition, log_id, event_id, actor_id,"
        " version, type, error, raw) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (name, partition, log_id) DO NOTHING",
        [
            (name, r.partition, r.log_id, r.event_id, r.actor_id, r.version, r.type, r.error, r.raw)
            for r in rows
        ],
    )


async def dead_letter_keys(conn: asyncpg.Connection, name: str) -> set[tuple[int, str]]:
    """(partition, log id) of every dead letter of projection `name`."""
    rows = await conn.fetch(
        "SELECT partition, log_id FROM projection.dead_letters WHERE name = $1", name
    )
    return {(r["partition"], r["log_id"]) for r in rows}


async def dead_letter_summary(
    conn: asyncpg.Connection, name: str, latest: int = 5
) -> dict[str, Any]:
    """Dead letters per partition and the `latest` ones (without their raw bytes); none
    before migration 006 ran."""
    if not await conn.fetchval("SELECT to_regclass('projection.dead_letters') IS NOT NULL"):
        return {"total": 0, "per_partition": {}, "latest": []}
    counts = await conn.fetch(
        "SELECT partition, count(*) AS n FROM projection.dead_letters WHERE name = $1"
        " GROUP BY partition ORDER BY partition",
        name,
    )
    recent = await conn.fetch(
        "SELECT partition, log_id, actor_id, version, type, error, created_at,"
        " length(raw) AS raw_bytes FROM projection.dead_letters WHERE name = $1"
        " ORDER BY id DESC LIMIT $2",
        name,
        latest,
    )
    return {
        "total": sum(r["n"] for r in counts),
        "per_partition": {r["partition"]: r["n"] for r in counts},
        "latest": [{**dict(r), "created_at": r["created_at"].isoformat()} for r in recent],
    }
