"""Random command sequences through the real runtime on real Redis, against the pure decider.

A worker runs in a background event loop with a tiny actor cache and a snapshot every 3 events,
so loads from snapshots and streams happen all the time. Each step sends one command (or
retries an earlier command id, or empties the worker's cache) and checks that:
- the outcome is what the pure decider says (accepted with the same version, or refused with the
  same error code); a retried command id gets its first outcome back;
- every session's Redis stream holds exactly the events of the in-memory fold, in order, with
  versions 1..n as stream ids.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from actors.registry import decider_for
from actors.runtime.worker import Worker
from events.codec import decode_event, decode_event_envelope
from events.errors import DomainError
from events.ids import session_actor
from events.session import (
    AcceptHandoff,
    ApplyStateChanges,
    ChangeConnectionQuality,
    ConnectionQuality,
    CreateSession,
    EndSession,
    JoinDevice,
    LeaveDevice,
    RefreshSession,
    ReplaceState,
    StartHandoff,
    UpdateMetadata,
)
from infra.store import layout, open_store
from infra.store.routing import partition_of
from tests.rediskit import connect

P = 4
SESSIONS = 3
users = st.sampled_from(["owner", "owner", "owner", "eve"])
devices = st.sampled_from(["d1", "d2"])
connections = st.sampled_from(["c1", "c2"])
state_keys = st.sampled_from(["a", "b", "c"])
small = st.integers(min_value=0, max_value=3)


def command_for(session_id: str, at: int, user: str, data: Any) -> Any:
    """One session command, built from drawn `data`."""
    kind = data.draw(st.sampled_from(
        ["create", "refresh", "end", "metadata", "join", "leave", "replace",
         "changes", "quality", "handoff", "accept"]
    ))  # fmt: skip
    if kind == "create":
        return CreateSession(at=at, user_id=user, session_id=session_id,
                             restart=data.draw(st.booleans()))  # fmt: skip
    if kind == "refresh":
        return RefreshSession(at=at, user_id=user)
    if kind == "end":
        return EndSession(at=at, user_id=user)
    if kind == "metadata":
        return UpdateMetadata(at=at, user_id=user, values={data.draw(state_keys): data.draw(small)})
    if kind == "join":
        return JoinDevice(at=at, user_id=user, device_id=data.draw(devices),
                          connection_id=data.draw(connections))  # fmt: skip
    if kind == "leave":
        return LeaveDevice(at=at, user_id=user, device_id=data.draw(devices),
                           connection_id=data.draw(connections))  # fmt: skip
    if kind == "replace":
        return ReplaceState(at=at, user_id=user, session_id=session_id,
                            state={data.draw(state_keys): data.draw(small)},
                            version=data.draw(st.none() | small))  # fmt: skip
    if kind == "changes":
        return ApplyStateChanges(at=at, user_id=user, changes={data.draw(state_keys): 1},
                                 deleted_keys=data.draw(st.lists(state_keys, max_size=1)),
                                 base_version=data.draw(st.none() | small))  # fmt: skip
    if kind == "quality":
        return ChangeConnectionQuality(at=at, user_id=user,
                                       quality=data.draw(st.sampled_from(list(ConnectionQuality))),
        )  # fmt: skip
    if kind == "handoff":
        return StartHandoff(at=at, user_id=user, token=data.draw(st.sampled_from(["t1", "t2"])),
                            source_device="d1", target_device="d2")  # fmt: skip
    return AcceptHandoff(at=at, user_id=user, token=data.draw(st.sampled_from(["t1", "t2"])),
                         device_id=data.draw(devices))  # fmt: skip


class Runtime:
    """A worker and a command bus living in their own event loop thread."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.url = url
        self.call(self._start())

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.redis = connect(self.url)
        self.store = open_store(self.url, P)
        self.bus = self.store.commands
        await self.bus.start()
        self.worker = Worker(
            self.store, worker_id="prop", lease_ttl_ms=5000,
            snapshot_every=3, cache_max_actors=2,
        )  # fmt: skip
        self.task = asyncio.create_task(self.worker.run())
        await asyncio.wait_for(self.worker.ready.wait(), 10)

    async def _stop(self) -> None:
        self.worker.stop()
        await asyncio.wait_for(self.task, 15)
        await self.store.aclose()
        await self.redis.aclose()

    async def _clear_cache(self) -> None:
        for actor in list(self.worker.cache):
            self.worker.cache.discard(actor.actor_id)

    async def _events(self, session_id: str) -> list[tuple[bytes, Any]]:
        p = partition_of(session_id, P)
        entries = await self.redis.xrange(layout.event_stream(p, session_actor(session_id)))
        out = []
        for entry_id, fields in entries:
            env = decode_event_envelope(fields[b"e"])
            out.append((entry_id, env))
        return out

    def close(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def test_runtime_matches_the_pure_decider(redis_url: str) -> None:
    runtime = Runtime(redis_url)
    decider = decider_for("session:x")

    class RuntimeMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.sessions = [str(uuid.uuid4()) for _ in range(SESSIONS)]
            self.states = {s: decider.initial_state for s in self.sessions}
            self.events: dict[str, list[Any]] = {s: [] for s in self.sessions}
            self.sent: list[tuple[str, str, Any, Any]] = []  # (session, id, command, outcome)
            self.at = int(time.time() * 1000)

        @rule(index=st.integers(0, SESSIONS - 1), user=users, data=st.data())
        def send(self, index: int, user: str, data: Any) -> None:
            sid = self.sessions[index]
            self.at += data.draw(st.integers(1, 1000))
            command = command_for(sid, self.at, user, data)
            try:
                expected = decider.decide(command, self.states[sid])
                error = None
            except DomainError as exc:
                expected, error = [], exc.code
            cid = str(uuid.uuid4())
            out = runtime.call(runtime.bus.send(session_actor(sid), sid, command, command_id=cid))
            assert out is not None
            if error is not None:
                assert (out.ok, out.error_code) == (False, error), (command, out)
            else:
                assert out.ok, (command, out)
                for event in expected:
                    self.states[sid] = decider.evolve(self.states[sid], event)
                self.events[sid].extend(expected)
                assert (out.version, out.events) == (len(self.events[sid]), len(expected))
            self.sent.append((sid, cid, command, out))

        @rule(data=st.data())
        def retry(self, data: Any) -> None:
            if not self.sent:
                return
            sid, cid, command, first = data.draw(st.sampled_from(self.sent))
            again = runtime.call(runtime.bus.send(session_actor(sid), sid, command, command_id=cid))
            assert again == first

        @rule()
        def forget_cached_actors(self) -> None:
            runtime.call(runtime._clear_cache())

        @invariant()
        def streams_equal_the_fold(self) -> None:
            for sid in self.sessions:
                stored = runtime.call(runtime._events(sid))
                assert [eid for eid, _ in stored] == [
                    f"{v}-0".encode() for v in range(1, len(stored) + 1)
                ]
                got = [decode_event(env.data, env.type) for _, env in stored]
                assert got == self.events[sid]

    try:
        run_state_machine_as_test(
            RuntimeMachine,
            settings=settings(
                max_examples=20,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        runtime.close()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
