"""Circuit breaker with retries and exponential backoff around a provisioner (seed 000).

CLOSED: calls go through; transient failures (`ProvisionerUnavailable`) are retried up to
`retries` times with exponential backoff and jitter; each call whose retries are exhausted
counts one failure, and `failure_threshold` consecutive failures OPEN the breaker. OPEN: calls
fail at once with `CircuitOpen` (a clear message saying since when and until when) for
`reset_timeout_s`. HALF_OPEN: one trial call; success closes the breaker, failure re-opens it.
Final failures (`ProvisionFailed`) are the platform's answer, not an outage: not retried, and
they do not count against the breaker.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

from infra.provisioners.base import (
    CircuitOpen,
    Provisioner,
    ProvisionerStatus,
    ProvisionerUnavailable,
    SimulatorSpec,
)

__all__ = ["BreakerState", "CircuitBreaker", "GuardedProvisioner"]

T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_timeout_s: float = 30.0,
        retries: int = 3,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.failures = 0
        self.opened_at: float | None = None
        self.last_error = ""
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at >= self.reset_timeout_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def backoff(self, attempt: int) -> float:
        """Delay before retry `attempt` (1-based): base * 2**(attempt-1), capped, jittered."""
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return delay * (0.5 + self.jitter() / 2)

    def _open_error(self) -> CircuitOpen:
        assert self.opened_at is not None
        retry_in = max(0.0, self.reset_timeout_s - (self.clock() - self.opened_at))
        return CircuitOpen(
            f"{self.name} unavailable: circuit breaker open after {self.failures} failed calls "
            f"(last error: {self.last_error}); retrying in {retry_in:.0f}s"
        )

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        state = self.state
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._trial_running):
            raise self._open_error()
        trial = state is BreakerState.HALF_OPEN
        self._trial_running = trial
        try:
            attempts = 1 if trial else self.retries + 1
            for attempt in range(1, attempts + 1):
                try:
                    result = await fn()
                except ProvisionerUnavailable as exc:
                    self.last_error = exc.message
                    if attempt < attempts:
                        await self.sleep(self.backoff(attempt))
                        continue
                    self.failures += 1
                    if trial or self.failures >= self.failure_threshold:
                        self.opened_at = self.clock()
                    raise ProvisionerUnavailable(
                        f"{self.name} unavailable after {attempt} attempt(s): {exc.message}"
                    ) from exc
                self.failures = 0
                self.opened_at = None
                return result
            raise AssertionError("unreachable")
        finally:
            if trial:
                self._trial_running = False


class GuardedProvisioner:
    """A provisioner whose calls go through a `CircuitBreaker`."""

    def __init__(self, inner: Provisioner, breaker: CircuitBreaker | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.breaker = breaker or CircuitBreaker(f"{inner.name} provisioner")

    async def provision(self, spec: SimulatorSpec) -> str:
        return await self.breaker.call(lambda: self.inner.provision(spec))

    async def deprovision(self, simulator_id: str) -> None:
        await self.breaker.call(lambda: self.inner.deprovision(simulator_id))

    async def status(self, simulator_id: str) -> ProvisionerStatus:
        return await self.breaker.call(lambda: self.inner.status(simulator_id))

    async def close(self) -> None:
        await self.inner.close()

    async def health_check(self) -> str | None:
        """For `/healthz`: None unless the breaker is open (the provisioner keeps failing)."""
        if self.breaker.state is BreakerState.OPEN:
            return f"the {self.name} provisioner's circuit breaker is open"
        return None
