"""The one door a notify takes into the ledger: authenticate, validate, post.

The dramatiq actor and `iotledger replay` (worker/pipeline/process.py, a batch of inbox rows,
`verify_and_post_batch`) and `iotledger ingest` (worker/ledger/notify_file.py, a line of a file,
`verify_and_post`) go through here, so a notify is checked and posted the same way whichever
way it came. (The sweep posts the
gateway's answers to its own queries, which the gateway client verifies, with
posting.post_notify.)

A body the ingress authenticated (`verified_at`) is taken on that check where it cannot be
checked again: its card number was masked before it was stored (the sign covered the full
number), or the key that signed it was removed from the merchant's keys after IOTPay had been
answered `success` (posted with a warning). The merchant must still be configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import structlog

from worker import logs
from worker.errors import PermanentError, SignatureError, ValidationError
from worker.iotpay.authentication import authenticate
from worker.iotpay.body import NotifyBody
from worker.iotpay.notify import DEFAULT_MAX_AMOUNT_CENTS, Notify, parse_params
from worker.ledger import batch
from worker.ledger.outcome import PostResult
from worker.ledger.posting import post_notify
from worker.merchants import Merchants

log = logs.get("worker.ledger")


def verify(body: NotifyBody, merchants: Merchants, gateway_tz: ZoneInfo, *, max_amount: int = DEFAULT_MAX_AMOUNT_CENTS,
           verified_at: datetime | None = None, pan_masked: bool = False) -> Notify:
    """Authenticate the body (or rely on the ingress's check, see above) and validate its fields.

    Raises UnknownMerchantError, ValidationError (names the field) or SignatureError.
    """
    authenticated = False
    if pan_masked:
        if verified_at is None:  # the inbox forbids it; kept as a guard for rows written by hand
            raise ValidationError("sign", "body was masked but never verified")
    else:
        try:
            authenticate(body.params, merchants)
            authenticated = True
        except SignatureError:
            if verified_at is None:
                raise
            # The ingress verified this body and IOTPay was told `success`: the notify is ours to keep.
            # A sign that no longer verifies means the key was rotated out since; post it, say so.
            log.warning("intake.key_rotated_out", verified_at=verified_at.isoformat(),
                        detail="the signature no longer verifies; posted on the ingress's verification")
    notify = parse_params(body.params, gateway_tz, raw=body.raw, family=body.family, max_amount=max_amount)
    if not authenticated:
        merchants.require(notify.mch_id)  # taken on the ingress's check, of a merchant still configured
    return notify


def verify_and_post(conn: psycopg.Connection, body: NotifyBody, merchants: Merchants, gateway_tz: ZoneInfo, *,
                    source: str = "notify", max_amount: int = DEFAULT_MAX_AMOUNT_CENTS,
                    verified_at: datetime | None = None, pan_masked: bool = False) -> PostResult:
    """Verify a notify and post it in its own transaction.

    verified_at and pan_masked say what the ingress checked and stored (see above).
    Raises PermanentError subclasses for a bad notify (nothing posted) and RetryableError when
    the database is unavailable.
    """
    notify = verify(body, merchants, gateway_tz, max_amount=max_amount, verified_at=verified_at, pan_masked=pan_masked)
    return post_notify(conn, notify, source=source)


@dataclass(frozen=True)
class Arrival:
    """A notify body and what the ingress checked and stored about it (see verify)."""

    body: NotifyBody
    verified_at: datetime | None = None
    pan_masked: bool = False
    log_context: Mapping[str, Any] = field(default_factory=dict)  # bound to the log lines of its post


def verify_and_post_batch(conn: psycopg.Connection, arrivals: Sequence[Arrival], merchants: Merchants,
                          gateway_tz: ZoneInfo, *, source: str = "notify",
                          max_amount: int = DEFAULT_MAX_AMOUNT_CENTS) -> list[PostResult | Exception]:
    """Verify many notifies and post them, in order, inside the caller's open transaction.

    Each notify gets what `verify_and_post` would give it posted alone after the ones before it:
    its PostResult, or the PermanentError it would raise (its post rolled back to its savepoint,
    the others kept). Any other exception a post raises with the connection still usable is
    returned in its place too (nothing of that notify kept), for the caller to treat like one
    notify failing alone. Raises RetryableError when PostgreSQL is unavailable (or a deadlock
    cost the transaction): the caller's transaction is then lost as a whole. Commits nothing.
    """
    verified: list[Notify | Exception] = []
    for arrival in arrivals:
        try:
            with structlog.contextvars.bound_contextvars(**arrival.log_context):
                verified.append(verify(arrival.body, merchants, gateway_tz, max_amount=max_amount,
                                       verified_at=arrival.verified_at, pan_masked=arrival.pan_masked))
        except PermanentError as exc:
            verified.append(exc)
    notifies = [n for n in verified if isinstance(n, Notify)]
    contexts = [a.log_context for a, n in zip(arrivals, verified) if isinstance(n, Notify)]
    posted = iter(batch.post_batch(conn, notifies, source=source, contexts=contexts))
    return [item if isinstance(item, Exception) else next(posted) for item in verified]
