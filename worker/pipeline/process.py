"""One inbox row through the ledger: the actor and `iotledger replay` both call `handle`.

The row's body is decoded with the family the ingress found and stored, and goes through the
ledger's one door, worker.ledger.intake.verify_and_post, with what the ingress checked
(`verified_at`) and whether it masked a card number (`pan_masked`): intake decides what can
be verified again.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import structlog

from worker import db
from worker.config import Settings
from worker.errors import PermanentError
from worker.iotpay.body import decode_body
from worker.ledger import intake
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
    """Decode one row's body and post it through the ledger's intake.

    Raises PermanentError subclasses for a bad body (nothing posted), RetryableError when
    PostgreSQL is unavailable.
    """
    body = decode_body(row.body, row.content_type, family=row.family)
    return intake.verify_and_post(conn, body, settings.merchants, settings.gateway_tz, source="notify",
                                  max_amount=settings.max_amount_cents, verified_at=row.verified_at,
                                  pan_masked=row.pan_masked)


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
            log.info("inbox.already_done", first_outcome=outcome, this_outcome=result.outcome.value)
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
