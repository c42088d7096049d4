"""The reference engine's price paths: deterministic per simulator, statistically a GBM."""

from __future__ import annotations

import itertools
import math
import os
import statistics
import subprocess
import sys

from infra.exchange.prices import Market, PathParams, seed_for


def _ticks(simulator_id: str, n: int, symbols=("AAPL", "MSFT")) -> list:
    market = Market(simulator_id, list(symbols), initial_cash=50_000.0)
    return [market.step(ts=i) for i in range(n)]


def test_same_simulator_id_gives_the_same_ticks():
    assert _ticks("sim-a", 200) == _ticks("sim-a", 200)


def test_other_simulator_or_symbol_gives_other_prices():
    a = [q.last for t in _ticks("sim-a", 50) for q in t.quotes]
    b = [q.last for t in _ticks("sim-b", 50) for q in t.quotes]
    assert a != b
    assert seed_for("sim-a", "AAPL") != seed_for("sim-a", "MSFT")


def test_seed_does_not_depend_on_python_hash_salt():
    code = "from infra.exchange.prices import seed_for; print(seed_for('x', 'y'))"
    seeds = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": salt},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for salt in ("1", "2")
    }
    assert seeds == {str(seed_for("x", "y"))}


def test_every_tick_quotes_every_symbol_once_with_bid_below_ask():
    ticks = _ticks("sim-q", 100, symbols=("AAPL", "MSFT", "AAPL", "GOOG"))
    for seq, tick in enumerate(ticks, start=1):
        assert tick.seq == seq
        assert [q.symbol for q in tick.quotes] == ["AAPL", "MSFT", "GOOG"]
        for q in tick.quotes:
            assert 0 < q.bid < q.last < q.ask
            assert q.volume >= 0 and q.total_volume >= q.volume
    assert ticks[-1].cash == 50_000.0 and ticks[-1].equity == 50_000.0


def test_log_returns_have_the_gbm_mean_and_deviation():
    params = PathParams(mu=0.5, sigma=0.4, tick_interval_s=1.0, time_scale=3600.0)
    market = Market("sim-stats", ["XYZ"], params=params)
    prices = [market.paths[0].last] + [market.step().quotes[0].last for _ in range(20_000)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    dt = params.dt
    expected_mean = (params.mu - params.sigma**2 / 2) * dt
    expected_sd = params.sigma * math.sqrt(dt)
    sd = statistics.pstdev(returns)
    # rounding quotes to 4 decimals adds a little noise; 20k samples give ~0.5% error on sd
    assert abs(sd / expected_sd - 1) < 0.03
    # the mean's standard error is sd / sqrt(n); allow 4 of them
    assert abs(statistics.fmean(returns) - expected_mean) < 4 * expected_sd / math.sqrt(20_000)
    # and the returns are uncorrelated from one tick to the next
    lag = statistics.correlation(returns[:-1], returns[1:])
    assert abs(lag) < 0.03
