"""Which partition a session lives in: a pure rule every process must agree on.

The partition key is always the *session* id, so a session and its simulator share a partition
(and, on Redis, one hash slot: a partition's keys share the tag `{pN}`).
"""

from __future__ import annotations

import zlib

__all__ = ["DEFAULT_PARTITIONS", "partition_of"]

#: Partitions of a deployment unless configured (`SESSIOND_PARTITIONS`); fixed per deployment.
DEFAULT_PARTITIONS = 16


def partition_of(session_id: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """crc32(session id) mod P."""
    return zlib.crc32(session_id.encode()) % partitions
