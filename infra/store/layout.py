"""Where everything lives in Redis: the only module that spells key and channel names.

Every key of a partition shares the hash tag `{pN}`, so a partition lives in one Redis Cluster
slot and each Lua script touches one slot. The partition's pub/sub channels (its senders' reply
channels, its sessions' change channels) carry the same tag: they are shard channels
(`SPUBLISH` / `SSUBSCRIBE`) of that slot, so the append script may publish to them on a
cluster. Market-data streams are spread over `MARKET_DATA_BUCKETS` tags so that one blocking
read per tag covers any number of simulators. Used by the Redis store, and read by white-box
tests that look at Redis directly; everything else goes through the store's API.
"""

from __future__ import annotations

import zlib

__all__ = [
    "ADMIN_CHANNEL",
    "COMMAND_GROUP",
    "GATEWAYS",
    "MARKET_DATA_BUCKETS",
    "SIM_HOSTS",
    "SIM_LOAD",
    "change_channel",
    "command_stream",
    "device_session_key",
    "epoch_key",
    "event_stream",
    "fenced_key",
    "gateway_connections_key",
    "lease_key",
    "market_data_stream",
    "members_key",
    "outcome_key",
    "partition_log",
    "partition_tag",
    "projector_status_key",
    "reply_channel",
    "session_of_change_channel",
    "session_simulator_key",
    "sim_ack_key",
    "sim_control_stream",
    "sim_placement_key",
    "snapshot_key",
    "status_key",
    "timer_member",
    "timers_key",
]

#: The consumer group of the workers on every command stream.
COMMAND_GROUP = "workers"


def partition_tag(partition: int) -> str:
    """The prefix of every key of a partition (its hash tag)."""
    return f"sd:{{p{partition}}}"


def command_stream(partition: int) -> str:
    """Commands to every actor of the partition (field `c`: msgpack `CommandEnvelope`)."""
    return f"{partition_tag(partition)}:cmd"


def event_stream(partition: int, actor_id: str) -> str:
    """One actor's events; entry id `<version>-0`, field `e` = msgpack `EventEnvelope`."""
    return f"{partition_tag(partition)}:ev:{actor_id}"


def partition_log(partition: int) -> str:
    """Every event of the partition in append order; field `e` = msgpack `EventEnvelope`."""
    return f"{partition_tag(partition)}:log"


def lease_key(partition: int, role: str = "worker") -> str:
    """The owner of the partition's lease for `role`, with a TTL."""
    return f"{partition_tag(partition)}:lease:{role}"


def epoch_key(partition: int, role: str = "worker") -> str:
    """The fencing token: bumped at each lease acquisition."""
    return f"{partition_tag(partition)}:epoch:{role}"


def fenced_key(partition: int, role: str = "worker") -> str:
    """Counter of writes refused because a newer owner held the partition (stale owners)."""
    return f"{lease_key(partition, role)}:fenced"


def snapshot_key(partition: int, actor_id: str) -> str:
    """msgpack `[version, state]` of an actor."""
    return f"{partition_tag(partition)}:snap:{actor_id}"


def timers_key(partition: int) -> str:
    """ZSET of the partition's durable timers: member `timer_member`, score = due ms."""
    return f"{partition_tag(partition)}:timers"


def timer_member(actor_id: str, key: str) -> str:
    return f"{actor_id}|{key}"


def outcome_key(partition: int, command_id: str) -> str:
    """A settled command's msgpack `Outcome` (with a TTL: the deduplication window)."""
    return f"{partition_tag(partition)}:out:{command_id}"


def members_key(role: str) -> str:
    """ZSET of the live processes of a role: member = owner, score = heartbeat expiry (ms)."""
    return f"sd:members:{role}"


def reply_channel(partition: int, name: str) -> str:
    """Shard channel of one command sender's outcomes for the commands it sends to the
    partition (one per sender and partition: the append script publishes in its own slot)."""
    return f"{partition_tag(partition)}:reply:{name}"


#: The admin broadcast (a shard channel of its own: every gateway subscribes to it).
ADMIN_CHANNEL = "sd:admin:broadcast"

_CHANGE_MARK = b"}:chg:"


def change_channel(partition: int, session_id: str) -> str:
    """Shard channel of a session's committed changes (the live view), in its partition's slot."""
    return f"{partition_tag(partition)}:chg:{session_id}"


def session_of_change_channel(channel: bytes) -> str | None:
    """The session a change channel belongs to, None for any other channel."""
    if not channel.startswith(b"sd:{p"):
        return None
    mark = channel.find(_CHANGE_MARK)
    return None if mark < 0 else channel[mark + len(_CHANGE_MARK) :].decode()


def status_key(role: str, owner: str) -> str:
    """One process's status record (JSON, with a TTL)."""
    return f"sd:{role}:{owner}:status"


def projector_status_key(owner: str) -> str:
    return status_key("projector", owner)


#: Hash tags the market-data streams are spread over (a blocking read per tag on a cluster).
MARKET_DATA_BUCKETS = 16


def market_data_stream(simulator_id: str) -> str:
    """Capped stream of one simulator's ticks (field `d`: JSON), tagged with its bucket."""
    bucket = zlib.crc32(simulator_id.encode()) % MARKET_DATA_BUCKETS
    return f"sd:md:{{m{bucket}}}:{simulator_id}"


def session_simulator_key(session_id: str) -> str:
    """The simulator whose engine ticks for the session (kept by the engine, with a TTL)."""
    return f"sd:md:session:{session_id}"


#: ZSET of gateway ids (score: when last announced, ms).
GATEWAYS = "sd:gateways"


def gateway_connections_key(gateway_id: str) -> str:
    """HASH connection id -> JSON of one gateway's live connections (with a TTL)."""
    return f"sd:gw:{gateway_id}:conns"


def device_session_key(user_id: str, device_id: str) -> str:
    """The session a user's device uses."""
    return f"sd:ud:{user_id}:{device_id}"


#: ZSET host id -> ms until which the simulators host is alive.
SIM_HOSTS = "sd:sim:hosts"
#: HASH host id -> simulators it runs.
SIM_LOAD = "sd:sim:load"


def sim_control_stream(host_id: str) -> str:
    """Start / stop requests for a simulators host (field `r`: msgpack)."""
    return f"sd:sim:control:{host_id}"


def sim_placement_key(simulator_id: str) -> str:
    """The host a simulator was placed on."""
    return f"sd:sim:where:{simulator_id}"


def sim_ack_key(request_id: str) -> str:
    """LIST the host pushes a request's answer onto."""
    return f"sd:sim:ack:{request_id}"
