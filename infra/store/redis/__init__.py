"""The Redis event store: the only code that speaks RESP, runs Lua and knows key names."""

from infra.store.redis.store import RedisStore, open_store

__all__ = ["RedisStore", "open_store"]
