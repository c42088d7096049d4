"""Where everything lives in Redis: the only module that spells key and channel names.

Every key of a partition shares the hash tag `{pN}`, so a partition lives in one Redis Cluster
slot and each Lua script touches one slot. Used by the Redis store, and read by white-box tests
that look at Redis directly; everything else goes through the store's API.
"""

from __future__ import annotations

__all__ = [
    "ADMIN_CHANNEL",
    "CHANGE_MARK",
    "COMMAND_GROUP",
    "GATEWAYS",
    "SIM_HOSTS",
    "SIM_LOAD",
    "change_channel",
    "change_session",
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


def reply_channel(name: str) -> str:
    """Pub/sub channel of one command sender's outcomes."""
    return f"sd:reply:{name}"


#: What separates a change channel's partition tag from its session id.
CHANGE_MARK = b":chg:"
#: The admin broadcast channel.
ADMIN_CHANNEL = "sd:admin:broadcast"


def change_channel(partition: int, session_id: str) -> str:
    """Pub/sub channel of a session's changes (the live view), published by the append script
    when it accepts the session's events: in the partition's slot (`{pN}`), so the script's
    publish stays on the partition's node in a cluster."""
    return f"{partition_tag(partition)}:chg:{session_id}"


def change_session(channel: bytes) -> str | None:
    """The session id of a change channel (None: not a change channel)."""
    head, mark, sid = channel.partition(CHANGE_MARK)
    return sid.decode() if mark and head.startswith(b"sd:{p") else None


def status_key(role: str, owner: str) -> str:
    """One process's status record (JSON, with a TTL)."""
    return f"sd:{role}:{owner}:status"


def projector_status_key(owner: str) -> str:
    return status_key("projector", owner)


def market_data_stream(simulator_id: str) -> str:
    """Capped stream of one simulator's ticks (field `d`: JSON)."""
    return f"sd:md:{simulator_id}"


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
