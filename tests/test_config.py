"""Configuration: read once into a frozen object; a bad value names its variable."""

from __future__ import annotations

import dataclasses
import json

import pytest

from worker.config import DEFAULT_MAX_BODY_BYTES, Settings
from worker.errors import ConfigError, UnknownMerchantError


def test_defaults_are_documented_constants_and_settings_are_frozen():
    s = Settings.from_env({})
    assert s.database_url is None and s.redis_url is None
    assert s.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 65536
    assert str(s.gateway_tz) == "America/Vancouver" and str(s.settlement_tz) == "America/Toronto"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.web_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"BROKER_URL": "kafka://mq:9092"}, "BROKER_URL"),
        ({"IOTPAY_MERCHANTS": "{nope"}, "IOTPAY_MERCHANTS"),
        ({"IOTPAY_MERCHANTS": '{"1": {"keys": []}}'}, "IOTPAY_MERCHANTS"),
        ({"IOTPAY_MERCHANTS": '{"1": {"keys": ["k"], "colour": 1}}'}, "IOTPAY_MERCHANTS"),
        ({"IOTPAY_MERCHANTS_FILE": "/nonexistent/merchants.toml"}, "IOTPAY_MERCHANTS_FILE"),
        ({"IOTPAY_GATEWAY_TZ": "Mars/Olympus"}, "IOTPAY_GATEWAY_TZ"),
        ({"IOTLEDGER_SETTLEMENT_TZ": "nowhere"}, "IOTLEDGER_SETTLEMENT_TZ"),
        ({"IOTLEDGER_MAX_BODY_BYTES": "big"}, "IOTLEDGER_MAX_BODY_BYTES"),
        ({"IOTLEDGER_WEB_WORKERS": "0"}, "IOTLEDGER_WEB_WORKERS"),
        ({"IOTPAY_V3_BASE_URL": "ftp://x"}, "IOTPAY_V3_BASE_URL"),
        ({"IOTLEDGER_BATCH_SIZE": "0"}, "IOTLEDGER_BATCH_SIZE"),
        ({"IOTLEDGER_BATCH_SIZE": "1001"}, "IOTLEDGER_BATCH_SIZE"),
        ({"IOTLEDGER_BATCH_SIZE": "many"}, "IOTLEDGER_BATCH_SIZE"),
    ],
)
def test_an_invalid_value_names_the_variable(env, variable):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    assert exc.value.variable == variable
    assert str(exc.value).startswith(variable + ":")


def test_merchants_from_json_and_toml_merge_keys(tmp_path):
    toml = tmp_path / "m.toml"
    toml.write_text('[10000701]\nkeys = ["k3"]\nloginName = "jack"\n\n["10000999"]\nkeys = ["z"]\n')
    s = Settings.from_env({
        "IOTPAY_MERCHANTS": json.dumps({"10000701": {"keys": ["k1", "k2"]}}),
        "IOTPAY_MERCHANTS_FILE": str(toml),
    })
    m = s.merchants.require("10000701")
    assert m.keys == ("k1", "k2", "k3") and m.signing_key == "k1" and m.login_name == "jack"
    assert s.merchants.require("10000999").keys == ("z",)
    with pytest.raises(UnknownMerchantError, match="mchId"):
        s.merchants.require("42")


def test_keys_never_show_in_repr():
    s = Settings.from_env({"IOTPAY_MERCHANTS": json.dumps({"1": {"keys": ["supersecretkey"]}})})
    assert "supersecretkey" not in repr(s)
    assert "supersecretkey" not in repr(s.merchants.require("1"))


def test_cli_reports_a_bad_variable_with_exit_2(monkeypatch, capsys):
    from worker.cli import main
    from worker.runtime import app_settings
    from worker.config import settings

    monkeypatch.setenv("IOTPAY_MERCHANTS", "{broken")
    settings.cache_clear()
    app_settings.cache_clear()
    try:
        assert main(["sign", "--mch-id", "1"]) == 2
    finally:
        settings.cache_clear()
        app_settings.cache_clear()
    assert "IOTPAY_MERCHANTS" in capsys.readouterr().err
