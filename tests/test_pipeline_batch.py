"""Inbox rows posted in batches (worker/pipeline/process.py) get exactly what each gets alone.

The same notifies are stored in two databases: one posts them in one batch, the other one at a
time (batch size 1, in the order they arrived). Inbox rows, orders, entries, legs, refundables
and ledger exceptions must be equal row for row. A message whose row another batch did is
acknowledged on one read, and a batch lost to PostgreSQL leaves every row as it was.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
import structlog

from tests.factories import KEY, MCH2, KEY2, MERCHANTS, MERCHANTS_JSON, v1_pay, v3_pay, v3_refund
from tests.fix_db import create_database, drop_database, with_dbname
from tests.pipeline_procs import encode
from tests.test_ledger_concurrency import _run as run_in_processes
from worker.config import Settings
from worker.errors import PermanentError, RetryableError, ValidationError
from worker.iotpay.signature import signed
from worker.pipeline import inbox, process
from worker.pipeline.screening import screen
from worker.sqlfiles import q

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
ONLY_MCH = json.dumps({"10000701": {"keys": [KEY]}})  # the worker does not know MCH2


def reordered(params: dict[str, Any]) -> dict[str, Any]:
    """The same notify with its fields in another order: other bytes, another inbox row."""
    return dict(reversed(list(params.items())))


# (what it is, the notify); stored in this order, so the batch posts them in this order too
STREAM: list[tuple[str, dict[str, Any], bool]] = [
    ("pay", v3_pay("PC1", 1000), False),
    ("refund before its pay", v3_refund("RP2", "PC2", 300), False),
    ("bad field after the ingress", signed(dict(v3_pay("PC3", 500), currency="EUR"), KEY), False),
    ("pay that releases the parked refund", v3_pay("PC2", 800), False),
    ("duplicate (other bytes)", reordered(v3_pay("PC1", 1000)), False),
    ("conflict: same id, other amount", v3_pay("PC1", 1200), False),
    ("refund beyond the refundable", v3_refund("RP1", "PC1", 5000), False),
    ("unknown merchant to the worker", v3_pay("PCX", 700, mch=MCH2, key=KEY2), False),
    ("refused by PostgreSQL (11 digits in cardNum)", v3_pay("PC4", 400, cardNum="12345678901"), False),
    ("pending, then the success", v3_pay("PC5", 600, status=1), False),
    ("the success", v3_pay("PC5", 600), False),
    ("refund of the conflicted pay", v3_refund("RP1b", "PC1", 400), False),
    ("a void of the released pay, not in full", v3_refund("VD2", "PC2", 100, pay_type="void"), False),
    ("v1 form", v1_pay("P06", 2500), True),
    ("refund whose pay never comes", v3_refund("RP9", "PC9", 100), False),
]


def settings_for(db_url: str, batch_size: int) -> Settings:
    return Settings.from_env({"DATABASE_URL": db_url, "IOTPAY_MERCHANTS": ONLY_MCH,
                              "IOTLEDGER_BATCH_SIZE": str(batch_size)})


def store(conn: psycopg.Connection, params: dict[str, Any], form: bool = False) -> int:
    body, ctype = encode(params, form=form)
    return inbox.store(conn, screen(body, ctype, MERCHANTS), content_type=ctype, remote_addr="127.0.0.1", now=NOW).id


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Everything processing writes, without the clock's columns and the serial ids of entries."""
    tables = {
        "inbox": "SELECT id, state, outcome, reason, attempts FROM inbox ORDER BY id",
        "orders": """SELECT pay_order_id, mch_id, pay_type, original_order_id, amount, currency, status, state, reason,
                            gateway_refundable, fingerprint, card_num, source FROM orders ORDER BY pay_order_id""",
        "entries": """SELECT pay_order_id, kind, original_order_id, mch_id, currency, amount, occurred_at
                      FROM journal_entries ORDER BY pay_order_id, kind""",
        "legs": """SELECT e.pay_order_id, a.kind, p.amount FROM postings p JOIN journal_entries e ON e.id = p.entry_id
                   JOIN accounts a ON a.id = p.account_id ORDER BY 1, 2""",
        "balances": "SELECT pay_order_id, amount, refunded, refundable FROM pay_balances ORDER BY 1",
        "exceptions": "SELECT pay_order_id, kind, reason, details, dedup_key FROM ledger_exceptions ORDER BY dedup_key",
        "accounts": "SELECT mch_id, currency, kind FROM accounts ORDER BY 1, 2, 3",
        "awaiting": "SELECT e.pay_order_id FROM entries_awaiting_file f JOIN journal_entries e ON e.id = f.entry_id "
                    "ORDER BY 1",
    }
    out = {name: conn.execute(sql).fetchall() for name, sql in tables.items()}
    conn.rollback()
    return out


@pytest.fixture
def second_db_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """Another fresh, migrated database for the same test: where the notifies are posted alone."""
    name = create_database(pg_server_url, "iotledger_alone", template=template_db)
    yield with_dbname(pg_server_url, name)
    drop_database(pg_server_url, name)


def alone(db_url: str, ids: list[int]) -> dict[int, str]:
    """Post every row one at a time (batch size 1) in arrival order; {id: outcome or error class}."""
    settings = settings_for(db_url, 1)
    got: dict[int, str] = {}
    with psycopg.connect(db_url) as conn:
        for i in ids:
            try:
                got[i] = process.handle(conn, i, settings, batch_size=settings.batch_size).outcome or "?"
            except PermanentError as exc:
                got[i] = type(exc).__name__
    return got


def test_a_batch_gives_each_notify_exactly_what_it_gets_alone(db_url, second_db_url):
    with psycopg.connect(db_url, autocommit=True) as a, psycopg.connect(second_db_url, autocommit=True) as b:
        ids = [store(a, params, form) for _, params, form in STREAM]
        assert [store(b, params, form) for _, params, form in STREAM] == ids
    assert alone(second_db_url, ids)  # the reference, one notify per transaction

    settings = settings_for(db_url, 50)
    with psycopg.connect(db_url) as conn, structlog.testing.capture_logs() as logs:
        handled = process.handle(conn, ids[0], settings, batch_size=settings.batch_size)
        # one message did the whole stream: one transaction, one commit
        assert (handled.inbox_id, handled.outcome) == (ids[0], "posted")
        assert conn.execute("SELECT count(*) FROM inbox WHERE state IN ('received', 'queued')").fetchone() == (0,)
        conn.rollback()
    batched = [e for e in logs if e.get("batch_of") == ids[0]]
    assert sorted(e["inbox_id"] for e in batched) == ids[1:]

    with psycopg.connect(db_url) as batch_conn, psycopg.connect(second_db_url) as alone_conn:
        got, want = snapshot(batch_conn), snapshot(alone_conn)
    for table in want:
        assert got[table] == want[table], table

    # and the stream did what it says, so that the comparison compares something
    outcome = {what: (state, out, reason) for (what, _, _), (_, state, out, reason, _) in zip(STREAM, got["inbox"])}
    assert outcome["pay"][:2] == ("done", "posted")
    assert outcome["refund before its pay"][:2] == ("done", "parked")
    assert outcome["bad field after the ingress"][0] == "failed"
    assert outcome["bad field after the ingress"][2].startswith("currency:")
    assert outcome["duplicate (other bytes)"][:2] == ("done", "duplicate")
    assert outcome["conflict: same id, other amount"][:2] == ("done", "conflict")
    assert outcome["refund beyond the refundable"][:2] == ("done", "rejected")
    assert outcome["unknown merchant to the worker"] == ("failed", None, "mchId: unknown merchant '10000702'")
    assert outcome["refused by PostgreSQL (11 digits in cardNum)"][0] == "failed"
    assert "PostgreSQL refused the post (orders_card_num_check)" in outcome[
        "refused by PostgreSQL (11 digits in cardNum)"][2]
    assert outcome["pending, then the success"][:2] == ("done", "pending")
    assert outcome["the success"][:2] == ("done", "posted")
    assert outcome["refund of the conflicted pay"][:2] == ("done", "posted")
    assert outcome["a void of the released pay, not in full"][:2] == ("done", "rejected")
    assert outcome["v1 form"][:2] == ("done", "posted")
    assert outcome["refund whose pay never comes"][:2] == ("done", "parked")
    entries = {oid for oid, *_ in got["entries"]}
    assert entries == {"PC1", "PC2", "RP2", "PC5", "RP1b", "P06"}
    assert ("PC1", 1000, 400, 600) in got["balances"] and ("PC2", 800, 300, 500) in got["balances"]


def test_a_message_whose_row_another_batch_did_reads_once_and_posts_nothing(db_url):
    settings = settings_for(db_url, 50)
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = store(conn, v3_pay("PC1", 1000))
        second = store(conn, v3_pay("PC2", 2000))
        bad = store(conn, signed(dict(v3_pay("PC3", 500), currency="EUR"), KEY))
    with psycopg.connect(db_url) as conn:
        process.handle(conn, first, settings, batch_size=50)  # the batch takes the other two too
        before = snapshot(conn)
        rows_before = conn.execute("SELECT id, updated_at FROM inbox ORDER BY id").fetchall()
        conn.rollback()
        sent: list[bytes] = []

        class Counting(psycopg.Cursor):
            def execute(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def]
                sent.append(query.encode() if isinstance(query, str) else bytes(query))
                return super().execute(query, params, **kwargs)

        conn.cursor_factory = Counting
        with structlog.testing.capture_logs() as logs:
            handled = process.handle(conn, second, settings, batch_size=50)
            with pytest.raises(process.RowFailed) as failed:
                process.handle(conn, bad, settings, batch_size=50)
        conn.cursor_factory = psycopg.Cursor
        assert (handled.skipped, handled.outcome, handled.pay_order_id) == (True, "posted", "PC2")
        assert str(failed.value).startswith("currency:")  # the row's own reason, as its batch recorded it
        # one indexed read each, nothing else: no transaction, no lock, no posting, no write
        assert sent == [q("inbox_states").encode()] * 2
        assert not any(e["event"] == "ledger.post" for e in logs)
        assert snapshot(conn) == before
        assert conn.execute("SELECT id, updated_at FROM inbox ORDER BY id").fetchall() == rows_before


def test_a_message_whose_row_a_batch_of_its_process_did_is_acknowledged_without_a_read(db_url):
    settings = settings_for(db_url, 50)
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = store(conn, v3_pay("PC1", 1000))
        second = store(conn, v3_pay("PC2", 2000))
        bad = store(conn, signed(dict(v3_pay("PC3", 500), currency="EUR"), KEY))
    finished = process.Finished()
    with psycopg.connect(db_url) as conn:
        process.handle(conn, first, settings, batch_size=50, finished=finished)  # takes the other two
    # the batch committed; its process knows the two rows' outcomes: no connection needed at all
    closed = psycopg.connect(db_url)
    closed.close()
    handled = process.handle(closed, second, settings, batch_size=50, finished=finished)
    assert (handled.inbox_id, handled.skipped, handled.outcome, handled.pay_order_id) == (second, True, "posted", "PC2")
    with pytest.raises(process.RowFailed) as failed:
        process.handle(closed, bad, settings, batch_size=50, finished=finished)
    assert str(failed.value).startswith("currency:")
    # taken once: a second delivery of the same message reads the row
    with pytest.raises(RetryableError):
        process.handle(closed, second, settings, batch_size=50, finished=finished)
    # the message's own row is not remembered (its message is the one being answered)
    with pytest.raises(RetryableError):
        process.handle(closed, first, settings, batch_size=50, finished=finished)


def test_a_row_held_by_a_batch_in_flight_is_waited_for_after_taking_others(db_url):
    settings = settings_for(db_url, 50)
    with psycopg.connect(db_url, autocommit=True) as conn:
        held = store(conn, v3_pay("PC1", 1000))
        others = [store(conn, v3_pay(f"PC{n}", 100 * n)) for n in range(2, 5)]
    result: list[Any] = []
    with psycopg.connect(db_url) as holder, psycopg.connect(db_url) as worker:
        holder.execute("SELECT id FROM inbox WHERE id = %s FOR UPDATE", (held,))  # a batch in flight holds it
        thread = threading.Thread(target=lambda: result.append(process.handle(worker, held, settings, batch_size=50)))
        thread.start()
        with psycopg.connect(db_url, autocommit=True) as look:
            def states() -> list[str]:
                return [s for (s,) in look.execute("SELECT state FROM inbox ORDER BY id")]

            deadline = datetime.now(timezone.utc).timestamp() + 30
            while states()[1:] != ["done"] * 3 and datetime.now(timezone.utc).timestamp() < deadline:
                threading.Event().wait(0.05)
            assert states() == ["queued", "done", "done", "done"]  # ours took the others and waits for its own
            holder.rollback()  # the batch that held it is lost (PostgreSQL down, say): the row is as it was
            thread.join(30)
            assert states() == ["done"] * 4
    assert result[0].outcome == "posted" and not result[0].skipped and others


def test_a_batch_lost_to_postgresql_leaves_every_row_as_it_was(db_url):
    settings = settings_for(db_url, 50)
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = [store(conn, v3_pay(f"PC{n}", 100 * n)) for n in range(1, 6)]
    with psycopg.connect(db_url) as holder, psycopg.connect(db_url) as worker:
        # another post holds PC3's lock; ours gives up waiting (lock_timeout: an OperationalError, like a lost server)
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('PC3', 7201944))")
        worker.execute("SET lock_timeout = '200ms'")
        worker.commit()
        with pytest.raises(RetryableError):
            process.handle(worker, ids[0], settings, batch_size=50)
        holder.rollback()
        rows = worker.execute("SELECT state, outcome, attempts FROM inbox ORDER BY id").fetchall()
        assert rows == [("queued", None, 0)] * 5
        assert worker.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        worker.rollback()
        # the message is retried: now it goes through
        assert process.handle(worker, ids[0], settings, batch_size=50).outcome == "posted"
        assert worker.execute("SELECT count(*) FROM journal_entries").fetchone() == (5,)


def test_a_bad_field_in_its_own_row_is_raised_with_its_field_after_the_batch_commits(db_url):
    settings = settings_for(db_url, 50)
    with psycopg.connect(db_url, autocommit=True) as conn:
        bad = store(conn, signed(dict(v3_pay("PC1", 100), amount="12.50"), KEY))
        good = store(conn, v3_pay("PC2", 200))
    with psycopg.connect(db_url) as conn:
        with pytest.raises(ValidationError) as info:
            process.handle(conn, bad, settings, batch_size=50)
        assert info.value.field == "amount"
        rows = dict(conn.execute("SELECT id, state FROM inbox").fetchall())
        assert rows == {bad: "failed", good: "done"}


def _drain(db_url: str, ids: list[int], seed: int, barrier, out) -> None:
    import random

    from worker.errors import PermanentError as Permanent

    settings = settings_for(db_url, 7)
    random.Random(seed).shuffle(ids)
    handled = skipped = 0
    with psycopg.connect(db_url) as conn:
        barrier.wait(30)
        for i in ids:  # every process gets a message for every row: duplicates of every delivery
            try:
                skipped += process.handle(conn, i, settings, batch_size=settings.batch_size).skipped
                handled += 1
            except Permanent:
                handled += 1
    out.put((handled, skipped))


def test_concurrent_batches_over_the_same_orders_post_each_once(db_url):
    from worker.ledger.checks import run_checks

    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = []
        for n in range(30):
            ids.append(store(conn, v3_refund(f"RPa{n}", f"PC{n}", 300)))  # before its pay: parked, then released
            ids.append(store(conn, v3_pay(f"PC{n}", 1000 + n)))
            ids.append(store(conn, reordered(v3_pay(f"PC{n}", 1000 + n))))  # the same pay again, other bytes
            ids.append(store(conn, v3_refund(f"RPb{n}", f"PC{n}", 500)))
            ids.append(store(conn, reordered(v3_refund(f"RPb{n}", f"PC{n}", 500))))
    results = run_in_processes(db_url, ids, 4, target=_drain)
    assert all(handled == len(ids) for handled, _ in results)
    with psycopg.connect(db_url) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall())
        assert states == {"done": 150}
        # a refund's row says parked when its batch came before its pay's; its pay's post released it
        outcomes = set(conn.execute("SELECT DISTINCT outcome FROM inbox").fetchall())
        assert outcomes <= {("posted",), ("duplicate",), ("parked",)}
        assert conn.execute("SELECT count(*) FROM orders WHERE state <> 'posted'").fetchone() == (0,)
        per_order = conn.execute("SELECT pay_order_id, count(*) FROM journal_entries GROUP BY 1").fetchall()
        assert len(per_order) == 90 and {c for _, c in per_order} == {1}
        refundables = dict(conn.execute("SELECT pay_order_id, refundable FROM pay_balances").fetchall())
        assert refundables == {f"PC{n}": 200 + n for n in range(30)}
        assert conn.execute("SELECT sum(attempts), count(*) FROM inbox").fetchone() == (150, 150)
        assert run_checks(conn).ok


# plain notifies (worker/ledger/batch.py) around the stream: posted as a set, one statement a round
PLAIN: list[tuple[str, dict[str, Any], bool]] = [
    ("plain pay", v3_pay("PP1", 1000), False),
    ("plain pay, refunded twice below", v3_pay("PP2", 900), False),
    ("a refund of a pay posted before the batch", v3_refund("RW1", "PW0", 200), False),
    ("first refund of a pay of this batch", v3_refund("RP2a", "PP2", 300), False),
    ("plain pay, voided below", v3_pay("PP3", 700), False),
    ("second refund of a pay of this batch", v3_refund("RP2b", "PP2", 600), False),
    ("the void in full", v3_refund("VP3", "PP3", 700, pay_type="void"), False),
    ("plain v1 pay", v1_pay("PV1", 2500), True),
    ("a pay stating another refundable", v3_pay("PP4", 800, refundable=500), False),
    ("a refund beyond what the refund before it left", v3_refund("RP2c", "PP2", 1), False),
    ("the first refund again", reordered(v3_refund("RP2a", "PP2", 300)), False),
    ("a pending pay", v3_pay("PP5", 300, status=1), False),
    ("a failed pay", v3_pay("PP6", 400, status=9), False),
    ("a pending pay, its success below", v3_pay("PP7", 500, status=0), False),
    ("the success of the pending pay", v3_pay("PP7", 500), False),
]
WARM = v3_pay("PW0", 5000)  # posted before the batch, so the merchant's accounts are known


def batch_and_alone(db_url: str, second_db_url: str, stream) -> tuple[dict, dict, list[dict]]:
    """Post WARM alone in both databases, then the stream: in one batch in db_url, one at a time in
    the other; return both snapshots and the batch's log lines."""
    with psycopg.connect(db_url, autocommit=True) as a, psycopg.connect(second_db_url, autocommit=True) as b:
        warm = store(a, WARM)
        assert store(b, WARM) == warm
        ids = [store(a, params, form) for _, params, form in stream]
        assert [store(b, params, form) for _, params, form in stream] == ids
    alone(second_db_url, [warm, *ids])
    settings = settings_for(db_url, 50)
    with psycopg.connect(db_url) as conn:
        assert process.handle(conn, warm, settings, batch_size=1).outcome == "posted"
        with structlog.testing.capture_logs() as logs:
            process.handle(conn, ids[0], settings, batch_size=settings.batch_size)
        assert conn.execute("SELECT count(*) FROM inbox WHERE state IN ('received', 'queued')").fetchone() == (0,)
        conn.rollback()
    with psycopg.connect(db_url) as batch_conn, psycopg.connect(second_db_url) as alone_conn:
        return snapshot(batch_conn), snapshot(alone_conn), [e for e in logs if e["event"] == "ledger.batch"]


def test_plain_notifies_posted_as_a_set_get_exactly_what_they_get_alone(db_url, second_db_url):
    stream = [PLAIN[0], *STREAM[:2], *PLAIN[1:4], *STREAM[3:8], *PLAIN[4:], *STREAM[9:]]  # STREAM[8]: see below
    got, want, batches = batch_and_alone(db_url, second_db_url, stream)
    for table in want:
        assert got[table] == want[table], table
    # the plain ones went as a set: PP1, RW1, PP2 and its two refunds that fit (not RP2c, beyond
    # them), PP3 and its void, PP5 and PP6 (recorded pending, failed), PP7's pending (its success
    # comes after, alone), STREAM's first PC1 and PC5's pending (what follows each comes after,
    # one at a time); not PV1 (its USD accounts are new), PP4 (a mismatch to record), nor the rest
    # of STREAM (a refund before its pay, bad fields)
    assert [(b["plain"], b["refused"]) for b in batches] == [(12, False)]
    outcome = {what: out for (what, _, _), (_, _, out, _, _) in zip(stream, got["inbox"][1:])}
    assert [outcome[w] for w, _, _ in PLAIN] == ["posted"] * 8 + ["posted", "rejected", "duplicate", "pending",
                                                                   "failed", "pending", "posted"]
    assert ("PP2", 900, 900, 0) in got["balances"] and ("PP3", 700, 700, 0) in got["balances"]
    assert ("PW0", 5000, 200, 4800) in got["balances"]
    assert [k for oid, k, *_ in got["exceptions"] if oid == "PP4"] == ["refundable_mismatch"]


def test_a_plain_set_postgresql_refuses_is_posted_one_at_a_time(db_url, second_db_url):
    # the 11-digit cardNum is plain to Python; PostgreSQL refuses the set, and each is posted alone
    stream = [PLAIN[0], STREAM[8], PLAIN[1], PLAIN[3]]
    got, want, batches = batch_and_alone(db_url, second_db_url, stream)
    for table in want:
        assert got[table] == want[table], table
    assert [(b["plain"], b["refused"]) for b in batches] == [(0, True)]
    assert [state for _, state, *_ in got["inbox"][1:]] == ["done", "failed", "done", "done"]
