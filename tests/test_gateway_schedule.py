"""The query schedule by order age, as a table; the give-up age; the per-merchant rate limit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from worker.gateway.ratelimit import RateLimiter
from worker.gateway.schedule import Schedule

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
S, M, H = 1, 60, 3600


@pytest.mark.parametrize("channel, age, every", [
    # POS: IOTPay's POS guide, every 2 s for the first minute
    ("CC_PAX", 0, 2 * S), ("CC_PAX", 59, 2 * S),
    ("CC_PAX", 60, 1 * M), ("CC_PAX", 9 * M + 59, 1 * M),
    ("CC_PAX", 10 * M, 5 * M), ("CC_PAX", 59 * M, 5 * M),
    ("CC_PAX", 1 * H, 30 * M), ("CC_PAX", 5 * H + 59 * M, 30 * M),
    ("CC_PAX", 6 * H, 2 * H), ("CC_PAX", 40 * H, 2 * H),
    # everything else: the notify usually comes; start at one minute
    ("PF_CC", 0, 1 * M), ("WX_APP", 9 * M, 1 * M), (None, 10 * M, 5 * M),
    ("UPI_EX", 1 * H, 30 * M), ("ALIPAY_MOBILE", 6 * H, 2 * H), ("PF_CC", 47 * H, 2 * H),
])
def test_interval_by_age(channel, age, every):
    assert Schedule().interval(timedelta(seconds=age), channel) == timedelta(seconds=every)


@pytest.mark.parametrize("channel, created_plus, now_plus, expected_plus", [
    ("CC_PAX", 0, 0, 2),            # first poll
    ("CC_PAX", 0, 58, 60),
    ("CC_PAX", 0, 60, 120),
    ("PF_CC", 0, 60, 120),
    ("PF_CC", 0, 47 * H + 30 * M, 48 * H),  # never jumps past the give-up age
    ("PF_CC", 0, 48 * H, None),           # at the give-up age: give up
    ("CC_PAX", 0, 50 * H, None),
])
def test_next_query_at(channel, created_plus, now_plus, expected_plus):
    created = T0 + timedelta(seconds=created_plus)
    got = Schedule().next_query_at(created, T0 + timedelta(seconds=now_plus), channel)
    assert got == (None if expected_plus is None else T0 + timedelta(seconds=expected_plus))


@pytest.mark.parametrize("channel, give_up_hours, queries", [
    ("CC_PAX", 48, 30 + 9 + 10 + 10 + 21),  # 2 s x30, 1 min x9, 5 min x10, 30 min x10, 2 h x21 (6 h..48 h)
    ("PF_CC", 48, 10 + 10 + 10 + 21),
    ("CC_PAX", 2, 30 + 9 + 10 + 2),
    ("PF_CC", 1, 10 + 10),
])
def test_whole_schedule_is_finite_and_ends_at_the_give_up_age(channel, give_up_hours, queries):
    schedule = Schedule(give_up_after=timedelta(hours=give_up_hours))
    times, t = [], schedule.first_query_at(T0, channel)
    while t is not None:
        times.append(t)
        t = schedule.next_query_at(T0, t, channel)
    assert len(times) == queries
    assert times[-1] == T0 + timedelta(hours=give_up_hours)
    assert times == sorted(set(times))
    assert schedule.should_give_up(T0, times[-1]) and not schedule.should_give_up(T0, times[-2])


def test_a_late_sweep_does_not_query_in_a_burst():
    # the clock was down for an hour: the next query is one interval after now, not a backlog
    assert Schedule().next_query_at(T0, T0 + timedelta(hours=3), "CC_PAX") == T0 + timedelta(hours=3, minutes=30)


class FakeTime:
    def __init__(self):
        self.t = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def test_rate_limit_per_merchant():
    ft = FakeTime()
    limiter = RateLimiter(5.0, burst=5, clock=ft.clock, sleep=ft.sleep)
    for _ in range(5):
        assert limiter.acquire("M1") == 0.0  # the burst
    assert limiter.acquire("M2") == 0.0  # another merchant has its own bucket
    waits = [limiter.acquire("M1") for _ in range(10)]
    assert all(w == pytest.approx(0.2) for w in waits)
    assert ft.t == pytest.approx(2.0)  # 10 more calls at 5/s


def test_rate_limiter_refills_while_idle():
    ft = FakeTime()
    limiter = RateLimiter(2.0, burst=2, clock=ft.clock, sleep=ft.sleep)
    limiter.acquire("M1"), limiter.acquire("M1")
    ft.t += 10
    assert limiter.acquire("M1") == 0.0 and limiter.acquire("M1") == 0.0
    assert limiter.acquire("M1") == pytest.approx(0.5)


def test_rate_limiter_rejects_nonsense():
    with pytest.raises(ValueError):
        RateLimiter(0)
