"""Posting rules: every successful IOTPay order becomes exactly one balanced journal entry.

    pay (status 2/3)      debit clearing, credit sales; the pay's refundable = its amount
    refund                debit refunds, credit clearing; the original's refundable goes down
    void (payType=void)   debit sales, credit clearing: reverses the pay in full

IOTPay notifies voids with payType=refund, so a gateway void arrives as a full refund and is
posted as one (same effect on clearing and refundable); an explicit payType=void posts a void.

Everything about one pay order and its refunds runs under one transaction-scoped advisory
lock keyed by the pay order id, so duplicates racing in from several workers serialise; the
unique index on journal_entries and the triggers in sql/001_ledger.sql are the last word.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from worker import db, logs
from worker.errors import PermanentError
from worker.iotpay.notify import Notify
from worker.iotpay.status import PayStatus, classify
from worker.ledger.outcome import Outcome, PostResult
from worker.sqlfiles import q

log = logs.get("worker.ledger")

ACCOUNT_KINDS = ("clearing", "sales", "refunds")  # a merchant's accounts in one currency, made at its first post
LEGS = {"pay": ("clearing", "sales"), "refund": ("refunds", "clearing"), "void": ("sales", "clearing")}
CONTENT_FIELDS = ("mch_id", "pay_type", "original_order_id", "amount", "currency")
# what a later notify may change on an order with nothing posted (a tip on a POS order); a different
# merchant, currency, payType or original is another order under the same id: a conflict in any state
REPLACEABLE_FIELDS = ("amount",)
SETTLED = ("posted", "rejected")  # states whose content stands: a later different content is a conflict


def fingerprint(notify: Notify) -> str:
    """What makes an order id's content: two notifies of one order must agree on these."""
    text = "|".join(str(getattr(notify, f) or "") for f in CONTENT_FIELDS)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Txn:
    """The money facts of one order, from a notify or from a stored (parked) order row."""

    pay_order_id: str
    mch_id: str
    pay_type: str
    original_order_id: str | None
    amount: int
    currency: str
    occurred_at: datetime


class LedgerRefusedError(PermanentError):
    """PostgreSQL refused a post for a reason no retry can fix (an integrity or data error)."""


def post_notify(conn: psycopg.Connection, notify: Notify, *, source: str = "notify") -> PostResult:
    """Post one verified notify (or query result) exactly once, in its own transaction.

    Never raises for bad money facts (those become recorded exceptions); raises RetryableError
    when PostgreSQL is unavailable, so the caller can try again later, and LedgerRefusedError
    (permanent) when PostgreSQL refuses the post as data that no retry can fix.
    """
    return _post(conn, notify, source, locked=False)


def begin_batch(conn: psycopg.Connection, notifies: Iterable[Notify]) -> None:
    """Prepare the caller's open transaction for posting many notifies, each with `post_in_batch`.

    Takes every notify's advisory locks up front, in one statement and in the one global order
    (the sorted keys, as `lock_order_tree` takes its two): transaction-level locks accumulate
    over a batch, and two batches taking them in different orders could wait on each other in
    a cycle. A key PostgreSQL cannot hold as text (a NUL character) is left to its own post,
    which is refused taking it, as alone. For the rest of the transaction the balance rules are
    checked at the end of each statement rather than at commit (an entry and its legs are one
    statement), so that an entry that does not balance is refused with its own notify, not with
    its whole batch. Raises RetryableError when PostgreSQL is unavailable.
    """
    keys = sorted({k for n in notifies for k in lock_keys(n) if lockable(k)})
    with db.translated("while locking a batch"):
        conn.execute(q("check_balance_at_each_statement"))
        if keys:
            conn.execute(q("lock_orders"), {"keys": keys, "seed": db.ORDER_LOCK_SEED})


def post_in_batch(conn: psycopg.Connection, notify: Notify, *, source: str = "notify") -> PostResult:
    """Post one notify inside the caller's transaction (prepared with `begin_batch`), isolated in a
    savepoint: a refused post is rolled back alone and the transaction goes on.

    Same results and errors as `post_notify`; nothing is committed here.
    """
    return _post(conn, notify, source, locked=all(lockable(k) for k in lock_keys(notify)))


def lock_keys(notify: Notify) -> tuple[str, ...]:
    """The advisory-lock keys of a notify's post (worker/db.py order_lock_keys)."""
    return db.order_lock_keys(notify.pay_order_id, notify.original_order_id if notify.is_refund else None)


def lockable(key: str) -> bool:
    """True for a key PostgreSQL can take as text: no NUL character, and encodable (no lone surrogate)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in key


def _post(conn: psycopg.Connection, notify: Notify, source: str, *, locked: bool) -> PostResult:
    """One post in a transaction of its own, or in a savepoint of the caller's (`conn.transaction()`
    nests). locked: the caller's transaction holds this notify's advisory locks already."""
    keys = lock_keys(notify)
    lock = {"first": keys[0], "second": keys[-1], "seed": db.ORDER_LOCK_SEED}
    with db.translated(f"while posting {notify.pay_order_id}"):
        for attempt in (1, 2):
            try:
                with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                    if not locked:
                        cur.execute(q("lock_order_tree"), lock)
                    result = _post_locked(cur, notify, source)
                break
            except psycopg.errors.UniqueViolation as exc:
                # another path inserted this order id between our look and our write: look again
                if attempt == 2:
                    raise LedgerRefusedError(f"payOrderId: {notify.pay_order_id}: {exc.diag.message_primary}") from exc
            except db.REFUSALS as exc:
                raise LedgerRefusedError(f"payOrderId: {notify.pay_order_id}: {db.refusal(exc, 'the post')}") from exc
    log_post(result)
    return result


def log_post(result: PostResult) -> None:
    """The one line of a post, whichever way it went."""
    log.info("ledger.post", pay_order_id=result.pay_order_id, outcome=result.outcome.value, reason=result.reason,
             released=[r.pay_order_id for r in result.released] or None)


def order_params(n: Notify, fp: str, state: str, reason: str | None, source: str) -> dict[str, Any]:
    """The columns of an order row, from a notify."""
    return {
        "pay_order_id": n.pay_order_id, "mch_id": n.mch_id, "mch_order_no": n.mch_order_no, "pay_type": n.pay_type,
        "original_order_id": n.original_order_id, "currency": n.currency, "amount": n.amount, "status": n.status,
        "state": state, "reason": reason, "gateway_refundable": n.refundable, "fingerprint": fp,
        "channel": n.channel, "card_type": n.card_type, "card_num": n.card_num, "auth_num": n.auth_num,
        "trans_num": n.trans_num, "invoice_num": n.invoice_num, "pay_succ_time": n.pay_succ_time,
        "source": source, "fields": Jsonb({k: v for k, v in n.fields.items() if k != "sign"}),
    }


def _state_for(status: int) -> str:
    return {PayStatus.PENDING: "pending", PayStatus.FAILED: "failed", PayStatus.UNKNOWN: "unknown"}.get(
        classify(status), "pending"
    )


def _post_locked(cur: psycopg.Cursor, n: Notify, source: str) -> PostResult:
    fp = fingerprint(n)
    cur.execute(q("order_for_update"), {"pay_order_id": n.pay_order_id})
    existing = cur.fetchone()
    success = classify(n.status) is PayStatus.SUCCESS
    params = order_params(n, fp, _state_for(n.status), None, source)

    if existing is None:
        cur.execute(q("insert_order"), params)
        if not success:
            return _record_non_success(cur, n, params["state"])
    else:
        state = existing["state"]
        changed = existing["fingerprint"] != fp
        identity_changed = any(str(existing[f] or "") != str(getattr(n, f) or "")
                               for f in CONTENT_FIELDS if f not in REPLACEABLE_FIELDS)
        if changed and (state in SETTLED or identity_changed):
            return _conflict(cur, n, existing, fp)
        if state in SETTLED:  # something was booked or refused on this content: it stands
            if not success:
                return _regression(cur, n, existing, source)
            if state == "rejected":  # the same refused notify again: refused again, for its first reason
                return PostResult(Outcome.REJECTED, n.pay_order_id, existing["reason"])
            if state == "posted" and source == "query":
                _compare_refundable(cur, n)
            return PostResult(Outcome.DUPLICATE, n.pay_order_id, existing["reason"] or "already posted")
        if not success:  # its content may change too, unless it moves the order backwards
            return _not_final_again(cur, n, existing, params, source, fp if changed else None)
        if changed:  # nothing booked yet: the gateway's later word replaces what we recorded
            _content_changed(cur, n, existing, fp, source)
        if state == "failed" and _was_success(cur, n.pay_order_id):
            # a success, then failed, then success again: a re-sent old notify or another change of
            # mind; the gateway's final word is not clear, so a person decides
            return _regression(cur, n, existing, source)
        cur.execute(q("refresh_order"), params)  # pending/unknown/failed/parked -> success: post it now

    # without a paySuccTime the entry is dated when the order was first heard of, as reconciliation does
    first_seen = existing["first_seen_at"] if existing else datetime.now(timezone.utc)
    txn = _Txn(n.pay_order_id, n.mch_id, n.pay_type, n.original_order_id, n.amount, n.currency,
               n.pay_succ_time or first_seen)
    if txn.amount <= 0:
        return _reject(cur, txn, "non_positive_amount", f"amount must be > 0 cents, got {txn.amount}",
                       {"amount": txn.amount})
    if txn.pay_type != "pay":
        result = _post_refund(cur, txn)
        if result.outcome is Outcome.POSTED:
            _compare_refundable(cur, n)
        return result
    _write_entry(cur, txn, "pay")
    if source == "query":  # a query answer states the refundable now: compare after parked refunds post
        released = _release_parked(cur, txn.pay_order_id)
        _compare_refundable(cur, n)
    else:  # a notify states it as it was when the pay succeeded, before any refund
        _compare_refundable(cur, n, fresh_pay=True)
        released = _release_parked(cur, txn.pay_order_id)
    return PostResult(Outcome.POSTED, txn.pay_order_id, None, released)


def _not_final_again(cur: psycopg.Cursor, n: Notify, existing: dict[str, Any], params: dict[str, Any], source: str,
                     changed: str | None) -> PostResult:
    """A non-success status for an order with nothing booked (pending, unknown, failed or parked).

    changed: the notify's fingerprint when its content differs from the recorded one; the new
    content replaces the old unless the notify is a regression (which changes nothing).
    """
    state, new_state = existing["state"], params["state"]
    if state == new_state and not changed:
        return PostResult(Outcome.DUPLICATE, n.pay_order_id, f"already {state}")
    if state != new_state and (state == "failed" or state == "parked" and new_state != "failed"):
        # failed is final, and parked holds a success: a later pending is a reordering or a reversal
        return _regression(cur, n, existing, source)
    if changed:
        _content_changed(cur, n, existing, changed, source)
    cur.execute(q("refresh_order"), params)
    if state == new_state:
        return _record_non_success(cur, n, new_state)
    if state == "parked":  # a refund the gateway now calls failed is never released
        reason = (f"the gateway reports status {n.status} (failed) for this refund after a success; "
                  f"it is not released when its original posts")
        _regression(cur, n, existing, source, reason)
        cur.execute(q("set_order_state"), {"pay_order_id": n.pay_order_id, "state": "failed", "reason": reason})
        return PostResult(Outcome.FAILED, n.pay_order_id, reason)
    cur.execute(q("set_order_state"), {"pay_order_id": n.pay_order_id, "state": new_state, "reason": None})
    return _record_non_success(cur, n, new_state)


def _was_success(cur: psycopg.Cursor, pay_order_id: str) -> bool:
    """True when the gateway once reported this (now failed) order a success."""
    cur.execute(q("order_was_success"), {"pay_order_id": pay_order_id})
    return cur.fetchone() is not None


def _regression(cur: psycopg.Cursor, n: Notify, existing: dict[str, Any], source: str,
                reason: str | None = None) -> PostResult:
    """The gateway moved a final (or success) order backwards: record it for a person; change nothing."""
    recorded, received = existing["status"], n.status
    reason = reason or (f"gateway reports status {received} ({classify(received).value}) for an order "
                        f"recorded {existing['state']} with status {recorded}; the ledger is unchanged, a person decides")
    _exception(cur, n.pay_order_id, "status_regression", reason, {
        "recorded_status": recorded, "received_status": received, "state": existing["state"], "source": source,
        "at": datetime.now(timezone.utc).isoformat(), "mch_id": existing["mch_id"], "amount": existing["amount"],
        "currency": existing["currency"], "pay_type": existing["pay_type"],
    }, f"status_regression:{n.pay_order_id}:{recorded}:{received}")
    return PostResult(Outcome.STATUS_REGRESSION, n.pay_order_id, reason)


def _content_changed(cur: psycopg.Cursor, n: Notify, existing: dict[str, Any], fp: str, source: str) -> None:
    """Replace the recorded content of an order with nothing booked, keeping the old in an exception."""
    recorded = {f: existing[f] for f in (*CONTENT_FIELDS, "mch_order_no", "status")}
    received = {f: getattr(n, f) for f in (*CONTENT_FIELDS, "mch_order_no", "status")}
    changes = ", ".join(f"{f} {recorded[f]!r} -> {received[f]!r}" for f in CONTENT_FIELDS if recorded[f] != received[f])
    _exception(cur, n.pay_order_id, "content_changed",
               f"the gateway changed the content of an order with nothing posted ({existing['state']}): {changes}",
               {"recorded": recorded, "received": received, "state": existing["state"], "source": source},
               f"content_changed:{n.pay_order_id}:{existing['fingerprint']}:{fp}")
    cur.execute(q("replace_order_content"), {
        "pay_order_id": n.pay_order_id, "mch_id": n.mch_id, "mch_order_no": n.mch_order_no, "pay_type": n.pay_type,
        "original_order_id": n.original_order_id, "currency": n.currency, "amount": n.amount, "fingerprint": fp,
    })


def _record_non_success(cur: psycopg.Cursor, n: Notify, state: str) -> PostResult:
    if state == "unknown":
        _exception(cur, n.pay_order_id, "unknown_status", f"status {n.status} is not documented; kept, not final",
                   {"status": n.status}, f"unknown_status:{n.pay_order_id}:{n.status}")
        return PostResult(Outcome.UNKNOWN_STATUS, n.pay_order_id, f"undocumented status {n.status}")
    return not_final(n)


def not_final(n: Notify) -> PostResult:
    """The result of a pending or failed notify that changes nothing but its order's row."""
    state = _state_for(n.status)
    if state == "failed":
        return PostResult(Outcome.FAILED, n.pay_order_id, f"status {n.status}: failed at the gateway")
    return PostResult(Outcome.PENDING, n.pay_order_id, f"status {n.status}: not paid yet")


def _conflict(cur: psycopg.Cursor, n: Notify, existing: dict[str, Any], fp: str) -> PostResult:
    diffs = {}
    for f in CONTENT_FIELDS:
        old, new = existing[f], getattr(n, f)
        if (old or None) != (new or None) and str(old) != str(new):
            diffs[f] = {"recorded": old, "received": new}
    reason = "same order id, different " + ", ".join(
        f"{f} ({d['recorded']!r} recorded, {d['received']!r} received)" for f, d in diffs.items()
    )
    _exception(cur, n.pay_order_id, "conflict", reason, {"differences": diffs, "status": n.status},
               f"conflict:{n.pay_order_id}:{fp}")
    return PostResult(Outcome.CONFLICT, n.pay_order_id, reason)


def _exception(cur: psycopg.Cursor, pay_order_id: str, kind: str, reason: str, details: dict[str, Any],
               dedup_key: str) -> None:
    cur.execute(q("record_exception"), {"pay_order_id": pay_order_id, "kind": kind, "reason": reason,
                                        "details": Jsonb(details), "dedup_key": dedup_key})


def _reject(cur: psycopg.Cursor, t: _Txn, kind: str, reason: str, details: dict[str, Any]) -> PostResult:
    _exception(cur, t.pay_order_id, kind, reason, details, f"{kind}:{t.pay_order_id}")
    cur.execute(q("set_order_state"), {"pay_order_id": t.pay_order_id, "state": "rejected", "reason": reason})
    return PostResult(Outcome.REJECTED, t.pay_order_id, reason)


# Accounts a connection has seen committed (they are never deleted: postings reference them), so
# that a post does not ask again. Only accounts created before this transaction began are
# remembered, never ones it created (or an earlier notify of its batch did), which a rollback
# could take away.
_known_accounts: weakref.WeakKeyDictionary[psycopg.Connection, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


def known_accounts(conn: psycopg.Connection) -> set[tuple[str, str]]:
    """The (mchId, currency) pairs whose accounts this connection has seen committed."""
    return _known_accounts.setdefault(conn, set())


def _ensure_accounts(cur: psycopg.Cursor, mch_id: str, currency: str) -> None:
    known = known_accounts(cur.connection)
    if (mch_id, currency) in known:
        return
    cur.execute(q("account_ids"), {"mch_id": mch_id, "currency": currency})
    found = cur.fetchall()
    if len(found) < len(ACCOUNT_KINDS):
        cur.execute(q("ensure_accounts"), {"mch_id": mch_id, "currency": currency, "kinds": list(ACCOUNT_KINDS)})
    elif all(row["settled"] for row in found):
        known.add((mch_id, currency))


def _write_entry(cur: psycopg.Cursor, t: _Txn, kind: str) -> None:
    _ensure_accounts(cur, t.mch_id, t.currency)
    debit, credit = LEGS[kind]
    cur.execute(q("insert_entry"), {
        "pay_order_id": t.pay_order_id, "kind": kind, "original_order_id": t.original_order_id if kind != "pay" else None,
        "mch_id": t.mch_id, "currency": t.currency, "amount": t.amount, "occurred_at": t.occurred_at,
        "memo": None, "debit": debit, "credit": credit,
    })
    if len(cur.fetchall()) != 2:  # the statement also marked the order posted
        raise RuntimeError(f"entry for {t.pay_order_id} did not get two legs")


def _post_refund(cur: psycopg.Cursor, t: _Txn) -> PostResult:
    cur.execute(q("pay_balance_for_update"), {"pay_order_id": t.original_order_id})
    pay = cur.fetchone()
    if pay is None:
        reason = f"original pay {t.original_order_id} not posted yet; parked until it is"
        cur.execute(q("set_order_state"), {"pay_order_id": t.pay_order_id, "state": "parked", "reason": reason})
        return PostResult(Outcome.PARKED, t.pay_order_id, reason)
    facts = {"original": t.original_order_id, "amount": t.amount, "currency": t.currency,
             "original_amount": pay["amount"], "original_currency": pay["currency"], "refundable": pay["refundable"]}
    if pay["mch_id"] != t.mch_id:
        return _reject(cur, t, "merchant_mismatch",
                       f"mchId {t.mch_id} differs from the original's {pay['mch_id']}", facts)
    if pay["currency"] != t.currency:
        return _reject(cur, t, "currency_mismatch",
                       f"currency {t.currency} differs from the original's {pay['currency']}", facts)
    if t.pay_type == "void" and (pay["refunded"] != 0 or t.amount != pay["amount"]):
        return _reject(cur, t, "void_not_full",
                       f"a void must reverse the pay in full: {t.amount} of {pay['amount']} cents, "
                       f"{pay['refunded']} already refunded", facts)
    if t.amount > pay["refundable"]:
        return _reject(cur, t, "over_refund",
                       f"refund of {t.amount} cents exceeds the original's refundable {pay['refundable']} cents", facts)
    _write_entry(cur, t, t.pay_type)
    return PostResult(Outcome.POSTED, t.pay_order_id)


def _release_parked(cur: psycopg.Cursor, pay_order_id: str) -> tuple[PostResult, ...]:
    cur.execute(q("parked_refunds_of"), {"pay_order_id": pay_order_id})
    ids = [r["pay_order_id"] for r in cur.fetchall()]
    released = []
    for rid in ids:
        cur.execute(q("order_for_update"), {"pay_order_id": rid})
        row = cur.fetchone()
        if row is None or row["state"] != "parked" or row["original_order_id"] != pay_order_id:
            continue  # changed since the list was read (posted, failed or re-pointed by another path)
        t = _Txn(row["pay_order_id"], row["mch_id"], row["pay_type"], row["original_order_id"], row["amount"],
                 row["currency"], row["pay_succ_time"] or row["first_seen_at"])
        released.append(_post_refund(cur, t))
    return tuple(released)


def _compare_refundable(cur: psycopg.Cursor, n: Notify, *, fresh_pay: bool = False) -> None:
    """Record a mismatch when the gateway's stated refundable differs from the ledger's.

    fresh_pay: the pay was posted just now and nothing drew on it yet, so the ledger's refundable
    is its amount (no need to ask).
    """
    if n.refundable is None:
        return
    if fresh_pay:
        ledger = n.amount
    elif n.pay_type == "pay":
        cur.execute(q("pay_balance_for_update"), {"pay_order_id": n.pay_order_id})
        row = cur.fetchone()
        ledger = row["refundable"] if row else None
    else:
        ledger = 0  # a refund order is not itself refundable
    if ledger is not None and ledger != n.refundable:
        _exception(cur, n.pay_order_id, "refundable_mismatch",
                   f"gateway states refundable {n.refundable} cents, ledger has {ledger} cents",
                   {"gateway": n.refundable, "ledger": ledger},
                   f"refundable_mismatch:{n.pay_order_id}:{n.refundable}:{ledger}")
