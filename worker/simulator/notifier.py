"""The simulator's notify sender: signed notifies to an order's notifyUrl, the way IOTPay sends them.

For each order that succeeds (pay, refund, void) a notify is planned by a `NotifyPolicy`:
dropped (never sent), delayed (a random delay, which also reorders notifies), duplicated (sent
twice), and sent again while the merchant does not acknowledge with HTTP 200 and `success`
(any case), following `retry_delays`. Every decision comes from a random generator seeded with
(seed, payOrderId), so the same seed gives the same drops, duplicates and delays whatever the
threads do. `time_scale` shrinks every delay (0.01 makes a 60 s retry 0.6 s) for tests.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import httpx

from worker import logs

# an upstream implementation retries about 5 times, one minute apart and growing
DEFAULT_RETRY_DELAYS = (60.0, 120.0, 300.0, 600.0, 1800.0)
ACK_TIMEOUT_SECONDS = 10.0

log = logs.get("worker.simulator.notifier")


@dataclass(frozen=True)
class NotifyPolicy:
    """How notifies misbehave. Rates are probabilities in [0, 1]; delays are seconds."""

    seed: int = 0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    min_delay: float = 0.0
    max_delay: float = 0.0
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("drop_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.min_delay < 0 or self.max_delay < self.min_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: NotifyPolicy | None = None) -> NotifyPolicy:
        """Policy from camelCase or snake_case keys; unknown keys raise ValueError naming them."""
        names = {"seed": "seed", "dropRate": "drop_rate", "duplicateRate": "duplicate_rate", "minDelay": "min_delay",
                 "maxDelay": "max_delay", "retryDelays": "retry_delays", "timeScale": "time_scale"}
        names.update({v: v for v in list(names.values())})
        unknown = set(data) - set(names)
        if unknown:
            raise ValueError(f"unknown notify policy setting(s): {sorted(unknown)}")
        kwargs = {names[k]: (tuple(v) if names[k] == "retry_delays" else v) for k, v in data.items()}
        return replace(base or cls(), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """What will happen to one order's notify."""

    dropped: bool
    delays: tuple[float, ...]  # one first-delivery delay per copy (two copies when duplicated)


def plan(policy: NotifyPolicy, pay_order_id: str) -> Plan:
    """The reproducible fate of one order's notify under policy."""
    rng = random.Random(f"{policy.seed}:{pay_order_id}")
    dropped = rng.random() < policy.drop_rate
    copies = 2 if rng.random() < policy.duplicate_rate else 1
    delays = tuple(rng.uniform(policy.min_delay, policy.max_delay) for _ in range(copies))
    return Plan(dropped, delays)


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    pay_order_id: str = field(compare=False)
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    content_type: str = field(compare=False)
    attempt: int = field(compare=False, default=1)
    copy: int = field(compare=False, default=1)
    forced: bool = field(compare=False, default=False)


class NotifySender:
    """Sends planned notifies from one background thread (started on first use)."""

    def __init__(self, policy: NotifyPolicy | None = None, *, transport: httpx.BaseTransport | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or NotifyPolicy()
        self._transport = transport
        self._monotonic = monotonic
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._in_flight = 0
        self.log: list[dict[str, Any]] = []  # every attempt and every drop, in order
        self._http: httpx.Client | None = None

    def submit(self, pay_order_id: str, url: str | None, body: bytes, content_type: str, *, forced: bool = False,
               copies: int = 1) -> Plan | None:
        """Plan and queue one order's notify. `forced` (control API) ignores drops and delays."""
        if not url:
            return None
        if forced:
            the_plan = Plan(False, tuple(0.0 for _ in range(copies)))
        else:
            the_plan = plan(self.policy, pay_order_id)
        if the_plan.dropped:
            self._record(pay_order_id, url, attempt=0, copy=0, outcome="dropped")
            return the_plan
        now = self._monotonic()
        with self._cond:
            for i, delay in enumerate(the_plan.delays, start=1):
                heapq.heappush(self._heap, _Delivery(now + delay * self.policy.time_scale, next(self._seq),
                                                     pay_order_id, url, body, content_type, copy=i, forced=forced))
            self._ensure_thread()
            self._cond.notify()
        return the_plan

    def pending(self) -> int:
        """Deliveries queued or being sent."""
        with self._cond:
            return len(self._heap) + self._in_flight

    def deliveries(self) -> tuple[list[dict[str, Any]], int]:
        """Every attempt and drop so far (a copy of `log`) and the deliveries pending, read at one instant."""
        with self._cond:
            return list(self.log), self.pending()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued or in flight (retries included); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.01)
        return self.pending() == 0

    def close(self) -> None:
        """Stop the thread; queued deliveries are abandoned."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._http is not None:
            self._http.close()

    # ---------------------------------------------------------------- internals
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="sim-notifier", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        self._http = httpx.Client(transport=self._transport, timeout=ACK_TIMEOUT_SECONDS)
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._heap[0].due > self._monotonic()):
                    wait = None if not self._heap else max(0.0, self._heap[0].due - self._monotonic())
                    self._cond.wait(timeout=wait)
                if self._stopping:
                    return
                delivery = heapq.heappop(self._heap)
                self._in_flight += 1
            try:
                self._deliver(delivery)
            finally:
                with self._cond:
                    self._in_flight -= 1

    def _deliver(self, d: _Delivery) -> None:
        assert self._http is not None
        status: int | None = None
        try:
            resp = self._http.post(d.url, content=d.body, headers={"Content-Type": d.content_type})
            status = resp.status_code
            acked = status == 200 and resp.text.strip().lower() == "success"
        except httpx.HTTPError as exc:
            acked = False
            log.info("simulator.notify_error", pay_order_id=d.pay_order_id, error=type(exc).__name__)
        self._record(d.pay_order_id, d.url, attempt=d.attempt, copy=d.copy, outcome="acked" if acked else "not_acked",
                     http_status=status)
        if acked or d.attempt > len(self.policy.retry_delays):
            return
        delay = self.policy.retry_delays[d.attempt - 1] * self.policy.time_scale
        with self._cond:
            heapq.heappush(self._heap, replace(d, due=self._monotonic() + delay, seq=next(self._seq), attempt=d.attempt + 1))
            self._cond.notify()

    def _record(self, pay_order_id: str, url: str, **info: Any) -> None:
        entry = {"payOrderId": pay_order_id, "url": url, "at": datetime.now(timezone.utc).isoformat(), **info}
        with self._cond:
            self.log.append(entry)
