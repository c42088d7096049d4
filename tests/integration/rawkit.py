"""Helpers for tests of the raw Redis connections (`infra.redis_raw`)."""

from __future__ import annotations

from infra.redis_raw import Pipeline


def count_writes(pipe: Pipeline) -> list[bytes]:
    """Record every socket write of the pipeline's current connection (to check that commands
    submitted in one loop turn go out in one write)."""
    conn = pipe._conn
    assert conn is not None
    writes: list[bytes] = []
    original = conn.transport.write

    def write(data: bytes) -> None:
        writes.append(bytes(data))
        original(data)

    conn.transport.write = write
    return writes
