"""Token buckets: the one rate-limit mechanism of the gateway (WS messages per connection,
REST requests per user).

A bucket holds up to `burst` tokens and refills at `rate` per second; each message takes one.
A message refused for want of a token still takes one (the bucket goes into debt), so a client
that keeps sending while limited stays limited until it slows down, and the debt says how long
to wait (`Retry-After`). Rate and burst are passed on each call, not stored, so a bucket is two
floats (one per WS connection: memory counts there).

Pure: the caller passes the time (monotonic seconds).
"""

from __future__ import annotations

import math

__all__ = ["KeyedLimiter", "TokenBucket"]


class TokenBucket:
    """One client's bucket. `tokens` below zero is debt."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, rate: float, burst: float) -> bool:
        """Take one token; True if there was one (the message may go through)."""
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        allowed = self.tokens >= 1.0
        self.tokens -= 1.0
        return allowed

    def wait_s(self, rate: float) -> float:
        """Seconds until the next token (0 when one is there)."""
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / rate

    def full(self, now: float, rate: float, burst: float) -> bool:
        """Whether the bucket has refilled completely (its client has been quiet long enough
        that forgetting it changes nothing)."""
        return self.tokens + (now - self.stamp) * rate >= burst


class KeyedLimiter:
    """A bucket per key (e.g. per user), for one process. Buckets that refilled completely are
    forgotten once there are more than `max_keys`, so memory follows the active keys only."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key: str, now: float) -> int:
        """0 when `key` may go on, else the whole seconds to wait (`Retry-After`)."""
        if not self.enabled:
            return 0
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self.buckets[key] = TokenBucket(self.burst, now)
        if bucket.take(now, self.rate, self.burst):
            return 0
        return max(1, math.ceil(bucket.wait_s(self.rate)))

    def _forget_full(self, now: float) -> None:
        rate, burst = self.rate, self.burst
        self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now, rate, burst)}
        # every bucket busy: let the table grow rather than sweep it again at each new key
        self.max_keys = max(self.max_keys, 2 * len(self.buckets))
