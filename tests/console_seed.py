"""A small business day for the console's tests, put in through the real paths.

Notifies go through the ingress's WSGI app (in process) into the inbox and are posted by the
worker's processing code; more pays and a refund are posted through the ledger's own code; the
day is reconciled and exported (closed) as the clock would, and `files verify` is recorded.
Users are added with the console's own code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg

from tests.factories import KEY, MCH, MCH2, MERCHANTS_JSON, OLD_KEY, v3_pay
from tests.test_reconcile_seed import TORONTO, at, expect, post
from worker.broker import sender_broker
from worker.config import Settings
from worker.console import users
from worker.pipeline import process
from worker.pipeline.ingress import Ingress, make_pool
from worker.reports import views
from worker.reports.export import export_day
from worker.reports.reconcile import reconcile
from worker.reports.verify import verify_files

PAN = "4325671234562266"  # a full card number (Luhn-valid): the ingress masks it before storing
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Seeded:
    day: date  # the closed business day
    out_dir: Path
    notified: str  # a pay that came as a notify with a full card number, signed with the current key
    old_key: str  # a pay notified signed with the merchant's older key
    refund: str  # a refund of `notified`


def settings_for(db_url: str, redis_url: str, queue: str, data_dir: Path, **env: str) -> Settings:
    """The settings a console test runs with (Toronto business days, the test merchants)."""
    return Settings.from_env({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON,
                              "IOTLEDGER_QUEUE": queue, "IOTLEDGER_DATA_DIR": str(data_dir),
                              "IOTLEDGER_SETTLEMENT_TZ": "America/Toronto", **env})


def _notify(settings: Settings, db_url: str, redis_url: str, params: dict) -> int:
    pool = make_pool(db_url, 2)
    try:
        app = Ingress(settings, pool, sender_broker(redis_url))
        with httpx.Client(transport=httpx.WSGITransport(app=app, remote_addr="198.51.100.7"),
                          base_url="http://ingress") as client:
            r = client.post("/iotpay/notify", content=json.dumps(params).encode(),
                            headers={"Content-Type": "application/json;charset=UTF-8"})
            assert r.status_code == 200, r.text
    finally:
        pool.close()
    with psycopg.connect(db_url) as conn:
        (inbox_id,) = conn.execute("SELECT max(id) FROM inbox").fetchone()
        process.handle(conn, inbox_id, settings)
    return inbox_id


def seed(db_url: str, redis_url: str, queue: str, tmp: Path, *, now: datetime | None = None) -> Seeded:
    """Yesterday (in Toronto) played and closed; the users `viewer` and `resolver` added."""
    now = now or datetime.now(timezone.utc)
    day = now.astimezone(TORONTO).date() - timedelta(days=1)
    settings = settings_for(db_url, redis_url, queue, tmp / "data")
    noon = datetime.combine(day, datetime.min.time()).replace(hour=12, tzinfo=TORONTO)
    vancouver = noon.astimezone(settings.gateway_tz).strftime("%Y-%m-%d %H:%M:%S")
    _notify(settings, db_url, redis_url, v3_pay("PC-NOTIFIED", 12345, mch_order_no="SHOP-1001", when=vancouver,
                                                cardNum=PAN))
    _notify(settings, db_url, redis_url, v3_pay("PC-OLDKEY", 2500, key=OLD_KEY, mch_order_no="SHOP-1002",
                                                when=vancouver))
    with psycopg.connect(db_url) as conn:
        text = lambda h: (noon + timedelta(hours=h)).astimezone(TORONTO).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
        post(conn, "RP-NOTIFIED", 2345, at(text(2)), pay_type="refund", original="PC-NOTIFIED",
             mch_order_no="SHOP-1001-R1")
        post(conn, "PC-TWO", 9900, at(text(1)), mch_order_no="SHOP-1003")
        post(conn, "PC-M2", 4200, at(text(1)), mch_id=MCH2, mch_order_no="SHOP-1001")  # the same number, another merchant
        post(conn, "PC-USD", 1999, at(text(3)), currency="USD")
        expect(conn, "SHOP-1003", 9999, noon)  # charged another amount: amount_mismatch
        expect(conn, "SHOP-9999", 500, noon)  # never paid: expected_not_paid
        conn.commit()
        reconcile(conn, day, TORONTO)
        out = tmp / "reports"
        export_day(conn, day, TORONTO, out, now=now)
        conn.commit()
        views.record_verify(conn, verify_files(conn, out, TORONTO, now=now), "cli")
        users.add_user(conn, "viewer", "viewer", PASSWORD)
        users.add_user(conn, "resolver", "resolver", PASSWORD)
    return Seeded(day, out, "PC-NOTIFIED", "PC-OLDKEY", "RP-NOTIFIED")


__all__ = ["seed", "Seeded", "settings_for", "PAN", "PASSWORD", "KEY", "OLD_KEY", "MCH", "MCH2"]
