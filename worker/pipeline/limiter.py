"""Refusals per source address: a flood of forgeries is cut off cheaply, real notifies go on.

An address that collected `per_minute` refusals in the current minute gets 429 instead of its
refusal for the rest of that minute, without a log line per request. Its bodies are still read
and verified (ingress.py): behind a proxy many senders share one address, and a genuine notify
from it must still be stored. Addresses that are not refused are never limited, however many notifies they
send. The count is kept per web process (no Redis round trip on the hot path, and it works
with Redis down), so with N gunicorn workers an address gets at most N x per_minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# beyond this many tracked addresses, entries of past minutes are dropped (bounded memory)
MAX_TRACKED = 10_000


class RefusalLimiter:
    """Fixed one-minute windows of refusal counts, per address. Thread-safe."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._counts: dict[str, tuple[int, int]] = {}  # address -> (minute, refusals in it)
        self._lock = threading.Lock()

    def _minute(self) -> int:
        return int(self._clock() // 60)

    def blocked(self, address: str) -> bool:
        """True when the address already used up its refusals this minute."""
        minute, count = self._counts.get(address, (-1, 0))
        return minute == self._minute() and count >= self.per_minute

    def record(self, address: str) -> int:
        """Count one refusal; return the address's refusals this minute."""
        now = self._minute()
        with self._lock:
            minute, count = self._counts.get(address, (now, 0))
            count = count + 1 if minute == now else 1
            self._counts[address] = (now, count)
            if len(self._counts) > MAX_TRACKED:
                self._counts = {a: v for a, v in self._counts.items() if v[0] == now}
            return count
