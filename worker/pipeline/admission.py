"""Load shedding on the event loop: notifies in flight for a few inbox connections, and the wait a
newcomer would face.

A notify is handled on the event loop (notify_endpoint.py) and needs one of `slots` database
connections for its INSERT. `Admission` hands the slots out first come, first served, and says
when a newcomer would wait longer than max_wait: by the age of the oldest notify waiting, the
notifies ahead of it times the recent time a slot is held, and how late the event loop runs (a
loop behind by a second delays every request by that second). Such a notify is answered 503 at
once, and one that did wait longer is refused when it gets its slot (`Overloaded`), not stored:
the server never works through requests whose clients have given up.

Everything here runs on the event loop's thread: no locks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# first guess of the time a slot is held, until some have been measured
INITIAL_SERVICE_S = 0.01
# how often the event loop checks how late it runs
LAG_PROBE_S = 0.1


class Overloaded(Exception):
    """The notify would wait, or did wait, longer than max_wait: answer 503 with Retry-After."""


class Admission:
    """`slots` slots, handed out in arrival order, with the expected wait of a newcomer."""

    def __init__(self, slots: int, max_wait: float) -> None:
        self.slots = slots
        self.max_wait = max_wait
        self.service_s = INITIAL_SERVICE_S  # moving average of the time a slot is held
        self.loop_lag_s = 0.0  # how late the event loop ran its last probe (watch_loop)
        self.busy = 0  # slots held
        self._waiting: deque[tuple[float, asyncio.Future[None]]] = deque()  # (queued at, wake-up), oldest first

    def expected_wait(self, now: float) -> float:
        """Seconds a notify arriving now would wait for a slot (and, when late, for the event loop)."""
        if not self._waiting:
            return self.loop_lag_s
        return self.loop_lag_s + now - self._waiting[0][0] + len(self._waiting) / self.slots * self.service_s

    def would_wait_too_long(self) -> bool:
        """True when a notify arriving now should be shed at once."""
        return self.expected_wait(time.monotonic()) > self.max_wait

    @asynccontextmanager
    async def slot(self, arrived: float) -> AsyncIterator[None]:
        """Hold a slot for the block. Raises Overloaded when the notify, which the server had
        whole at `arrived` (time.monotonic()), waited longer than max_wait before getting one."""
        if self.busy < self.slots and not self._waiting:
            self.busy += 1
        else:
            await self._wait()  # the slot is handed over by the notify leaving it (busy unchanged)
        try:
            started = time.monotonic()
            if started - arrived > self.max_wait:
                raise Overloaded
            yield
            self.service_s += (time.monotonic() - started - self.service_s) / 20
        finally:
            self._release()

    async def _wait(self) -> None:
        entry = (time.monotonic(), asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self._release()  # handed a slot just as it was cancelled: pass it on
            else:
                self._waiting.remove(entry)
            raise

    def _release(self) -> None:
        while self._waiting:
            _, wake = self._waiting.popleft()
            if not wake.done():
                wake.set_result(None)
                return
        self.busy -= 1

    async def watch_loop(self) -> None:
        """Measure, until cancelled, how late the event loop runs: requests behind a late loop wait too."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            self.loop_lag_s = max(0.0, time.monotonic() - started - LAG_PROBE_S)
