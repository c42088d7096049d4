"""Random command sequences through both deciders and their policies, in memory.

Policies are routed through a FIFO queue, as the runtime routes them through the partition's
command stream. Invariants checked after every step hold whatever the interleaving:
- at most one simulator of a session is active (seed 002), enforced by the session's slot;
- every event survives the msgpack codec (what the runtime stores is what evolve folds);
- folding an actor's whole history from scratch gives the state kept incrementally;
- the shared state version only grows, and rejections are always `DomainError`s.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors.registry import decider_for
from actors.simulator import Simulator
from events.codec import decode_command, decode_event, encode
from events.errors import DomainError
from events.session import (
    ApplyStateChanges,
    CreateSession,
    EndSession,
    JoinDevice,
    LeaveDevice,
    RefreshSession,
    ReserveSimulator,
    TouchDevices,
)
from events.simulator import (
    ACTIVE_STATUSES,
    RecordHeartbeat,
    RecordProvisioned,
    RecordProvisionFailed,
    RecordStopped,
    StopSimulator,
)

SESSION = "session:s-1"
USER = "u"
devices = st.sampled_from(["d1", "d2", "d3"])
connections = st.sampled_from(["c1", "c2"])


class DeciderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000
        self.histories: dict[str, list[Any]] = {}
        self.states: dict[str, Any] = {}
        self.simulators: list[str] = []
        self.last_state_version = 0
        self.incarnations = 0  # SessionCreated events seen: each starts the version anew

    # -- the in-memory runtime ------------------------------------------------------------

    def send(self, actor_id: str, command: Any) -> None:
        queue: deque[tuple[str, Any]] = deque([(actor_id, command)])
        while queue:
            target, cmd = queue.popleft()
            cmd = decode_command(encode(cmd))
            decider = decider_for(target)
            state = self.states.get(target, decider.initial_state)
            try:
                events = decider.decide(cmd, state)
            except DomainError:
                continue
            for event in events:
                event = decode_event(encode(event))
                state = decider.evolve(state, event)
                self.histories.setdefault(target, []).append(event)
                queue.extend((r.actor_id, r.command) for r in decider.react(state, event))
            self.states[target] = state

    def tick(self, ms: int) -> int:
        self.now += ms
        return self.now

    # -- rules ----------------------------------------------------------------------------

    @rule(restart=st.booleans())
    def create(self, restart: bool) -> None:
        self.send(
            SESSION,
            CreateSession(
                at=self.tick(1),
                session_id="s-1",
                user_id=USER,
                ttl_ms=60_000,
                presence_timeout_ms=5_000,
                restart=restart,
            ),
        )

    @rule()
    def refresh(self) -> None:
        self.send(SESSION, RefreshSession(at=self.tick(1), user_id=USER))

    @rule()
    def end(self) -> None:
        self.send(SESSION, EndSession(at=self.tick(1), user_id=USER))

    @rule(device=devices, connection=connections)
    def join(self, device: str, connection: str) -> None:
        self.send(
            SESSION,
            JoinDevice(at=self.tick(1), device_id=device, connection_id=f"{device}-{connection}"),
        )

    @rule(device=devices, connection=connections)
    def leave(self, device: str, connection: str) -> None:
        self.send(
            SESSION,
            LeaveDevice(at=self.tick(1), device_id=device, connection_id=f"{device}-{connection}"),
        )

    @rule(device=devices)
    def touch(self, device: str) -> None:
        self.send(SESSION, TouchDevices(at=self.tick(1), device_ids=[device]))

    @rule(key=st.sampled_from("abc"), value=st.integers(0, 9), check=st.booleans())
    def change_state(self, key: str, value: int, check: bool) -> None:
        base = self.last_state_version if check else None
        self.send(
            SESSION,
            ApplyStateChanges(
                at=self.tick(1), user_id=USER, changes={key: value}, base_version=base
            ),
        )

    @rule()
    def reserve_simulator(self) -> None:
        simulator_id = f"m{len(self.simulators)}"
        self.simulators.append(simulator_id)
        self.send(
            SESSION,
            ReserveSimulator(
                at=self.tick(1),
                user_id=USER,
                simulator_id=simulator_id,
                initial_symbols=["X"],
                heartbeat_timeout_ms=3_000,
                idle_timeout_ms=50_000,
            ),
        )

    @rule(
        data=st.data(),
        what=st.sampled_from(["provisioned", "heartbeat", "failed", "stop", "stopped"]),
    )
    def report(self, data: st.DataObject, what: str) -> None:
        if not self.simulators:
            return
        actor = "simulator:" + data.draw(st.sampled_from(self.simulators))
        at = self.tick(1)
        command = {
            "provisioned": RecordProvisioned(at=at, endpoint="local://x"),
            "heartbeat": RecordHeartbeat(at=at),
            "failed": RecordProvisionFailed(at=at, reason="boom"),
            "stop": StopSimulator(at=at),
            "stopped": RecordStopped(at=at),
        }[what]
        self.send(actor, command)

    @rule(ms=st.integers(1, 70_000))
    def time_passes_and_timers_fire(self, ms: int) -> None:
        self.tick(ms)
        for actor_id, state in list(self.states.items()):
            for timer in decider_for(actor_id).deadlines(state):
                if timer.due <= self.now:
                    self.send(actor_id, timer.command)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def at_most_one_active_simulator(self) -> None:
        active = [
            s
            for s in self.states.values()
            if isinstance(s, Simulator) and s.status in ACTIVE_STATUSES
        ]
        assert len(active) <= 1, active

    @invariant()
    def folding_the_history_gives_the_same_state(self) -> None:
        for actor_id, history in self.histories.items():
            assert decider_for(actor_id).fold(history) == self.states[actor_id]

    @invariant()
    def the_state_version_only_grows_within_an_incarnation(self) -> None:
        state = self.states.get(SESSION)
        version = getattr(state, "state_version", None)
        if version is not None:
            created = sum(
                1 for e in self.histories[SESSION] if type(e).__name__ == "SessionCreated"
            )
            if created == self.incarnations:
                assert version >= self.last_state_version
            self.incarnations = created
            self.last_state_version = version


DeciderMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestDeciders = DeciderMachine.TestCase
