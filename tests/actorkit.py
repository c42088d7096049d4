"""Event histories written through the event store without a worker, for tests and benchmarks.

`LocalActors` runs commands through the real deciders (and their policies) in the test process
and appends the events through the store's one fenced append (`PartitionWriter.append`), as a
worker owning the partition would (with the live change its append publishes), minus the command
streams, outcomes and timers. It takes the
worker lease's epoch of each partition it writes to (acquired and at once released), so a worker
started later fences it: use it only where no worker runs on the same partitions. It works on
any store (`open_store`, `MemoryStore`).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from actors.registry import decider_for
from events.codec import encode, type_name
from events.envelope import EventEnvelope
from events.errors import DomainError
from events.ids import actor_kind, actor_uuid
from infra.store import APPENDED, PartitionWriter, Store
from projections.changes import live_change

__all__ = ["LocalActors", "random_command"]

#: The command stream entry a `LocalActors` append names: none (nothing to acknowledge).
_NO_ENTRY = b"0-1"


class LocalActors:
    """Decide locally, append through `store` (see the module)."""

    def __init__(self, store: Store, owner: str = "local-actors") -> None:
        self.store = store
        self.owner = owner
        self.partitions = store.partitions
        self.states: dict[str, tuple[int, Any]] = {}  # actor id -> (version, state)
        self.sessions: dict[str, str] = {}  # actor id -> session id (its partition key)
        self.history: dict[str, list[tuple[int, Any]]] = {}  # actor -> [(version, state)]
        self.appended = 0
        self._writers: dict[int, PartitionWriter] = {}
        # per partition: (command id, actor, expected version, encoded events, live change)
        self._queued: dict[int, list[tuple[str, str, int, list[bytes], Any]]] = {}

    @property
    def pending(self) -> int:
        """Commands decided and not appended yet (`flush` appends them)."""
        return sum(len(q) for q in self._queued.values())

    def _session_of(self, actor_id: str, command: Any) -> str:
        if actor_kind(actor_id) == "session":
            return actor_uuid(actor_id)
        sid = getattr(command, "session_id", "") or self.sessions.get(actor_id, "")
        if not sid:
            raise ValueError(f"unknown session of {actor_id}")
        return sid

    def send_nowait(
        self, actor_id: str, command: Any, command_id: str | None = None
    ) -> list[EventEnvelope]:
        """Decide, fold, queue the append (done by `flush`); follows policies at once."""
        sid = self._session_of(actor_id, command)
        self.sessions[actor_id] = sid
        p = self.store.partition_of(sid)
        decider = decider_for(actor_id)
        expected, state = self.states.get(actor_id, (0, decider.initial_state))
        version = expected
        command_id = command_id or uuid.uuid4().hex
        events = decider.decide(command, state)
        out = []
        routed: list[Any] = []
        for i, event in enumerate(events):
            version += 1
            state = decider.evolve(state, event)
            env = EventEnvelope(
                event_id=uuid.uuid4().hex,
                actor_id=actor_id,
                version=version,
                partition=p,
                ts=event.at,
                command_id=command_id,
                correlation_id=command_id,
                causation_id=command_id,
                type=type_name(event),
                data=msgspec.Raw(encode(event)),
            )
            out.append(env)
            self.history.setdefault(actor_id, []).append((version, state))
            routed.extend((f"{env.event_id}/{i}", r) for r in decider.react(state, event))
        if out:
            queued = self._queued.setdefault(p, [])
            change = live_change(out, events)  # what a worker's append publishes
            queued.append((command_id, actor_id, expected, [encode(env) for env in out], change))
        self.states[actor_id] = (version, state)
        self.appended += len(out)
        for cid, r in routed:
            self.sessions.setdefault(r.actor_id, sid)
            out.extend(self.send_nowait(r.actor_id, r.command, cid))
        return out

    async def _writer(self, partition: int) -> PartitionWriter:
        """The partition's writer, with an epoch of the worker lease taken the first time."""
        writer = self._writers.get(partition)
        if writer is None:
            epoch = await self.store.leases.acquire("worker", partition, self.owner, 10_000)
            if epoch is None:
                raise RuntimeError(f"a worker holds partition {partition}: no LocalActors here")
            await self.store.leases.release("worker", partition, self.owner)
            writer = self._writers[partition] = self.store.open_partition(
                partition, epoch, self.owner
            )
        return writer

    async def flush(self) -> None:
        """Append what `send_nowait` queued, one fenced append per partition."""
        queued, self._queued = self._queued, {}
        for p, commands in queued.items():
            writer = await self._writer(p)
            batch = writer.new_batch()
            for command_id, actor_id, expected, events, change in commands:
                batch.append(
                    _NO_ENTRY,
                    command_id,
                    batch.actor(actor_id),
                    expected,
                    "",
                    b"",
                    events,
                    [],
                    [],
                    [],
                    None,
                    change,
                )
            results = await writer.append(batch)
            if any(r != APPENDED for r in results):
                raise AssertionError(f"partition {p}: the store refused appends: {results}")

    async def send(self, actor_id: str, command: Any, *, ok: bool = True) -> list[EventEnvelope]:
        """Send and append now. `ok=False` tolerates a domain error (returns [])."""
        try:
            out = self.send_nowait(actor_id, command)
        except DomainError:
            if ok:
                raise
            out = []
        await self.flush()
        return out

    async def close(self) -> None:
        """Release the writers' connections."""
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            await writer.close()


def random_command(
    rng: Any, actors: LocalActors, session_ids: list[str], now: int
) -> tuple[str, Any]:
    """One plausible command for a random session (some will be refused: that is fine)."""
    from events import session as se
    from events import simulator as si

    sid = rng.choice(session_ids)
    aid = f"session:{sid}"
    user = f"user-{sid[:4]}"
    _, state = actors.states.get(aid, (0, None))
    kind = type(state).__name__ if state is not None else "NotStarted"
    if kind != "Active":
        return aid, se.CreateSession(
            at=now,
            user_id=user,
            session_id=sid,
            device_id="dev-0",
            pod_name="pod-a",
            ip_address="10.0.0.1",
            token=f"tok-{sid[:6]}",
        )
    roll = rng.random()
    dev = f"dev-{rng.randrange(3)}"
    if roll < 0.20:
        return aid, se.JoinDevice(
            at=now,
            user_id=user,
            device_id=f"dev-{rng.randrange(4)}",
            connection_id=f"c-{rng.randrange(4)}",
            transport=rng.choice([se.Transport.WS, se.Transport.SSE]),
            device_type="mobile",
            device_name="Phone",
            os="ios",
            pod_name="pod-b",
            ip_address="10.0.0.2",
            max_connections=rng.choice([0, 3]),
            max_devices=rng.choice([0, 0, 2]),
            retention_ms=rng.choice([0, 60_000]),
        )
    if roll < 0.30:
        devices = list(state.devices.values())
        if devices:
            d = rng.choice(devices)
            if d.connections:
                return aid, se.LeaveDevice(
                    at=now,
                    user_id=user,
                    device_id=d.device_id,
                    connection_id=rng.choice(list(d.connections)),
                )
        return aid, se.RefreshSession(at=now, user_id=user)
    if roll < 0.45:
        return aid, se.ApplyStateChanges(
            at=now,
            user_id=user,
            device_id=dev,
            changes={f"k{rng.randrange(5)}": rng.randrange(100)},
            deleted_keys=[f"k{rng.randrange(5)}"] if rng.random() < 0.2 else [],
        )
    if roll < 0.52:
        return aid, se.ReplaceState(
            at=now,
            user_id=user,
            session_id=sid,
            device_id=dev,
            app_version="2.1.0",
            state={"meditation_progress": rng.randrange(100), "current_mood": "calm"},
        )
    if roll < 0.58:
        return aid, se.RefreshSession(at=now, user_id=user)
    if roll < 0.63:
        return aid, se.ChangeConnectionQuality(
            at=now, user_id=user, quality=rng.choice(list(se.ConnectionQuality)), rtt_ms=42.0
        )
    if roll < 0.66:
        return aid, se.UpdateMetadata(
            at=now, user_id=user, values={"theme": rng.choice(["dark", "light"])}
        )
    if roll < 0.72:
        slot = state.simulator
        if slot is None or not slot.active:
            return aid, se.ReserveSimulator(
                at=now,
                user_id=user,
                simulator_id=uuid.uuid4().hex,
                initial_symbols=["AAPL", "MSFT"],
                initial_cash=50000.0,
            )
        sim = f"simulator:{slot.simulator_id}"
        _, sim_state = actors.states.get(sim, (0, None))
        status = getattr(sim_state, "status", None)
        if status == si.SimulatorStatus.CREATING:
            endpoint = f"http://sim-{slot.simulator_id[:6]}"
            return sim, si.RecordProvisioned(at=now, endpoint=endpoint)
        if status == si.SimulatorStatus.STOPPING:
            return sim, si.RecordStopped(at=now)
        if rng.random() < 0.2:
            return sim, si.StopSimulator(at=now, user_id=user)
        return sim, si.RecordHeartbeat(at=now)
    if roll < 0.76:
        online = [d for d in state.devices.values() if d.connections]
        if len(online) >= 1:
            return aid, se.StartHandoff(
                at=now,
                user_id=user,
                token=uuid.uuid4().hex,
                source_device=online[0].device_id,
                target_device="dev-9",
            )
        return aid, se.TouchDevices(at=now, user_id=user, device_ids=["dev-0"])
    if roll < 0.79 and state.handoffs:
        token = rng.choice(list(state.handoffs))
        if rng.random() < 0.5:
            return aid, se.AcceptHandoff(at=now, user_id=user, token=token, device_id="dev-9")
        return aid, se.ExpireHandoff(at=now + 10 * 60_000, token=token)
    if roll < 0.85:
        online = [d.device_id for d in state.devices.values() if d.connections]
        return aid, se.TouchDevices(at=now, user_id=user, device_ids=online or ["dev-0"])
    if roll < 0.88:
        online = [d for d in state.devices.values() if d.connections]
        offline = [d for d in state.devices.values() if not d.connections]
        if offline and rng.random() < 0.5:
            return aid, se.ForgetDevice(at=now + 2 * 60_000, device_id=offline[0].device_id)
        if online:
            return aid, se.TimeOutDevice(at=now + 3 * 60_000, device_id=online[0].device_id)
        return aid, se.DisconnectDevice(at=now, user_id=user, device_id="dev-0")
    if roll < 0.93:
        return aid, se.EndSession(at=now, user_id=user)
    if roll < 0.96:
        return aid, se.ExpireSession(at=state.expires_at)
    return aid, se.CreateSession(
        at=now, user_id=user, session_id=sid, restart=True, device_id="dev-1"
    )
