"""Business-day bounds in the settlement zone, including the 23- and 25-hour DST days."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from worker.errors import ValidationError
from worker.reports.businessday import business_date, business_day, is_closed, last_closed_day, parse_date

TORONTO = ZoneInfo("America/Toronto")
UTC = timezone.utc


def test_ordinary_day_is_24_hours_from_local_midnight() -> None:
    d = business_day(date(2026, 11, 21), TORONTO)
    assert d.start == datetime(2026, 11, 21, 5, 0, tzinfo=UTC)
    assert d.end == datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
    assert d.hours == 24


def test_spring_forward_day_is_23_hours() -> None:
    d = business_day(date(2026, 3, 8), TORONTO)
    assert d.start == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # EST midnight
    assert d.end == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)  # EDT midnight
    assert d.hours == 23


def test_fall_back_day_is_25_hours() -> None:
    d = business_day(date(2026, 11, 1), TORONTO)
    assert d.start == datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
    assert d.end == datetime(2026, 11, 2, 5, 0, tzinfo=UTC)
    assert d.hours == 25
    # both 01:30s of the repeated hour belong to the same day
    assert d.contains(datetime(2026, 11, 1, 5, 30, tzinfo=UTC))
    assert d.contains(datetime(2026, 11, 1, 6, 30, tzinfo=UTC))


def test_consecutive_days_tile_the_timeline() -> None:
    day = date(2026, 2, 25)
    for _ in range(300):
        a, b = business_day(day, TORONTO), business_day(day + timedelta(days=1), TORONTO)
        assert a.end == b.start
        day += timedelta(days=1)


def test_last_second_and_first_second_of_a_day() -> None:
    last = datetime(2026, 11, 21, 23, 59, 59, tzinfo=TORONTO)
    first = datetime(2026, 11, 22, 0, 0, 0, tzinfo=TORONTO)
    assert business_date(last, TORONTO) == date(2026, 11, 21)
    assert business_date(first, TORONTO) == date(2026, 11, 22)
    d = business_day(date(2026, 11, 21), TORONTO)
    assert d.contains(last) and not d.contains(first)


def test_midnight_in_a_dst_gap_starts_the_day_at_the_gap() -> None:
    # Santiago skips 00:00-01:00 local when DST starts (2026-09-06).
    tz = ZoneInfo("America/Santiago")
    d = business_day(date(2026, 9, 6), tz)
    assert d.hours == 23
    assert business_date(d.start, tz) == date(2026, 9, 6)
    assert business_date(d.start - timedelta(seconds=1), tz) == date(2026, 9, 5)


def test_closed_and_last_closed() -> None:
    now = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)  # 00:00 Toronto
    assert last_closed_day(now, TORONTO) == date(2026, 11, 21)
    assert is_closed(date(2026, 11, 21), TORONTO, now)
    assert not is_closed(date(2026, 11, 21), TORONTO, now - timedelta(seconds=1))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        business_date(datetime(2026, 1, 1), TORONTO)


def test_parse_date_names_the_field() -> None:
    assert parse_date("2026-11-21") == date(2026, 11, 21)
    with pytest.raises(ValidationError, match="--date"):
        parse_date("21/11/2026")


@pytest.mark.parametrize("day", [date(2026, 3, 8), date(2026, 11, 1), date(2026, 11, 21)])
def test_postgresql_agrees_on_the_business_date(conn, day: date) -> None:
    d = business_day(day, TORONTO)
    probes = [d.start, d.start + timedelta(hours=12), d.end - timedelta(seconds=1), d.end, d.start - timedelta(seconds=1)]
    for instant in probes:
        (pg,) = conn.execute("SELECT (%s::timestamptz AT TIME ZONE %s)::date", (instant, d.tz_name)).fetchone()
        assert pg == business_date(instant, TORONTO), instant
