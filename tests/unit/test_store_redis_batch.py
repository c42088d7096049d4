"""The Redis store's append batch lays its commands out as `lua.APPEND` reads them (RESP-framed
keys and arguments; the contract suite runs the script itself)."""

from __future__ import annotations

import msgspec

from infra.store import Snapshot
from infra.store import layout as L
from infra.store.redis.lua import APPEND
from infra.store.redis.resp import frame_str, pack, unframe
from infra.store.redis.writer import RedisAppendBatch

P = 3


def args_of(batch: RedisAppendBatch, epoch: int = 7) -> list[bytes]:
    fixed = b"".join(
        frame_str(k)
        for k in (
            L.epoch_key(P),
            L.partition_log(P),
            L.command_stream(P),
            L.timers_key(P),
            L.fenced_key(P),
        )
    )
    return unframe(batch.packed(fixed, epoch, frame_str("workers"), 5000))


def test_the_batch_frames_keys_then_the_append_scripts_arguments() -> None:
    batch = RedisAppendBatch(P, {})
    a = batch.actor("session:a")
    assert batch.actor("session:a") == a == 1
    batch.append(
        b"1-0",
        "c1",
        a,
        5,
        "reply",
        b"OUT1",
        [b"E6", b"E7"],
        [b"R"],
        [("t", 1003)],
        ["gone"],
        Snapshot(7, msgspec.msgpack.encode({"n": 1})),
        ("a", b"[change]"),
    )
    batch.settle(b"2-0", "c2", a, 7, "", b"OUT2")
    batch.repeat(b"3-0", "c1", "r2")
    batch.refuse(b"4-0", "c4", "", b"OUT4")
    batch.acknowledge(b"5-0")
    assert len(batch) == 5
    args = args_of(batch)
    assert args[:3] == [b"EVALSHA", APPEND.sha.encode(), b"12"]  # 5 fixed + 2 actor + 5 outcome
    keys = [k.decode() for k in args[3:15]]
    assert keys[:7] == [
        L.epoch_key(P),
        L.partition_log(P),
        L.command_stream(P),
        L.timers_key(P),
        L.fenced_key(P),
        L.event_stream(P, "session:a"),
        L.snapshot_key(P, "session:a"),
    ]
    assert keys[7:] == [L.outcome_key(P, c) for c in ("c1", "c2", "c1", "c4", "")]
    assert args[15:20] == [b"7", b"workers", b"5000", b"1", b"5"]
    rest = args[20:]
    first = [
        b"1-0",
        b"1",
        b"5",
        b"reply",
        b"OUT1",
        b"2",
        b"E6",
        b"E7",
        b"1",
        b"R",
        b"1",
        b"session:a|t",
        b"1003",
        b"1",
        b"session:a|gone",
    ]
    assert rest[:15] == first
    assert msgspec.msgpack.decode(rest[15]) == [7, {"n": 1}]  # the snapshot: [version, state]
    assert rest[16:18] == [L.change_channel(P, "a").encode(), b"[change]"]
    noop = [b"0", b"0", b"0", b"0", b"", b"", b""]
    assert rest[18:30] == [b"2-0", b"1", b"7", b"", b"OUT2", *noop]
    assert rest[30:42] == [b"3-0", b"0", b"-2", b"r2", b"", *noop]
    assert rest[42:54] == [b"4-0", b"0", b"-1", b"", b"OUT4", *noop]
    assert rest[54:] == [b"5-0", b"0", b"-1", b"", b"", *noop]


def test_pack_frames_a_command_in_resp() -> None:
    assert (
        pack(["SET", "k", b"v\r\n", 12])
        == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\n12\r\n"
    )
