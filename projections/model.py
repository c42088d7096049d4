"""The read model as pure data, and the pure function that moves it by one event.

Every projected table is a view of one *session aggregate*: the session row (with its metadata),
its devices, its shared state snapshot, its handoffs and its simulators. `project` takes the
aggregate before an event and returns the aggregate after it; the row changes an event causes are
`diff(before, after)`. The live projector, `projections rebuild` and the tests' in-memory fold all
run this same code, so a rebuilt table and a live one can only differ if the storage lost a write.

Times are kept as ms since the epoch (the events' own clock); the writer turns them into
`timestamptz` exactly (no float rounding). Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from events import session as se
from events import simulator as si
from events.envelope import EventEnvelope
from events.ids import actor_kind, actor_uuid

__all__ = [
    "ACTIVE",
    "EXPIRED",
    "INACTIVE",
    "ONLINE",
    "RECONNECTING",
    "ActorRow",
    "DeviceRow",
    "HandoffRow",
    "Model",
    "SessionAggregate",
    "SessionRow",
    "SimulatorRow",
    "StateRow",
    "diff",
    "iso",
    "project",
    "project_session",
    "project_simulator",
    "session_of",
    "simulator_row",
    "to_datetime",
]

# Session statuses (seed 002).
ACTIVE = "ACTIVE"
RECONNECTING = "RECONNECTING"  # every device dropped its connection; the session waits for one
INACTIVE = "INACTIVE"  # every device timed out or was forced off
EXPIRED = "EXPIRED"  # the TTL passed; session.cleanup_expired_sessions() deletes it later

ONLINE = "online"
OFFLINE = "offline"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# plain strings (enum member attribute access is slow on the hot path)
_WS = se.Transport.WS.value
_SSE = se.Transport.SSE.value
_GOOD = se.ConnectionQuality.GOOD.value
_S = {status.name: status.value for status in si.SimulatorStatus}
_ACTIVE_SIM = frozenset(str(status) for status in si.ACTIVE_STATUSES)


def to_datetime(ms: int) -> datetime:
    """ms since the epoch -> aware datetime, exactly (no float rounding on the way)."""
    return _EPOCH + timedelta(milliseconds=ms)


def iso(ms: int) -> str:
    return to_datetime(ms).isoformat()


# The row structs and the aggregate are immutable trees of plain data (they can never be part of
# a reference cycle), so they are created with `gc=False` (msgspec's advice): the projector's
# cache of aggregates and a rebuild's whole model then add nothing to the cyclic GC's work.


class SessionRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """`session.active_sessions` plus its `session.session_metadata` document."""

    session_id: str
    user_id: str
    status: str
    created_at: int
    last_active: int
    expires_at: int
    token: str | None
    metadata: dict[str, Any]


class DeviceRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """`session.devices`: one device of a session and its open connections."""

    session_id: str
    device_id: str
    device_type: str
    device_name: str
    os: str
    status: str
    connection_ids: dict[str, str]  # connection id -> transport ("ws" | "sse")
    pod_name: str
    ip_address: str
    left_reason: str | None
    joined_at: int
    last_seen: int

    @property
    def ws_connections(self) -> int:
        return sum(1 for t in self.connection_ids.values() if t == _WS)

    @property
    def sse_connections(self) -> int:
        return sum(1 for t in self.connection_ids.values() if t == _SSE)


class StateRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """`session.state_snapshots`: the shared state of seed 004 with its version."""

    session_id: str
    state: dict[str, Any]
    state_version: int
    device_id: str
    app_version: str
    updated_at: int


class HandoffRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    token: str
    session_id: str
    source_device: str
    target_device: str
    status: str  # PENDING | ACCEPTED (an expired token's row is deleted)
    state_version: int
    created_at: int
    expires_at: int
    accepted_at: int | None


class SimulatorRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """`simulator.instances` (seed 002)."""

    simulator_id: str
    session_id: str
    user_id: str
    status: str
    endpoint: str | None
    created_at: int
    last_active: int
    initial_symbols: list[str]
    initial_cash: float


class ActorRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """`projection.actor_versions`: how far the archive reaches for one actor."""

    actor_id: str
    session_id: str
    partition: int
    version: int
    updated_at: int


class SessionAggregate(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Every row that belongs to one session (what ending the session removes)."""

    session: SessionRow
    devices: dict[str, DeviceRow] = {}
    state: StateRow | None = None
    handoffs: dict[str, HandoffRow] = {}
    simulators: dict[str, SimulatorRow] = {}


_replace = msgspec.structs.replace


def _metadata(agg: SessionAggregate, **values: Any) -> SessionAggregate:
    return _replace(agg, session=_replace(agg.session, metadata={**agg.session.metadata, **values}))


def _with_devices(
    agg: SessionAggregate, devices: dict[str, DeviceRow], at: int, reason: str | None = None
) -> SessionAggregate:
    """Store `devices` and recompute what the metadata and the status derive from them."""
    online = [d for d in devices.values() if d.status == ONLINE]
    ws = sse = 0
    for d in online:  # what DeviceRow.ws_connections / sse_connections count, in one pass
        for transport in d.connection_ids.values():
            if transport == _WS:
                ws += 1
            elif transport == _SSE:
                sse += 1
    meta = {
        **agg.session.metadata,
        "frontend_connections": ws,
        "sse_connections": sse,
        "device_ids": sorted([d.device_id for d in online]),
    }
    status = agg.session.status
    if status != EXPIRED:
        if online:
            status = ACTIVE
        elif reason is not None:
            status = RECONNECTING if reason == "left" else INACTIVE
    session = _replace(agg.session, metadata=meta, status=status)
    return _replace(agg, devices=devices, session=session)


def _new_session(sid: str, e: se.SessionCreated) -> SessionAggregate:
    return SessionAggregate(
        session=SessionRow(
            session_id=sid,
            user_id=e.user_id,
            status=ACTIVE,
            created_at=e.at,
            last_active=e.at,
            expires_at=e.expires_at,
            token=e.token or None,
            metadata={
                "pod_name": e.pod_name,
                "ip_address": e.ip_address,
                "router_id": e.router_id,
                "device_id": e.device_id,
                "frontend_connections": 0,
                "sse_connections": 0,
                "connection_quality": _GOOD,
                "last_ws_connection": None,
                "simulator_id": None,
                "simulator_endpoint": None,
                "simulator_status": None,
                "device_ids": [],
            },
        )
    )


def _created(agg: SessionAggregate | None, sid: str, e: se.SessionCreated) -> SessionAggregate:
    # a restart replaces every row of the old incarnation, except (as the actor does) a
    # simulator of the old incarnation that is still active: it keeps the session's slot
    fresh = _new_session(sid, e)
    if agg is None:
        return fresh
    meta = agg.session.metadata
    if meta.get("simulator_status") in _ACTIVE_SIM:
        sim_id = meta.get("simulator_id")
        fresh = _metadata(
            fresh,
            simulator_id=sim_id,
            simulator_status=meta.get("simulator_status"),
            simulator_endpoint=meta.get("simulator_endpoint"),
        )
        if sim_id in agg.simulators:
            fresh = _replace(fresh, simulators={sim_id: agg.simulators[sim_id]})
    return fresh


def _state_changed(agg: SessionAggregate, sid: str, e: se.StateChanged) -> SessionAggregate:
    # as the actor does: deletions first, then the changes (a key in both is kept)
    old_state = agg.state.state if agg.state else {}
    if e.deleted_keys:
        gone = set(e.deleted_keys)
        state = {k: v for k, v in old_state.items() if k not in gone}
        state.update(e.changes)
    else:
        state = {**old_state, **e.changes}
    return _replace(
        agg,
        state=StateRow(
            session_id=sid,
            state=state,
            state_version=e.state_version,
            device_id=e.device_id or (agg.state.device_id if agg.state else ""),
            app_version=agg.state.app_version if agg.state else "",
            updated_at=e.at,
        ),
    )


def _devices_seen(agg: SessionAggregate, sid: str, e: se.DevicesSeen) -> SessionAggregate:
    seen = {
        d: _replace(agg.devices[d], last_seen=e.at)
        for d in e.device_ids
        if d in agg.devices and agg.devices[d].status == ONLINE
    }
    return _replace(agg, devices={**agg.devices, **seen}) if seen else agg


def _ended(agg: SessionAggregate, sid: str, e: se.SessionEnded) -> None:
    return None  # seed 002: "End Session ... Removes session records"


def _expired(agg: SessionAggregate, sid: str, e: se.SessionExpired) -> SessionAggregate:
    return _replace(agg, session=_replace(agg.session, status=EXPIRED))


def _refreshed(agg: SessionAggregate, sid: str, e: se.SessionRefreshed) -> SessionAggregate:
    status = agg.session.status
    if status == EXPIRED:
        status = ACTIVE
    return _replace(
        agg, session=_replace(agg.session, last_active=e.at, expires_at=e.expires_at, status=status)
    )


def _quality(agg: SessionAggregate, sid: str, e: se.ConnectionQualityChanged) -> SessionAggregate:
    return _metadata(agg, connection_quality=str(e.quality), rtt_ms=e.rtt_ms)


def _metadata_updated(agg: SessionAggregate, sid: str, e: se.MetadataUpdated) -> SessionAggregate:
    # as the actor does: a None value removes the key
    values = e.values
    meta = {**agg.session.metadata, **values}
    for key, value in values.items():
        if value is None:
            meta.pop(key, None)
    return _replace(agg, session=_replace(agg.session, metadata=meta))


def _device_joined(agg: SessionAggregate, sid: str, e: se.DeviceJoined) -> SessionAggregate:
    device = DeviceRow(
        session_id=sid,
        device_id=e.device_id,
        device_type=e.device_type,
        device_name=e.device_name,
        os=e.os,
        status=ONLINE,
        connection_ids={e.connection_id: str(e.transport)},
        pod_name=e.pod_name,
        ip_address=e.ip_address,
        left_reason=None,
        joined_at=e.at,
        last_seen=e.at,
    )
    old = agg.devices.get(e.device_id)
    if old is not None:  # a known device coming back keeps what it said before
        device = _replace(
            device,
            device_type=e.device_type or old.device_type,
            device_name=e.device_name or old.device_name,
            os=e.os or old.os,
        )
    agg = _with_devices(agg, {**agg.devices, e.device_id: device}, e.at)
    extra: dict[str, Any] = {}
    if e.transport == _WS:
        extra["last_ws_connection"] = iso(e.at)
    if e.pod_name:
        extra["pod_name"] = e.pod_name
    if e.ip_address:
        extra["ip_address"] = e.ip_address
    return _metadata(agg, **extra) if extra else agg


def _connection_opened(agg: SessionAggregate, sid: str, e: se.ConnectionOpened) -> SessionAggregate:
    old = agg.devices.get(e.device_id)
    if old is None:
        return agg
    device = _replace(
        old,
        status=ONLINE,
        left_reason=None,
        last_seen=e.at,
        connection_ids={**old.connection_ids, e.connection_id: str(e.transport)},
        pod_name=e.pod_name or old.pod_name,
    )
    agg = _with_devices(agg, {**agg.devices, e.device_id: device}, e.at)
    if e.transport == _WS:
        return _metadata(agg, last_ws_connection=iso(e.at))
    return agg


def _connection_closed(agg: SessionAggregate, sid: str, e: se.ConnectionClosed) -> SessionAggregate:
    old = agg.devices.get(e.device_id)
    if old is None:
        return agg
    conns = {k: v for k, v in old.connection_ids.items() if k != e.connection_id}
    device = _replace(old, connection_ids=conns)
    return _with_devices(agg, {**agg.devices, e.device_id: device}, e.at)


def _device_left(agg: SessionAggregate, sid: str, e: se.DeviceLeft) -> SessionAggregate:
    old = agg.devices.get(e.device_id)
    if old is None:
        return agg
    device = _replace(old, status=OFFLINE, connection_ids={}, last_seen=e.at, left_reason=e.reason)
    return _with_devices(agg, {**agg.devices, e.device_id: device}, e.at, e.reason)


def _device_forgotten(agg: SessionAggregate, sid: str, e: se.DeviceForgotten) -> SessionAggregate:
    # the row goes (an offline device: the session's connection counts do not change)
    if e.device_id not in agg.devices:
        return agg
    devices = {k: v for k, v in agg.devices.items() if k != e.device_id}
    return _replace(agg, devices=devices)


def _state_replaced(agg: SessionAggregate, sid: str, e: se.StateReplaced) -> SessionAggregate:
    return _replace(
        agg,
        state=StateRow(
            session_id=sid,
            state=e.state,
            state_version=e.state_version,
            device_id=e.device_id,
            app_version=e.app_version,
            updated_at=e.at,
        ),
    )


def _conflict_resolved(agg: SessionAggregate, sid: str, e: se.ConflictResolved) -> SessionAggregate:
    return _replace(
        agg,
        state=StateRow(
            session_id=sid,
            state=e.state,
            state_version=e.state_version,
            device_id=agg.state.device_id if agg.state else "",
            app_version=agg.state.app_version if agg.state else "",
            updated_at=e.at,
        ),
    )


def _handoff_started(agg: SessionAggregate, sid: str, e: se.HandoffStarted) -> SessionAggregate:
    row = HandoffRow(
        token=e.token,
        session_id=sid,
        source_device=e.source_device,
        target_device=e.target_device,
        status="PENDING",
        state_version=e.state_version,
        created_at=e.at,
        expires_at=e.expires_at,
        accepted_at=None,
    )
    return _replace(agg, handoffs={**agg.handoffs, e.token: row})


def _handoff_ended(
    agg: SessionAggregate, sid: str, e: se.HandoffAccepted | se.HandoffExpired
) -> SessionAggregate:
    old_h = agg.handoffs.get(e.token)
    if old_h is None:
        return agg
    if isinstance(e, se.HandoffExpired):  # a used or lapsed token is gone
        return _replace(agg, handoffs={k: v for k, v in agg.handoffs.items() if k != e.token})
    new_h = _replace(old_h, status="ACCEPTED", accepted_at=e.at)
    return _replace(agg, handoffs={**agg.handoffs, e.token: new_h})


def _simulator_reserved(
    agg: SessionAggregate, sid: str, e: se.SimulatorReserved
) -> SessionAggregate:
    return _metadata(
        agg, simulator_id=e.simulator_id, simulator_status="CREATING", simulator_endpoint=None
    )


def _simulator_status(
    agg: SessionAggregate, sid: str, e: se.SimulatorStatusRecorded
) -> SessionAggregate:
    values: dict[str, Any] = {"simulator_id": e.simulator_id, "simulator_status": e.status}
    if e.endpoint:
        values["simulator_endpoint"] = e.endpoint
    return _metadata(agg, **values)


#: What each session event does to the aggregate, in precedence order (an event that is an
#: instance of several of these types gets the first one's handler). `project_session` looks
#: the exact type up in a dict (one hash lookup, not a chain of isinstance checks).
_SESSION_CASES: tuple[tuple[type, Any], ...] = (
    (se.SessionCreated, _created),
    (se.StateChanged, _state_changed),
    (se.DevicesSeen, _devices_seen),
    (se.SessionEnded, _ended),
    (se.SessionExpired, _expired),
    (se.SessionRefreshed, _refreshed),
    (se.ConnectionQualityChanged, _quality),
    (se.MetadataUpdated, _metadata_updated),
    (se.DeviceJoined, _device_joined),
    (se.ConnectionOpened, _connection_opened),
    (se.ConnectionClosed, _connection_closed),
    (se.DeviceLeft, _device_left),
    (se.DeviceForgotten, _device_forgotten),
    (se.StateReplaced, _state_replaced),
    (se.ConflictResolved, _conflict_resolved),
    (se.HandoffStarted, _handoff_started),
    (se.HandoffAccepted, _handoff_ended),
    (se.HandoffExpired, _handoff_ended),
    (se.SimulatorReserved, _simulator_reserved),
    (se.SimulatorStatusRecorded, _simulator_status),
)
_SESSION_HANDLERS: dict[type, Any] = {}
for _type, _handler in _SESSION_CASES:
    _SESSION_HANDLERS.setdefault(_type, _handler)


def _session_handler(e: Any) -> Any:
    """The handler of an event whose exact type is not in the table (a subclass), or None."""
    for type_, handler in _SESSION_CASES:
        if isinstance(e, type_):
            return handler
    return None


def project_session(agg: SessionAggregate | None, sid: str, e: Any) -> SessionAggregate | None:
    """The aggregate of session `sid` after its own event `e`."""
    handler = _SESSION_HANDLERS.get(type(e)) or _session_handler(e)
    if handler is _created:
        return _created(agg, sid, e)
    if agg is None or handler is None:
        # None: the session's rows are gone (ended), later facts have nothing to update
        return agg
    return handler(agg, sid, e)


def project_simulator(agg: SessionAggregate | None, sim_id: str, e: Any) -> SessionAggregate | None:
    """The aggregate of the simulator's session after the simulator's event `e`."""
    if agg is None:
        return None  # the session is gone, and its simulators with it (cascade)
    old = agg.simulators.get(sim_id)
    new = simulator_row(old, sim_id, e)
    if new is old or new is None:
        return agg
    return _replace(agg, simulators={**agg.simulators, sim_id: new})


def simulator_row(old: SimulatorRow | None, sim_id: str, e: Any) -> SimulatorRow | None:
    """Simulator `sim_id`'s row after its own event `e` (`old` itself when `e` changes nothing;
    None before its `SimulatorRequested`)."""
    if isinstance(e, si.SimulatorRequested):
        return SimulatorRow(
            simulator_id=sim_id,
            session_id=e.session_id,
            user_id=e.owner_id,
            status=_S["CREATING"],
            endpoint=None,
            created_at=e.at,
            last_active=e.at,
            initial_symbols=list(e.initial_symbols),
            initial_cash=float(e.initial_cash),
        )
    if old is None:
        return None
    match e:
        case si.SimulatorProvisioned(endpoint=endpoint):
            return _replace(old, status=_S["STARTING"], endpoint=endpoint)
        case si.SimulatorRunning():
            return _replace(old, status=_S["RUNNING"], last_active=e.at)
        case si.SimulatorHeartbeatRecorded() | si.SimulatorActivityRecorded():
            return _replace(old, last_active=e.at)
        case si.SimulatorStopping():
            return _replace(old, status=_S["STOPPING"])
        case si.SimulatorStopped():
            return _replace(old, status=_S["STOPPED"])
        case si.SimulatorFailed():
            return _replace(old, status=_S["ERROR"])
        case _:
            return old


def session_of(env: EventEnvelope, event: Any, simulator_sessions: dict[str, str]) -> str | None:
    """The session an event belongs to (its partition key), or None if it cannot be known.

    A simulator's session comes from its `SimulatorRequested` event, or from what the caller
    already knows (`simulator_sessions`: simulator uuid -> session id).
    """
    kind = actor_kind(env.actor_id)
    if kind == "session":
        return actor_uuid(env.actor_id)
    if kind == "simulator":
        if isinstance(event, si.SimulatorRequested):
            return event.session_id
        return simulator_sessions.get(actor_uuid(env.actor_id))
    return None


def project(
    agg: SessionAggregate | None, env: EventEnvelope, event: Any
) -> SessionAggregate | None:
    """The session aggregate after `event` (None: the session has no rows)."""
    kind = actor_kind(env.actor_id)
    if kind == "session":
        return project_session(agg, actor_uuid(env.actor_id), event)
    if kind == "simulator":
        return project_simulator(agg, actor_uuid(env.actor_id), event)
    return agg


class RowChanges(msgspec.Struct, kw_only=True):
    """Upserts (full rows) and deletes (keys) per table, coalesced: one per key."""

    sessions: list[SessionRow] = []
    session_deletes: list[str] = []
    devices: list[DeviceRow] = []
    device_deletes: list[tuple[str, str]] = []
    states: list[StateRow] = []
    state_deletes: list[str] = []
    handoffs: list[HandoffRow] = []
    handoff_deletes: list[str] = []
    simulators: list[SimulatorRow] = []
    simulator_deletes: list[str] = []

    def __bool__(self) -> bool:
        return any(getattr(self, f) for f in self.__struct_fields__)


def _diff_children(
    before: dict[str, Any], after: dict[str, Any], upserts: list[Any], deletes: list[Any], key: Any
) -> None:
    for k, row in after.items():
        if before.get(k) != row:
            upserts.append(row)
    for k, row in before.items():
        if k not in after:
            deletes.append(key(row))


def diff(pairs: Iterable[tuple[SessionAggregate | None, SessionAggregate | None]]) -> RowChanges:
    """Row changes that turn the `before` aggregates into the `after` ones.

    A deleted session's children are listed as deletes too (the cascade removes them anyway).
    A session recreated (restart) upserts its new rows and deletes the old incarnation's.
    """
    out = RowChanges()
    empty: dict[str, Any] = {}
    for before, after in pairs:
        if before == after:
            continue
        if after is None:
            assert before is not None
            out.session_deletes.append(before.session.session_id)
            continue
        if before is None or before.session != after.session:
            out.sessions.append(after.session)
        _diff_children(
            before.devices if before else empty,
            after.devices,
            out.devices,
            out.device_deletes,
            lambda d: (d.session_id, d.device_id),
        )
        _diff_children(
            before.handoffs if before else empty,
            after.handoffs,
            out.handoffs,
            out.handoff_deletes,
            lambda h: h.token,
        )
        _diff_children(
            before.simulators if before else empty,
            after.simulators,
            out.simulators,
            out.simulator_deletes,
            lambda s: s.simulator_id,
        )
        b_state = before.state if before else None
        if after.state != b_state:
            if after.state is None:
                out.state_deletes.append(after.session.session_id)
            else:
                out.states.append(after.state)
    return out


class Model:
    """The whole read model in memory: a fold of events, for tests, replay and rebuild."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionAggregate] = {}
        self.simulator_sessions: dict[str, str] = {}
        # actor id -> (session id, partition, version, ts): `actors` builds the rows on demand
        self._actors: dict[str, tuple[str, int, int, int]] = {}
        self._actor_rows: dict[str, ActorRow] | None = None

    @property
    def actors(self) -> dict[str, ActorRow]:
        if self._actor_rows is None:
            self._actor_rows = {
                a: ActorRow(
                    actor_id=a, session_id=t[0], partition=t[1], version=t[2], updated_at=t[3]
                )
                for a, t in self._actors.items()
            }
        return self._actor_rows

    @actors.setter
    def actors(self, rows: dict[str, ActorRow]) -> None:
        self._actors = {
            a: (r.session_id, r.partition, r.version, r.updated_at) for a, r in rows.items()
        }
        self._actor_rows = None

    def apply(self, env: EventEnvelope, event: Any) -> str | None:
        """Fold one event in; returns the session it touched (None if none)."""
        return self.apply_fields(env.actor_id, env.partition, env.version, env.ts, event)

    def apply_fields(
        self, actor_id: str, partition: int, version: int, ts: int, event: Any
    ) -> str | None:
        """`apply` without an envelope (the rebuild's hot path)."""
        kind, _, uid = actor_id.partition(":")
        sid: str | None
        if kind == "session":
            sid = uid
        elif kind == "simulator":
            if type(event) is si.SimulatorRequested:
                sid = event.session_id
                self.simulator_sessions[uid] = sid
            else:
                sid = self.simulator_sessions.get(uid)
        else:
            sid = None
        self._actors[actor_id] = (sid or "", partition, version, ts)
        self._actor_rows = None
        if sid is None:
            return None
        before = self.sessions.get(sid)
        if kind == "session":
            after = project_session(before, uid, event)
        else:
            after = project_simulator(before, uid, event)
        if after is None:
            if before is not None:
                del self.sessions[sid]
        elif after is not before:
            self.sessions[sid] = after
        return sid

    def changes(self) -> RowChanges:
        """Every row of the model, as upserts into empty tables."""
        return diff((None, agg) for agg in self.sessions.values())
