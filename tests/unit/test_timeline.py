"""Time travel over one actor's history (`projections.timeline`): the state after any version
is the plain fold of the events up to it, however the checkpoints fall."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from events import session as se
from events import simulator as si
from events.codec import encode, type_name
from events.envelope import EventEnvelope
from projections.model import project_session
from projections.timeline import Timeline, TimelineError


def _env(actor_id: str, version: int, event) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4().hex,
        actor_id=actor_id,
        version=version,
        partition=0,
        ts=event.at,
        command_id=f"c{version}",
        correlation_id=f"k{version % 3}",
        causation_id="",
        type=type_name(event),
        data=msgspec.Raw(encode(event)),
    )


def _session_history(changes: int) -> tuple[str, list[EventEnvelope], list]:
    sid = str(uuid.uuid4())
    aid = f"session:{sid}"
    events = [
        se.SessionCreated(
            at=1, user_id="u", session_id=sid, expires_at=10**13, ttl_ms=1000, token="secret-token"
        )
    ]
    events += [
        se.StateChanged(
            at=2 + i, changes={"i": i, f"k{i % 4}": i}, deleted_keys=[], state_version=i + 1
        )
        for i in range(changes)
    ]
    return aid, [_env(aid, v, e) for v, e in enumerate(events, 1)], events


@pytest.mark.parametrize("every", [1, 3, 128])
def test_the_state_at_every_version_is_the_fold_up_to_it(every: int) -> None:
    aid, envs, events = _session_history(20)
    timeline = Timeline(aid, every=every)
    assert timeline.extend(envs) == 21
    sid = aid.split(":", 1)[1]
    expected = None
    assert timeline.state_at(0) is None
    for version, event in enumerate(events, 1):
        expected = project_session(expected, sid, event)
        assert timeline.state_at(version) == expected


def test_a_step_shows_the_state_after_it_and_what_it_changed() -> None:
    aid, envs, _ = _session_history(6)
    timeline = Timeline(aid, every=4)
    timeline.extend(envs)
    state, diff = timeline.step(6)  # version 6 is StateChanged i=4: i 3 -> 4, k0 appears
    assert state["state"]["state"]["i"] == 4
    assert diff["state.state.i"] == [3, 4]
    assert diff["state.state.k0"] == [0, 4]
    assert diff["state.state_version"] == [4, 5]
    first, first_diff = timeline.step(1)
    assert first["session"]["user_id"] == "u" and first_diff == {".": [None, first]}


def test_the_creators_token_is_never_shown() -> None:
    aid, envs, _ = _session_history(1)
    timeline = Timeline(aid)
    timeline.extend(envs)
    assert "token" not in timeline.step(2)[0]["session"]
    assert b"secret-token" not in msgspec.json.encode(timeline.step(1))


def test_new_events_extend_it_and_old_ones_are_skipped() -> None:
    aid, envs, _ = _session_history(9)
    timeline = Timeline(aid, every=4)
    assert timeline.extend(envs[:5]) == 5
    assert timeline.extend(envs[3:]) == 5
    assert timeline.version == 10
    fresh = Timeline(aid, every=7)
    fresh.extend(envs)
    assert all(timeline.state_at(v) == fresh.state_at(v) for v in range(11))


def test_a_gap_or_another_actors_event_is_refused() -> None:
    aid, envs, _ = _session_history(4)
    timeline = Timeline(aid)
    with pytest.raises(TimelineError, match="expected version 1"):
        timeline.extend(envs[1:])
    _, other_envs, _ = _session_history(1)
    timeline.extend(envs[:2])
    with pytest.raises(TimelineError, match="expected version 3"):
        timeline.extend([msgspec.structs.replace(other_envs[0], version=3)])
    with pytest.raises(TimelineError, match="versions 0 to 2"):
        timeline.state_at(3)


def test_an_unknown_actor_kind_is_refused() -> None:
    with pytest.raises(TimelineError, match="unknown actor kind"):
        Timeline("robot:1")


def test_a_simulator_timeline_folds_its_instance_row() -> None:
    sim, sid = str(uuid.uuid4()), str(uuid.uuid4())
    aid = f"simulator:{sim}"
    events = [
        si.SimulatorRequested(
            at=1, simulator_id=sim, session_id=sid, owner_id="u", initial_symbols=["AAPL"]
        ),
        si.SimulatorProvisioned(at=2, endpoint="local://x"),
        si.SimulatorRunning(at=3),
    ]
    timeline = Timeline(aid, every=2)
    timeline.extend(_env(aid, v, e) for v, e in enumerate(events, 1))
    assert timeline.step(2)[1]["status"] == ["CREATING", "STARTING"]
    state, diff = timeline.step(3)
    assert state["status"] == "RUNNING" and state["session_id"] == sid
    assert diff == {"status": ["STARTING", "RUNNING"], "last_active": [1, 3]}
