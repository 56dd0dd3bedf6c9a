"""The fee schedule: what IOTPay charges a merchant, per channel, as a percent of the gross plus fixed cents.

Integers only. A percent is read from its decimal text ("2.9", at most 4 decimals) into millionths
of the amount (2.9 % = 29,000 per million), never through a float.

**The rounding rule.** For a line whose gross is positive (a pay), the expected fee is the gross
times the percent, rounded half up to the cent (0.5 cent and above rounds up), plus the fixed
cents: 2.9 % + 30 on 10.00 is 29.0 + 30 = 59 cents, on 10.05 it is 29.145 -> 29 + 30 = 59, on
10.35 it is 30.015 -> 30 + 30 = 60. A line of zero or negative gross (a refund or void) has an
expected fee of 0: the schedule charges pays, and a processor that returns a fee on a refund
reports it, and that report stands.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.errors import ConfigError

PER_MILLION = 1_000_000
DEFAULT_CHANNEL = "default"  # the rate of every channel the schedule does not name
MAX_PERCENT_PPM = PER_MILLION  # 100 %
_PERCENT = re.compile(r"^(\d{1,3})(?:\.(\d{1,4}))?$")


@dataclass(frozen=True)
class FeeRate:
    """A percent of the gross (in millionths of the amount) plus fixed cents."""

    percent_ppm: int
    fixed_cents: int

    @property
    def percent(self) -> str:
        """The percent as decimal text, as configured: 29000 -> '2.9'."""
        whole, frac = divmod(self.percent_ppm, 10_000)
        return f"{whole}.{frac:04d}".rstrip("0").rstrip(".")

    def fee(self, gross_cents: int) -> int:
        """The expected fee of a line of this gross, by the rounding rule of this module."""
        if gross_cents <= 0:
            return 0
        return (gross_cents * self.percent_ppm * 2 + PER_MILLION) // (2 * PER_MILLION) + self.fixed_cents


@dataclass(frozen=True)
class FeeCheck:
    """A reported fee against the schedule: `difference` = reported - expected (positive: charged more)."""

    expected: int
    reported: int
    tolerance: int = 0

    @property
    def difference(self) -> int:
        return self.reported - self.expected

    @property
    def ok(self) -> bool:
        return abs(self.difference) <= self.tolerance


@dataclass(frozen=True)
class FeeSchedule:
    """One merchant's rates by channel (`default` for the channels it does not name); empty: no schedule."""

    rates: Mapping[str, FeeRate] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rates)

    def __hash__(self) -> int:  # a Merchant (frozen) holding it stays hashable
        return hash(tuple(sorted(self.rates.items())))

    def rate_for(self, channel: str | None) -> FeeRate | None:
        """The channel's rate, else the default rate, else None (no schedule for it)."""
        if channel and channel in self.rates:
            return self.rates[channel]
        return self.rates.get(DEFAULT_CHANNEL)

    def expected_fee(self, gross_cents: int, channel: str | None) -> int | None:
        """The fee the schedule expects on a line of this gross and channel; None without a rate for it."""
        rate = self.rate_for(channel)
        return None if rate is None else rate.fee(gross_cents)

    def check(self, gross_cents: int, channel: str | None, reported_cents: int, *, tolerance: int = 0) -> FeeCheck | None:
        """A reported fee against the schedule (None without a rate for the channel). Raises nothing."""
        expected = self.expected_fee(gross_cents, channel)
        return None if expected is None else FeeCheck(expected, reported_cents, tolerance)


def parse_percent(value: Any) -> int:
    """'2.9' (or an integer 3) -> millionths of the amount. Raises ValueError saying what is wrong (a float
    is refused: write it as text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"must be a decimal as text, like \"2.9\" (got {value!r}, a {type(value).__name__})")
    m = _PERCENT.match(str(value).strip())
    if not m:
        raise ValueError(f"must be a percent with at most 4 decimals, like \"2.9\" (got {value!r})")
    ppm = int(m.group(1)) * 10_000 + int((m.group(2) or "").ljust(4, "0"))
    if ppm > MAX_PERCENT_PPM:
        raise ValueError(f"must be at most 100 (got {value!r})")
    return ppm


def parse_schedule(data: Any, variable: str, where: str) -> FeeSchedule:
    """A merchant's `fees` setting -> FeeSchedule. Raises ConfigError naming the variable and the field.

    `{"default": {"percent": "2.9", "fixedCents": 30}, "PF_CC": {"percent": "2.5"}}`
    """
    if not isinstance(data, dict):
        raise ConfigError(variable, f"{where}: 'fees' must be an object mapping a channel (or 'default') "
                                    "to {percent, fixedCents}")
    rates: dict[str, FeeRate] = {}
    for channel, entry in data.items():
        name = f"{where}: fees.{channel}"
        if not isinstance(channel, str) or not channel.strip():
            raise ConfigError(variable, f"{where}: fees: a channel name is empty")
        if not isinstance(entry, dict):
            raise ConfigError(variable, f"{name}: must be an object with 'percent' and/or 'fixedCents'")
        unknown = set(entry) - {"percent", "fixedCents"}
        if unknown:
            raise ConfigError(variable, f"{name}: unknown setting(s) {sorted(unknown)}")
        if not entry:
            raise ConfigError(variable, f"{name}: give 'percent' and/or 'fixedCents'")
        try:
            ppm = parse_percent(entry.get("percent", "0"))
        except ValueError as exc:
            raise ConfigError(variable, f"{name}.percent: {exc}") from None
        fixed = entry.get("fixedCents", 0)
        if isinstance(fixed, bool) or not isinstance(fixed, int) or fixed < 0:
            raise ConfigError(variable, f"{name}.fixedCents: must be a whole number of cents >= 0 (got {fixed!r})")
        rates[channel] = FeeRate(ppm, fixed)
    return FeeSchedule(rates)
