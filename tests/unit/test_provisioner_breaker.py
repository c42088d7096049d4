"""Circuit breaker with retries and exponential backoff around provisioners (seed 000)."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, load_settings
from infra.provisioners import (
    CircuitBreaker,
    CircuitOpen,
    GuardedProvisioner,
    ProvisionerUnavailable,
    ProvisionFailed,
    SimulatorSpec,
)
from infra.provisioners.breaker import BreakerState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _breaker(clock: Clock, **kw) -> CircuitBreaker:
    kw.setdefault("failure_threshold", 2)
    kw.setdefault("reset_timeout_s", 30.0)
    kw.setdefault("retries", 3)
    return CircuitBreaker(
        "test provisioner",
        clock=clock,
        sleep=clock.sleep,
        jitter=lambda: 1.0,
        backoff_base_s=0.1,
        backoff_max_s=0.3,
        **kw,
    )


class Flaky:
    def __init__(self, failures: int, exc: Exception | None = None) -> None:
        self.failures = failures
        self.exc = exc or ProvisionerUnavailable("connection refused")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "endpoint"


@pytest.mark.anyio
async def test_transient_failures_are_retried_with_exponential_capped_backoff():
    clock = Clock()
    breaker = _breaker(clock)
    fn = Flaky(failures=3)
    assert await breaker.call(fn) == "endpoint"
    assert fn.calls == 4
    assert clock.slept == [0.1, 0.2, 0.3]  # 0.1 * 2**n, capped at 0.3
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


@pytest.mark.anyio
async def test_final_failures_are_not_retried_and_do_not_open_the_breaker():
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(5):
        fn = Flaky(failures=1, exc=ProvisionFailed("ImagePullBackOff"))
        with pytest.raises(ProvisionFailed, match="ImagePullBackOff"):
            await breaker.call(fn)
        assert fn.calls == 1
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.anyio
async def test_repeated_outages_open_the_breaker_which_fails_fast_with_a_clear_reason():
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(2):
        with pytest.raises(ProvisionerUnavailable, match="after 4 attempt"):
            await breaker.call(Flaky(failures=99))
    assert breaker.state is BreakerState.OPEN
    fn = Flaky(failures=0)
    with pytest.raises(CircuitOpen) as err:
        await breaker.call(fn)
    assert fn.calls == 0
    assert "circuit breaker open" in err.value.message
    assert "connection refused" in err.value.message
    assert err.value.code == "PROVISIONER_CIRCUIT_OPEN"


@pytest.mark.anyio
async def test_half_open_trial_closes_on_success_and_reopens_on_failure():
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(2):
        with pytest.raises(ProvisionerUnavailable):
            await breaker.call(Flaky(failures=99))
    clock.now += 31
    assert breaker.state is BreakerState.HALF_OPEN
    failing = Flaky(failures=99)
    with pytest.raises(ProvisionerUnavailable):
        await breaker.call(failing)
    assert failing.calls == 1  # a trial is one call, no retries
    assert breaker.state is BreakerState.OPEN
    clock.now += 31
    assert await breaker.call(Flaky(failures=0)) == "endpoint"
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.anyio
async def test_guarded_provisioner_routes_every_call_through_the_breaker():
    class Down:
        name = "fake"

        def __init__(self) -> None:
            self.calls = 0

        async def provision(self, spec):
            self.calls += 1
            raise ProvisionerUnavailable("API down")

        async def deprovision(self, simulator_id):
            self.calls += 1
            raise ProvisionerUnavailable("API down")

        async def status(self, simulator_id):
            raise AssertionError

        async def close(self):
            pass

    clock = Clock()
    inner = Down()
    guarded = GuardedProvisioner(inner, _breaker(clock, retries=1))
    spec = SimulatorSpec(simulator_id="s", session_id="x", initial_symbols=["A"])
    with pytest.raises(ProvisionerUnavailable):
        await guarded.provision(spec)
    with pytest.raises(ProvisionerUnavailable):
        await guarded.deprovision("s")
    assert inner.calls == 4
    with pytest.raises(CircuitOpen, match="test provisioner unavailable"):
        await guarded.provision(spec)
    assert inner.calls == 4


def test_settings_come_from_the_environment_and_reject_unknown_provisioners():
    s = load_settings(
        {
            "SIMULATOR_PROVISIONER": "kubernetes",
            "SIMULATOR_TICK_HZ": "2.5",
            "SIMULATOR_RETRIES": "1",
        }
    ).simulators
    assert (s.provisioner, s.tick_hz, s.retries) == ("kubernetes", 2.5, 1)
    assert load_settings({}).simulators.provisioner == "local"
    with pytest.raises(ConfigError, match="SIMULATOR_PROVISIONER='docker': expected one of local"):
        load_settings({"SIMULATOR_PROVISIONER": "docker"})
