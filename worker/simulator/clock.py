"""The simulator's clock: real time by default, frozen or shifted on demand.

Tests and demos drive it (`POST /_sim/clock`) so an order that "completes after 40 s" completes
when the clock says so, without anybody waiting 40 s.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone


class SimClock:
    """A thread-safe clock that can be frozen at an instant, advanced, or released to real time."""

    def __init__(self, frozen_at: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._frozen = frozen_at
        self._offset = timedelta(0)

    def now(self) -> datetime:
        """The simulated current time (aware, UTC)."""
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return datetime.now(timezone.utc) + self._offset

    def set(self, instant: datetime) -> None:
        """Freeze the clock at instant (aware). Raises ValueError for a naive datetime."""
        if instant.tzinfo is None:
            raise ValueError("the simulator clock needs a timezone-aware instant")
        with self._lock:
            self._frozen = instant.astimezone(timezone.utc)

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward (frozen or not); return the new now."""
        with self._lock:
            if self._frozen is not None:
                self._frozen += timedelta(seconds=seconds)
            else:
                self._offset += timedelta(seconds=seconds)
        return self.now()

    def release(self) -> None:
        """Back to real time, with no offset."""
        with self._lock:
            self._frozen = None
            self._offset = timedelta(0)
