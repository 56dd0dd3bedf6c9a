"""Signed IOTPay notifies for tests, shaped like the gateway's (see sign-vectors.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.iotpay.signature import signed
from worker.merchants import Merchant, Merchants

# a copy of ../shared/iotpay/sign-vectors.jsonl (test_signature checks it still equals the shared one)
VECTORS = Path(__file__).resolve().parent / "data" / "sign-vectors.jsonl"
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "iotpay" / "sign-vectors.jsonl"
MCH = "10000701"
KEY = "test-key-0123456789abcdefghijklmn"
OLD_KEY = "old-key-zyxwvutsrqponmlkjihgfedcba"
MCH2 = "10000702"
KEY2 = "second-merchant-key-000000000000"
# the merchants every test uses (MCH signs with KEY and still accepts its rotated-out OLD_KEY)
MERCHANTS = Merchants({MCH: Merchant(MCH, (KEY, OLD_KEY), "jack123"), MCH2: Merchant(MCH2, (KEY2,), "jill456")})


def merchants_json(merchants: Merchants) -> str:
    """IOTPAY_MERCHANTS content configuring these merchants."""
    return json.dumps({m.mch_id: {"keys": list(m.keys), "loginName": m.login_name} for m in merchants.values()})


MERCHANTS_JSON = merchants_json(MERCHANTS)


def vectors() -> list[dict[str, Any]]:
    """Every line of ../shared/iotpay/sign-vectors.jsonl."""
    return [json.loads(line) for line in VECTORS.read_text(encoding="utf-8").splitlines() if line.strip()]


def vector_merchants() -> dict[str, dict[str, Any]]:
    """IOTPAY_MERCHANTS content configuring every merchant of the shared vectors."""
    out: dict[str, dict[str, Any]] = {}
    for v in vectors():
        keys = out.setdefault(v["payload"]["mchId"], {"keys": []})["keys"]
        if v["key"] not in keys:
            keys.append(v["key"])
    return out


def v3_pay(order_id: str, amount: int, *, mch: str = MCH, key: str = KEY, status: int = 2, currency: str = "CAD",
           refundable: int | None = None, mch_order_no: str | None = None, when: str = "2025-06-13 20:04:12",
           **extra: Any) -> dict[str, Any]:
    """A signed V3 pay notify."""
    return signed({
        "payOrderId": order_id, "mchId": mch, "mchOrderNo": mch_order_no or f"M{order_id}", "originalOrderId": "",
        "amount": amount, "currency": currency, "payType": "pay",
        "refundable": amount if refundable is None else refundable, "status": status,
        "invoiceNum": "410194689376", "paySuccTime": when, "cardNum": "432567******2266", "cardType": "V",
        "expiryDate": "1129", "authNum": "A1B2C3", "transNum": "127052575142", "channel": "PF_CC", **extra,
    }, key)


def v3_refund(order_id: str, original: str, amount: int, *, mch: str = MCH, key: str = KEY, status: int = 2,
              currency: str = "CAD", pay_type: str = "refund", when: str = "2025-06-14 10:00:00",
              **extra: Any) -> dict[str, Any]:
    """A signed V3 refund (or void) notify."""
    return signed({
        "payOrderId": order_id, "mchId": mch, "mchOrderNo": f"R{order_id}", "originalOrderId": original,
        "amount": amount, "currency": currency, "payType": pay_type, "refundable": 0, "status": status,
        "invoiceNum": "410194689377", "paySuccTime": when, "cardNum": "432567******2266", "cardType": "V",
        "expiryDate": "1129", "authNum": "A1B2C3", "transNum": "127052575143", "channel": "PF_CC", **extra,
    }, key)


def v1_pay(order_id: str, amount: int, *, mch: str = MCH, key: str = KEY, status: int = 2, currency: str = "USD",
           when_ms: int = 1706803830869) -> dict[str, Any]:
    """A signed v1 notify (all values strings)."""
    return signed({
        "payOrderId": order_id, "mchId": mch, "mchOrderNo": f"M{order_id}", "channelId": "WX_APP",
        "amount": str(amount), "currency": currency, "status": str(status), "clientIp": "203.0.113.7",
        "device": "WEB", "subject": "Café crème", "channelOrderNo": "882278664424901", "param1": "",
        "param2": "", "paySuccTime": str(when_ms), "backType": "2",
    }, key)
