"""Given events / when command / then events, for every command of the session actor."""

from __future__ import annotations

import pytest

from actors import session as s
from actors.decider import Routed, Timer
from events.ids import simulator_actor
from events.session import (
    AcceptHandoff,
    ApplyStateChanges,
    ChangeConnectionQuality,
    ConflictResolved,
    ConflictStrategy,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionQuality,
    ConnectionQualityChanged,
    CreateSession,
    DeviceForgotten,
    DeviceJoined,
    DeviceLeft,
    DevicesSeen,
    DisconnectDevice,
    EndSession,
    ExpireHandoff,
    ExpireSession,
    ForgetDevice,
    HandoffAccepted,
    HandoffExpired,
    HandoffStarted,
    JoinDevice,
    LeaveDevice,
    MetadataUpdated,
    RecordSimulatorStatus,
    RefreshSession,
    ReplaceState,
    ReserveSimulator,
    ResolveConflict,
    SessionCreated,
    SessionEnded,
    SessionExpired,
    SessionRefreshed,
    SimulatorReserved,
    SimulatorStatusRecorded,
    StartHandoff,
    StateChanged,
    StateReplaced,
    TimeOutDevice,
    TouchDevices,
    Transport,
    UpdateMetadata,
)
from events.simulator import CreateSimulator, StopSimulator
from tests.unit.decider_spec import Spec

SID = "550e8400-e29b-41d4-a716-446655440000"
USER = "user-123"
TTL = 1_000_000
CREATED = SessionCreated(
    at=1000, session_id=SID, user_id=USER, expires_at=1000 + TTL, ttl_ms=TTL, device_id="d1"
)
JOINED = DeviceJoined(at=1100, device_id="d1", connection_id="c1", device_type="mobile")
STATE_V1 = StateReplaced(at=1200, state={"a": 1, "b": 2}, state_version=1)
RESERVED = SimulatorReserved(at=1300, simulator_id="sim-1", user_id=USER, initial_symbols=["X"])


@pytest.fixture
def spec() -> Spec:
    return Spec(s.decider)


# ----------------------------------------------------------------------------- create


def test_create_starts_a_session_that_expires_after_its_ttl(spec: Spec) -> None:
    spec.when(CreateSession(at=1000, session_id=SID, user_id=USER, device_id="d1", ttl_ms=TTL))
    state = spec.then(CREATED)
    assert isinstance(state, s.Active) and state.expires_at == 1000 + TTL


def test_create_again_by_the_owner_is_an_idempotent_no_op(spec: Spec) -> None:
    spec.given(CREATED).when(CreateSession(at=2000, session_id=SID, user_id=USER)).then()


def test_create_with_restart_ends_the_old_session_and_starts_a_fresh_one(spec: Spec) -> None:
    command = CreateSession(at=2000, session_id=SID, user_id=USER, restart=True, ttl_ms=TTL)
    state = (
        spec.given(CREATED, JOINED, STATE_V1)
        .when(command)
        .then(
            SessionEnded(at=2000, reason="restarted"),
            SessionCreated(
                at=2000, session_id=SID, user_id=USER, expires_at=2000 + TTL, ttl_ms=TTL
            ),
        )
    )
    assert state.devices == {} and state.state == {} and state.state_version == 0


def test_restart_stops_the_active_simulator_by_policy(spec: Spec) -> None:
    command = CreateSession(at=2000, session_id=SID, user_id=USER, restart=True, ttl_ms=TTL)
    events = s.decide(command, s.decider.fold([CREATED, RESERVED]))
    assert events[0] == SessionEnded(at=2000, reason="restarted", simulator_id="sim-1")
    assert s.react(s.decider.fold([CREATED, RESERVED, events[0]]), events[0]) == [
        Routed(simulator_actor("sim-1"), StopSimulator(at=2000, reason="session ended"))
    ]


def test_create_of_an_ended_session_starts_it_again(spec: Spec) -> None:
    ended = SessionEnded(at=1500)
    spec.given(CREATED, ended).when(
        CreateSession(at=2000, session_id=SID, user_id=USER, ttl_ms=TTL)
    ).then(SessionCreated(at=2000, session_id=SID, user_id=USER, expires_at=2000 + TTL, ttl_ms=TTL))


def test_create_past_expiry_expires_the_old_session_first(spec: Spec) -> None:
    at = 1000 + TTL + 1
    spec.given(CREATED).when(CreateSession(at=at, session_id=SID, user_id=USER, ttl_ms=TTL)).then(
        SessionExpired(at=at),
        SessionCreated(at=at, session_id=SID, user_id=USER, expires_at=at + TTL, ttl_ms=TTL),
    )


def test_create_of_another_users_session_is_forbidden(spec: Spec) -> None:
    spec.given(CREATED).when(CreateSession(at=2000, session_id=SID, user_id="mallory")).fails(
        "SESSION_FORBIDDEN"
    )


@pytest.mark.parametrize(
    "command",
    [
        CreateSession(at=1, session_id="", user_id=USER),
        CreateSession(at=1, session_id=SID, user_id=""),
        CreateSession(at=1, session_id=SID, user_id=USER, ttl_ms=0),
        CreateSession(at=1, session_id=SID, user_id=USER, presence_timeout_ms=-1),
    ],
)
def test_create_with_bad_arguments_is_refused(spec: Spec, command: CreateSession) -> None:
    spec.when(command).fails("INVALID_ARGUMENT")


# ----------------------------------------------------------------------------- the liveness guard
# Every client request passes the same guard first (`_live`); RefreshSession probes it here.


def test_a_request_to_an_unknown_session_says_not_found(spec: Spec) -> None:
    spec.when(RefreshSession(at=2000, user_id=USER)).fails("SESSION_NOT_FOUND")


def test_a_request_past_expires_at_says_expired_before_the_timer_fires(spec: Spec) -> None:
    spec.given(CREATED).when(RefreshSession(at=1000 + TTL)).fails("SESSION_EXPIRED")


def test_a_request_to_an_ended_session_says_ended(spec: Spec) -> None:
    spec.given(CREATED, SessionEnded(at=5)).when(RefreshSession(at=6)).fails("SESSION_ENDED")


def test_a_request_by_another_user_is_forbidden(spec: Spec) -> None:
    spec.given(CREATED).when(RefreshSession(at=2000, user_id="x")).fails("SESSION_FORBIDDEN")


def test_a_request_by_another_user_to_an_ended_session_is_forbidden_not_ended(spec: Spec) -> None:
    spec.given(CREATED, SessionEnded(at=5)).when(RefreshSession(at=6, user_id="x")).fails(
        "SESSION_FORBIDDEN"
    )


def test_an_admin_reaches_another_users_session(spec: Spec) -> None:
    command = ApplyStateChanges(at=2000, user_id="root", admin=True, changes={"a": 9})
    spec.given(CREATED, STATE_V1).when(command).then(
        StateChanged(at=2000, changes={"a": 9}, deleted_keys=[], state_version=2)
    )
    spec.given(CREATED).when(EndSession(at=2000, user_id="root", admin=True)).then(
        SessionEnded(at=2000, reason="ended")
    )


def test_refresh_extends_expiry_by_the_ttl(spec: Spec) -> None:
    state = (
        spec.given(CREATED)
        .when(RefreshSession(at=5000, user_id=USER))
        .then(SessionRefreshed(at=5000, expires_at=5000 + TTL))
    )
    assert state.last_active == 5000 and state.expires_at == 5000 + TTL


def test_a_state_write_a_minute_after_the_last_refresh_keeps_the_session_alive(
    spec: Spec,
) -> None:
    at = 1000 + s.REFRESH_EVERY_MS
    state = (
        spec.given(CREATED, JOINED, STATE_V1)
        .when(ApplyStateChanges(at=at, user_id=USER, changes={"a": 9}))
        .then(
            StateChanged(at=at, changes={"a": 9}, deleted_keys=[], state_version=2),
            SessionRefreshed(at=at, expires_at=at + TTL),
        )
    )
    assert state.expires_at == at + TTL and s.deadlines(state)[0].due == at + TTL


def test_activity_within_a_minute_of_the_last_refresh_adds_no_event(spec: Spec) -> None:
    at = 1000 + s.REFRESH_EVERY_MS - 1
    spec.given(CREATED, JOINED).when(TouchDevices(at=at, device_ids=["d1"])).then(
        DevicesSeen(at=at, device_ids=["d1"])
    )


def test_a_short_ttl_is_refreshed_by_activity_every_quarter_of_it(spec: Spec) -> None:
    short = SessionCreated(at=0, session_id=SID, user_id=USER, expires_at=15_000, ttl_ms=15_000)
    joined = DeviceJoined(at=1, device_id="d1", connection_id="c1")
    spec.given(short, joined).when(TouchDevices(at=4_000, device_ids=["d1"])).then(
        DevicesSeen(at=4_000, device_ids=["d1"]),
        SessionRefreshed(at=4_000, expires_at=19_000),
    )


def test_refresh_of_an_expired_session_is_refused(spec: Spec) -> None:
    spec.given(CREATED, SessionExpired(at=5)).when(RefreshSession(at=6)).fails("SESSION_EXPIRED")


# ----------------------------------------------------------------------------- end, expire


def test_end_from_another_router_is_refused(spec: Spec) -> None:
    on_router = SessionCreated(
        at=1000, session_id=SID, user_id=USER, expires_at=1000 + TTL, ttl_ms=TTL, router_id="r-1"
    )
    spec.given(on_router).when(EndSession(at=2000, user_id=USER, router_id="r-2")).fails(
        "ROUTER_MISMATCH"
    )
    spec.given(on_router).when(EndSession(at=2000, user_id=USER, router_id="r-1")).then(
        SessionEnded(at=2000, reason="ended")
    )


def test_end_ends_the_session(spec: Spec) -> None:
    state = (
        spec.given(CREATED)
        .when(EndSession(at=2000, user_id=USER))
        .then(SessionEnded(at=2000, reason="ended"))
    )
    assert isinstance(state, s.Ended) and s.is_terminal(state)


def test_end_twice_is_a_no_op(spec: Spec) -> None:
    spec.given(CREATED, SessionEnded(at=5)).when(EndSession(at=6)).then()


def test_end_an_unknown_session_says_not_found(spec: Spec) -> None:
    spec.when(EndSession(at=6)).fails("SESSION_NOT_FOUND")


def test_end_another_users_session_is_forbidden(spec: Spec) -> None:
    spec.given(CREATED).when(EndSession(at=6, user_id="x")).fails("SESSION_FORBIDDEN")


def test_end_of_another_users_ended_session_is_forbidden_not_a_no_op(spec: Spec) -> None:
    spec.given(CREATED, SessionEnded(at=5)).when(EndSession(at=6, user_id="x")).fails(
        "SESSION_FORBIDDEN"
    )


def test_end_with_an_active_simulator_stops_it_by_policy(spec: Spec) -> None:
    state = (
        spec.given(CREATED, RESERVED)
        .when(EndSession(at=2000))
        .then(SessionEnded(at=2000, simulator_id="sim-1"))
    )
    assert s.react(state, SessionEnded(at=2000, simulator_id="sim-1")) == [
        Routed(simulator_actor("sim-1"), StopSimulator(at=2000, reason="session ended"))
    ]


def test_expiry_timer_at_expires_at_expires_the_session(spec: Spec) -> None:
    spec.given(CREATED, RESERVED).when(ExpireSession(at=1000 + TTL)).then(
        SessionExpired(at=1000 + TTL, simulator_id="sim-1")
    )


def test_expiry_timer_after_a_refresh_is_a_no_op(spec: Spec) -> None:
    refreshed = SessionRefreshed(at=5000, expires_at=5000 + TTL)
    spec.given(CREATED, refreshed).when(ExpireSession(at=1000 + TTL)).then()


def test_expiry_timer_of_an_ended_session_is_a_no_op(spec: Spec) -> None:
    spec.given(CREATED, SessionEnded(at=5)).when(ExpireSession(at=1000 + TTL)).then()


# ----------------------------------------------------------------------------- quality, metadata


def test_quality_change_is_recorded_only_when_it_changes(spec: Spec) -> None:
    poor = ChangeConnectionQuality(at=2000, quality=ConnectionQuality.POOR, rtt_ms=900.0)
    spec.given(CREATED).when(poor).then(
        ConnectionQualityChanged(at=2000, quality=ConnectionQuality.POOR, rtt_ms=900.0)
    )
    good = ChangeConnectionQuality(at=2000, quality=ConnectionQuality.GOOD)
    spec.given(CREATED).when(good).then()


def test_metadata_update_merges_and_none_deletes(spec: Spec) -> None:
    state = (
        spec.given(CREATED, MetadataUpdated(at=1, values={"a": 1, "b": 2}))
        .when(UpdateMetadata(at=2000, values={"b": None, "c": 3}))
        .then(MetadataUpdated(at=2000, values={"b": None, "c": 3}))
    )
    assert state.metadata == {"a": 1, "c": 3}


def test_empty_metadata_update_is_a_no_op(spec: Spec) -> None:
    spec.given(CREATED).when(UpdateMetadata(at=2000, values={})).then()


# ----------------------------------------------------------------------------- devices


def test_first_connection_of_a_device_joins_it(spec: Spec) -> None:
    join = JoinDevice(at=1100, device_id="d1", connection_id="c1", device_type="mobile")
    state = spec.given(CREATED).when(join).then(JOINED)
    assert state.devices["d1"].online


def test_second_connection_of_an_online_device_opens_a_connection(spec: Spec) -> None:
    join = JoinDevice(at=1150, device_id="d1", connection_id="c2", transport=Transport.SSE)
    state = (
        spec.given(CREATED, JOINED)
        .when(join)
        .then(
            ConnectionOpened(at=1150, device_id="d1", connection_id="c2", transport=Transport.SSE)
        )
    )
    assert set(state.devices["d1"].connections) == {"c1", "c2"}


def test_joining_with_a_known_connection_is_a_no_op(spec: Spec) -> None:
    spec.given(CREATED, JOINED).when(JoinDevice(at=2, device_id="d1", connection_id="c1")).then()


def test_join_without_ids_is_refused(spec: Spec) -> None:
    spec.given(CREATED).when(JoinDevice(at=2, device_id="", connection_id="c")).fails(
        "INVALID_ARGUMENT"
    )


def test_join_an_unknown_session_says_not_found(spec: Spec) -> None:
    spec.when(JoinDevice(at=2, device_id="d", connection_id="c")).fails("SESSION_NOT_FOUND")


def test_last_connection_closing_makes_the_device_leave(spec: Spec) -> None:
    state = (
        spec.given(CREATED, JOINED)
        .when(LeaveDevice(at=1500, device_id="d1", connection_id="c1"))
        .then(DeviceLeft(at=1500, device_id="d1", reason="left"))
    )
    assert not state.devices["d1"].online


def test_closing_one_of_two_connections_keeps_the_device_online(spec: Spec) -> None:
    opened = ConnectionOpened(at=1150, device_id="d1", connection_id="c2")
    spec.given(CREATED, JOINED, opened).when(
        LeaveDevice(at=1500, device_id="d1", connection_id="c1")
    ).then(ConnectionClosed(at=1500, device_id="d1", connection_id="c1"))


def test_leaving_never_fails_even_for_unknown_or_ended_sessions(spec: Spec) -> None:
    leave = LeaveDevice(at=1500, device_id="d1", connection_id="c1")
    spec.when(leave).then()
    spec.given(CREATED, JOINED, SessionEnded(at=5)).when(leave).then()
    spec.given(CREATED).when(leave).then()


def test_touch_refreshes_presence_of_online_devices_only(spec: Spec) -> None:
    state = (
        spec.given(CREATED, JOINED)
        .when(TouchDevices(at=60_000, device_ids=["d1", "ghost"]))
        .then(DevicesSeen(at=60_000, device_ids=["d1"]))
    )
    assert state.devices["d1"].last_seen == 60_000
    spec.given(CREATED).when(TouchDevices(at=60_000, device_ids=["ghost"])).then()


def test_presence_timer_makes_an_unseen_device_leave(spec: Spec) -> None:
    due = JOINED.at + CREATED.presence_timeout_ms
    spec.given(CREATED, JOINED).when(TimeOutDevice(at=due, device_id="d1")).then(
        DeviceLeft(at=due, device_id="d1", reason="timeout")
    )


def test_presence_timer_after_a_touch_is_a_no_op(spec: Spec) -> None:
    due = JOINED.at + CREATED.presence_timeout_ms
    seen = DevicesSeen(at=due - 1, device_ids=["d1"])
    spec.given(CREATED, JOINED, seen).when(TimeOutDevice(at=due, device_id="d1")).then()


def test_presence_timer_of_an_offline_or_unknown_device_is_a_no_op(spec: Spec) -> None:
    due = JOINED.at + CREATED.presence_timeout_ms
    left = DeviceLeft(at=1500, device_id="d1")
    spec.given(CREATED, JOINED, left).when(TimeOutDevice(at=due, device_id="d1")).then()
    spec.given(CREATED).when(TimeOutDevice(at=due, device_id="d1")).then()


def test_forced_disconnect_makes_the_device_leave(spec: Spec) -> None:
    spec.given(CREATED, JOINED).when(DisconnectDevice(at=2000, device_id="d1")).then(
        DeviceLeft(at=2000, device_id="d1", reason="disconnected")
    )


def test_disconnecting_an_unknown_device_says_device_not_found(spec: Spec) -> None:
    spec.given(CREATED).when(DisconnectDevice(at=2000, device_id="d9")).fails("DEVICE_NOT_FOUND")


def test_disconnecting_an_offline_device_is_a_no_op(spec: Spec) -> None:
    left = DeviceLeft(at=1500, device_id="d1")
    spec.given(CREATED, JOINED, left).when(DisconnectDevice(at=2000, device_id="d1")).then()


# ----------------------------------------------------------------------------- device limits


def test_a_connection_beyond_the_sessions_cap_is_refused(spec: Spec) -> None:
    opened = ConnectionOpened(at=1150, device_id="d1", connection_id="c2")
    spec.given(CREATED, JOINED, opened).when(
        JoinDevice(at=1200, device_id="d2", connection_id="c3", max_connections=2)
    ).fails("TOO_MANY_CONNECTIONS")
    spec.given(CREATED, JOINED, opened).when(
        JoinDevice(at=1200, device_id="d1", connection_id="c3", max_connections=2)
    ).fails("TOO_MANY_CONNECTIONS")


def test_a_connection_under_the_cap_or_already_counted_is_accepted(spec: Spec) -> None:
    spec.given(CREATED, JOINED).when(
        JoinDevice(at=1200, device_id="d1", connection_id="c2", max_connections=2)
    ).then(ConnectionOpened(at=1200, device_id="d1", connection_id="c2"))
    spec.given(CREATED, JOINED).when(
        JoinDevice(at=1200, device_id="d1", connection_id="c1", max_connections=1)
    ).then()


def test_a_new_device_beyond_the_cap_makes_the_oldest_offline_one_forgotten(spec: Spec) -> None:
    d2 = DeviceJoined(at=1110, device_id="d2", connection_id="c2")
    d3 = DeviceJoined(at=1120, device_id="d3", connection_id="c3")
    history = (
        CREATED,
        JOINED,
        d2,
        d3,
        DeviceLeft(at=1300, device_id="d3"),
        DeviceLeft(at=1400, device_id="d1"),
    )
    state = (
        spec.given(*history)
        .when(JoinDevice(at=1500, device_id="d4", connection_id="c4", max_devices=3))
        .then(
            DeviceForgotten(at=1500, device_id="d3", reason="evicted"),
            DeviceJoined(at=1500, device_id="d4", connection_id="c4"),
        )
    )
    assert set(state.devices) == {"d1", "d2", "d4"}


def test_a_lowered_device_cap_forgets_as_many_offline_devices_as_needed(spec: Spec) -> None:
    d2 = DeviceJoined(at=1110, device_id="d2", connection_id="c2")
    history = (
        CREATED,
        JOINED,
        d2,
        DeviceLeft(at=1300, device_id="d2"),
        DeviceLeft(at=1400, device_id="d1"),
    )
    state = (
        spec.given(*history)
        .when(JoinDevice(at=1500, device_id="d4", connection_id="c4", max_devices=1))
        .then(
            DeviceForgotten(at=1500, device_id="d2", reason="evicted"),
            DeviceForgotten(at=1500, device_id="d1", reason="evicted"),
            DeviceJoined(at=1500, device_id="d4", connection_id="c4"),
        )
    )
    assert set(state.devices) == {"d4"}


def test_a_new_device_is_refused_when_every_known_device_is_online(spec: Spec) -> None:
    d2 = DeviceJoined(at=1110, device_id="d2", connection_id="c2")
    spec.given(CREATED, JOINED, d2).when(
        JoinDevice(at=1500, device_id="d3", connection_id="c3", max_devices=2)
    ).fails("TOO_MANY_DEVICES")


def test_a_known_device_coming_back_needs_no_room(spec: Spec) -> None:
    d2 = DeviceJoined(at=1110, device_id="d2", connection_id="c2")
    left = DeviceLeft(at=1300, device_id="d2")
    spec.given(CREATED, JOINED, d2, left).when(
        JoinDevice(at=1500, device_id="d2", connection_id="c3", max_devices=2)
    ).then(DeviceJoined(at=1500, device_id="d2", connection_id="c3"))


def test_an_offline_device_is_forgotten_after_its_retention(spec: Spec) -> None:
    joined = DeviceJoined(at=1100, device_id="d1", connection_id="c1", retention_ms=5000)
    left = DeviceLeft(at=2000, device_id="d1")
    state = (
        spec.given(CREATED, joined, left)
        .when(ForgetDevice(at=7000, device_id="d1"))
        .then(DeviceForgotten(at=7000, device_id="d1", reason="retention"))
    )
    assert state.devices == {}


def test_forgetting_early_back_online_kept_or_unknown_is_a_no_op(spec: Spec) -> None:
    joined = DeviceJoined(at=1100, device_id="d1", connection_id="c1", retention_ms=5000)
    left = DeviceLeft(at=2000, device_id="d1")
    back = DeviceJoined(at=3000, device_id="d1", connection_id="c2", retention_ms=5000)
    spec.given(CREATED, joined, left).when(ForgetDevice(at=6999, device_id="d1")).then()
    spec.given(CREATED, joined, left, back).when(ForgetDevice(at=7000, device_id="d1")).then()
    spec.given(CREATED, JOINED, DeviceLeft(at=2000, device_id="d1")).when(
        ForgetDevice(at=10**12, device_id="d1")
    ).then()
    spec.given(CREATED).when(ForgetDevice(at=7000, device_id="ghost")).then()
    spec.given(CREATED, joined, left, SessionEnded(at=2500)).when(
        ForgetDevice(at=7000, device_id="d1")
    ).then()


def test_an_offline_device_with_a_retention_has_a_forget_timer() -> None:
    joined = DeviceJoined(at=1100, device_id="d1", connection_id="c1", retention_ms=5000)
    online = s.decider.fold([CREATED, joined])
    assert [t.key for t in s.deadlines(online)] == ["expiry", "presence:d1"]
    offline = s.decider.fold([CREATED, joined, DeviceLeft(at=2000, device_id="d1")])
    assert s.deadlines(offline)[1:] == [
        Timer("forget:d1", 7000, ForgetDevice(at=7000, device_id="d1"))
    ]
    kept = s.decider.fold([CREATED, JOINED, DeviceLeft(at=2000, device_id="d1")])
    assert [t.key for t in s.deadlines(kept)] == ["expiry"]


# ----------------------------------------------------------------------------- shared state


def test_snapshot_of_an_unknown_session_creates_it(spec: Spec) -> None:
    command = ReplaceState(
        at=1000,
        session_id=SID,
        user_id=USER,
        state={"m": 75},
        version=1,
        device_id="device-456",
        app_version="2.1.0",
        ttl_ms=TTL,
    )
    state = spec.when(command).then(
        SessionCreated(
            at=1000,
            session_id=SID,
            user_id=USER,
            expires_at=1000 + TTL,
            ttl_ms=TTL,
            device_id="device-456",
        ),
        StateReplaced(
            at=1000, state={"m": 75}, state_version=1, device_id="device-456", app_version="2.1.0"
        ),
    )
    assert state.state == {"m": 75} and state.state_version == 1


@pytest.mark.parametrize(
    "command",
    [
        ReplaceState(at=1, session_id="", user_id=USER, state={}),
        ReplaceState(at=1, session_id=SID, user_id="", state={}),
        ReplaceState(at=1, session_id=SID, user_id=USER, state={}, ttl_ms=0),
    ],
)
def test_a_snapshot_that_would_start_a_session_needs_its_ids_and_a_ttl(
    spec: Spec, command: ReplaceState
) -> None:
    spec.when(command).fails("INVALID_ARGUMENT")


def test_snapshot_without_version_takes_the_next_version(spec: Spec) -> None:
    command = ReplaceState(at=2000, session_id=SID, user_id=USER, state={"z": 0})
    spec.given(CREATED, STATE_V1).when(command).then(
        StateReplaced(at=2000, state={"z": 0}, state_version=2)
    )


def test_snapshot_with_a_stale_version_is_a_version_conflict(spec: Spec) -> None:
    command = ReplaceState(at=2000, session_id=SID, user_id=USER, state={}, version=1)
    error = spec.given(CREATED, STATE_V1).when(command).fails("VERSION_CONFLICT")
    assert error.details["current_version"] == 1


def test_snapshot_of_another_users_session_is_forbidden(spec: Spec) -> None:
    command = ReplaceState(at=2000, session_id=SID, user_id="x", state={})
    spec.given(CREATED).when(command).fails("SESSION_FORBIDDEN")


def test_incremental_update_on_the_current_version_applies(spec: Spec) -> None:
    command = ApplyStateChanges(at=2000, changes={"a": 9}, deleted_keys=["b"], base_version=1)
    state = (
        spec.given(CREATED, STATE_V1)
        .when(command)
        .then(StateChanged(at=2000, changes={"a": 9}, deleted_keys=["b"], state_version=2))
    )
    assert state.state == {"a": 9} and state.state_version == 2


def test_incremental_update_on_an_old_version_is_a_version_conflict(spec: Spec) -> None:
    command = ApplyStateChanges(at=2000, changes={"a": 9}, base_version=0)
    spec.given(CREATED, STATE_V1).when(command).fails("VERSION_CONFLICT")


def test_incremental_update_without_base_version_is_last_writer_wins(spec: Spec) -> None:
    command = ApplyStateChanges(at=2000, changes={"a": 9})
    spec.given(CREATED, STATE_V1).when(command).then(
        StateChanged(at=2000, changes={"a": 9}, deleted_keys=[], state_version=2)
    )


def test_empty_incremental_update_is_a_no_op(spec: Spec) -> None:
    spec.given(CREATED, STATE_V1).when(ApplyStateChanges(at=2000, changes={})).then()


@pytest.mark.parametrize(
    ("strategy", "state", "version"),
    [
        (ConflictStrategy.SERVER_WINS, {"a": 1, "b": 2}, 1),
        (ConflictStrategy.CLIENT_WINS, {"a": 5, "c": 6}, 2),
        (ConflictStrategy.MERGE, {"a": 5, "b": 2, "c": 6}, 2),
    ],
)
def test_conflict_resolution_strategies(
    spec: Spec, strategy: ConflictStrategy, state: dict, version: int
) -> None:
    command = ResolveConflict(
        at=2000, client_state={"a": 5, "c": 6}, strategy=strategy, client_version=2
    )
    after = (
        spec.given(CREATED, STATE_V1)
        .when(command)
        .then(
            ConflictResolved(
                at=2000, strategy=strategy, state=state, state_version=version, client_version=2
            )
        )
    )
    assert after.state == state and after.state_version == version


# ----------------------------------------------------------------------------- handoff

HANDOFF = HandoffStarted(
    at=2000,
    token="tok",
    source_device="phone",
    target_device="tablet",
    state={"a": 1, "b": 2},
    state_version=1,
    expires_at=2000 + 300_000,
)


def test_handoff_carries_the_current_state_for_five_minutes(spec: Spec) -> None:
    command = StartHandoff(at=2000, token="tok", source_device="phone", target_device="tablet")
    spec.given(CREATED, STATE_V1).when(command).then(HANDOFF)


def test_handoff_to_the_same_device_is_refused(spec: Spec) -> None:
    command = StartHandoff(at=2000, token="t", source_device="a", target_device="a")
    spec.given(CREATED).when(command).fails("INVALID_ARGUMENT")


def test_the_target_device_accepts_a_handoff_once(spec: Spec) -> None:
    accept = AcceptHandoff(at=3000, token="tok", device_id="tablet")
    state = (
        spec.given(CREATED, STATE_V1, HANDOFF)
        .when(accept)
        .then(HandoffAccepted(at=3000, token="tok", source_device="phone", target_device="tablet"))
    )
    assert state.handoffs["tok"].accepted
    accepted = HandoffAccepted(at=3000, token="tok", source_device="phone", target_device="tablet")
    spec.given(CREATED, HANDOFF, accepted).when(accept).fails("HANDOFF_ALREADY_USED")


def test_an_unknown_handoff_token_is_not_found(spec: Spec) -> None:
    spec.given(CREATED).when(AcceptHandoff(at=3000, token="nope")).fails("HANDOFF_NOT_FOUND")


def test_an_expired_handoff_token_is_refused(spec: Spec) -> None:
    late = AcceptHandoff(at=HANDOFF.expires_at, token="tok")
    spec.given(CREATED, HANDOFF).when(late).fails("HANDOFF_EXPIRED")


def test_a_handoff_for_another_device_is_refused(spec: Spec) -> None:
    wrong = AcceptHandoff(at=3000, token="tok", device_id="laptop")
    spec.given(CREATED, HANDOFF).when(wrong).fails("HANDOFF_WRONG_DEVICE")


def test_handoff_timer_expires_the_token(spec: Spec) -> None:
    state = (
        spec.given(CREATED, HANDOFF)
        .when(ExpireHandoff(at=HANDOFF.expires_at, token="tok"))
        .then(HandoffExpired(at=HANDOFF.expires_at, token="tok"))
    )
    assert "tok" not in state.handoffs
    spec.given(CREATED).when(ExpireHandoff(at=1, token="tok")).then()


def test_a_handoff_timer_before_the_tokens_expiry_is_a_no_op(spec: Spec) -> None:
    early = ExpireHandoff(at=HANDOFF.expires_at - 1, token="tok")
    spec.given(CREATED, HANDOFF).when(early).then()


# ----------------------------------------------------------------------------- simulator slot


def test_reserving_a_simulator_creates_it_by_policy(spec: Spec) -> None:
    command = ReserveSimulator(at=1300, simulator_id="sim-1", initial_symbols=["X"], user_id=USER)
    state = spec.given(CREATED).when(command).then(RESERVED)
    assert s.react(state, RESERVED) == [
        Routed(
            simulator_actor("sim-1"),
            CreateSimulator(
                at=1300, simulator_id="sim-1", session_id=SID, owner_id=USER, initial_symbols=["X"]
            ),
        )
    ]


def test_a_second_simulator_while_one_is_active_is_refused(spec: Spec) -> None:
    command = ReserveSimulator(at=1400, simulator_id="sim-2", initial_symbols=["X"])
    spec.given(CREATED, RESERVED).when(command).fails("SIMULATOR_ALREADY_ACTIVE")


def test_a_new_simulator_after_the_old_one_stopped_is_allowed(spec: Spec) -> None:
    stopped = SimulatorStatusRecorded(at=1350, simulator_id="sim-1", status="STOPPED")
    command = ReserveSimulator(at=1400, simulator_id="sim-2", initial_symbols=["X"])
    spec.given(CREATED, RESERVED, stopped).when(command).then(
        SimulatorReserved(at=1400, simulator_id="sim-2", user_id=USER, initial_symbols=["X"])
    )


@pytest.mark.parametrize(
    "command",
    [
        ReserveSimulator(at=1, simulator_id="", initial_symbols=["X"]),
        ReserveSimulator(at=1, simulator_id="s", initial_symbols=[]),
        ReserveSimulator(at=1, simulator_id="s", initial_symbols=[" "]),
        ReserveSimulator(at=1, simulator_id="s", initial_symbols=["X"], initial_cash=0),
    ],
)
def test_bad_simulator_reservations_are_refused(spec: Spec, command: ReserveSimulator) -> None:
    spec.given(CREATED).when(command).fails("INVALID_ARGUMENT")


def test_simulator_status_is_mirrored_and_repeats_are_no_ops(spec: Spec) -> None:
    running = RecordSimulatorStatus(
        at=1400, simulator_id="sim-1", status="RUNNING", endpoint="local://sim-1"
    )
    state = (
        spec.given(CREATED, RESERVED)
        .when(running)
        .then(
            SimulatorStatusRecorded(
                at=1400, simulator_id="sim-1", status="RUNNING", endpoint="local://sim-1"
            )
        )
    )
    assert state.simulator.active
    recorded = SimulatorStatusRecorded(
        at=1400, simulator_id="sim-1", status="RUNNING", endpoint="local://sim-1"
    )
    spec.given(CREATED, RESERVED, recorded).when(running).then()


def test_status_of_an_older_simulator_is_ignored(spec: Spec) -> None:
    old = RecordSimulatorStatus(at=1400, simulator_id="sim-0", status="STOPPED")
    spec.given(CREATED, RESERVED).when(old).then()


def test_a_status_report_without_an_endpoint_keeps_the_known_one(spec: Spec) -> None:
    running = SimulatorStatusRecorded(
        at=1400, simulator_id="sim-1", status="RUNNING", endpoint="local://sim-1"
    )
    again = RecordSimulatorStatus(at=1500, simulator_id="sim-1", status="RUNNING")
    spec.given(CREATED, RESERVED, running).when(again).then()
    stopping = RecordSimulatorStatus(at=1500, simulator_id="sim-1", status="STOPPING")
    spec.given(CREATED, RESERVED, running).when(stopping).then(
        SimulatorStatusRecorded(
            at=1500, simulator_id="sim-1", status="STOPPING", endpoint="local://sim-1"
        )
    )


# ----------------------------------------------------------------------------- timers, misc


def test_deadlines_cover_expiry_presence_and_handoffs() -> None:
    state = s.decider.fold([CREATED, JOINED, HANDOFF])
    due_presence = JOINED.at + CREATED.presence_timeout_ms
    assert s.deadlines(state) == [
        Timer("expiry", CREATED.expires_at, ExpireSession(at=CREATED.expires_at)),
        Timer("presence:d1", due_presence, TimeOutDevice(at=due_presence, device_id="d1")),
        Timer("handoff:tok", HANDOFF.expires_at, ExpireHandoff(at=HANDOFF.expires_at, token="tok")),
    ]
    assert s.deadlines(s.decider.fold([CREATED, SessionEnded(at=5)])) == []


def test_a_simulator_command_sent_to_a_session_is_invalid(spec: Spec) -> None:
    spec.given(CREATED).when(StopSimulator(at=5)).fails("INVALID_COMMAND")


def test_a_simulator_command_sent_to_an_unknown_session_says_not_found(spec: Spec) -> None:
    """The liveness guard runs before the command is looked at, as for every client request."""
    spec.when(StopSimulator(at=5)).fails("SESSION_NOT_FOUND")


@pytest.mark.parametrize(
    "command",
    [
        ExpireSession(at=10**9),
        TimeOutDevice(at=10**9, device_id="d1"),
        ForgetDevice(at=10**9, device_id="d1"),
        ExpireHandoff(at=10**9, token="tok"),
        TouchDevices(at=10**9, device_ids=["d1"]),
        LeaveDevice(at=10**9, device_id="d1", connection_id="c1"),
        RecordSimulatorStatus(at=10**9, simulator_id="sim-1", status="STOPPED"),
    ],
)
def test_timers_and_reports_about_a_gone_session_are_no_ops(spec: Spec, command: object) -> None:
    """They outlive the session they were about: a late one must never fail."""
    spec.when(command).then()
    spec.given(CREATED, JOINED, HANDOFF, SessionEnded(at=5)).when(command).then()


def test_an_event_for_a_state_it_does_not_name_leaves_the_state_as_it_is() -> None:
    ended = s.decider.fold([CREATED, SessionEnded(at=5)])
    late = [
        SessionEnded(at=9),
        SessionRefreshed(at=9, expires_at=10**9),
        DeviceLeft(at=9, device_id="d1"),
    ]
    assert s.decider.fold(late, ended) == ended
    report = SimulatorStatusRecorded(at=9, simulator_id="sim-1", status="STOPPED")
    assert s.decider.fold([report, SessionExpired(at=9)]) == s.NotStarted()


def test_a_restarted_session_waits_for_its_old_simulator_to_stop(spec: Spec) -> None:
    """Found by the stateful test: end, start again, reserve, while the old one is stopping."""
    history = (
        CREATED,
        RESERVED,
        SessionEnded(at=1400, simulator_id="sim-1"),
        SessionCreated(at=1500, session_id=SID, user_id=USER, expires_at=TTL, ttl_ms=TTL),
    )
    reserve = ReserveSimulator(at=1600, simulator_id="sim-2", initial_symbols=["X"])
    spec.given(*history).when(reserve).fails("SIMULATOR_ALREADY_ACTIVE")
    stopped = RecordSimulatorStatus(at=1550, simulator_id="sim-1", status="STOPPED")
    after = (
        spec.given(*history)
        .when(stopped)
        .then(SimulatorStatusRecorded(at=1550, simulator_id="sim-1", status="STOPPED"))
    )
    assert not after.simulator.active


def test_an_ended_session_still_records_its_simulator_stopping(spec: Spec) -> None:
    ended = SessionEnded(at=1400, simulator_id="sim-1")
    stopped = RecordSimulatorStatus(at=1550, simulator_id="sim-1", status="STOPPED")
    state = (
        spec.given(CREATED, RESERVED, ended)
        .when(stopped)
        .then(SimulatorStatusRecorded(at=1550, simulator_id="sim-1", status="STOPPED"))
    )
    assert isinstance(state, s.Ended) and not state.simulator.active


# ----------------------------------------------------------------------------- results


def test_a_state_write_results_in_its_new_state_version() -> None:
    state = s.decider.fold([CREATED, STATE_V1])
    changes = ApplyStateChanges(at=2000, changes={"a": 9})
    events = s.decide(changes, state)
    assert s.result(changes, events, s.decider.fold(events, state)) == {"state_version": 2}
    snapshot = ReplaceState(at=1, session_id=SID, user_id=USER, state={"n": 1})
    events = s.decide(snapshot, s.NotStarted())  # creates the session, then the state
    assert s.result(snapshot, events, s.decider.fold(events)) == {"state_version": 1}
    nothing = ApplyStateChanges(at=2000, changes={})
    assert s.result(nothing, [], state) == {}


def test_a_conflict_results_in_the_resolved_state() -> None:
    state = s.decider.fold([CREATED, STATE_V1])
    command = ResolveConflict(at=2000, client_state={"c": 3}, strategy=ConflictStrategy.MERGE)
    events = s.decide(command, state)
    after = s.decider.fold(events, state)
    assert s.result(command, events, after) == {
        "state": {"a": 1, "b": 2, "c": 3},
        "state_version": 2,
    }


def test_a_handoff_results_in_its_token_and_its_acceptance_in_the_state_it_carries() -> None:
    state = s.decider.fold([CREATED, STATE_V1])
    start = StartHandoff(at=2000, token="t1", source_device="d1", target_device="d2")
    events = s.decide(start, state)
    state = s.decider.fold(events, state)
    assert s.result(start, events, state) == {"token": "t1", "expires_at": 2000 + 300_000}
    accept = AcceptHandoff(at=2500, token="t1", device_id="d2")
    events = s.decide(accept, state)
    assert s.result(accept, events, s.decider.fold(events, state)) == {
        "source_device": "d1",
        "target_device": "d2",
        "state": {"a": 1, "b": 2},
        "state_version": 1,
    }


def test_commands_without_an_answer_result_in_nothing() -> None:
    state = s.decider.fold([CREATED])
    refresh = RefreshSession(at=2000)
    assert s.result(refresh, s.decide(refresh, state), state) == {}
