"""The invariants checked at the end of every chaos run, against the event log in Valkey (the
system of record) and what the clients saw.

Each check returns a `Result`; `pending` marks issue 14's checks (read-your-writes, the live push
from the append): they fail the run by default, and only report with `--no-strict`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from statistics import quantiles
from typing import Any

import msgspec

from events.codec import decode_event
from gateway.push import push_for_event
from tests.chaos.clients import Ack, Device, Ledger

__all__ = ["Log", "Result", "check_all", "percentile", "read_logs", "visible_versions"]

#: session id -> [(version, event type, event fields)], oldest first; the fields also hold the
#: command id of the command that caused the event, under `COMMAND_ID`
Log = dict[str, list[tuple[int, str, dict[str, Any]]]]
COMMAND_ID = "__command_id"


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    pending: str = ""  # the issue the invariant waits for, when it is not built yet


def percentile(values: list[float], p: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[p - 1]


async def read_logs(redis_url: str, partitions: int, session_ids: list[str]) -> Log:
    from infra.store import open_store

    store = open_store(redis_url, partitions)
    logs: Log = {}
    try:
        for sid in session_ids:
            events = await store.actors.read(store.partition_of(sid), f"session:{sid}", after=0)
            logs[sid] = [
                (
                    e.version,
                    e.type,
                    {
                        **msgspec.to_builtins(decode_event(e.data, e.type)),
                        COMMAND_ID: e.command_id,
                    },
                )
                for e in events
            ]
    finally:
        await store.aclose()
    return logs


def visible_versions(sid: str, log: list[tuple[int, str, dict]]) -> list[int]:
    return [v for v, t, _ in log if push_for_event(sid, v, t, {}) is not None]


#: the events that change a session's state (`fold_state`)
STATE_EVENTS = ("StateReplaced", "ConflictResolved", "StateChanged")


def fold_state(log: list[tuple[int, str, dict]]) -> dict:
    """The session's state as its events make it (what GET and every device must show)."""
    state: dict = {}
    for _, t, d in log:
        if t in ("StateReplaced", "ConflictResolved"):
            state = dict(d.get("state") or {})
        elif t == "StateChanged":
            state.update(d.get("changes") or {})
            for key in d.get("deleted_keys") or ():
                state.pop(key, None)
    return state


def _differs(a: dict, b: dict | None) -> str:
    if b is None:
        return "no GET"
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, ...) != b.get(k, ...))
    return f"{len(keys)} keys differ, e.g. {[(k, a.get(k), b.get(k)) for k in keys[:3]]}"


def lost_writes(acks: list[Ack], logs: Log) -> list[Ack]:
    """Acknowledged writes the log does not hold as acknowledged. An ack's version is the
    session's version after the command's events (a write that keeps its session alive is
    followed by `SessionRefreshed`): the write's `StateChanged` is at or before it, and every
    event after it up to the ack's version was caused by the same command."""
    lost = []
    for ack in acks:
        log = logs.get(ack.session_id, [])
        found = [
            (i, v)
            for i, (v, t, d) in enumerate(log)
            if t == "StateChanged" and d.get("changes", {}).get(ack.key) == ack.value
        ]
        if len(found) != 1:
            lost.append(ack)
            continue
        i, version = found[0]
        command = log[i][2].get(COMMAND_ID)
        tail = [e for e in log[i:] if e[0] <= ack.version]
        if version > ack.version or tail[-1][0] != ack.version:
            lost.append(ack)
        elif any(d.get(COMMAND_ID) != command for _, _, d in tail):
            lost.append(ack)
    return lost


def explain_lost(lost: list[Ack], logs: Log) -> str:
    """Why each lost write counts as lost, by kind, with an example of each."""
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for ack in lost:
        log = logs.get(ack.session_id, [])
        found = [v for v, t, d in log if t == "StateChanged" and ack.key in d.get("changes", {})]
        at = {v: (t, d.get(COMMAND_ID)) for v, t, d in log}
        if not found:
            kind = "not in the log"
            example = f"{ack.key} acked at v{ack.version}; the log ends at v{max(at, default=0)}"
        else:
            kind = "in the log, not as acknowledged"
            example = (
                f"{ack.key} acked at v{ack.version}, found at {found};"
                f" v{ack.version} holds {at.get(ack.version)}"
            )
        kinds[kind] += 1
        examples.setdefault(kind, f"{example} ({ack.via}, session {ack.session_id})")
    return "; ".join(f"{n} {k} (e.g. {examples[k]})" for k, n in kinds.most_common())


PROJECTOR_FAULTS = ("kill:projector", "stop:projector")
#: What a push passes through: the writer's gateway, Valkey, the worker, Valkey, the device's
#: gateway. Faults of the reactor, the simulators or PostgreSQL are not on its path.
PUSH_PATH_FAULTS = tuple(
    f"{how}:{what}" for how in ("kill", "stop") for what in ("gateway", "worker", "valkey-server")
)


def overlaps(
    windows: list[tuple[float, float, str]], begin: float, end: float, kinds: tuple[str, ...] = ()
) -> bool:
    """Whether a fault window (of `kinds`; none given: of any kind) meets [begin, end]."""
    return any(
        start <= end and begin <= stop and (not kinds or kind in kinds)
        for start, stop, kind in windows
    )


def pushes_while_only_a_projector_was_down(
    push_delays: list[tuple[float, float]], windows: list[tuple[float, float, str]]
) -> list[float]:
    """The delays of pushes sent while a projector was down and during whose flight no fault
    on the push path began or lasted (a fault's window includes a grace after its recovery that
    can outlast the gap to the next fault: a worker killed then delays a push for its own
    reason)."""
    return [
        delay
        for sent, delay in push_delays
        if overlaps(windows, sent, sent, PROJECTOR_FAULTS)
        and not overlaps(windows, sent, sent + delay, PUSH_PATH_FAULTS)
    ]


def late_share(delays: list[float], bound_s: float = 1.0) -> str:
    late = sum(1 for d in delays if d > bound_s)
    return f"{late} of {len(delays)}"


def duplicate_events(logs: Log) -> int:
    """Writes (unique keys) that appear in more than one event."""
    seen: Counter[tuple[str, str]] = Counter()
    for sid, log in logs.items():
        for _, t, d in log:
            if t == "StateChanged":
                for key in d.get("changes", {}):
                    seen[(sid, key)] += 1
    return sum(1 for n in seen.values() if n > 1)


def gaps(device: Device, log: list[tuple[int, str, dict]]) -> list[tuple[int, int]]:
    """Visible versions a device skipped between two it received (a reset restarts the chain)."""
    visible = set(visible_versions(device.session_id, log))
    resets = set(device.resets)
    found = []
    for a, b in zip(device.received, device.received[1:], strict=False):
        if b in resets:
            continue
        missing = [v for v in range(a + 1, b) if v in visible]
        if missing:
            found.append((a, b))
    return found


def check_all(
    *,
    ledger: Ledger,
    devices: list[Device],
    logs: Log,
    reads: dict[str, dict | None],
    windows: list[tuple[float, float, str]],
    recoveries: dict[str, list[float]],
    bound_s: float,
    verify: tuple[bool, str],
    appendfsync: str,
    valkey_kills: list[float],
    storm: tuple[float, float] = (0.0, -1.0),
) -> list[Result]:
    """`storm`: when the storm ran (pushes then are not the calm baseline)."""
    results: list[Result] = []

    lost = lost_writes(ledger.acks, logs)
    if appendfsync == "always":
        results.append(
            Result(
                "0 acknowledged writes lost",
                not lost,
                f"{len(ledger.acks)} acknowledged ({sum(a.via == 'ws' for a in ledger.acks)} WS,"
                f" {sum(a.via == 'rest' for a in ledger.acks)} REST), {len(lost)} lost"
                + (f": {explain_lost(lost, logs)}" if lost else ""),
            )
        )
    else:
        window = max((k - a.at for a in lost for k in valkey_kills if k >= a.at), default=0.0)
        results.append(
            Result(
                f"acknowledged writes lost with appendfsync {appendfsync} (measured)",
                True,
                f"{len(lost)} of {len(ledger.acks)} lost; oldest lost write acknowledged"
                f" {window:.2f} s before a Valkey kill (documented window: about 1 s, 2 s worst)",
            )
        )

    dups_log = duplicate_events(logs)
    dups_seen = sum(d.duplicates for d in devices)
    results.append(
        Result(
            "0 duplicate events",
            dups_log == 0 and dups_seen == 0,
            f"{dups_log} writes appended twice in the log; {dups_seen} versions delivered twice"
            " to a client",
        )
    )

    gap_list = [
        (d.session_id, d.device_id, g) for d in devices for g in gaps(d, logs[d.session_id])
    ]
    resets = sum(len(d.resets) for d in devices)
    results.append(
        Result(
            "0 version gaps seen by any client",
            not gap_list,
            f"{sum(len(d.received) for d in devices)} versioned pushes checked over"
            f" {sum(d.connects for d in devices)} connections ({resets} resets);"
            f" {len(gap_list)} gaps" + (f"; first: {gap_list[0]}" if gap_list else ""),
        )
    )

    # Devices are frozen before the log is read, and connection events (a device whose ping
    # timed out reconnecting) may be appended meanwhile: a device has converged when its state
    # is the log's up to its last version, and no state was written after that version.
    diverged = []
    for d in devices:
        read = reads.get(d.session_id)
        log_ = logs[d.session_id]
        seen = d.last if d.last is not None else (d.base or 0)
        writes_after = [v for v, t, _ in log_ if v > seen and t in STATE_EVENTS]
        last = writes_after[-1] if writes_after else seen
        truth = fold_state(log_)
        then = fold_state([e for e in log_ if e[0] <= seen])
        got = read.get("state_data") if read is not None else None
        if d.state != then or got != truth or writes_after:
            diverged.append(
                (
                    d.session_id,
                    d.device_id,
                    d.last,
                    last,
                    f"device vs log: {_differs(d.state, truth)};"
                    f" GET vs log: {_differs(got or {}, truth) if read else 'no GET'};"
                    f" device received {d.received[-4:]}; log ends"
                    f" {[(v, t) for v, t, _ in logs[d.session_id][-4:]]}",
                )
            )
    results.append(
        Result(
            "every device converged to the state of GET (and of the log)",
            not diverged,
            f"{len(devices)} devices; {len(diverged)} differ"
            + (
                f"; first (session, device, its version, log's, diff): {diverged[0]}"
                if diverged
                else ""
            ),
        )
    )

    results.append(
        Result(
            "projections verify: the tables equal the fold of the log",
            verify[0],
            verify[1].strip(),
        )
    )

    stray = [t for t in ledger.unavailable if not overlaps(windows, t, t)]
    results.append(
        Result(
            "no 5xx but 503 during an outage",
            not ledger.server_errors and not stray,
            f"statuses {dict(sorted(ledger.statuses.items()))}; WS errors {dict(ledger.ws_errors)};"
            f" {len(ledger.server_errors)} 5xx other than 503; {len(stray)} 503s outside a fault"
            + (f"; first: {ledger.server_errors[0]}" if ledger.server_errors else ""),
        )
    )

    slow = {k: max(v) for k, v in recoveries.items() if v and max(v) > bound_s}
    results.append(
        Result(
            f"every process back within {bound_s:.0f} s",
            not slow,
            "slowest per kind: "
            + ", ".join(f"{k} {max(v):.1f} s" for k, v in sorted(recoveries.items()) if v),
        )
    )

    results.append(
        Result(
            "read-your-writes: a GET after an acknowledged REST write (other gateway) returns it",
            not ledger.ryw_stale,
            f"{ledger.ryw_checked} read-backs, {len(ledger.ryw_stale)} older than the write"
            + (
                f"; first (session, acked, read): {ledger.ryw_stale[0]}" if ledger.ryw_stale else ""
            ),
            pending="issue 14 item 1",
        )
    )
    in_fault = pushes_while_only_a_projector_was_down(ledger.push_delays, windows)
    stormy = [(*storm, "storm")]
    calm = [
        delay
        for sent, delay in ledger.push_delays
        if not overlaps(windows, sent, sent) and not overlaps(stormy, sent, sent + delay)
    ]
    p99 = percentile(in_fault, 99)
    results.append(
        Result(
            "live push from the append: pushes do not wait for a projector"
            " (p99 < 1 s while one alone is down)",
            p99 < 1.0,
            (
                f"push delay p50/p99 {percentile(in_fault, 50) * 1000:.0f}/{p99 * 1000:.0f} ms"
                f" during projector faults ({late_share(in_fault)} over 1 s);"
                if in_fault
                else "not measured in this run: no push flew while a projector alone was down"
                " (every projector fault overlapped one on the push path);"
            )
            + f" {percentile(calm, 50) * 1000:.0f}/{percentile(calm, 99) * 1000:.0f} ms"
            f" outside faults and the storm ({late_share(calm)} over 1 s)",
            pending="issue 14 item 2",
        )
    )
    return results
