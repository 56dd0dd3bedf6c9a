"""One inbox row through the ledger: the actor and `iotledger replay` both call `handle`.

The row's body is decoded and verified again (merchant, sign, fields) and posted by
worker.ledger.intake.verify_and_post. A body stored with its card number masked cannot be
verified again (the sign covered the full number): it was verified at the ingress
(`verified_at`), so only merchant and fields are checked before posting. Likewise a row the
ingress verified whose sign no longer verifies (the merchant's old key was removed after
IOTPay had been answered) is posted on the ingress's verification, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import structlog

from worker import db
from worker.config import Settings
from worker.errors import PermanentError, SignatureError, ValidationError
from worker.iotpay.notify import decode_body, parse_params
from worker.ledger import intake, posting
from worker.ledger.outcome import PostResult
from worker.pipeline import inbox
from worker.pipeline.inbox import InboxRow

log = structlog.get_logger("worker.pipeline")


@dataclass(frozen=True)
class Handled:
    """What handling a row did: the post result, or skipped when the row was already done."""

    inbox_id: int
    pay_order_id: str | None
    outcome: str | None
    reason: str | None = None
    skipped: bool = False


class InboxRowMissing(PermanentError):
    """The message names an inbox id that does not exist (a message from another database)."""

    def __init__(self, inbox_id: int) -> None:
        self.inbox_id = inbox_id
        super().__init__(f"inbox id {inbox_id}: no such row")


def post_row(conn: psycopg.Connection, row: InboxRow, settings: Settings) -> PostResult:
    """Decode, verify and post one row's body.

    Raises PermanentError subclasses for a bad body (nothing posted), RetryableError when
    PostgreSQL is unavailable.
    """
    family, params = decode_body(row.body, row.content_type)
    if row.pan_masked:
        if row.verified_at is None:  # the table forbids it; kept as a guard for rows written by hand
            raise ValidationError("sign", "body was masked but never verified")
        notify = parse_params(params, settings.gateway_tz, raw=row.body, family=family,
                              max_amount=settings.max_amount_cents)
        settings.merchants.require(notify.mch_id)
        return posting.post_notify(conn, notify, source="notify")
    try:
        return intake.verify_and_post(conn, params, settings.merchants, settings.gateway_tz, source="notify",
                                      raw=row.body, family=family, max_amount=settings.max_amount_cents)
    except SignatureError:
        if row.verified_at is None:
            raise
        # The ingress verified this body and IOTPay was told `success`: the notify is ours to keep.
        # A sign that no longer verifies means the key was rotated out since; post it, say so.
        log.warning("signature no longer verifies; posting on the ingress's verification (merchant key removed?)",
                    verified_at=row.verified_at.isoformat())
        notify = parse_params(params, settings.gateway_tz, raw=row.body, family=family,
                              max_amount=settings.max_amount_cents)
        settings.merchants.require(notify.mch_id)
        return posting.post_notify(conn, notify, source="notify")


def handle(conn: psycopg.Connection, inbox_id: int, settings: Settings, *, force: bool = False) -> Handled:
    """Process one inbox row and mark it with its outcome.

    A row already done is skipped unless force (replay; the ledger then posts nothing new).
    Raises InboxRowMissing or another PermanentError (the row is marked failed first) and
    RetryableError (the row is left as it was, to be retried or redriven).
    """
    row = inbox.load(conn, inbox_id)
    if row is None:
        raise InboxRowMissing(inbox_id)
    with structlog.contextvars.bound_contextvars(inbox_id=inbox_id, pay_order_id=row.pay_order_id):
        if row.state == "done" and not force:
            return Handled(inbox_id, row.pay_order_id, row.outcome, row.reason, skipped=True)
        try:
            with db.translated():
                result = post_row(conn, row, settings)
        except PermanentError as exc:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()  # whatever the failed post left open holds nothing to keep
            inbox.mark_failed(conn, inbox_id, str(exc))
            raise
        outcome = inbox.mark_done(conn, inbox_id, result.outcome.value, result.reason)
        if outcome != result.outcome.value:
            log.info("inbox row was already done", first_outcome=outcome, this_outcome=result.outcome.value)
        return Handled(inbox_id, result.pay_order_id or row.pay_order_id, result.outcome.value, result.reason)


def replay(conn: psycopg.Connection, inbox_ids: list[int], settings: Settings) -> list[Handled | PermanentError]:
    """Process rows again, whatever their state (e.g. failed, after a merchant key was fixed).

    A row that already posted posts nothing new (the ledger answers duplicate). Permanent
    errors are returned per row (and recorded on it); RetryableError stops the replay.
    """
    results: list[Handled | PermanentError] = []
    for inbox_id in inbox_ids:
        try:
            results.append(handle(conn, inbox_id, settings, force=True))
        except PermanentError as exc:
            results.append(exc)
    return results
