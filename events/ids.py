"""Actor ids: `session:<uuid>` and `simulator:<uuid>`. Pure string rules every layer shares (the
deciders route commands by them, the store partitions by the session id, the edge names actors).
"""

from __future__ import annotations

__all__ = ["actor_kind", "actor_uuid", "session_actor", "simulator_actor"]


def session_actor(session_id: str) -> str:
    return f"session:{session_id}"


def simulator_actor(simulator_id: str) -> str:
    return f"simulator:{simulator_id}"


def actor_kind(actor_id: str) -> str:
    """The kind before the colon ("session", "simulator"): which decider serves the actor."""
    return actor_id.partition(":")[0]


def actor_uuid(actor_id: str) -> str:
    return actor_id.partition(":")[2]
