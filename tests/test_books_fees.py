"""The fee schedule: configured per merchant and channel, integer cents, half-up rounding; checks a reported fee;
an invalid schedule stops the program naming the variable and the field (exit 2)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import cli
from tests.books_helpers import BOOKS_MERCHANTS
from tests.factories import KEY, MCH, MCH2
from worker.errors import ConfigError
from worker.fees import FeeRate, FeeSchedule, parse_percent
from worker.merchants import load_merchants


@pytest.mark.parametrize(("gross", "channel", "expected"), [
    (1000, "UPI_EX", 59),   # 2.9 % of 10.00 = 29.0, + 30
    (1005, "UPI_EX", 59),   # 29.145 rounds down
    (1035, "UPI_EX", 60),   # 30.015 rounds up
    (1724, "UPI_EX", 80),   # 49.996 rounds up
    (1, "UPI_EX", 30),      # 0.029 -> 0, + 30
    (1000, "PF_CC", 25),    # the channel's own rate: 2.5 %, no fixed cents
    (1020, "PF_CC", 26),    # 25.5: half up
    (1019, "PF_CC", 25),    # 25.475
    (0, "UPI_EX", 0),       # nothing charged on nothing
    (-5000, "PF_CC", 0),    # a refund line: the schedule charges pays only
    (10**15, None, 29 * 10**12 + 30),  # no float on the way, whatever the size
])
def test_the_expected_fee(gross, channel, expected):
    assert BOOKS_MERCHANTS[MCH].fees.expected_fee(gross, channel) == expected


def test_a_merchant_without_a_schedule_expects_nothing():
    assert BOOKS_MERCHANTS[MCH2].fees.expected_fee(1000, "PF_CC") is None
    assert not BOOKS_MERCHANTS[MCH2].fees
    assert FeeSchedule({"PF_CC": FeeRate(25000, 0)}).expected_fee(1000, "WX_APP") is None  # no default rate


def test_a_reported_fee_is_checked_against_the_schedule():
    fees = BOOKS_MERCHANTS[MCH].fees
    ok = fees.check(1000, "UPI_EX", 59)
    assert ok.ok and ok.difference == 0 and ok.expected == 59
    over = fees.check(1000, "UPI_EX", 61)
    assert not over.ok and over.difference == 2
    under = fees.check(1000, "UPI_EX", 58, tolerance=1)
    assert under.ok and under.difference == -1
    assert BOOKS_MERCHANTS[MCH2].fees.check(1000, "PF_CC", 30) is None


@given(gross=st.integers(min_value=1, max_value=10**12), ppm=st.integers(min_value=0, max_value=10**6),
       fixed=st.integers(min_value=0, max_value=10**4))
def test_the_rounding_is_half_up_exactly(gross, ppm, fixed):
    fee = FeeRate(ppm, fixed).fee(gross)
    exact_twice = 2 * gross * ppm  # twice the exact fee, in millionths of a cent
    assert 2 * 10**6 * (fee - fixed) - 10**6 <= exact_twice < 2 * 10**6 * (fee - fixed) + 10**6


@pytest.mark.parametrize(("text", "ppm", "shown"), [
    ("2.9", 29000, "2.9"), ("0", 0, "0"), ("100", 10**6, "100"), (3, 30000, "3"), ("0.0001", 1, "0.0001"),
    ("12.3456", 123456, "12.3456"), (" 2.90 ", 29000, "2.9")])
def test_percents_are_read_without_floats(text, ppm, shown):
    assert parse_percent(text) == ppm
    assert FeeRate(ppm, 0).percent == shown


@pytest.mark.parametrize(("fees", "message"), [
    ({"default": {"percent": 2.9}}, "fees.default.percent: must be a decimal as text"),
    ({"default": {"percent": "2.91234"}}, "fees.default.percent: must be a percent with at most 4 decimals"),
    ({"default": {"percent": "101"}}, "fees.default.percent: must be at most 100"),
    ({"default": {"percent": "-1"}}, "fees.default.percent"),
    ({"PF_CC": {"percent": "2.5", "fixedCents": -1}}, "fees.PF_CC.fixedCents: must be a whole number of cents"),
    ({"PF_CC": {"percent": "2.5", "fixedCents": 0.5}}, "fees.PF_CC.fixedCents"),
    ({"PF_CC": {"percent": "2.5", "fixed": 30}}, "fees.PF_CC: unknown setting(s) ['fixed']"),
    ({"PF_CC": {}}, "fees.PF_CC: give 'percent' and/or 'fixedCents'"),
    ({"PF_CC": "2.5"}, "fees.PF_CC: must be an object"),
    (["2.5"], "'fees' must be an object"),
])
def test_an_invalid_schedule_names_the_variable_and_the_field(fees, message):
    with pytest.raises(ConfigError) as exc:
        load_merchants(json.dumps({MCH: {"keys": [KEY], "fees": fees}}), None)
    assert str(exc.value).startswith(f"IOTPAY_MERCHANTS: merchant '{MCH}': ")
    assert message in str(exc.value)


def test_the_schedule_in_the_toml_file_and_the_json_merge(tmp_path):
    path = tmp_path / "merchants.toml"
    path.write_text(f'[{MCH}]\nkeys = ["{KEY}"]\n[{MCH}.fees.default]\npercent = "2.9"\nfixedCents = 30\n'
                    f'[{MCH}.fees.PF_CC]\npercent = "2.5"\n', encoding="utf-8")
    m = load_merchants(json.dumps({MCH: {"keys": [KEY], "fees": {"PF_CC": {"percent": "2.0"}}}}), str(path))
    fees = m[MCH].fees
    assert fees.rate_for("PF_CC") == FeeRate(20000, 0)  # JSON's rate of a channel first
    assert fees.rate_for("UPI_EX") == FeeRate(29000, 30)
    hash(m[MCH])  # a merchant stays hashable
    path.write_text(f'[{MCH}]\nkeys = ["{KEY}"]\n[{MCH}.fees.default]\npercent = 2.9\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^IOTPAY_MERCHANTS_FILE: merchant '10000701': fees.default.percent"):
        load_merchants(None, str(path))


def test_an_invalid_schedule_stops_any_command_with_exit_2(db_url):
    proc = cli.run("check", env={"DATABASE_URL": db_url,
                                 "IOTPAY_MERCHANTS": json.dumps({MCH: {"keys": [KEY], "fees": {"x": {"percent": 2.9}}}})})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"iotledger: configuration error: IOTPAY_MERCHANTS: merchant '{MCH}': fees.x.percent: must be a decimal as "
        "text, like \"2.9\" (got 2.9, a float)"]
