"""A per-merchant token bucket, so the sweep never floods IOTPay on one merchant's account."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """At most `rate` acquisitions per second per key, with bursts up to `burst`. Thread-safe.

    `acquire` blocks (sleeping outside the lock) until a token is free. Clock and sleep are
    injectable for tests.
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def _take(self, key: str) -> float:
        """Take a token if one is there (return 0), else return how long to wait."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0 - 1e-9:  # float dust must not turn a due token into an endless tiny wait
                self._buckets[key] = (max(0.0, tokens - 1.0), now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def acquire(self, key: str) -> float:
        """Block until key may make one more call; return the seconds waited."""
        waited = 0.0
        while True:
            wait = self._take(key)
            if wait <= 0:
                return waited
            self._sleep(wait)
            waited += wait
