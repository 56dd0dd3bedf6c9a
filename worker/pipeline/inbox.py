"""The durable inbox: every acknowledged notify, stored in PostgreSQL before the answer.

States (sql/002_inbox.sql): queued (or received) -> done | failed | dead. The same body again
(same sha256) is recognised and not stored twice. Every function here is its own
transaction (most are one statement, run without BEGIN/COMMIT round trips) and leaves the
connection idle; psycopg's connection errors come out as RetryableError (worker.db.translated).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker import db
from worker.errors import RetryableError
from worker.iotpay.channels import Family
from worker.pipeline.screening import Screened
from worker.sqlfiles import q

STATES = ("received", "queued", "done", "failed", "dead")


@dataclass(frozen=True)
class InboxRow:
    """One stored notify and how far it got."""

    id: int
    body: bytes
    pan_masked: bool
    content_type: str | None
    family: Family  # as the ingress decoded the body when it arrived
    remote_addr: str | None
    mch_id: str | None
    pay_order_id: str | None
    received_at: datetime
    verified_at: datetime | None
    state: str
    outcome: str | None
    reason: str | None
    attempts: int
    redrives: int
    queued_at: datetime | None
    processed_at: datetime | None


@dataclass(frozen=True)
class Stored:
    """Result of storing a body: its row id, and whether that body was already there."""

    id: int
    duplicate: bool
    state: str


def store(conn: psycopg.Connection, screened: Screened, *, content_type: str | None, remote_addr: str | None,
          now: datetime) -> Stored:
    """Insert a screened body once, committed when this returns (one statement: on an autocommit
    connection, one round trip). Raises RetryableError when PostgreSQL is down.
    """
    params = {
        "body_sha256": screened.body_sha256,
        "body": screened.body,
        "pan_masked": screened.pan_masked,
        "content_type": content_type,
        "family": screened.family,
        "remote_addr": remote_addr,
        "mch_id": screened.mch_id,
        "pay_order_id": screened.pay_order_id,
        "received_at": now,
        "verified_at": now,
    }
    with db.translated():
        row = conn.execute(q("inbox_store"), params).fetchone()
        if row is None:  # the same body, committed by a concurrent request after our snapshot
            found = conn.execute(q("inbox_by_hash"), params).fetchone()
            row = (found[0], found[1], True) if found else None
        if not conn.autocommit:
            conn.commit()
    if row is None:
        raise RetryableError("inbox: the same body is being stored concurrently; try again")
    return Stored(id=row[0], duplicate=row[2], state=row[1])


def mark_queued(conn: psycopg.Connection, inbox_id: int) -> None:
    """Record that a row left 'received' was handed to the queue after all."""
    with db.translated():
        conn.execute(q("inbox_mark_queued"), {"id": inbox_id})
        if not conn.autocommit:
            conn.commit()


def mark_not_queued(conn: psycopg.Connection, inbox_id: int) -> None:
    """Record that handing the row to the queue failed (it stays for redrive)."""
    with db.translated():
        conn.execute(q("inbox_mark_not_queued"), {"id": inbox_id})
        if not conn.autocommit:
            conn.commit()


@contextlib.contextmanager
def _one_statement(conn: psycopg.Connection) -> Iterator[None]:
    """Run one statement as its own transaction, without BEGIN and COMMIT round trips.

    An idle connection is switched to autocommit locally (no round trip) and back afterwards,
    so the caller's connection is left as it was (the ledger needs autocommit off).
    """
    if conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        yield
        return
    conn.autocommit = True
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):  # a broken connection is the pool's to discard
            conn.autocommit = False


def load(conn: psycopg.Connection, inbox_id: int) -> InboxRow | None:
    """The row, or None when there is no such id. Raises RetryableError when PostgreSQL is down."""
    with db.translated(), _one_statement(conn), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("inbox_load"), {"id": inbox_id}).fetchone()
    return InboxRow(**row) if row else None


def _storable(reason: str | None) -> str | None:
    """A reason PostgreSQL can store: it may quote a field holding a NUL character, which a text refuses."""
    return reason.replace("\x00", "\ufffd") if reason is not None else None


def mark_done(conn: psycopg.Connection, inbox_id: int, outcome: str, reason: str | None) -> str:
    """Mark the row done with its ledger outcome; the first outcome stands. Returns the stored outcome."""
    with db.translated(), _one_statement(conn):
        row = conn.execute(q("inbox_mark_done"), {"id": inbox_id, "outcome": outcome,
                                                  "reason": _storable(reason)}).fetchone()
    return row[0] if row else outcome


def mark_failed(conn: psycopg.Connection, inbox_id: int, reason: str) -> None:
    """Record a permanent error (not retried) with its reason."""
    with db.translated(), _one_statement(conn):
        conn.execute(q("inbox_mark_failed"), {"id": inbox_id, "reason": _storable(reason)})


def mark_dead(conn: psycopg.Connection, inbox_id: int, reason: str) -> None:
    """Record that retries ran out, with the last error."""
    with db.translated(), _one_statement(conn):
        conn.execute(q("inbox_mark_dead"), {"id": inbox_id, "reason": _storable(reason)})


@dataclass(frozen=True)
class Glance:
    """How far a row got, without its body."""

    state: str
    outcome: str | None
    reason: str | None
    pay_order_id: str | None


@dataclass(frozen=True)
class Mark:
    """What processing did to one row: 'done' with the ledger's outcome, or 'failed' with the reason."""

    inbox_id: int
    state: str
    outcome: str | None
    reason: str | None


def glance(conn: psycopg.Connection, inbox_ids: Sequence[int]) -> dict[int, Glance]:
    """The rows' states (one indexed read, no lock), by id; an id with no row is left out.
    Raises RetryableError when PostgreSQL is down."""
    with db.translated(), _one_statement(conn):
        rows = conn.execute(q("inbox_states"), {"ids": list(inbox_ids)}).fetchall()
    return {row[0]: Glance(*row[1:]) for row in rows}


def claim(conn: psycopg.Connection, inbox_ids: Sequence[int], *, wait: bool) -> list[InboxRow]:
    """Lock rows for the caller's transaction (a batch), in id order. wait: for a batch that holds
    one; otherwise the rows another batch holds are left out (and so are ids with no row)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("inbox_claim" if wait else "inbox_claim_unless_locked"), {"ids": list(inbox_ids)})
        return [InboxRow(**r) for r in rows]


def claim_ready(conn: psycopg.Connection, limit: int, *, besides: Sequence[int]) -> list[InboxRow]:
    """Lock up to `limit` rows waiting for the ledger (received or queued), oldest first, that no
    other batch holds, for the caller's transaction; `besides` are the batch's own rows."""
    if limit <= 0:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return [InboxRow(**r) for r in cur.execute(q("inbox_claim_ready"), {"ids": list(besides), "limit": limit})]


def mark_batch(conn: psycopg.Connection, marks: list[Mark]) -> dict[int, str | None]:
    """Record every row's outcome in one statement in the caller's transaction, by the rules of
    mark_done and mark_failed. Returns {id: the stored outcome} of the rows written."""
    if not marks:
        return {}
    rows = conn.execute(q("inbox_mark_batch"), {
        "ids": [m.inbox_id for m in marks], "states": [m.state for m in marks],
        "outcomes": [m.outcome for m in marks], "reasons": [_storable(m.reason) for m in marks],
    }).fetchall()
    return dict(rows)


def list_rows(conn: psycopg.Connection, state: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Rows (without bodies) in id order, optionally of one state."""
    with db.translated(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q("inbox_list"), {"state": state, "limit": limit}).fetchall()


def ids_in_state(conn: psycopg.Connection, state: str) -> list[int]:
    """Every id in a state, in order."""
    with db.translated(), conn.transaction():
        return [r[0] for r in conn.execute(q("inbox_ids_in_state"), {"state": state})]


def backlog(conn: psycopg.Connection) -> dict[str, tuple[int, float]]:
    """{state: (rows, age in seconds of the oldest)} for the states that are not done."""
    with db.translated(), conn.transaction():
        return {state: (int(n), float(age or 0.0)) for state, n, age in conn.execute(q("inbox_backlog"))}


def ping(conn: psycopg.Connection) -> None:
    """A round trip to the database. Raises RetryableError when it is unavailable."""
    with db.translated(), conn.transaction():
        conn.execute(q("inbox_ping")).fetchone()
