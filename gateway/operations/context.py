"""The process's resources, made once in the Starlette lifespan and passed to every operation.

One `Context` per gateway process: the configuration, the event store (and its command sender),
the PostgreSQL read models, the token service, the connection hub and the metrics, plus the
little process state the edge keeps (draining, the per-user limits, the connection handlers a
drain waits for). It holds no authoritative state: writes are commands to actors, reads come
from the read models and the store. Adapters (REST, WS, SSE, gRPC) take it from the app's
state and hand it to the operations; nothing reaches it through a module global.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from gateway.auth import TokenService
from gateway.config import GatewayConfig
from gateway.hub import EventHistory, Hub
from gateway.metrics import GatewayMetrics
from gateway.operations.console import ConsoleState
from gateway.operations.reads import reset_state
from gateway.ratelimit import KeyedLimiter
from gateway.slots import ConnectionSlots
from infra.postgres import Database, Outage
from infra.store import CommandSender, Store
from projections.archive import PostgresArchive

__all__ = ["Context"]

log = logging.getLogger("sessiond.gateway")


class Context:
    """Everything an operation needs, shared by the whole process.

    `db` is None when no database is configured (reads of the read models then answer 503 or
    nothing, as each says). While PostgreSQL is unreachable its queries raise
    `DatabaseUnavailable` (a 503), logged once with a reminder a minute, not once per request;
    the store reads the archive (what Redis no longer holds) through it as well.
    """

    __slots__ = (
        "config",
        "console",
        "db",
        "draining",
        "handlers",
        "hub",
        "metrics",
        "rest_limiter",
        "sender",
        "slots",
        "started_at",
        "store",
        "tokens",
    )

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        pool: Any,
        sender: CommandSender,
    ) -> None:
        self.config = config
        self.store = store
        self.db = Database(pool, Outage("gateway: PostgreSQL", log)) if pool is not None else None
        if self.db is not None and store.archive is None:
            store.archive = PostgresArchive(pool=self.db)  # what Redis no longer holds
        self.sender = sender
        self.tokens = TokenService(config)
        self.metrics = GatewayMetrics()
        # a client whose history is gone gets the session's state from the read models
        self.hub = Hub(
            store.feed,
            EventHistory(store),
            metrics=self.metrics,
            reset_state=functools.partial(reset_state, self),
        )
        #: the admin console's caches and the live charts' measurements
        self.console = ConsoleState()
        self.hub.on_change.append(self.console.live.on_change)
        self.started_at = time.time()
        self.draining = False
        #: REST (and gRPC) requests per user on this process; WS messages have their own
        self.rest_limiter = KeyedLimiter(config.rest_rate_per_s, config.rest_rate_burst)
        #: open connections per user on this process (the session actor caps per session)
        self.slots = ConnectionSlots(config.max_connections_per_user)
        #: the tasks serving open WS / SSE connections: a drain waits for them
        self.handlers: set[asyncio.Task[Any]] = set()
