"""`/healthz` and `/metrics` of one process, on `SESSIOND_METRICS_ADDR` (docs/operations.md).

Every long-running process (worker, projector, reactor, simulators, gateway) opens one `Probe`
with its own checks: named async functions that return None when fine, else a one-line failure.
The process's event loop runs them every `period_s` (each within `CHECK_TIMEOUT_S`) and keeps the
results; the HTTP listener runs in a thread of its own and only reads them. So a probe never
waits on Redis or PostgreSQL, it answers while the process is busy, and it answers 503 when the
event loop itself has made no progress for `stall_after_s` (a wedged process: its liveness probe
restarts it), which a listener on the loop could never say.

- ``GET /healthz``: 200 ``{"status": "ok"}``, or 503 ``{"status": "unavailable", "reason": "<one
  line>", "checks": {name: "ok" | failure}}``;
- ``GET /metrics``: `infra.metrics.render()` in the Prometheus text format.

Plain HTTP without authentication: bind it to loopback (the default host of a bare ``:PORT``) or
to a cluster-internal port that a NetworkPolicy guards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

from infra import metrics
from infra.knobs import host_port

__all__ = ["CHECK_TIMEOUT_S", "Check", "Probe", "answers", "probe_server"]

log = logging.getLogger("sessiond.probe")

#: One check: None when fine, else what is wrong (one line).
Check = Callable[[], Awaitable[str | None]]

#: How long one check may take before it counts as failed.
CHECK_TIMEOUT_S = 1.0


def answers(call: Callable[[], Awaitable[Any]]) -> Check:
    """A check that passes when `call()` returns (a store's ping, ``SELECT 1``): its exception
    or its silence past `CHECK_TIMEOUT_S` is the failure."""

    async def check() -> str | None:
        await call()
        return None

    return check


class _Verdict(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str
    reason: str = ""
    checks: dict[str, str] = {}


_encode = msgspec.json.Encoder().encode


class Probe:
    """The latest results of a process's checks, and the loop's last sign of life.

    Written by the event loop (`refresh`, `keep_fresh`), read by the listener's threads
    (`verdict`): each write replaces a whole dict, so a reader never sees half of one."""

    def __init__(
        self, checks: Mapping[str, Check], *, period_s: float = 1.0, stall_after_s: float = 5.0
    ) -> None:
        self.checks = dict(checks)
        self.period_s = period_s
        self.stall_after_s = stall_after_s
        self.results: dict[str, str] | None = None  # None: not checked yet
        self.beat_at = time.monotonic()

    async def _run(self, name: str, check: Check) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                failure = await check()
        except TimeoutError:
            failure = f"no answer within {CHECK_TIMEOUT_S:g} s"
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return "ok" if failure is None else failure

    async def refresh(self) -> None:
        """Run every check at once and keep the results."""
        names = list(self.checks)
        done = await asyncio.gather(*(self._run(n, self.checks[n]) for n in names))
        self.results = dict(zip(names, done, strict=True))
        self.beat_at = time.monotonic()

    async def keep_fresh(self) -> None:
        """Refresh every `period_s` until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.period_s)

    def verdict(self) -> tuple[int, bytes]:
        """(HTTP status, JSON body) of ``/healthz`` now."""
        results = self.results
        stalled = time.monotonic() - self.beat_at
        if stalled > self.stall_after_s + self.period_s:
            reason = f"the event loop made no progress for {stalled:.0f} s"
            found = _Verdict("unavailable", reason, {**(results or {}), "event_loop": reason})
        elif results is None:
            found = _Verdict("unavailable", "starting: not checked yet")
        else:
            failed = [f"{name}: {failure}" for name, failure in results.items() if failure != "ok"]
            if not failed:
                return 200, _encode(_Verdict("ok"))
            found = _Verdict("unavailable", failed[0], results)
        return 503, _encode(found)


class _Handler(BaseHTTPRequestHandler):
    probe: Probe  # set on the subclass made per server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            status, body = self.probe.verdict()
            self._answer(status, body, "application/json")
        elif path == "/metrics":
            self._answer(200, metrics.render(), metrics.CONTENT_TYPE)
        else:
            self._answer(404, b'{"error": {"code": "NOT_FOUND", "message": "no such path"}}',
                         "application/json")  # fmt: skip

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes arrive every few seconds: no access log."""


def _listen(addr: str, probe: Probe) -> ThreadingHTTPServer:
    host, port = host_port(addr, "127.0.0.1")
    handler = type("ProbeHandler", (_Handler,), {"probe": probe})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probe", daemon=True).start()
    return server


@contextlib.asynccontextmanager
async def probe_server(
    addr: str,
    checks: Mapping[str, Check],
    *,
    partitions: int = 0,
    period_s: float = 1.0,
    stall_after_s: float = 5.0,
) -> AsyncIterator[Probe | None]:
    """Serve `/healthz` (from `checks`) and `/metrics` on `addr` (``host:port``) while the
    block runs; nothing when `addr` is empty. `partitions`: the deployment's P, exported as
    ``sessiond_partitions`` (the alerts compare owned partitions with it)."""
    if partitions:
        metrics.PARTITIONS.set(partitions)
    if not addr:
        yield None
        return
    probe = Probe(checks, period_s=period_s, stall_after_s=stall_after_s)
    server = _listen(addr, probe)
    log.info("serving /healthz and /metrics on %s", addr)
    task = asyncio.create_task(probe.keep_fresh(), name="probe")
    try:
        yield probe
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(server.shutdown)
        server.server_close()
