"""Given events / when command / then events, for every command of the simulator actor."""

from __future__ import annotations

import pytest

from actors import simulator as m
from actors.decider import Routed, Timer
from events.ids import session_actor
from events.session import RecordSimulatorStatus
from events.simulator import (
    CheckActivity,
    CheckHeartbeat,
    CreateSimulator,
    RecordActivity,
    RecordHeartbeat,
    RecordProvisioned,
    RecordProvisionFailed,
    RecordStopped,
    SimulatorActivityRecorded,
    SimulatorFailed,
    SimulatorHeartbeatRecorded,
    SimulatorProvisioned,
    SimulatorRequested,
    SimulatorRunning,
    SimulatorStatus,
    SimulatorStopped,
    SimulatorStopping,
    StopSimulator,
)
from tests.unit.decider_spec import Spec

HB = 30_000
IDLE = 3_600_000
REQUESTED = SimulatorRequested(
    at=1000,
    simulator_id="sim-1",
    session_id="s-1",
    owner_id="u",
    initial_symbols=["AAPL", "MSFT"],
    initial_cash=5000.0,
    heartbeat_timeout_ms=HB,
    idle_timeout_ms=IDLE,
)
PROVISIONED = SimulatorProvisioned(at=2000, endpoint="local://h/sim-1")
RUNNING = SimulatorRunning(at=3000)
STOPPING = SimulatorStopping(at=4000, reason="requested")


@pytest.fixture
def spec() -> Spec:
    return Spec(m.decider)


def status_after(*events: object) -> SimulatorStatus:
    return m.decider.fold(events).status


def test_create_requests_a_simulator_in_creating(spec: Spec) -> None:
    command = CreateSimulator(
        at=1000,
        simulator_id="sim-1",
        session_id="s-1",
        owner_id="u",
        initial_symbols=["AAPL", "MSFT"],
        initial_cash=5000.0,
        heartbeat_timeout_ms=HB,
        idle_timeout_ms=IDLE,
    )
    assert spec.when(command).then(REQUESTED).status is SimulatorStatus.CREATING
    spec.given(REQUESTED).when(command).then()  # the policy's retry


@pytest.mark.parametrize(
    "command",
    [
        CreateSimulator(at=1, simulator_id="", session_id="s", owner_id="u", initial_symbols=["X"]),
        CreateSimulator(at=1, simulator_id="m", session_id="s", owner_id="u", initial_symbols=[]),
        CreateSimulator(
            at=1,
            simulator_id="m",
            session_id="s",
            owner_id="u",
            initial_symbols=["X"],
            heartbeat_timeout_ms=0,
        ),
    ],
)
def test_create_with_bad_arguments_is_refused(spec: Spec, command: CreateSimulator) -> None:
    spec.when(command).fails("INVALID_ARGUMENT")


def test_commands_to_an_unknown_simulator_say_not_found(spec: Spec) -> None:
    spec.when(StopSimulator(at=5)).fails("SIMULATOR_NOT_FOUND")


def test_commands_from_another_user_are_forbidden(spec: Spec) -> None:
    spec.given(REQUESTED).when(StopSimulator(at=5, user_id="mallory")).fails("SESSION_FORBIDDEN")


def test_an_admin_may_stop_another_users_simulator(spec: Spec) -> None:
    spec.given(REQUESTED).when(StopSimulator(at=5, user_id="root", admin=True)).then(
        SimulatorStopping(at=5, reason="requested")
    )


def test_the_status_walks_creating_starting_running_stopping_stopped(spec: Spec) -> None:
    spec.given(REQUESTED).when(RecordProvisioned(at=2000, endpoint="local://h/sim-1")).then(
        PROVISIONED
    )
    spec.given(REQUESTED, PROVISIONED).when(RecordHeartbeat(at=3000)).then(RUNNING)
    spec.given(REQUESTED, PROVISIONED, RUNNING).when(StopSimulator(at=4000)).then(STOPPING)
    state = (
        spec.given(REQUESTED, PROVISIONED, RUNNING, STOPPING)
        .when(RecordStopped(at=5000))
        .then(SimulatorStopped(at=5000))
    )
    assert state.status is SimulatorStatus.STOPPED and m.is_terminal(state)


def test_heartbeats_while_running_are_recorded(spec: Spec) -> None:
    state = (
        spec.given(REQUESTED, PROVISIONED, RUNNING)
        .when(RecordHeartbeat(at=9000))
        .then(SimulatorHeartbeatRecorded(at=9000))
    )
    assert state.last_heartbeat == 9000


@pytest.mark.parametrize(
    "history",
    [(REQUESTED,), (REQUESTED, PROVISIONED, RUNNING, STOPPING)],
)
def test_heartbeats_outside_starting_or_running_are_ignored(spec: Spec, history: tuple) -> None:
    spec.given(*history).when(RecordHeartbeat(at=9000)).then()


def test_provisioning_failure_is_an_error_with_the_reason(spec: Spec) -> None:
    state = (
        spec.given(REQUESTED)
        .when(RecordProvisionFailed(at=1500, reason="quota"))
        .then(SimulatorFailed(at=1500, reason="quota"))
    )
    assert state.status is SimulatorStatus.ERROR and state.reason == "quota"
    assert m.is_terminal(state)


def test_late_reports_after_stopping_are_ignored(spec: Spec) -> None:
    history = (REQUESTED, STOPPING)
    spec.given(*history).when(RecordProvisioned(at=4500, endpoint="x")).then()
    spec.given(*history).when(RecordProvisionFailed(at=4500, reason="x")).then()
    spec.given(*history).when(StopSimulator(at=4500)).then()


def test_recording_stopped_outside_stopping_is_ignored(spec: Spec) -> None:
    spec.given(REQUESTED, PROVISIONED).when(RecordStopped(at=4500)).then()


def test_client_activity_pushes_the_idle_stop_out(spec: Spec) -> None:
    state = (
        spec.given(REQUESTED, PROVISIONED, RUNNING)
        .when(RecordActivity(at=7000))
        .then(SimulatorActivityRecorded(at=7000))
    )
    assert state.last_active == 7000
    spec.given(REQUESTED, STOPPING).when(RecordActivity(at=7000)).then()


def test_no_heartbeat_within_the_timeout_is_an_error(spec: Spec) -> None:
    due = RUNNING.at + HB
    spec.given(REQUESTED, PROVISIONED, RUNNING).when(CheckHeartbeat(at=due)).then(
        SimulatorFailed(at=due, reason="no heartbeat for 30 s")
    )


def test_a_heartbeat_check_after_a_recent_heartbeat_is_a_no_op(spec: Spec) -> None:
    beat = SimulatorHeartbeatRecorded(at=RUNNING.at + HB - 1)
    spec.given(REQUESTED, PROVISIONED, RUNNING, beat).when(
        CheckHeartbeat(at=RUNNING.at + HB)
    ).then()


def test_no_client_activity_for_the_idle_timeout_stops_it(spec: Spec) -> None:
    due = REQUESTED.at + IDLE
    spec.given(REQUESTED, PROVISIONED, RUNNING).when(CheckActivity(at=due)).then(
        SimulatorStopping(at=due, reason="inactive")
    )
    spec.given(REQUESTED, PROVISIONED, RUNNING).when(CheckActivity(at=due - 1)).then()


def test_timer_checks_of_an_unknown_simulator_are_no_ops(spec: Spec) -> None:
    spec.when(CheckHeartbeat(at=1)).then()
    spec.when(CheckActivity(at=1)).then()


def test_deadlines_follow_the_status() -> None:
    assert m.deadlines(m.decider.fold([REQUESTED])) == [
        Timer("idle", REQUESTED.at + IDLE, CheckActivity(at=REQUESTED.at + IDLE))
    ]
    running = m.decider.fold([REQUESTED, PROVISIONED, RUNNING])
    assert m.deadlines(running) == [
        Timer("heartbeat", RUNNING.at + HB, CheckHeartbeat(at=RUNNING.at + HB)),
        Timer("idle", REQUESTED.at + IDLE, CheckActivity(at=REQUESTED.at + IDLE)),
    ]
    assert m.deadlines(m.decider.fold([REQUESTED, STOPPING])) == []


def test_every_status_change_is_reported_to_the_session() -> None:
    state = m.decider.fold([REQUESTED, PROVISIONED])
    assert m.react(state, PROVISIONED) == [
        Routed(
            session_actor("s-1"),
            RecordSimulatorStatus(
                at=2000, simulator_id="sim-1", status="STARTING", endpoint="local://h/sim-1"
            ),
        )
    ]
    failed = SimulatorFailed(at=9, reason="boom")
    assert m.react(m.decider.fold([REQUESTED, failed]), failed)[0].command.reason == "boom"
    beat = SimulatorHeartbeatRecorded(at=5)
    assert m.react(m.decider.fold([REQUESTED, PROVISIONED, RUNNING, beat]), beat) == []


def test_a_session_command_sent_to_a_simulator_is_invalid(spec: Spec) -> None:
    spec.given(REQUESTED).when(RecordSimulatorStatus(at=1, simulator_id="x", status="X")).fails(
        "INVALID_COMMAND"
    )


def test_an_event_before_the_request_leaves_no_simulator() -> None:
    assert m.decider.fold([PROVISIONED, RUNNING, STOPPING]) == m.NoSimulator()
