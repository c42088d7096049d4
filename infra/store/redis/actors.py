"""Reading actors' event streams on Redis (`sd:{pN}:ev:<actor>`, stream id = version), with the
archive behind it for what Redis no longer holds."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from events.codec import decode_event_envelope
from events.envelope import EventEnvelope
from events.ids import actor_kind, actor_uuid
from infra.store import layout
from infra.store.api import ActorHistory, Archive, Snapshot
from infra.store.redis.client import RedisClient, flat_pairs
from infra.store.redis.resp import pack
from infra.store.routing import partition_of

__all__ = ["RedisActorReader", "decode_snapshot"]

log = logging.getLogger("sessiond.store")

_snapshot = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])
_PAGE = 1000


def decode_snapshot(raw: bytes | None) -> Snapshot | None:
    """A stored msgpack `[version, state]`; None when absent or unreadable."""
    if not raw:
        return None
    try:
        version, state = _snapshot.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("ignoring an unreadable snapshot: %s", exc)
        return None
    return Snapshot(version, bytes(state))


def _version(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _payload(fields: Any) -> bytes:
    if fields and fields[0] == b"e":
        return fields[1]
    return flat_pairs(fields or []).get(b"e", b"")


def _events(entries: Any) -> list[tuple[int, bytes]]:
    return [(_version(entry_id), _payload(fields)) for entry_id, fields in entries or ()]


class RedisActorReader:
    """See `api.ActorReader`."""

    def __init__(self, client: RedisClient, partitions: int, archive: Archive | None) -> None:
        self.client = client
        self.partitions = partitions
        self.archive = archive

    async def load(
        self, partition: int, actor_ids: Sequence[str], *, from_snapshot: bool = True
    ) -> dict[str, ActorHistory]:
        ids = list(actor_ids)
        if not ids:
            return {}
        snaps: list[Snapshot | None] = [None] * len(ids)
        if from_snapshot:
            raw = await self.client.call("MGET", *(layout.snapshot_key(partition, a) for a in ids))
            snaps = [decode_snapshot(r) for r in raw]
        client = self.client
        futures = [
            client.submit(
                "XRANGE", layout.event_stream(partition, a), f"{s.version + 1 if s else 1}-0", "+"
            )
            for a, s in zip(ids, snaps, strict=True)
        ]
        out: dict[str, ActorHistory] = {}
        for actor_id, snap, fut in zip(ids, snaps, futures, strict=True):
            out[actor_id] = ActorHistory(snap, _events(await fut))
        return out

    async def _range(
        self, partition: int, actor_id: str, after: int, upto: int | None, limit: int | None
    ) -> list[tuple[int, bytes]]:
        key = layout.event_stream(partition, actor_id)
        end = "+" if upto is None else f"{upto}-0"
        out: list[tuple[int, bytes]] = []
        start = after + 1
        while limit is None or len(out) < limit:
            page = _PAGE if limit is None else min(_PAGE, limit - len(out))
            got = _events(await self.client.call("XRANGE", key, f"{start}-0", end, "COUNT", page))
            out.extend(got)
            if len(got) < page:
                break
            start = got[-1][0] + 1
        return out

    async def read(
        self,
        partition: int,
        actor_id: str,
        *,
        after: int = 0,
        upto: int | None = None,
        limit: int | None = None,
    ) -> list[EventEnvelope]:
        if upto is not None and upto <= after:
            return []
        live = [
            decode_event_envelope(e)
            for _, e in await self._range(partition, actor_id, after, upto, limit)
        ]
        first = live[0].version if live else None
        if self.archive is None or (first is not None and first <= after + 1):
            return live
        before = first if first is not None else (None if upto is None else upto + 1)
        older = await self.archive.events(actor_id, after, before)
        merged = older + live
        return merged if limit is None else merged[:limit]

    async def read_backwards(
        self, partition: int, actor_id: str, *, before: int | None = None, limit: int = 200
    ) -> list[EventEnvelope]:
        if before is not None and before <= 1:
            return []
        top = "+" if before is None else f"{before - 1}-0"
        entries = await self.client.call(
            "XREVRANGE", layout.event_stream(partition, actor_id), top, "-", "COUNT", limit
        )
        return [decode_event_envelope(e) for _, e in _events(entries)]

    async def last_version(self, partition: int, actor_id: str) -> int:
        key = layout.event_stream(partition, actor_id)
        last, exists = await self.client.call_many(
            [("XREVRANGE", key, "+", "-", "COUNT", 1), ("EXISTS", key)]
        )
        if last:
            return _version(last[0][0])
        if exists:  # every entry was trimmed: the stream still knows its last id
            info = flat_pairs(await self.client.call("XINFO", "STREAM", key))
            last_id = info.get(b"last-generated-id") or b"0-0"
            if _version(last_id):
                return _version(last_id)
        if self.archive is not None:
            return await self.archive.last_version(actor_id)
        return 0

    async def follow(
        self, partition: int, actor_id: str, *, after: int = 0, block_ms: int = 1000
    ) -> AsyncIterator[EventEnvelope]:
        key = layout.event_stream(partition, actor_id)
        pipe = self.client.dedicated(f"follow-{actor_id}", key)
        last: bytes | str = f"{after}-0"
        try:
            while True:
                reply = await pipe.submit(
                    pack(("XREAD", "COUNT", 500, "BLOCK", block_ms, "STREAMS", key, last))
                )
                for _, entries in reply or ():
                    for entry_id, fields in entries:
                        last = entry_id
                        yield decode_event_envelope(_payload(fields))
        finally:
            pipe.close()

    async def find_partition(self, actor_id: str, session_id: str | None = None) -> int | None:
        if session_id is None and actor_kind(actor_id) == "session":
            session_id = actor_uuid(actor_id)
        if session_id:
            return partition_of(session_id, self.partitions)
        found = await self.client.call_many(
            [("EXISTS", layout.event_stream(p, actor_id)) for p in range(self.partitions)]
        )
        return next((p for p, exists in enumerate(found) if exists), None)

    async def snapshot_versions(
        self, partition: int, actor_ids: Sequence[str]
    ) -> dict[str, int | None]:
        if not actor_ids:
            return {}
        raw = await self.client.call(
            "MGET", *(layout.snapshot_key(partition, a) for a in actor_ids)
        )
        out: dict[str, int | None] = {}
        for actor_id, r in zip(actor_ids, raw, strict=True):
            snap = decode_snapshot(r)
            out[actor_id] = None if snap is None else snap.version
        return out

    async def trim(
        self, partition: int, actor_id: str, below: int, *, dry_run: bool = False
    ) -> int:
        if below <= 1:
            return 0
        key = layout.event_stream(partition, actor_id)
        if dry_run:
            return len(await self.client.call("XRANGE", key, "-", f"{below - 1}-0"))
        return int(await self.client.call("XTRIM", key, "MINID", f"{below}-0"))
