"""Merchant keys and full card numbers never reach a log line."""

from __future__ import annotations

import json
import logging

import structlog

from worker import logs
from worker.logs import REDACTED, Redactor

KEY = "iK2ZWeqhFWCEPyYngFb51yBMWXaSCrUZ"
PAN = "4111111111111111"  # passes Luhn


def test_redactor_scrubs_keys_and_pans_anywhere_in_the_event():
    r = Redactor([KEY])
    event = r(None, "info", {
        "event": f"signing with {KEY}",
        "key": "whatever",
        "body": {"cardNum": PAN, "nested": [f"x{KEY}y"], "merchant_key": "m"},
        "raw": f"cardNum={PAN}&amount=5".encode(),
        "payOrderId": "PC2025578212590288255586",
        "amount": 1999,
    })
    text = json.dumps(event)
    assert KEY not in text and PAN not in text
    assert event["key"] == REDACTED and event["body"]["merchant_key"] == REDACTED
    assert event["body"]["cardNum"] == "411111******1111"
    assert event["payOrderId"] == "PC2025578212590288255586"  # ids are not card numbers
    assert event["amount"] == 1999


def test_configured_logging_writes_redacted_json_lines(capsys):
    logs.configure([KEY], json=True)
    try:
        structlog.get_logger("t").info("notify.received", body={"sign": "X", "cardNum": PAN}, note=f"k={KEY}")
        logging.getLogger("thirdparty").warning("stdlib says %s", KEY)
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in err.strip().splitlines()]
    assert len(lines) == 2
    assert lines[0]["event"] == "notify.received" and lines[0]["level"] == "info"
    assert KEY not in err and PAN not in err
    assert lines[1]["event"] == f"stdlib says {REDACTED}"
