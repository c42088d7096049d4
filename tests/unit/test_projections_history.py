"""An actor's history and the log fold, read through the event store alone (the memory store
here; the integration tests run the same code on Redis and PostgreSQL)."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from events import session as se
from events.codec import decode_event
from events.envelope import EventEnvelope
from infra.store import MemoryStore
from projections.history import read_history
from projections.model import Model
from projections.verify import fold_logs, log_length
from tests.actorkit import LocalActors

pytestmark = pytest.mark.anyio

P = 4


class _ListArchive:
    """The `Archive` protocol over a list of envelopes."""

    def __init__(self, envelopes: list[EventEnvelope]) -> None:
        self.envelopes = envelopes

    async def events(self, actor_id: str, after: int, before: int | None) -> list[EventEnvelope]:
        return [
            e
            for e in self.envelopes
            if e.actor_id == actor_id
            and e.version > after
            and (before is None or e.version < before)
        ]

    async def last_version(self, actor_id: str) -> int:
        return max((e.version for e in self.envelopes if e.actor_id == actor_id), default=0)


async def _session(actors: LocalActors, changes: int) -> tuple[str, list[EventEnvelope]]:
    sid = str(uuid.uuid4())
    aid = f"session:{sid}"
    envs = await actors.send(aid, se.CreateSession(at=1, user_id="u", session_id=sid))
    for i in range(changes):
        envs += await actors.send(
            aid, se.ApplyStateChanges(at=2 + i, user_id="u", changes={"i": i})
        )
    return aid, envs


async def test_history_reads_the_store_then_the_archive_for_what_was_trimmed() -> None:
    store = MemoryStore(P)
    actors = LocalActors(store)
    aid, envs = await _session(actors, changes=4)
    p = store.partition_of(aid.split(":", 1)[1])
    assert [e.version for e in await read_history(store, aid)] == [1, 2, 3, 4, 5]
    assert await store.actors.trim(p, aid, 4) == 3
    assert [e.version for e in await read_history(store, aid)] == [4, 5]  # no archive: a gap
    store.archive = _ListArchive(envs)
    assert [e.event_id for e in await read_history(store, aid)] == [e.event_id for e in envs]
    assert [e.version for e in await read_history(store, aid, since=2)] == [3, 4, 5]


async def test_an_actor_no_partition_of_the_store_holds_is_read_from_the_archive() -> None:
    _, envs = await _session(LocalActors(MemoryStore(P)), changes=2)
    sim = f"simulator:{uuid.uuid4()}"  # no session to route by: looked for, found nowhere
    archived = [msgspec.structs.replace(e, actor_id=sim) for e in envs]
    store = MemoryStore(P)
    assert await read_history(store, sim) == []
    store.archive = _ListArchive(archived)
    assert await read_history(store, sim) == archived
    assert await read_history(store, sim, since=1) == archived[1:]


async def test_the_fold_of_the_logs_is_what_the_model_folds_from_the_events() -> None:
    store = MemoryStore(P)
    actors = LocalActors(store)
    folded = Model()
    for _ in range(3):
        _, envs = await _session(actors, changes=2)
        for env in envs:
            folded.apply(env, decode_event(env.data, env.type))
    assert await log_length(store) == 9
    model = await fold_logs(store)
    assert model.sessions == folded.sessions and model.actors == folded.actors
