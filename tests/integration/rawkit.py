"""Helpers for tests of the store's raw Redis connections (`infra.store.redis.connection`)."""

from __future__ import annotations

from infra.store.redis.connection import Pipeline
from infra.store.redis.router import Link


def count_writes(pipe: Pipeline | Link) -> list[bytes]:
    """Record every socket write of the pipeline's current connection (a link's, on a single
    node), to check that commands submitted in one loop turn go out in one write."""
    if isinstance(pipe, Link):
        assert pipe._plain is not None, "a link on a single node, used once"
        pipe = pipe._plain
    conn = pipe._conn
    assert conn is not None
    writes: list[bytes] = []
    original = conn.transport.write

    def write(data: bytes) -> None:
        writes.append(bytes(data))
        original(data)

    conn.transport.write = write
    return writes
