"""Inbox rows through the ledger, in batches: the actor and `iotledger replay` both call `handle`.

A message names one inbox row, or several (`handle_many`: the ingress and redrive send the ids
they have at once in one message). `handle` claims that row and up to batch_size - 1 other rows
waiting for the ledger (oldest first, `FOR UPDATE SKIP LOCKED`, so concurrent batches never take
one row twice), decodes each body with the family the ingress found and stored, and posts them
through the ledger's one door, worker.ledger.intake.verify_and_post_batch, with what the ingress
checked (`verified_at`) and whether it masked a card number (`pan_masked`), in ONE transaction
with one commit:

- each notify is isolated in a savepoint: a bad one is rolled back alone and its row records
  its reason, the same outcome and reason it gets when posted alone;
- every row's outcome is written in the transaction of its postings, so the inbox and the
  ledger never disagree;
- PostgreSQL unavailable: the whole batch is lost (every row as it was) and the message is
  retried; a deadlock PostgreSQL detects costs the batch too and is retried here first.

A message whose row another batch has finished is acknowledged on one indexed read: done, it
is skipped; failed, its reason is raised again (not processed again, not retried). A row a batch
of this process finished is known without the read (`Finished`, after the batch's commit). A row held
by a batch in flight is left to it: this message's batch takes other rows, then waits for that
row and looks again. Batch size 1 is one notify per transaction.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
import structlog

from worker import db
from worker.config import Settings
from worker.errors import PermanentError, RetryableError
from worker.iotpay.body import decode_body
from worker.ledger import intake
from worker.ledger.outcome import PostResult
from worker.pipeline import inbox
from worker.pipeline.inbox import InboxRow, Mark

log = structlog.get_logger("worker.pipeline")

# a deadlock PostgreSQL detects costs the batch; try it again this many times before dramatiq's backoff
DEADLOCK_ATTEMPTS = 3


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


class RowFailed(PermanentError):
    """The row was failed (a permanent error, recorded with its reason) before this message came to it."""

    def __init__(self, inbox_id: int, reason: str | None) -> None:
        self.inbox_id = inbox_id
        super().__init__(reason or "failed")


class Finished:
    """The rows this process's batches finished lately (committed), so that their own messages,
    when they come, are acknowledged without a read. Bounded; shared by the process's threads."""

    def __init__(self, size: int = 20_000) -> None:
        self._rows: OrderedDict[int, Handled | RowFailed] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def add(self, inbox_id: int, what: Handled | RowFailed) -> None:
        """Remember a row committed done (its Handled, skipped) or failed (its error)."""
        with self._lock:
            self._rows[inbox_id] = what
            while len(self._rows) > self._size:
                self._rows.popitem(last=False)

    def take(self, inbox_id: int) -> Handled | RowFailed | None:
        """The row's finish, forgotten once taken (its message comes once; a redelivery reads)."""
        with self._lock:
            return self._rows.pop(inbox_id, None)


@dataclass
class _Batch:
    """What one batch did: its message's own rows (those another batch held are missing), and the others."""

    own: dict[int, Handled | Exception] = field(default_factory=dict)
    others: list[tuple[InboxRow, PostResult | Exception]] = field(default_factory=list)


def handle(conn: psycopg.Connection, inbox_id: int, settings: Settings, *, force: bool = False,
           batch_size: int = 1, finished: Finished | None = None) -> Handled:
    """Process one inbox row, with up to batch_size - 1 other rows waiting, and mark each with its outcome.

    A row already done is skipped unless force (replay: the row is processed whatever its state,
    alone, and the ledger posts nothing new for it). Raises InboxRowMissing, RowFailed or
    another PermanentError of the row (recorded on it) and RetryableError (every row of the batch
    left as it was, to be retried or redriven). Returns the row's Handled. finished: the rows
    this process's batches finished (read first, and told what this batch finishes).
    """
    if force:
        result = _batch(conn, [inbox_id], settings, 1, force=True, wait=True).own[inbox_id]
    else:
        result = handle_many(conn, [inbox_id], settings, batch_size=batch_size, finished=finished)[inbox_id]
    if isinstance(result, Exception):
        raise result
    return result


def handle_many(conn: psycopg.Connection, inbox_ids: Sequence[int], settings: Settings, *, batch_size: int = 1,
                finished: Finished | None = None) -> dict[int, Handled | Exception]:
    """Process a message's rows (and others waiting, up to batch_size rows a transaction) and mark
    each with its outcome; return each own row's Handled, or its error: InboxRowMissing, RowFailed,
    another PermanentError (recorded on the row), or any other exception the row's post raised
    (the row left as it was).

    Rows already finished are acknowledged without processing: known to `finished`, else on one
    read for all. The others are taken batch_size at a time with rows waiting besides them;
    rows another batch in flight holds are waited for after. Raises RetryableError when
    PostgreSQL is unavailable (the rows of the batch under way left as they were).
    """
    out: dict[int, Handled | Exception] = {}
    ids = list(dict.fromkeys(inbox_ids))
    if finished is not None:
        for inbox_id in ids:
            known = finished.take(inbox_id)
            if known is not None:
                out[inbox_id] = known
    ids = [i for i in ids if i not in out]
    out.update(_finished(conn, ids))
    waiting = [i for i in ids if i not in out]
    for start in range(0, len(waiting), max(1, batch_size)):
        chunk = waiting[start:start + max(1, batch_size)]
        out.update(_batch(conn, chunk, settings, batch_size, force=False, wait=False, finished=finished).own)
        held = [i for i in chunk if i not in out]  # a batch in flight holds them: ours took others; now wait
        if held:
            out.update(_batch(conn, held, settings, batch_size, force=False, wait=True, finished=finished).own)
    return {i: out[i] for i in dict.fromkeys(inbox_ids)}


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


def _finished(conn: psycopg.Connection, inbox_ids: list[int]) -> dict[int, Handled | Exception]:
    """The rows another batch finished: done (Handled, skipped), failed (RowFailed), and the ids
    with no row (InboxRowMissing); rows still waiting are left out."""
    if not inbox_ids:
        return {}
    seen = inbox.glance(conn, inbox_ids)
    out: dict[int, Handled | Exception] = {}
    for inbox_id in inbox_ids:
        row = seen.get(inbox_id)
        if row is None:
            out[inbox_id] = InboxRowMissing(inbox_id)
        elif row.state == "failed":
            out[inbox_id] = RowFailed(inbox_id, row.reason)
        elif row.state == "done":
            out[inbox_id] = Handled(inbox_id, row.pay_order_id, row.outcome, row.reason, skipped=True)
    return out


def _lost_to_concurrency(exc: RetryableError) -> bool:
    """True when PostgreSQL gave up the transaction to break a deadlock (or a serialization failure)."""
    return isinstance(exc.__cause__, (psycopg.errors.DeadlockDetected, psycopg.errors.TransactionRollback))


def _batch(conn: psycopg.Connection, own_ids: list[int], settings: Settings, size: int, *, force: bool,
           wait: bool, finished: Finished | None = None) -> _Batch:
    """One batch in one transaction, tried again after a deadlock; logs the rows besides the message's own."""
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            with db.translated(), conn.transaction():
                batch = _post_batch(conn, own_ids, settings, size, force=force, wait=wait)
            break
        except RetryableError as exc:
            if attempt == DEADLOCK_ATTEMPTS or not _lost_to_concurrency(exc):
                raise
            log.warning("worker.batch_retry", inbox_ids=own_ids, attempt=attempt, error=str(exc))
    for row, result in batch.others:
        _log_row(row, result, own_ids[0])
        if finished is not None and not isinstance(result, Exception):
            finished.add(row.id, Handled(row.id, result.pay_order_id or row.pay_order_id, result.outcome.value,
                                         result.reason, skipped=True))
        elif finished is not None and isinstance(result, PermanentError):
            finished.add(row.id, RowFailed(row.id, str(result)))
    return batch


def _post_batch(conn: psycopg.Connection, own_ids: list[int], settings: Settings, size: int, *, force: bool,
                wait: bool) -> _Batch:
    batch = _Batch()
    owned = inbox.claim(conn, own_ids, wait=wait)
    if wait:  # every row that exists was waited for and is here
        found = {row.id for row in owned}
        batch.own.update((i, InboxRowMissing(i)) for i in own_ids if i not in found)
    mine = []
    for row in owned:
        if not force and row.state == "failed":  # finished while we waited
            batch.own[row.id] = RowFailed(row.id, row.reason)
        elif not force and row.state == "done":
            batch.own[row.id] = Handled(row.id, row.pay_order_id, row.outcome, row.reason, skipped=True)
        else:
            mine.append(row)
    # rows waiting besides: also when another batch holds ours (then we wait for them after this one)
    rows = mine + inbox.claim_ready(conn, size - len(mine), besides=own_ids) if mine or not wait else []
    rows.sort(key=lambda r: r.id)  # in the order they arrived, as one at a time would take them

    results: dict[int, PostResult | Exception] = {}
    arrivals: list[tuple[InboxRow, intake.Arrival]] = []
    for row in rows:
        try:
            body = decode_body(row.body, row.content_type, family=row.family)
        except Exception as exc:  # noqa: BLE001 - recorded on its row (a PermanentError) or left to its message
            results[row.id] = exc
            continue
        arrivals.append((row, intake.Arrival(body, row.verified_at, row.pan_masked,
                                             {"inbox_id": row.id, "pay_order_id": row.pay_order_id})))
    if arrivals:
        posted = intake.verify_and_post_batch(conn, [a for _, a in arrivals], settings.merchants, settings.gateway_tz,
                                              source="notify", max_amount=settings.max_amount_cents)
        results.update((row.id, result) for (row, _), result in zip(arrivals, posted))

    marks = [_mark(row.id, results[row.id]) for row in rows]
    stored = inbox.mark_batch(conn, [m for m in marks if m is not None])
    own = {row.id for row in mine}
    for row in rows:
        result = results[row.id]
        if row.id not in own:
            batch.others.append((row, result))
        elif isinstance(result, Exception):
            batch.own[row.id] = result
        else:
            first = stored.get(row.id, result.outcome.value)
            if first != result.outcome.value:
                log.info("inbox.already_done", inbox_id=row.id, first_outcome=first, this_outcome=result.outcome.value)
            batch.own[row.id] = Handled(row.id, result.pay_order_id or row.pay_order_id, result.outcome.value,
                                        result.reason)
    return batch


def _mark(inbox_id: int, result: PostResult | Exception) -> Mark | None:
    """The row's new state: done with the ledger's outcome, failed with a permanent error's reason;
    None for any other error (the row is left as it was, for its own message to try again)."""
    if isinstance(result, PostResult):
        return Mark(inbox_id, "done", result.outcome.value, result.reason)
    if isinstance(result, PermanentError):
        return Mark(inbox_id, "failed", None, str(result))
    return None


def _log_row(row: InboxRow, result: PostResult | Exception, batch_of: int) -> None:
    """One line for a row processed in another message's batch (its own message is acknowledged later)."""
    if isinstance(result, PostResult):
        log.info("worker.processed", inbox_id=row.id, pay_order_id=result.pay_order_id or row.pay_order_id,
                 outcome=result.outcome.value, reason=result.reason, batch_of=batch_of)
    elif isinstance(result, PermanentError):
        log.warning("worker.failed", inbox_id=row.id, pay_order_id=row.pay_order_id, reason=str(result),
                    batch_of=batch_of)
    else:
        log.warning("worker.row_left", inbox_id=row.id, pay_order_id=row.pay_order_id,
                    error=f"{type(result).__name__}: {result}", batch_of=batch_of)
