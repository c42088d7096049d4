"""asyncpg pools for the read models, and what a PostgreSQL outage looks like to their users.

Call `create_pool(dsn)` in a component's start-up (Starlette lifespan, projector start) and close
it on shutdown. Connection failures are translated to `events.errors.StoreUnavailable` so callers
handle one error family.

`unreachable(exc)` tells an outage (no server, a restarting server, a dropped connection) from a
refused query, and `Database` wraps a pool so that its queries raise `DatabaseUnavailable` (an
`InfraError`: the gateway answers 503 with a Retry-After) during an outage, which it logs once,
then as a reminder at most once a minute, then once more when the server is back (`Outage`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from events.errors import StoreUnavailable

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "Outage",
    "create_pool",
    "pg_outage",
    "unreachable",
]

log = logging.getLogger("sessiond.postgres")


async def create_pool(dsn: str, **kw: Any) -> asyncpg.Pool:
    """An open pool for `dsn` (any DSN asyncpg accepts, unix-socket ones included).

    Defaults: one connection opened at once (so a wrong DSN fails at start), up to 10, no
    connection floor, a 10 s connect timeout, ``statement_cache_size`` left at asyncpg's
    default. Any keyword is passed to `asyncpg.create_pool` and wins. Without a floor
    (`min_size` 0), connections are opened when needed: with one, asyncpg reconnects in the
    background during an outage and logs a traceback every second (`Outage` logs it once).
    """
    options: dict[str, Any] = {"init_size": 1, "min_size": 0, "max_size": 10, "timeout": 10.0}
    options.update(kw)
    try:
        return await asyncpg.create_pool(dsn, **options)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {e}") from e


class DatabaseUnavailable(StoreUnavailable):
    """PostgreSQL cannot be reached (down, restarting, or the connection dropped)."""

    code = "DATABASE_UNAVAILABLE"


#: SQLSTATE classes that mean "not served", not "refused": 08 connection exception,
#: 53 insufficient resources (too many connections, disk full), 57 operator intervention
#: (shutdown, crash, cannot connect now, query cancelled).
_OUTAGE_CLASSES = ("08", "53", "57")


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL is not serving us right now (as opposed to refusing one
    query): no socket, connection refused or reset, connect timeout, a dropped or closed
    connection, a server shutting down or starting up."""
    if isinstance(exc, DatabaseUnavailable | OSError):  # TimeoutError is an OSError
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in _OUTAGE_CLASSES
    # a connection dropped while in use can leave asyncpg's protocol in a state it refuses
    # ("cannot switch to state 15; another operation is in progress", seen when resetting it)
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return True
    # asyncpg's client-side errors: a closed connection or pool; its DataError (a value it
    # cannot encode) is also a ValueError and is the query's fault, not an outage
    return isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, ValueError)


def pg_outage(exc: BaseException) -> bool:
    """Whether a start-up step that failed with `exc` should wait for PostgreSQL and retry:
    the server is down or starting (`unreachable`), or `create_pool` said it cannot connect."""
    return isinstance(exc, StoreUnavailable) or unreachable(exc)


class Outage:
    """Whether a dependency is reachable, logged as an operator wants it: one error line when
    it goes away, a reminder at most every `remind_s` while it stays away (with the failures
    counted meanwhile), one line when it is back. Not one line per failed request."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger = log,
        *,
        remind_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.what = what
        self.log = logger
        self.remind_s = remind_s
        self.clock = clock
        self.down_since: float | None = None  # wall-clock seconds
        self.failures = 0
        self.last_error = ""
        self._reminded = 0.0

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.failures += 1
        if self.down_since is None:
            self.down_since = self._reminded = now
            self.failures = 1
            self.log.error("%s unreachable: %s", self.what, self.last_error)
        elif now - self._reminded >= self.remind_s:
            self._reminded = now
            self.log.error(
                "%s still unreachable after %.0f s (%d failures): %s",
                self.what,
                now - self.down_since,
                self.failures,
                self.last_error,
            )

    def ok(self) -> None:
        if self.down_since is None:
            return
        self.log.warning(
            "%s reachable again after %.1f s (%d failures)",
            self.what,
            self.clock() - self.down_since,
            self.failures,
        )
        self.down_since = None
        self.failures = 0

    def describe(self) -> str:
        """'ok', or 'unreachable since <ISO time>: <last error>'."""
        if self.down_since is None:
            return "ok"
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.down_since))
        return f"unreachable since {since}: {self.last_error}"


class Database:
    """A pool's query methods (`fetch`, `fetchrow`, `fetchval`, `execute`), with an outage
    raised as `DatabaseUnavailable` and logged once by `outage`, not once per query."""

    def __init__(self, pool: Any, outage: Outage | None = None) -> None:
        self.pool = pool
        self.outage = outage or Outage("PostgreSQL")

    async def _call(self, method: str, *args: Any, **kw: Any) -> Any:
        try:
            result = await getattr(self.pool, method)(*args, **kw)
        except Exception as exc:
            if not unreachable(exc):
                raise
            self.outage.failed(exc)
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: {exc}") from exc
        self.outage.ok()
        return result

    async def fetch(self, *args: Any, **kw: Any) -> Any:
        return await self._call("fetch", *args, **kw)

    async def fetchrow(self, *args: Any, **kw: Any) -> Any:
        return await self._call("fetchrow", *args, **kw)

    async def fetchval(self, *args: Any, **kw: Any) -> Any:
        return await self._call("fetchval", *args, **kw)

    async def execute(self, *args: Any, **kw: Any) -> Any:
        return await self._call("execute", *args, **kw)

    async def snapshot(self, read: Callable[[Any], Awaitable[Any]]) -> Any:
        """`read(connection)` in one read-only REPEATABLE READ transaction: its queries see one
        state of the database (rows and the versions they were projected at, together)."""
        try:
            async with self.pool.acquire() as conn:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    result = await read(conn)
        except Exception as exc:
            if not unreachable(exc):
                raise
            self.outage.failed(exc)
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: {exc}") from exc
        self.outage.ok()
        return result
