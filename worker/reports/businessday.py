"""Business days in the settlement time zone, as half-open UTC windows [start, end).

A business day runs from local midnight to the next local midnight. Across a DST change that
is 23 or 25 hours, never a fixed 24: bounds are computed from the two local midnights, not by
adding a day to the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from worker.errors import ValidationError


@dataclass(frozen=True)
class BusinessDay:
    """One business day: its local date, its zone and its UTC bounds (end exclusive)."""

    day: date
    tz: ZoneInfo
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        """Length in hours: 24, or 23 / 25 on a DST change."""
        return (self.end - self.start).total_seconds() / 3600

    @property
    def tz_name(self) -> str:
        """The IANA name of the zone (what PostgreSQL's AT TIME ZONE takes)."""
        return self.tz.key

    def contains(self, instant: datetime) -> bool:
        """True when an aware instant falls inside this day. Raises ValueError for a naive one."""
        if instant.tzinfo is None:
            raise ValueError("naive datetime: business days need timezone-aware instants")
        return self.start <= instant < self.end


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # fold=0: where midnight itself is skipped (a DST gap at 00:00), this lands on the gap's
    # first instant, which is where the day really starts.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)


def business_day(day: date, tz: ZoneInfo) -> BusinessDay:
    """The UTC window of `day` in zone `tz`."""
    return BusinessDay(day, tz, _local_midnight(day, tz), _local_midnight(day + timedelta(days=1), tz))


def business_date(instant: datetime, tz: ZoneInfo) -> date:
    """The business date an aware instant belongs to. Raises ValueError for a naive datetime."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: business days need timezone-aware instants")
    return instant.astimezone(tz).date()


def last_closed_day(now: datetime, tz: ZoneInfo) -> date:
    """The most recent business day that has fully ended at `now`."""
    return business_date(now, tz) - timedelta(days=1)


def is_closed(day: date, tz: ZoneInfo, now: datetime) -> bool:
    """True when the business day has ended at `now` (its files can be final)."""
    return now >= business_day(day, tz).end


def parse_date(text: str, field: str = "--date") -> date:
    """`YYYY-MM-DD` -> date. Raises ValidationError naming the field."""
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValidationError(field, f"expected a date YYYY-MM-DD, got {text!r}") from None
