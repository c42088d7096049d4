"""The chaos load: WebSocket devices (two per session, split between the gateways) and REST writers
and readers, recording every acknowledged write with its version and every answer's status.

A device is one client across its reconnections: when its socket drops (its gateway was killed,
stopped, or drained) it reconnects to the other gateway with `since=<last version seen>`, as a
real client does, and folds every pushed change into its copy of the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import websockets

from gateway.protocol import MessageType

__all__ = ["Ack", "Device", "Ledger", "RestWriter"]


@dataclass(frozen=True)
class Ack:
    """A write the system acknowledged: `key` = `value` at session version `version`."""

    session_id: str
    version: int
    key: str
    value: int
    via: str
    at: float


@dataclass
class Ledger:
    """What the clients saw, for the invariants."""

    acks: list[Ack] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[tuple[float, int, str, str]] = field(default_factory=list)
    unavailable: list[float] = field(default_factory=list)  # times of 503s / WS 503-like codes
    ws_errors: Counter[str] = field(default_factory=Counter)
    ryw_checked: int = 0
    ryw_stale: list[tuple[str, int, int]] = field(default_factory=list)  # issue 14
    push_delays: list[tuple[float, float]] = field(default_factory=list)  # (sent at, delay)
    sent_at: dict[tuple[str, str], float] = field(default_factory=dict)  # (session, key)
    unacked: int = 0

    def answer(self, status: int, what: str, body: str = "") -> None:
        self.statuses[status] += 1
        if status == 503:
            self.unavailable.append(time.monotonic())
        elif status >= 500:
            self.server_errors.append((time.monotonic(), status, what, body[:300]))


#: WS error codes that are a 503 on the REST side: allowed during an outage only.
UNAVAILABLE_CODES = {"OUTCOME_UNKNOWN", "STORE_UNAVAILABLE", "DATABASE_UNAVAILABLE", "UNAVAILABLE"}


def _name(t: object) -> str:
    if isinstance(t, int):
        try:
            return MessageType(t).name.lower()
        except ValueError:
            return str(t)
    return str(t).lower()


class Device:
    """One device of a session, connected to `gateways[home]` first."""

    def __init__(
        self,
        ledger: Ledger,
        ws_bases: list[str],
        token: str,
        session_id: str,
        device_id: str,
        home: int,
        ping_interval: float | None = 2.0,
        gate: asyncio.Semaphore | None = None,
        max_delay: float = 2.0,
    ) -> None:
        self.ledger = ledger
        # pings find a stopped (SIGSTOP) gateway; a storm of thousands does without them
        self.ping_interval = ping_interval
        # the client process's cap on handshakes in flight (held from the connect until the
        # gateway's `connected`, i.e. through its catch-up): thousands of devices reconnecting
        # at once otherwise time each other out and retry without end
        self.gate = gate
        self.max_delay = max_delay
        self._holding = False
        self._frozen = False
        self.ws_bases = ws_bases
        self.token = token
        self.session_id = session_id
        self.device_id = device_id
        self.gateway = home
        self.state: dict = {}
        self.last: int | None = None
        self.base: int | None = None  # the session version its first connection started from
        self.received: list[int] = []
        self.resets: list[int] = []
        self.duplicates = 0
        self.connects = 0
        self.attempts = 0  # connections tried (`connects`: those the gateway accepted)
        self.connected = asyncio.Event()
        self.ws: websockets.ClientConnection | None = None
        self._pending: dict[str, asyncio.Future] = {}
        self._seq = 0

    # ------------------------------------------------------------------ connection

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop`, moving to the other gateway after each drop."""
        delay = 0.2
        while not stop.is_set():
            url = (
                f"{self.ws_bases[self.gateway]}?token={self.token}&device_id={self.device_id}"
                f"&session_id={self.session_id}"
            )
            since = self.last if self.last is not None else self.base
            if since is not None:
                url += f"&since={since}"
            try:
                if self.gate is not None:
                    await self.gate.acquire()
                    self._holding = True
                self.attempts += 1
                async with websockets.connect(
                    url,
                    max_size=8 << 20,
                    compression=None,
                    open_timeout=10,
                    ping_interval=self.ping_interval,
                    ping_timeout=4,
                    close_timeout=1,
                ) as ws:
                    self.ws = ws
                    delay = 0.2
                    await self._read(ws, stop)
            except (OSError, websockets.WebSocketException, TimeoutError):
                pass
            finally:
                self._release_gate()
                self.ws = None
                self.connected.clear()
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_result(None)
                self._pending.clear()
            if stop.is_set():
                break
            self.gateway = 1 - self.gateway  # resume on the other gateway
            await asyncio.sleep(delay * (0.5 + random.random()))  # jittered: no lockstep
            delay = min(self.max_delay, delay * 2)

    def _release_gate(self) -> None:
        if self._holding:
            self._holding = False
            self.gate.release()

    async def _read(self, ws, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        recv: asyncio.Future | None = None
        try:
            while True:
                recv = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({recv, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    recv.cancel()
                    with contextlib.suppress(BaseException):
                        await recv
                    return
                self._handle(json.loads(recv.result()))
        finally:  # a cancelled device leaves no pending recv to log "never retrieved"
            stopper.cancel()
            if recv is not None and not recv.done():
                recv.cancel()

    def freeze(self) -> None:
        """Stop taking in messages: what the device shows now is what the invariants check
        (the harness's own disconnects append ConnectionClosed events that the other device
        of a session would receive after the log was read)."""
        self._frozen = True

    def _handle(self, msg: dict) -> None:
        if self._frozen:
            return
        kind = _name(msg.get("type"))
        payload = msg.get("payload") or {}
        corr = msg.get("correlation_id")
        if corr and corr in self._pending:
            fut = self._pending.pop(corr)
            if not fut.done():
                fut.set_result(msg)
            return
        if kind == "connected":
            if self.base is None and isinstance(payload.get("version"), int):
                self.base = payload["version"]
            self.connects += 1
            self.connected.set()
            self._release_gate()
            return
        if kind == "error":
            code = payload.get("code", "?")
            self.ledger.ws_errors[code] += 1
            if code in UNAVAILABLE_CODES:
                self.ledger.unavailable.append(time.monotonic())
            return
        version = msg.get("version")
        if not isinstance(version, int):
            return  # heartbeats, ticks, broadcasts: outside the ordered history
        if kind == "reset":
            self.resets.append(version)
            self.state = {k: v for k, v in payload.items() if k != "version"}
            self.last = version
            self.received.append(version)
            return
        if self.last is not None and version <= self.last:
            self.duplicates += 1
            return
        self.last = version
        self.received.append(version)
        if kind == "state_update":
            op = payload.get("operation")
            if op == "PATCH":
                for key in payload.get("changes") or ():
                    sent = self.ledger.sent_at.pop((self.session_id, key), None)
                    if sent is not None:
                        self.ledger.push_delays.append((sent, time.monotonic() - sent))
                self.state.update(payload.get("changes") or {})
                for key in payload.get("deleted_keys") or ():
                    self.state.pop(key, None)
            elif op in ("REPLACE", "RESOLVE"):
                self.state = dict(payload.get("state") or {})

    # ------------------------------------------------------------------ writes

    async def write(self, key: str, value: int, timeout: float = 10.0) -> Ack | None:
        """One state update with an idempotency key; the ack's version, or None (no ack:
        dropped connection, outage). An OUTCOME_UNKNOWN is retried once with the same key."""
        ws = self.ws
        if ws is None or not self.connected.is_set():
            return None
        ikey = f"{self.device_id}-{key}"
        for _ in range(2):
            self._seq += 1
            corr = f"c{self._seq}"
            fut = asyncio.get_running_loop().create_future()
            self._pending[corr] = fut
            sent = time.monotonic()
            msg = {
                "type": "state_update",
                "correlation_id": corr,
                "idempotency_key": ikey,
                "payload": {"changes": {key: value}},
            }
            # the push may reach a device before the ack reaches the writer: timed from here
            self.ledger.sent_at.setdefault((self.session_id, key), sent)
            try:
                await ws.send(json.dumps(msg))
                answer = await asyncio.wait_for(fut, timeout)
            except (websockets.WebSocketException, OSError, TimeoutError):
                self._pending.pop(corr, None)
                return None
            if answer is None:
                return None
            payload = answer.get("payload") or {}
            if _name(answer.get("type")) == "state_update" and payload.get("accepted"):
                version = int(payload["version"])
                ack = Ack(self.session_id, version, key, value, "ws", time.monotonic())
                self.ledger.acks.append(ack)
                return ack
            code = payload.get("code", "?")
            self.ledger.ws_errors[code] += 1
            if code in UNAVAILABLE_CODES:
                self.ledger.unavailable.append(time.monotonic())
            if code != "OUTCOME_UNKNOWN":
                return None
            await asyncio.sleep(min(2.0, float(payload.get("retry_after", 1))))
            ws = self.ws
            if ws is None:
                return None
        return None


class RestWriter:
    """REST writes (incremental updates with an Idempotency-Key) and reads, through both
    gateways; each acknowledged write is read back through the other gateway (issue 14's
    read-your-writes, reported)."""

    def __init__(self, ledger: Ledger, bases: list[str], token: str, session_id: str) -> None:
        self.ledger = ledger
        self.bases = bases
        self.headers = {"Authorization": f"Bearer {token}"}
        self.session_id = session_id

    async def _call(
        self, http: httpx.AsyncClient, method: str, url: str, **kw
    ) -> httpx.Response | None:
        try:
            r = await http.request(
                method, url, headers={**self.headers, **kw.pop("headers", {})}, **kw
            )
        except httpx.HTTPError:
            return None
        self.ledger.answer(r.status_code, f"{method} {url}", r.text)
        return r

    async def create(self, http: httpx.AsyncClient) -> bool:
        r = await self._call(
            http,
            "POST",
            f"{self.bases[0]}/session/snapshot",
            json={"session_id": self.session_id, "state_data": {}},
        )
        return r is not None and r.status_code == 200

    async def write(self, http: httpx.AsyncClient, key: str, value: int) -> Ack | None:
        ikey = uuid.uuid4().hex
        for attempt in range(3):
            base = random.randrange(2)
            r = await self._call(
                http,
                "POST",
                f"{self.bases[base]}/session/incremental",
                headers={"Idempotency-Key": ikey},
                json={"session_id": self.session_id, "changes": {key: value}},
            )
            if r is not None and r.status_code == 200:
                version = int(r.json()["session_version"])
                ack = Ack(self.session_id, version, key, value, "rest", time.monotonic())
                self.ledger.acks.append(ack)
                await self._read_back(http, 1 - base, version)
                return ack
            if r is not None and r.status_code not in (503,) and r.status_code < 500:
                return None
            await asyncio.sleep(0.5 * (attempt + 1))
        self.ledger.unacked += 1
        return None

    async def _read_back(self, http: httpx.AsyncClient, base: int, version: int) -> None:
        r = await self._call(http, "GET", f"{self.bases[base]}/session/{self.session_id}")
        if r is None or r.status_code != 200:
            return
        self.ledger.ryw_checked += 1
        seen = int(r.json().get("session_version", 0))
        if seen < version:
            self.ledger.ryw_stale.append((self.session_id, version, seen))

    async def read(self, http: httpx.AsyncClient) -> dict | None:
        r = await self._call(http, "GET", f"{random.choice(self.bases)}/session/{self.session_id}")
        return r.json() if r is not None and r.status_code == 200 else None
