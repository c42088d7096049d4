"""What the sync and async clients share, without I/O: each call as a `Call` (method, path,
body, answer type, whether it writes), the error value, the retry policy, and the SSE parser.

The clients only send a `Call` (again, with the same idempotency key, while `retry_delay`
says so) and decode its answer; so both speak exactly the same API.
"""

from __future__ import annotations

import base64
import contextlib
import random
import uuid
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec

from sessiond_client.types import (
    Change,
    ConflictResolved,
    DeviceDisconnected,
    Devices,
    HandoffAccepted,
    HandoffIssued,
    Message,
    SessionStarted,
    Simulator,
    Snapshot,
    StateWritten,
)

__all__ = [
    "RETRYABLE_STATUSES",
    "Call",
    "ClientError",
    "RetryPolicy",
    "SseParser",
    "correlated",
    "token_subject",
]

_correlation: ContextVar[str] = ContextVar("sessiond_client_correlation", default="")


@contextlib.contextmanager
def correlated(correlation_id: str) -> Iterator[None]:
    """Every call made in this block (this thread or task, and the tasks it starts) carries
    ``X-Correlation-ID: correlation_id``: the gateway echoes it and stores it as the
    correlation id of the events the call causes, so an operator finds them by the id your
    logs show (`sessiond events --correlation-id`). 1-200 visible ASCII characters."""
    token = _correlation.set(correlation_id)
    try:
        yield
    finally:
        _correlation.reset(token)


#: Answers worth retrying: the gateway says so (503, with OUTCOME_UNKNOWN for a write whose
#: fate is unknown), or a proxy in front of it does (502, 504), or the rate limit (429).
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class ClientError(str):
    """A call's error: the text seed 003 prints (``"CODE: message"``), with the gateway's
    stable `code`, the HTTP `status` (0: no answer), and for a write whose outcome is unknown
    the `idempotency_key` it was sent under."""

    code: str
    status: int
    message: str
    idempotency_key: str | None
    retry_after: float | None

    def __new__(
        cls,
        code: str,
        message: str,
        status: int = 0,
        *,
        idempotency_key: str | None = None,
        retry_after: float | None = None,
    ) -> ClientError:
        self = super().__new__(cls, f"{code}: {message}")
        self.code, self.message, self.status = code, message, status
        self.idempotency_key, self.retry_after = idempotency_key, retry_after
        return self

    @classmethod
    def from_answer(cls, status: int, body: bytes, headers: Any) -> ClientError:
        """The error of a non-2xx answer (the gateway's ``{"error": {"code", "message"}}``)."""
        try:
            err = msgspec.json.decode(body)["error"]
            code, message = str(err["code"]), str(err["message"])
        except Exception:
            code, message, err = f"HTTP_{status}", body[:200].decode("utf-8", "replace"), {}
        retry_after = headers.get("retry-after")
        return cls(
            code,
            message,
            status,
            idempotency_key=err.get("idempotency_key") or headers.get("idempotency-key"),
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: `attempts` in all, exponential backoff from
    `backoff_s` up to `max_backoff_s` with full jitter, or the answer's Retry-After."""

    attempts: int = 4
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0

    def delay(self, attempt: int, error: ClientError, *, write: bool) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None: give up with `error`.

        A connection error (status 0) is retried for a write too: it carries its idempotency
        key, so a write that did land is not applied twice."""
        if attempt + 1 >= self.attempts:
            return None
        if error.status not in RETRYABLE_STATUSES and error.status != 0:
            return None
        if error.retry_after is not None:
            return min(error.retry_after, self.max_backoff_s * 2)
        cap = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        return random.uniform(cap / 2, cap)  # full jitter: clients spread out


@dataclass(frozen=True)
class Call:
    """One request of the API: a write (`write`) is sent with an `Idempotency-Key`, the same
    on every retry; `user_id`, when given, must be the token's user (seed 003 names it)."""

    method: str
    path: str
    answer: type
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)
    write: bool = False
    user_id: str | None = None
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def headers(self) -> dict[str, str]:
        headers = {"Idempotency-Key": self.key} if self.write else {}
        if correlation_id := _correlation.get():
            headers["X-Correlation-ID"] = correlation_id
        return headers

    def decode(self, body: bytes) -> Any:
        return msgspec.json.decode(body, type=self.answer)


def _p(value: str) -> str:
    return quote(value, safe="")


def token_subject(token: str) -> str | None:
    """The `sub` claim of a JWT, unverified (the gateway verifies it): the caller's user."""
    try:
        payload = token.split(".")[1]
        claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])
    except Exception:
        return None


# ------------------------------------------------------------------ the calls, once
def start_session(user_id: str, router_id: str, session_id: str, restart: bool = False) -> Call:
    body = {"sessionId": session_id, "routerId": router_id, "restart": restart}
    return Call("POST", "/api/session/start", SessionStarted, body, write=True, user_id=user_id)


def end_session(user_id: str, router_id: str, session_id: str) -> Call:
    body = {"sessionId": session_id, "routerId": router_id}
    return Call("POST", "/api/session/end", Message, body, write=True, user_id=user_id)


def refresh_session(user_id: str, router_id: str, session_id: str) -> Call:
    body = {"sessionId": session_id}
    return Call("POST", "/api/session/refresh", Message, body, write=True, user_id=user_id)


def get_session(session_id: str, *, min_version: int | None = None) -> Call:
    query = {"min_version": str(min_version)} if min_version else {}
    return Call("GET", f"/session/{_p(session_id)}", Snapshot, query=query)


def save_snapshot(
    session_id: str,
    state: dict[str, Any],
    *,
    version: int | None = None,
    device_id: str = "",
    app_version: str = "",
) -> Call:
    body = {
        "session_id": session_id,
        "state_data": state,
        "device_id": device_id,
        "app_version": app_version,
        "version": version,
    }
    return Call("POST", "/session/snapshot", StateWritten, body, write=True)


def apply_changes(
    session_id: str,
    changes: dict[str, Any] | None = None,
    *,
    deleted_keys: Iterable[str] = (),
    base_version: int | None = None,
    device_id: str = "",
) -> Call:
    body = {
        "session_id": session_id,
        "changes": changes or {},
        "deleted_keys": list(deleted_keys),
        "base_version": base_version,
        "device_id": device_id,
    }
    return Call("POST", "/session/incremental", StateWritten, body, write=True)


def resolve_conflict(
    session_id: str,
    client_state: dict[str, Any],
    *,
    strategy: str = "server_wins",
    client_version: int = 0,
) -> Call:
    body = {
        "session_id": session_id,
        "client_state": client_state,
        "resolution_strategy": strategy,
        "client_version": client_version,
    }
    return Call("POST", "/session/conflict/resolve", ConflictResolved, body, write=True)


def start_handoff(session_id: str, source_device: str, target_device: str) -> Call:
    body = {"source_device": source_device, "target_device": target_device}
    return Call("POST", f"/session/{_p(session_id)}/handoff", HandoffIssued, body, write=True)


def accept_handoff(session_id: str, token: str, *, device_id: str = "") -> Call:
    query = {"device_id": device_id} if device_id else {}
    path = f"/session/{_p(session_id)}/handoff/{_p(token)}"
    return Call("GET", path, HandoffAccepted, query=query, write=True)  # accepts it, once


def list_devices(session_id: str) -> Call:
    return Call("GET", f"/session/{_p(session_id)}/devices", Devices)


def disconnect_device(session_id: str, device_id: str) -> Call:
    path = f"/session/{_p(session_id)}/device/{_p(device_id)}"
    return Call("DELETE", path, DeviceDisconnected, write=True)


def start_simulator(
    session_id: str, *, symbols: Iterable[str] | None = None, cash: float | None = None
) -> Call:
    body: dict[str, Any] = {}
    if symbols is not None:
        body["initial_symbols"] = list(symbols)
    if cash is not None:
        body["initial_cash"] = cash
    path = f"/api/sessions/{_p(session_id)}/simulator"
    return Call("POST", path, Simulator, body, write=True)


def stop_simulator(session_id: str) -> Call:
    return Call("POST", f"/api/sessions/{_p(session_id)}/simulator/stop", Simulator, write=True)


def simulator_status(session_id: str) -> Call:
    return Call("GET", f"/api/sessions/{_p(session_id)}/simulator", Simulator)


#: The API: name -> the function that builds its `Call` (the clients bind each as a method).
CALLS = {
    fn.__name__: fn
    for fn in (
        start_session,
        end_session,
        refresh_session,
        get_session,
        save_snapshot,
        apply_changes,
        resolve_conflict,
        start_handoff,
        accept_handoff,
        list_devices,
        disconnect_device,
        start_simulator,
        stop_simulator,
        simulator_status,
    )
}


# ------------------------------------------------------------------ the watch
class SseParser:
    """Server-Sent Events, one line at a time: `feed(line)` returns a `Change` when a record
    ends. The gateway's records: ``id: <version>`` / ``event: <name>`` / ``data: <json>``."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""

    def feed(self, line: str) -> Change | None:
        if line == "":
            data, self._data = "\n".join(self._data), []
            event, self._event = self._event, ""
            if not data:
                return None
            return _change(event, data)
        if line.startswith(":"):
            return None  # a keep-alive comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


def _change(event: str, data: str) -> Change | None:
    try:
        frame = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    payload = frame.get("payload") if isinstance(frame, dict) else None
    if not isinstance(payload, dict):
        payload = {}
    version = payload.get("version") if event not in ("connected",) else None
    return Change(
        type=str(frame.get("type", event)),
        version=version if isinstance(version, int) else None,
        payload=payload,
        session_id=str(frame.get("session_id") or payload.get("session_id") or ""),
        timestamp=int(frame.get("timestamp") or 0),
    )


class Resume:
    """Where a watch is: the last version delivered, so a reconnect resumes after it and a
    version delivered twice (history and live overlap) is dropped. `over` once the session
    ended or expired (nothing more will come)."""

    def __init__(self, since: int | None) -> None:
        self.since = since
        self.over = False

    def accept(self, change: Change) -> bool:
        """Whether to deliver `change` (and remember its version)."""
        if change.type == "connected":
            if self.since is None:
                self.since = int(change.payload.get("version") or 0)
            return True
        if change.version is None:
            return True
        if change.type != "reset" and self.since is not None and change.version <= self.since:
            return False
        self.since = change.version
        if change.type == "session_update" and change.payload.get("status") in ("ENDED", "EXPIRED"):
            self.over = change.payload.get("reason") != "restarted"
        return True

    def query(self, device_id: str | None) -> dict[str, str]:
        q = {} if self.since is None else {"since": str(self.since)}
        if device_id:
            q["device_id"] = device_id
        return q


#: A watch gives up on these answers (retrying cannot help); 410: the session is over.
FINAL_STATUSES = frozenset({400, 401, 403, 404, 410})
