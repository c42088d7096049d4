"""The admin console's operations (issue 18): find sessions, look at one, read any actor's
history, travel to any version of it, find what one request caused, watch the gateway live,
and replay an exported history. Each needs the admin role; the REST adapter is
`gateway/admin/routes.py`.

An actor's history is read through the store's actor reader (Redis first, the archive for what
Redis no longer holds). Time travel keeps a `projections.timeline.Timeline` per actor in a
small per-process cache (`ConsoleState`): the first look at an actor reads its history once,
later looks read only the events appended since, and a state at any version is a checkpoint
plus fewer than 128 folds. Replays of exported files live in the same kind of cache, under an
id the upload returns (per gateway process: a console behind several gateways needs sticky
sessions for replays, not for anything else).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import OrderedDict, deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from events.codec import envelope_to_json
from events.envelope import EventEnvelope
from gateway.auth import Claims
from gateway.errors import ApiError
from gateway.operations.access import require_admin
from gateway.operations.admin import admin_connections
from projections.archive import correlated_events
from projections.health import read_statuses
from projections.history import envelope_from_json
from projections.model import SessionAggregate
from projections.timeline import Timeline, TimelineError, state_json

if TYPE_CHECKING:
    from gateway.operations.context import Context
    from gateway.push import Push

__all__ = [
    "ACTOR_KINDS",
    "ActorState",
    "ConsoleState",
    "EventPage",
    "EventView",
    "LiveStats",
    "ReplayLoaded",
    "SessionOverview",
    "Stats",
    "actor_events",
    "actor_state",
    "correlated",
    "live_stats",
    "load_replay",
    "replay_state",
    "session_overview",
]

ACTOR_KINDS = ("session", "simulator")
#: The most events one page holds.
MAX_PAGE = 5000
#: Actors whose timelines one process keeps (least recently used go first).
MAX_TIMELINES = 32
#: Uploaded replays one process keeps.
MAX_REPLAYS = 8
#: The window the push latency percentiles are taken over.
LATENCY_WINDOW_S = 10.0

_PRIVATE = frozenset({"token"})  # SessionCreated.token: the creator's auth token


# ------------------------------------------------------------------ per-process state


class LiveStats:
    """What the gateway measures for the live charts: each change's push latency (its event's
    time to its fan-out here), kept for `LATENCY_WINDOW_S`. Fed by the hub's `on_change`."""

    __slots__ = ("changes", "latencies")

    def __init__(self) -> None:
        self.latencies: deque[tuple[float, float]] = deque(maxlen=10_000)
        self.changes = 0

    def on_change(self, push: Push) -> None:
        payload = push.payload if isinstance(push.payload, dict) else {}
        ts = payload.get("ts")
        self.changes += 1
        if isinstance(ts, int) and ts > 0:
            now = time.time()
            self.latencies.append((now, max(0.0, now * 1000 - ts)))

    def latency_ms(self, now: float) -> dict[str, float]:
        recent = sorted(ms for at, ms in self.latencies if now - at <= LATENCY_WINDOW_S)
        if not recent:
            return {"p50": 0.0, "p95": 0.0, "max": 0.0, "count": 0}
        return {
            "p50": round(recent[len(recent) // 2], 2),
            "p95": round(recent[min(len(recent) - 1, int(len(recent) * 0.95))], 2),
            "max": round(recent[-1], 2),
            "count": len(recent),
        }


class ConsoleState:
    """The console's caches in one gateway process: timelines by actor, replays by id."""

    __slots__ = ("live", "replays", "timelines")

    def __init__(self) -> None:
        self.timelines: OrderedDict[str, Timeline] = OrderedDict()
        self.replays: OrderedDict[str, dict[str, Timeline]] = OrderedDict()
        self.live = LiveStats()


def _remember(cache: OrderedDict[str, Any], key: str, value: Any, cap: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > cap:
        cache.popitem(last=False)


# ------------------------------------------------------------------ one session


class SessionOverview(msgspec.Struct, frozen=True, kw_only=True):
    """One session as the console's session page shows it, at `version` of its actor: the
    session row and metadata (quality, simulator), its devices (with the round trip measured
    by this gateway for the ones connected here), its shared state, and every gateway's live
    connections of it."""

    session_id: str
    version: int
    session: dict[str, Any] | None
    devices: list[dict[str, Any]]
    state: dict[str, Any] | None
    simulator: dict[str, Any] | None
    connections_by_gateway: dict[str, list[dict[str, Any]]]
    simulator_actor: str | None


async def session_overview(ctx: Context, claims: Claims, session_id: str) -> SessionOverview:
    require_admin(claims)
    actor = f"session:{session_id}"
    timeline = await _timeline(ctx, actor)
    if timeline.version == 0:
        raise ApiError(404, "SESSION_NOT_FOUND", f"session {session_id} does not exist")
    agg = timeline.state_at(timeline.version)
    doc = state_json(agg) if isinstance(agg, SessionAggregate) else None
    rtt = {c.device_id: round(c.rtt_ms, 1) for c in ctx.hub.connections_of(session_id)}
    devices = [
        {**d, "rtt_ms": rtt.get(d["device_id"]), "connections": len(d["connection_ids"])}
        for d in (doc["devices"].values() if doc else ())
    ]
    meta = doc["session"]["metadata"] if doc else {}
    simulator = (
        {
            "simulator_id": meta["simulator_id"],
            "status": meta.get("simulator_status"),
            "endpoint": meta.get("simulator_endpoint"),
        }
        if meta.get("simulator_id")
        else None
    )
    by_gateway: dict[str, list[dict[str, Any]]] = {}
    for conn in (await admin_connections(ctx, claims)).connections:
        if conn.get("session_id") == session_id:
            by_gateway.setdefault(str(conn.get("gateway", "")), []).append(conn)
    return SessionOverview(
        session_id=session_id,
        version=timeline.version,
        session=doc["session"] if doc else None,
        devices=devices,
        state=doc["state"] if doc else None,
        simulator=simulator,
        connections_by_gateway=by_gateway,
        simulator_actor=f"simulator:{simulator['simulator_id']}" if simulator else None,
    )


# ------------------------------------------------------------------ histories


class EventView(msgspec.Struct, frozen=True, kw_only=True):
    """One event as the console lists it (`payload`: its fields; `data` in an export)."""

    actor_id: str
    version: int
    type: str
    time: str
    ts: int
    correlation_id: str
    command_id: str
    causation_id: str
    event_id: str
    partition: int
    payload: dict[str, Any]


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    events: list[EventView]
    count: int
    next_after: int | None  # give it as `after` for the next page (None: this was the last)


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def event_view(env: EventEnvelope) -> EventView:
    doc = envelope_to_json(env)
    return EventView(
        actor_id=env.actor_id,
        version=env.version,
        type=env.type,
        time=_iso(env.ts),
        ts=env.ts,
        correlation_id=env.correlation_id,
        command_id=env.command_id,
        causation_id=env.causation_id,
        event_id=env.event_id,
        partition=env.partition,
        payload={k: v for k, v in doc["data"].items() if k not in _PRIVATE},
    )


def parse_actor(actor_id: str) -> str:
    """`session:<uuid>` or `simulator:<uuid>` (normalised), else 400."""
    kind, _, raw = actor_id.partition(":")
    try:
        if kind in ACTOR_KINDS:
            return f"{kind}:{uuid.UUID(raw)}"
    except ValueError:
        pass
    raise ApiError(
        400, "INVALID_ARGUMENT", "actor must be session:<uuid> or simulator:<uuid>"
    ) from None


async def _read(ctx: Context, actor_id: str, after: int, limit: int | None) -> list[EventEnvelope]:
    """The actor's events after `after` (at most `limit`): Redis, then the archive."""
    store = ctx.store
    session_id = actor_id.partition(":")[2] if actor_id.startswith("session:") else None
    partition = await store.actors.find_partition(actor_id, session_id)
    if partition is not None:
        return await store.actors.read(partition, actor_id, after=after, limit=limit)
    if store.archive is None:
        return []
    envs = await store.archive.events(actor_id, after, None)
    return envs[:limit] if limit is not None else envs


async def actor_events(
    ctx: Context, claims: Claims, actor_id: str, after: int = 0, limit: int = 1000
) -> EventPage:
    """The actor's events after version `after`, oldest first, one page of at most `limit`."""
    require_admin(claims)
    actor_id = parse_actor(actor_id)
    limit = max(1, min(limit, MAX_PAGE))
    envs = await _read(ctx, actor_id, max(0, after), limit + 1)
    more = len(envs) > limit
    envs = envs[:limit]
    return EventPage(
        actor_id=actor_id,
        events=[event_view(e) for e in envs],
        count=len(envs),
        next_after=envs[-1].version if more else None,
    )


async def correlated(
    ctx: Context, claims: Claims, correlation_id: str, limit: int = 1000
) -> EventPage:
    """Every archived event (of any actor) that carries `correlation_id`, in projection order
    (events the projector has not archived yet are not among them)."""
    require_admin(claims)
    if not correlation_id:
        raise ApiError(400, "INVALID_ARGUMENT", "correlation_id is required")
    if ctx.db is None:
        raise ApiError(503, "STORE_UNAVAILABLE", "no projection database configured")
    envs = await correlated_events(ctx.db, correlation_id, max(1, min(limit, MAX_PAGE)))
    return EventPage(
        actor_id="", events=[event_view(e) for e in envs], count=len(envs), next_after=None
    )


# ------------------------------------------------------------------ time travel


class ActorState(msgspec.Struct, frozen=True, kw_only=True):
    """The actor's view after `version` (`state`; null before its first event or once its
    rows are gone), the difference from the version before (path -> [old, new]), the event
    that made it, and how far the history reaches (`last_version`)."""

    actor_id: str
    version: int
    last_version: int
    event: EventView | None
    state: Any
    diff: dict[str, list[Any]]


async def _timeline(ctx: Context, actor_id: str) -> Timeline:
    """The actor's cached timeline, brought up to date with what was appended since."""
    timelines = ctx.console.timelines
    timeline = timelines.get(actor_id)
    if timeline is None:
        timeline = Timeline(actor_id)
    envs = await _read(ctx, actor_id, timeline.version, None)
    try:
        timeline.extend(envs)
    except TimelineError as exc:
        timelines.pop(actor_id, None)
        raise ApiError(409, "HISTORY_INCOMPLETE", str(exc)) from None
    _remember(timelines, actor_id, timeline, MAX_TIMELINES)
    return timeline


def _step(timeline: Timeline, version: int | None) -> ActorState:
    v = timeline.version if version is None else version
    if not 0 <= v <= timeline.version:
        raise ApiError(
            404,
            "VERSION_NOT_FOUND",
            f"{timeline.actor_id} has versions 0 to {timeline.version}, not {v}",
        )
    state, diff = timeline.step(v)
    return ActorState(
        actor_id=timeline.actor_id,
        version=v,
        last_version=timeline.version,
        event=event_view(timeline.envelopes[v - 1]) if v else None,
        state=state,
        diff=diff,
    )


async def actor_state(
    ctx: Context, claims: Claims, actor_id: str, version: int | None
) -> ActorState:
    """The actor's state after `version` (None: its newest)."""
    require_admin(claims)
    return _step(await _timeline(ctx, parse_actor(actor_id)), version)


# ------------------------------------------------------------------ replays of exports


class ReplayLoaded(msgspec.Struct, frozen=True, kw_only=True):
    replay_id: str
    actors: dict[str, int]  # actor id -> its last version in the file
    events: int


def load_replay(ctx: Context, claims: Claims, lines: list[dict[str, Any]]) -> ReplayLoaded:
    """Keep an exported history (`sessiond export` lines, or the console's own export) for
    stepping through with `replay_state`; the same file gets the same id."""
    require_admin(claims)
    per_actor: dict[str, list[EventEnvelope]] = {}
    for n, doc in enumerate(lines, 1):
        try:
            env = envelope_from_json(doc)
        except (KeyError, TypeError, msgspec.ValidationError) as exc:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"line {n} is not an exported event: {exc}"
            ) from None
        per_actor.setdefault(env.actor_id, []).append(env)
    timelines: dict[str, Timeline] = {}
    for actor_id, envs in per_actor.items():
        envs.sort(key=lambda e: e.version)
        try:
            timeline = Timeline(parse_actor(actor_id))
            timeline.extend(envs)
        except TimelineError as exc:
            raise ApiError(400, "HISTORY_INCOMPLETE", str(exc)) from None
        timelines[timeline.actor_id] = timeline
    digest = hashlib.sha256(msgspec.json.encode(lines)).hexdigest()[:24]
    _remember(ctx.console.replays, digest, timelines, MAX_REPLAYS)
    return ReplayLoaded(
        replay_id=digest,
        actors={a: t.version for a, t in timelines.items()},
        events=sum(t.version for t in timelines.values()),
    )


def replay_state(
    ctx: Context, claims: Claims, replay_id: str, actor_id: str, version: int | None
) -> ActorState:
    """A loaded replay's actor state after `version`, as `actor_state` gives a live one."""
    require_admin(claims)
    timelines = ctx.console.replays.get(replay_id)
    if timelines is None:
        raise ApiError(404, "REPLAY_NOT_FOUND", f"no replay {replay_id} here (load it again)")
    timeline = timelines.get(parse_actor(actor_id))
    if timeline is None:
        raise ApiError(404, "NOT_FOUND", f"replay {replay_id} has no events of {actor_id}")
    return _step(timeline, version)


# ------------------------------------------------------------------ live charts


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """One sample of this gateway's own counters for the live charts (the page turns totals
    into rates between two samples)."""

    ts: int
    gateway: str
    connections: int  # open here
    connections_all: int  # open on every gateway (the registry)
    messages_in_total: int  # WebSocket messages received here since start
    pushes_total: int  # changes delivered to connections here since start
    http_requests_total: int
    push_latency_ms: dict[str, float]  # of the last LATENCY_WINDOW_S: p50, p95, max, count
    projector_lag_s: float | None  # None: no projector reports


def _total(metric: Any) -> int:
    """The sum of a Prometheus counter's `_total` samples, over all its labels."""
    metric = getattr(metric, "metric", metric)  # gateway.metrics._Cached wraps a family
    return int(
        sum(
            s.value
            for family in metric.collect()
            for s in family.samples
            if s.name.endswith("_total")
        )
    )


async def live_stats(ctx: Context, claims: Claims) -> Stats:
    require_admin(claims)
    now = time.time()
    try:
        statuses = await read_statuses(ctx.store)
        lag: float | None = max((s.lag_seconds for s in statuses), default=None)
    except Exception:  # the store is unreachable meanwhile: the chart shows a gap
        lag = None
    try:
        everywhere = len(await ctx.store.connections.connections())
    except Exception:
        everywhere = len(ctx.hub.conns)
    m = ctx.metrics
    return Stats(
        ts=int(now * 1000),
        gateway=ctx.config.gateway_id,
        connections=len(ctx.hub.conns),
        connections_all=everywhere,
        messages_in_total=_total(m.ws_messages),
        pushes_total=_total(m.pushes),
        http_requests_total=_total(m.http_requests),
        push_latency_ms=ctx.console.live.latency_ms(now),
        projector_lag_s=round(lag, 3) if lag is not None else None,
    )
