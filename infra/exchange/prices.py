"""Deterministic price paths for one simulator: pure code, no I/O, no clock.

Every simulator gets its own seeded generator (the seed is derived from its id and the symbol),
so two runs of the same simulator produce the same quotes tick for tick. Prices follow a
geometric Brownian motion::

    S(t + dt) = S(t) * exp((mu - sigma**2 / 2) * dt + sigma * sqrt(dt) * Z),   Z ~ N(0, 1)

`dt` is in years of *market* time; `time_scale` says how much market time one wall-clock second
is worth (the default makes a one-second tick a simulated minute, so prices visibly move).
"""

from __future__ import annotations

import hashlib
import math
import random

import msgspec

__all__ = [
    "SECONDS_PER_YEAR",
    "Market",
    "PathParams",
    "Portfolio",
    "Quote",
    "Tick",
    "seed_for",
]

SECONDS_PER_YEAR = 252 * 6.5 * 3600  # trading seconds in a year


def seed_for(simulator_id: str, symbol: str = "") -> int:
    """A stable 64-bit seed for one symbol of one simulator (never Python's salted `hash`)."""
    digest = hashlib.blake2b(f"{simulator_id}/{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class PathParams(msgspec.Struct, frozen=True, kw_only=True):
    """How prices move. `mu` and `sigma` are annualised drift and volatility."""

    mu: float = 0.05
    sigma: float = 0.30
    tick_interval_s: float = 0.1
    time_scale: float = 600.0  # market seconds per wall second
    spread_bps: float = 5.0
    mean_volume: float = 200.0

    @property
    def dt(self) -> float:
        return self.tick_interval_s * self.time_scale / SECONDS_PER_YEAR


class Quote(msgspec.Struct, frozen=True):
    symbol: str
    bid: float
    ask: float
    last: float
    volume: int  # traded this tick
    total_volume: int  # traded since the simulator started


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    """One tick of one simulator: a quote per symbol, plus the portfolio's marks."""

    simulator_id: str
    seq: int
    ts: int  # ms since the epoch when the tick was made (set by the I/O loop)
    quotes: list[Quote]
    cash: float
    equity: float


class _SymbolPath:
    __slots__ = ("drift", "last", "params", "rng", "symbol", "total_volume", "vol")

    def __init__(self, simulator_id: str, symbol: str, params: PathParams) -> None:
        self.symbol = symbol
        self.params = params
        self.rng = random.Random(seed_for(simulator_id, symbol))
        self.last = round(self.rng.uniform(20.0, 500.0), 2)
        self.total_volume = 0
        dt = params.dt
        self.drift = (params.mu - params.sigma**2 / 2) * dt
        self.vol = params.sigma * math.sqrt(dt)

    def step(self) -> Quote:
        rng = self.rng
        self.last = self.last * math.exp(self.drift + self.vol * rng.gauss(0.0, 1.0))
        half = self.last * self.params.spread_bps / 20_000 * (0.5 + rng.random())
        mean = self.params.mean_volume
        volume = int(rng.expovariate(1.0 / mean)) if mean else 0
        self.total_volume += volume
        last = round(self.last, 4)
        return Quote(
            self.symbol,
            round(last - half, 4),
            round(last + half, 4),
            last,
            volume,
            self.total_volume,
        )


class Portfolio(msgspec.Struct, kw_only=True):
    """Cash and positions of the simulator's single trader; marked to market every tick."""

    cash: float
    positions: dict[str, float] = {}

    def equity(self, prices: dict[str, float]) -> float:
        return self.cash + sum(qty * prices.get(sym, 0.0) for sym, qty in self.positions.items())


class Market:
    """Every symbol's path of one simulator. `step()` advances all of them by one tick."""

    def __init__(
        self,
        simulator_id: str,
        symbols: list[str],
        *,
        initial_cash: float = 100_000.0,
        params: PathParams | None = None,
    ) -> None:
        self.simulator_id = simulator_id
        self.params = params or PathParams()
        self.paths = [_SymbolPath(simulator_id, s, self.params) for s in dict.fromkeys(symbols)]
        self.portfolio = Portfolio(cash=initial_cash)
        self.seq = 0

    def step(self, ts: int = 0) -> Tick:
        self.seq += 1
        quotes = [p.step() for p in self.paths]
        equity = self.portfolio.equity({q.symbol: q.last for q in quotes})
        return Tick(
            simulator_id=self.simulator_id,
            seq=self.seq,
            ts=ts,
            quotes=quotes,
            cash=self.portfolio.cash,
            equity=round(equity, 2),
        )
