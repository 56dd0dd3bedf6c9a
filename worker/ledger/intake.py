"""Verify-and-post: the one path every notify takes into the ledger.

The dramatiq actor, `iotledger ingest`, replay and the sweep all call `verify_and_post`, so a
notify is checked and posted the same way whichever door it came through.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from worker.iotpay import signature
from worker.iotpay.notify import DEFAULT_MAX_AMOUNT_CENTS, Family, Notify, parse_params
from worker.ledger.outcome import PostResult
from worker.ledger.posting import post_notify
from worker.merchants import Merchants


def verify(params: dict[str, Any], merchants: Merchants, gateway_tz: ZoneInfo, *, raw: bytes = b"",
           family: Family | None = None, max_amount: int = DEFAULT_MAX_AMOUNT_CENTS) -> Notify:
    """Check merchant, signature and fields; return the typed notify.

    Raises UnknownMerchantError, ValidationError (names the field) or SignatureError.
    """
    mch_id = params.get("mchId")
    if mch_id is None or mch_id == "":
        from worker.errors import ValidationError

        raise ValidationError("mchId", "missing")
    merchant = merchants.require(str(mch_id))
    signature.verify(params, merchant.keys)
    return parse_params(params, gateway_tz, raw=raw, family=family, max_amount=max_amount)


def verify_and_post(conn: psycopg.Connection, params: dict[str, Any], merchants: Merchants, gateway_tz: ZoneInfo, *,
                    source: str = "notify", raw: bytes = b"", family: Family | None = None,
                    max_amount: int = DEFAULT_MAX_AMOUNT_CENTS) -> PostResult:
    """Verify a signed notify and post it in its own transaction.

    Raises PermanentError subclasses for a bad notify (nothing posted) and RetryableError when
    the database is unavailable.
    """
    notify = verify(params, merchants, gateway_tz, raw=raw, family=family, max_amount=max_amount)
    return post_notify(conn, notify, source=source)
