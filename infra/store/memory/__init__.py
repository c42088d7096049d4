"""The in-memory event store (same contracts as the Redis store, no server)."""

from infra.store.memory.store import MemoryStore

__all__ = ["MemoryStore"]
