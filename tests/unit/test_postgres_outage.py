"""`infra.postgres`: telling an outage from a refused query, and logging an outage once."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from infra.postgres import Database, DatabaseUnavailable, Outage, unreachable


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        FileNotFoundError(2, "No such file or directory"),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    ],
)
def test_connection_failures_are_outages(exc: BaseException) -> None:
    assert unreachable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence"),
        asyncpg.UndefinedTableError('relation "x" does not exist'),
        asyncpg.UniqueViolationError("duplicate key"),
        ValueError("bad"),
        KeyError("k"),
    ],
)
def test_refused_queries_and_bugs_are_not_outages(exc: BaseException) -> None:
    assert not unreachable(exc)


def test_an_outage_is_logged_once_then_reminded_at_most_every_period_then_recovered(caplog):
    clock = Clock()
    outage = Outage("PostgreSQL", logging.getLogger("t.outage"), remind_s=60, clock=clock)
    caplog.set_level(logging.INFO, logger="t.outage")
    assert outage.up and outage.describe() == "ok"
    for _ in range(1000):  # a thousand failed requests within a second
        outage.failed(ConnectionRefusedError(111, "Connection refused"))
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "PostgreSQL unreachable" in caplog.records[0].getMessage()
    assert not outage.up and outage.describe().startswith("unreachable since 1970-01-01T00:16:40Z")
    clock.now += 59
    outage.failed(OSError("still"))
    assert len(caplog.records) == 1
    clock.now += 2
    outage.failed(OSError("still"))
    assert len(caplog.records) == 2 and "1002 failures" in caplog.records[1].getMessage()
    clock.now += 10
    outage.ok()
    outage.ok()
    assert len(caplog.records) == 3
    assert "reachable again after 71.0 s" in caplog.records[2].getMessage()
    assert outage.up and outage.failures == 0


class _Pool:
    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc

    async def fetchval(self, *args: object) -> int:
        if self.exc is not None:
            raise self.exc
        return 1


@pytest.mark.anyio
async def test_database_raises_database_unavailable_for_an_outage_only() -> None:
    db = Database(_Pool(ConnectionRefusedError(111, "Connection refused")))
    with pytest.raises(DatabaseUnavailable) as info:
        await db.fetchval("SELECT 1")
    assert info.value.code == "DATABASE_UNAVAILABLE" and not db.outage.up
    db.pool = _Pool(asyncpg.UndefinedTableError("no table"))
    with pytest.raises(asyncpg.UndefinedTableError):
        await db.fetchval("SELECT 1")
    db.pool = _Pool(None)
    assert await db.fetchval("SELECT 1") == 1 and db.outage.up
