"""Many notifies posted in one transaction: the plain ones as a set, the rest one at a time.

`post_batch` takes the batch's advisory locks up front (posting.begin_batch), posts the plain
notifies (below) in one statement a round, then each other notify in its own savepoint
(posting.post_in_batch), in the batch's order.

Most notifies of a backlog need no decision at all.

A notify is plain when posting it alone would do nothing but insert its order, recorded posted
with its entry, or recorded pending or failed: a new order id, and

    a pay the gateway calls a success, with no refund parked on it and a stated refundable equal
                        to its amount (or none);
    a refund or void    the gateway calls a success, of a posted pay of the same merchant and
                        currency, within its refundable (a void: the whole pay, nothing
                        refunded), stating no refundable (or 0);
    a pay the gateway calls pending or failed (the sweep's answers, mostly).

Everything else (a duplicate, a status change, a conflict, a refund before its pay, a mismatch
to record, a merchant's first post) takes the one-at-a-time path of worker/ledger/posting.py in
its savepoint, as before. The facts are read under the batch's advisory locks in one query
(`batch_known_orders`); the plain posts are then one statement (`post_plain_orders`) in a
savepoint, which the triggers of sql/001_ledger.sql check row by row like any other insert. If
PostgreSQL refuses anything in it, the savepoint is rolled back and those notifies are posted one
at a time, so a refusal is still recorded against its own notify and no other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import structlog

from worker import db, logs
from worker.errors import RetryableError
from worker.iotpay.notify import Notify
from worker.iotpay.status import PayStatus, classify
from worker.ledger.outcome import Outcome, PostResult
from worker.ledger.posting import (ACCOUNT_KINDS, begin_batch, fingerprint, known_accounts, lock_keys, lockable, log_post,
                                   not_final, order_params, post_in_batch)
from worker.sqlfiles import q

log = logs.get("worker.ledger")

# the columns of post_plain_orders, from _order_params
_COLUMNS = ("pay_order_id", "mch_id", "mch_order_no", "pay_type", "original_order_id", "currency", "amount", "status",
            "state", "gateway_refundable", "fingerprint", "channel", "card_type", "card_num", "auth_num", "trans_num",
            "invoice_num", "pay_succ_time", "fields")


def post_batch(conn: psycopg.Connection, notifies: Sequence[Notify], *, source: str,
               contexts: Sequence[Mapping[str, Any]] | None = None) -> list[PostResult | Exception]:
    """Post notifies, in order, inside the caller's open transaction; commits nothing.

    Each gets what posting it alone after the ones before it gives: its PostResult, or the
    exception its post raised with the connection still usable (a PermanentError, or any other:
    nothing of that notify kept, the others go on). contexts: log context bound to each
    notify's lines. Raises RetryableError when PostgreSQL is unavailable or a deadlock cost the
    transaction: the caller's transaction is then lost as a whole.
    """
    contexts = contexts or [{}] * len(notifies)
    begin_batch(conn, notifies)
    rounds = plain(conn, notifies)
    chosen = [i for i, r in enumerate(rounds) if r is not None]
    posted = post_plain(conn, [notifies[i] for i in chosen], [rounds[i] for i in chosen], source=source)
    done = dict(zip(chosen, posted or []))
    log.debug("ledger.batch", notifies=len(notifies), plain=len(done), refused=posted is None)
    results: list[PostResult | Exception] = []
    for i, (notify, context) in enumerate(zip(notifies, contexts)):
        with structlog.contextvars.bound_contextvars(**context):
            if i in done:
                log_post(done[i])
                results.append(done[i])
                continue
            try:
                results.append(post_in_batch(conn, notify, source=source))
            except RetryableError:
                raise
            except Exception as exc:  # noqa: BLE001 - its savepoint is rolled back; the batch goes on without it
                results.append(exc)
    return results


def plain(conn: psycopg.Connection, notifies: Sequence[Notify]) -> list[int | None]:
    """Which notifies of a batch are plain (see above), read in one query under the batch's locks:
    for each, its round (0 for a pay or a refund of an earlier pay; 1 for the first refund of a pay
    of the same batch, 2 for the second...), or None for the one-at-a-time path.

    Of the notifies of one order tree (a pay and its refunds, touching no other notify's orders),
    the first ones are plain, in order, until one is not: the pay first, each refund within what
    the ones before it left. The rest of the tree goes one at a time after the set, so each tree's
    posts keep the batch's order. Raises RetryableError when PostgreSQL is unavailable.
    """
    rounds: list[int | None] = [None] * len(notifies)
    users: dict[str, set[int]] = defaultdict(set)
    for i, n in enumerate(notifies):
        for k in lock_keys(n):
            users[k].add(i)
    trees: dict[str, list[int]] = defaultdict(list)  # root (the pay's id) -> its notifies, in order
    for i, n in enumerate(notifies):
        trees[n.original_order_id if n.is_refund else n.pay_order_id].append(i)
    trees = {root: members for root, members in trees.items()
             if all(lockable(k) for i in members for k in lock_keys(notifies[i]))  # else refused alone
             and set().union(*(users[k] for i in members for k in lock_keys(notifies[i]))) == set(members)}
    if not trees:
        return rounds
    members = [i for m in trees.values() for i in m]
    known = known_accounts(conn)
    unknown = sorted({(notifies[i].mch_id, notifies[i].currency) for i in members} - known)
    with db.translated("while reading a batch's orders"):
        rows = conn.execute(q("batch_known_orders"), {
            "ids": [notifies[i].pay_order_id for i in members],
            "pays": [notifies[i].pay_order_id for i in members if not notifies[i].is_refund],
            "originals": [root for root, m in trees.items() if notifies[m[0]].is_refund],
            "mch_ids": [m for m, _ in unknown], "currencies": [c for _, c in unknown],
            "kinds": list(ACCOUNT_KINDS),
        }).fetchall()
    exists = {r[1] for r in rows if r[0] in ("exists", "parked")}  # parked: a pay with a refund waiting
    balances = {r[1]: r[2:] for r in rows if r[0] == "balance"}
    known.update((r[2], r[3]) for r in rows if r[0] == "accounts" and r[4] == len(ACCOUNT_KINDS))
    for root, m in trees.items():
        tree = [notifies[i] for i in m]
        if any(n.pay_order_id in exists for n in tree):
            continue
        first = tree[0]
        if _not_final_pay(first):
            fit = 1  # recorded pending or failed (no entry, no account); what follows it is decided alone
        elif not _candidate(first) or any((n.mch_id, n.currency) not in known for n in tree):
            continue
        elif first.is_refund:
            fit = _refunds_fitting(tree, balances.get(root))
        else:
            fit = 1 + _refunds_fitting(tree[1:], (first.mch_id, first.currency, first.amount, 0))
        for r, i in enumerate(m[:fit]):
            rounds[i] = r
    return rounds


def _candidate(n: Notify) -> bool:
    """What can be told of a notify alone: a success, a positive amount, lockable keys, no refundable to compare."""
    if classify(n.status) is not PayStatus.SUCCESS or n.amount <= 0 or not all(lockable(k) for k in lock_keys(n)):
        return False
    if n.is_refund:
        return n.refundable in (None, 0)
    return n.refundable is None or n.refundable == n.amount


def _not_final_pay(n: Notify) -> bool:
    """A pay the gateway calls pending or failed: a new one only records its order."""
    return not n.is_refund and classify(n.status) in (PayStatus.PENDING, PayStatus.FAILED) \
        and all(lockable(k) for k in lock_keys(n))


def _refunds_fitting(refunds: Sequence[Notify], balance: tuple | None) -> int:
    """How many of the refunds, in order, are plain: each draws within what the pay (mchId,
    currency, amount, refunded) has left after the ones before it."""
    if balance is None:
        return 0
    mch_id, currency, amount, refunded = balance
    seen: set[str] = set()
    for count, n in enumerate(refunds):
        if not (_candidate(n) and n.is_refund and n.mch_id == mch_id and n.currency == currency):
            return count
        if n.pay_order_id in seen:  # the same refund twice: the second is a duplicate, decided alone
            return count
        seen.add(n.pay_order_id)
        if n.pay_type == "void" and (refunded != 0 or n.amount != amount) or n.amount > amount - refunded:
            return count
        refunded += n.amount
    return len(refunds)


def post_plain(conn: psycopg.Connection, notifies: Sequence[Notify], rounds: Sequence[int], *,
               source: str) -> list[PostResult] | None:
    """Post plain notifies, one statement per round (see `plain`), in a savepoint of the caller's
    transaction.

    Returns their PostResults (posted), or None when PostgreSQL refused any of them: nothing of
    them is kept, and the caller posts them one at a time. Raises RetryableError when PostgreSQL
    is unavailable.
    """
    if not notifies:
        return []
    with db.translated("while posting a batch"):
        try:
            with conn.transaction(), conn.cursor() as cur:
                for r in sorted(set(rounds)):
                    this = [n for n, nr in zip(notifies, rounds) if nr == r]
                    columns: dict[str, list] = {c: [] for c in _COLUMNS}
                    for n in this:
                        params = order_params(n, fingerprint(n), _state(n), None, source)
                        for c in _COLUMNS:
                            columns[c].append(params[c])
                    cur.execute(q("post_plain_orders"), {**columns, "source": source})
                    posts = sum(_state(n) == "posted" for n in this)
                    if len(cur.fetchall()) != 2 * posts:  # an account missing: refuse the set
                        raise _Refused
        except (_Refused, *db.REFUSALS):
            return None
    return [PostResult(Outcome.POSTED, n.pay_order_id) if _state(n) == "posted" else not_final(n) for n in notifies]


def _state(n: Notify) -> str:
    """The state a plain notify's order is recorded in."""
    return "posted" if classify(n.status) is PayStatus.SUCCESS else "failed" if classify(
        n.status) is PayStatus.FAILED else "pending"


class _Refused(Exception):
    """The set statement did not write every leg; its savepoint is rolled back."""
