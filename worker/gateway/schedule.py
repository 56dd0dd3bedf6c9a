"""When to ask the gateway again about an order that is not final, by the order's age.

The schedule is a table. Each row says: while the order is younger than `until`, query it
every `every`. POS terminals (`CC_PAX`) follow IOTPay's POS guide ("every 2 seconds, last one
minute at least"); everything else starts at one minute, since its notify usually arrives.
The last query happens at the give-up age exactly; an order still not final then is given up
and never queried again, so no order is swept forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.config import DEFAULT_SWEEP_GIVE_UP_SECONDS
from worker.iotpay.channels import POS_CHANNELS


@dataclass(frozen=True)
class Step:
    """Query every `every` while the order is younger than `until`."""

    until: timedelta
    every: timedelta


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# age < until  ->  next query `every` later.  The last row's `until` is open-ended (give-up age rules).
POS_STEPS: tuple[Step, ...] = (
    Step(_s(60), _s(2)),
    Step(_s(10 * 60), _s(60)),
    Step(_s(60 * 60), _s(5 * 60)),
    Step(_s(6 * 3600), _s(30 * 60)),
    Step(timedelta.max, _s(2 * 3600)),
)
DEFAULT_STEPS: tuple[Step, ...] = (
    Step(_s(10 * 60), _s(60)),
    Step(_s(60 * 60), _s(5 * 60)),
    Step(_s(6 * 3600), _s(30 * 60)),
    Step(timedelta.max, _s(2 * 3600)),
)
# a refund parked without its original: the original is usually a notify that got lost
PARKED_STEPS = DEFAULT_STEPS


@dataclass(frozen=True)
class Schedule:
    """The query schedule: a table of steps per kind of order, and the give-up age."""

    give_up_after: timedelta = _s(DEFAULT_SWEEP_GIVE_UP_SECONDS)
    pos_steps: tuple[Step, ...] = POS_STEPS
    default_steps: tuple[Step, ...] = DEFAULT_STEPS

    def steps(self, channel: str | None) -> tuple[Step, ...]:
        """The table that applies to an order of this channel."""
        return self.pos_steps if channel in POS_CHANNELS else self.default_steps

    def interval(self, age: timedelta, channel: str | None) -> timedelta:
        """How long to wait before the next query of an order this old."""
        for step in self.steps(channel):
            if age < step.until:
                return step.every
        return self.steps(channel)[-1].every

    def first_query_at(self, created_at: datetime, channel: str | None) -> datetime:
        """When a newly expected order is first queried."""
        return created_at + self.interval(timedelta(0), channel)

    def next_query_at(self, created_at: datetime, now: datetime, channel: str | None) -> datetime | None:
        """When to query again after a not-final answer at `now`; None means give up now.

        The give-up age itself is always queried once: a step never jumps past it.
        """
        give_up_at = created_at + self.give_up_after
        if now >= give_up_at:
            return None
        age = max(now - created_at, timedelta(0))
        return min(now + self.interval(age, channel), give_up_at)

    def should_give_up(self, created_at: datetime, now: datetime) -> bool:
        """True once the order is at least give_up_after old."""
        return now >= created_at + self.give_up_after
