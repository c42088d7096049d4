"""Which partition a session lives in, and which Redis Cluster slot a partition lives in: pure
rules every process must agree on.

The partition key is always the *session* id, so a session and its simulator share a partition
(and, on Redis, one hash slot: a partition's keys share the tag `{pN}`).
"""

from __future__ import annotations

import binascii
import zlib

__all__ = ["DEFAULT_PARTITIONS", "SLOTS", "key_slot", "partition_of", "partition_slot"]

#: Hash slots of a Redis Cluster.
SLOTS = 16384

#: Partitions of a deployment unless configured (`SESSIOND_PARTITIONS`); fixed per deployment.
DEFAULT_PARTITIONS = 16


def partition_of(session_id: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """crc32(session id) mod P."""
    return zlib.crc32(session_id.encode()) % partitions


def key_slot(key: bytes | str) -> int:
    """The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the
    first ``{`` and the next ``}`` when not empty), else of the whole key, modulo 16384."""
    if isinstance(key, str):
        key = key.encode()
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key, 0) % SLOTS


def partition_slot(partition: int) -> int:
    """The slot of every key of a partition (its tag `{pN}`)."""
    return key_slot(f"{{p{partition}}}")
