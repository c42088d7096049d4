"""Where everything lives in Redis. Every key of a partition shares the hash tag `{pN}`.

Partition key is always the *session* id, so a session and its simulator share a partition
(and a Redis Cluster slot: the append script touches only that slot).
"""

from __future__ import annotations

import zlib

from events.ids import actor_kind, actor_uuid, session_actor, simulator_actor

__all__ = [
    "COMMAND_GROUP",
    "DEFAULT_PARTITIONS",
    "actor_kind",
    "actor_uuid",
    "change_channel",
    "command_stream",
    "epoch_key",
    "event_stream",
    "lease_key",
    "market_data_stream",
    "outcome_key",
    "partition_log",
    "partition_of",
    "projector_status_key",
    "reply_channel",
    "session_actor",
    "simulator_actor",
    "snapshot_key",
    "timers_key",
]

DEFAULT_PARTITIONS = 16
COMMAND_GROUP = "workers"


def partition_of(session_id: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    return zlib.crc32(session_id.encode()) % partitions






def _tag(partition: int) -> str:
    return f"sd:{{p{partition}}}"


def command_stream(partition: int) -> str:
    """Commands to every actor of the partition; consumed by the group `COMMAND_GROUP`."""
    return f"{_tag(partition)}:cmd"


def event_stream(partition: int, actor_id: str) -> str:
    """One actor's events; entry id `<version>-0`, field `e` = msgpack `EventEnvelope`."""
    return f"{_tag(partition)}:ev:{actor_id}"


def partition_log(partition: int) -> str:
    """Every event of the partition in append order; field `e` = msgpack `EventEnvelope`."""
    return f"{_tag(partition)}:log"


def lease_key(partition: int, role: str = "worker") -> str:
    return f"{_tag(partition)}:lease:{role}"


def epoch_key(partition: int, role: str = "worker") -> str:
    """The fencing token: bumped at each lease acquisition."""
    return f"{_tag(partition)}:epoch:{role}"


def snapshot_key(partition: int, actor_id: str) -> str:
    return f"{_tag(partition)}:snap:{actor_id}"


def timers_key(partition: int) -> str:
    return f"{_tag(partition)}:timers"


def outcome_key(partition: int, command_id: str) -> str:
    return f"{_tag(partition)}:out:{command_id}"


def reply_channel(name: str) -> str:
    return f"sd:reply:{name}"


def change_channel(session_id: str) -> str:
    """Pub/sub channel where the projector announces a session's committed changes."""
    return f"sd:chg:{session_id}"


def projector_status_key(owner: str) -> str:
    """One projector's status record (JSON, with a TTL: a dead projector's record goes away)."""
    return f"sd:projector:{owner}:status"


def market_data_stream(simulator_id: str) -> str:
    """Capped stream of one simulator's ticks."""
    return f"sd:md:{simulator_id}"
