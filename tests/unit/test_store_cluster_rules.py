"""The pure rules of the store's cluster support (`infra.store.redis.cluster`): hash slots as
Redis computes them, which key routes a command, redirections, the slot map, supported
servers."""

from __future__ import annotations

import redis.crc

from infra.store import layout
from infra.store.redis.cluster import (
    Redirect,
    ServerInfo,
    SlotMap,
    command_key,
    parse_redirect,
)
from infra.store.routing import key_slot, partition_slot


def test_key_slots_match_redis_hash_tags() -> None:
    assert key_slot(b"123456789") == 12739  # the CRC16 check value of the cluster spec
    for key in (b"foo", b"{user1000}.following", b"foo{}{bar}", b"{}x", b"a{b", "sd:{p3}:cmd"):
        assert key_slot(key) == redis.crc.key_slot(key if isinstance(key, bytes) else key.encode())
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")


def test_every_key_and_channel_of_a_partition_shares_its_slot() -> None:
    p = 5
    names = [
        layout.command_stream(p),
        layout.event_stream(p, "session:x"),
        layout.partition_log(p),
        layout.lease_key(p, "projector"),
        layout.epoch_key(p),
        layout.fenced_key(p),
        layout.snapshot_key(p, "session:x"),
        layout.timers_key(p),
        layout.outcome_key(p, "c1"),
        layout.reply_channel(p, "gw-1"),
        layout.change_channel(p, "s-1"),
    ]
    assert {key_slot(n) for n in names} == {partition_slot(p)}
    assert layout.session_of_change_channel(layout.change_channel(p, "s-1").encode()) == "s-1"
    assert layout.session_of_change_channel(layout.ADMIN_CHANNEL.encode()) is None


def test_market_data_streams_share_a_few_tags() -> None:
    slots = {key_slot(layout.market_data_stream(f"sim-{i}")) for i in range(500)}
    assert len(slots) == layout.MARKET_DATA_BUCKETS


def test_the_key_that_routes_a_command() -> None:
    assert command_key(("GET", "k")) == "k"
    assert command_key(("EVALSHA", "sha", 2, "k1", "k2", "a")) == "k1"
    assert command_key(("EVALSHA", "sha", 0, "a")) is None
    assert command_key(("XREAD", "COUNT", 5, "BLOCK", 10, "STREAMS", "s1", "0-0")) == "s1"
    assert command_key(("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">")) == "s"
    assert command_key(("XGROUP", "CREATE", "s", "g", "0", "MKSTREAM")) == "s"
    assert command_key(("XINFO", "GROUPS", "s")) == "s"
    assert command_key(("SPUBLISH", "chan", "x")) == "chan"
    assert command_key(("PING",)) is None
    assert command_key(("SCRIPT", "LOAD", "return 1")) is None


def test_redirections_are_told_apart_from_other_errors() -> None:
    assert parse_redirect("MOVED 3999 127.0.0.1:6381") == Redirect(
        "MOVED", 3999, ("127.0.0.1", 6381)
    )
    assert parse_redirect("ASK 3999 :6382", "10.0.0.1") == Redirect("ASK", 3999, ("10.0.0.1", 6382))
    for retry in ("TRYAGAIN Multiple keys request during rehashing of slot", "CLUSTERDOWN x"):
        assert parse_redirect(retry) == Redirect("RETRY", -1, None)
    assert parse_redirect("ERR FENCED") is None
    assert parse_redirect("NOSCRIPT No matching script") is None


def test_the_slot_map_follows_cluster_slots_and_moved_replies() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id0"], [b"127.0.0.1", 7003, b"id3"]],
        [5461, 16383, [b"", 7001, b"id1"]],
    ]
    slots = SlotMap.parse(reply, "10.1.1.1")
    assert slots.owner(0) == slots.owner(5460) == ("127.0.0.1", 7000)
    assert slots.owner(5461) == ("10.1.1.1", 7001)  # an empty host: the node that answered
    assert slots.masters() == [("127.0.0.1", 7000), ("10.1.1.1", 7001)]
    assert ("127.0.0.1", 7003) in slots.nodes and slots.covered()
    slots.assign(100, ("127.0.0.1", 7001))
    assert slots.owner(100) == ("127.0.0.1", 7001) and slots.owner(101) == ("127.0.0.1", 7000)


def test_servers_older_than_redis_7_or_valkey_7_2_are_refused_in_one_line() -> None:
    valkey9 = ServerInfo.parse(
        b"# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\n"
        b"server_mode:cluster\r\n"
    )
    assert valkey9 == ServerInfo("valkey", (9, 1, 2), True) and valkey9.refusal() is None
    redis7 = ServerInfo.parse("redis_version:7.0.15\r\nredis_mode:standalone\r\n")
    assert redis7.name == "redis" and not redis7.cluster and redis7.refusal() is None
    old_valkey = ServerInfo.parse("redis_version:7.2.4\r\nvalkey_version:7.0.1\r\n")
    redis6 = ServerInfo.parse("redis_version:6.2.14\r\nredis_mode:cluster\r\n")
    for old in (old_valkey, redis6):
        refusal = old.refusal()
        assert refusal is not None and "\n" not in refusal
        assert "Redis >= 7.0 or Valkey >= 7.2" in refusal and old.version_text in refusal
