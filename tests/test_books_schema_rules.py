"""The books' rules (sql/010_books.sql) reached with plain SQL: each test writes exactly the row a rule forbids,
bypassing the Python code, and names the constraint or trigger that refused it; each has a twin that must be
accepted, so a rule made stricter is caught as well as one made weaker."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from tests.books_helpers import BOOKS_MERCHANTS, TORONTO, settlement_csv
from tests.factories import MCH, v3_pay
from tests.ledger_helpers import post
from tests.test_ledger_schema_rules import entry as pay_entry
from tests.test_ledger_schema_rules import leg, posted, refused
from worker.books.settlements import import_settlements

SHA = "0" * 64


def accounts(conn: psycopg.Connection, mch: str = MCH, currency: str = "CAD") -> dict[str, int]:
    conn.execute("INSERT INTO accounts (mch_id, currency, kind) SELECT %s, %s, k FROM unnest(ARRAY['clearing', "
                 "'sales', 'refunds', 'fees', 'in_transit', 'bank']) k ON CONFLICT DO NOTHING", (mch, currency))
    return dict(conn.execute("SELECT kind, id FROM accounts WHERE mch_id = %s AND currency = %s",
                             (mch, currency)).fetchall())


def book_entry(conn: psycopg.Connection, kind: str, key: str, amount: int, *, mch: str = MCH,
               currency: str = "CAD") -> int:
    return conn.execute("INSERT INTO journal_entries (kind, doc_key, mch_id, currency, amount, occurred_at) "
                        "VALUES (%s, %s, %s, %s, %s, now()) RETURNING id", (kind, key, mch, currency, amount)).fetchone()[0]


def an_import(conn: psycopg.Connection, source: str = "settlement", fmt: str = "csv") -> int:
    return conn.execute("INSERT INTO book_imports (source, format, file_name, file_sha256, rows_read, rows_new) "
                        "VALUES (%s, %s, 'f.csv', %s, 1, 1) RETURNING id", (source, fmt, SHA)).fetchone()[0]


def batch(conn: psycopg.Connection, batch_id: str, payout: int, payout_entry: int | None, *,
          stated_net: int | None = None) -> None:
    conn.execute("INSERT INTO settlement_batches (batch_id, mch_id, currency, settlement_date, stated_net, "
                 "payout_amount, payout_entry_id, import_id, total_line_no) "
                 "VALUES (%s, %s, 'CAD', '2026-11-02', %s, %s, %s, %s, %s)",
                 (batch_id, MCH, stated_net, payout, payout_entry, an_import(conn), 9 if stated_net is not None else None))


def line(conn: psycopg.Connection, batch_id: str, pay_order_id: str, gross: int, fee: int, fee_entry: int | None) -> None:
    conn.execute("INSERT INTO settlement_lines (batch_id, pay_order_id, mch_id, currency, line_no, gross, fee, net, "
                 "fee_reported, fee_source, fee_entry_id) VALUES (%s, %s, %s, 'CAD', 2, %s, %s, %s, %s, 'report', %s)",
                 (batch_id, pay_order_id, MCH, gross, fee, gross - fee, fee, fee_entry))


def bank_txn(conn: psycopg.Connection, amount: int) -> int:
    return conn.execute("INSERT INTO bank_transactions (account, txn_id, posted_on, amount, currency, import_id) "
                        "VALUES ('A1', 'T1', '2026-11-03', %s, 'CAD', %s) RETURNING id",
                        (amount, an_import(conn, "bank", "ofx"))).fetchone()[0]


def fee_line(conn: psycopg.Connection, fees_leg: int = 300, clearing_leg: int = -300, line_fee: int = 300) -> int:
    """A batch B1 with one line whose fee entry has these legs, and its payout (balanced, right); not committed."""
    acc = accounts(conn)
    fee = book_entry(conn, "fee", '["fee","B1","P1"]', max(fees_leg, -clearing_leg))
    leg(conn, fee, acc["fees"], fees_leg)
    leg(conn, fee, acc["clearing"], clearing_leg)
    payout = book_entry(conn, "payout", '["payout","B1"]', 10000 - line_fee)
    leg(conn, payout, acc["in_transit"], 10000 - line_fee)
    leg(conn, payout, acc["clearing"], -(10000 - line_fee))
    batch(conn, "B1", 10000 - line_fee, payout)
    line(conn, "B1", "P1", 10000, line_fee, fee)
    return fee


# ------------------------------------------------------------------------------------------- accepted twins
def test_a_documented_balanced_fee_payout_and_deposit_are_accepted(conn):
    fee_line(conn)
    acc = accounts(conn)
    tid = bank_txn(conn, 9700)
    dep = book_entry(conn, "deposit", '["deposit","A1","T1"]', 9700)
    leg(conn, dep, acc["bank"], 9700)
    leg(conn, dep, acc["in_transit"], -9700)
    conn.execute("INSERT INTO bank_deposits (entry_id, bank_transaction_id, mch_id, currency) VALUES (%s, %s, %s, 'CAD')",
                 (dep, tid, MCH))
    conn.commit()
    assert conn.execute("SELECT kind, count(*) FROM journal_entries GROUP BY kind ORDER BY kind").fetchall() == [
        ("deposit", 1), ("fee", 1), ("payout", 1)]


# ------------------------------------------------------------------------------------------- balance
@pytest.mark.parametrize("kind", ["fee", "payout", "deposit"])
def test_an_unbalanced_fee_payout_or_deposit_is_refused_at_commit(conn, kind):
    acc = accounts(conn)
    if kind == "fee":
        fee_line(conn, fees_leg=300, clearing_leg=-299)
    elif kind == "payout":
        fee = book_entry(conn, "fee", '["fee","B1","P1"]', 300)
        leg(conn, fee, acc["fees"], 300)
        leg(conn, fee, acc["clearing"], -300)
        payout = book_entry(conn, "payout", '["payout","B1"]', 9700)
        leg(conn, payout, acc["in_transit"], 9700)
        leg(conn, payout, acc["clearing"], -9701)
        batch(conn, "B1", 9700, payout)
        line(conn, "B1", "P1", 10000, 300, fee)
    else:
        tid = bank_txn(conn, 9700)
        dep = book_entry(conn, "deposit", '["deposit","A1","T1"]', 9700)
        leg(conn, dep, acc["bank"], 9700)
        leg(conn, dep, acc["in_transit"], -9600)
        conn.execute("INSERT INTO bank_deposits (entry_id, bank_transaction_id, mch_id, currency) "
                     "VALUES (%s, %s, %s, 'CAD')", (dep, tid, MCH))
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "entry_balanced"
    assert conn.execute("SELECT count(*) FROM journal_entries").fetchone()[0] == 0


# ------------------------------------------------------------------------------------------- append-only
@pytest.fixture
def imported(conn: psycopg.Connection, tmp_path: Path) -> psycopg.Connection:
    """A settlement report imported through the code: fee entries, a payout, a batch and its lines."""
    report = settlement_csv(tmp_path / "s.csv", [("B1", "2026-11-02", MCH, "CAD", "P1", "100.00", "3.20", "96.80"),
                                                 ("B1", "2026-11-02", MCH, "CAD", "P2", "50.00", "1.75", "48.25")])
    import_settlements(conn, report, merchants=BOOKS_MERCHANTS, tz=TORONTO)
    return conn


@pytest.mark.parametrize("statement", [
    "UPDATE journal_entries SET amount = amount + 1 WHERE kind = 'fee'",
    "UPDATE journal_entries SET doc_key = doc_key || 'x' WHERE kind = 'payout'",
    "DELETE FROM journal_entries WHERE kind = 'payout'",
    "UPDATE postings SET amount = amount * 2 WHERE entry_id IN (SELECT id FROM journal_entries WHERE kind = 'fee')",
    "DELETE FROM postings WHERE entry_id IN (SELECT id FROM journal_entries WHERE kind = 'payout')",
    "UPDATE settlement_lines SET fee = 0",
    "DELETE FROM settlement_lines",
    "UPDATE settlement_batches SET payout_amount = 1",
    "DELETE FROM settlement_batches",
    "UPDATE book_imports SET file_name = 'other.csv'",
    "TRUNCATE settlement_lines",
])
def test_an_imported_entry_or_document_cannot_be_edited(imported, statement):
    conn = imported
    before = conn.execute("SELECT count(*), sum(amount) FROM postings").fetchone()
    exc = refused(conn, errors.RestrictViolation, lambda: conn.execute(statement))
    assert "append-only" in str(exc)
    assert conn.execute("SELECT count(*), sum(amount) FROM postings").fetchone() == before


def test_bank_transactions_deposits_and_adjustments_are_append_only(conn):
    fee_line(conn)
    acc = accounts(conn)
    tid = bank_txn(conn, 9700)
    dep = book_entry(conn, "deposit", '["deposit","A1","T1"]', 9700)
    leg(conn, dep, acc["bank"], 9700)
    leg(conn, dep, acc["in_transit"], -9700)
    conn.execute("INSERT INTO bank_deposits (entry_id, bank_transaction_id, mch_id, currency) VALUES (%s, %s, %s, 'CAD')",
                 (dep, tid, MCH))
    adj = book_entry(conn, "adjustment", '["adjustment","k1"]', 5)
    leg(conn, adj, acc["fees"], 5)
    leg(conn, adj, acc["clearing"], -5)
    conn.execute("INSERT INTO adjustments (entry_id, mch_id, currency, debit_account, credit_account, amount, reason, "
                 "author, key) VALUES (%s, %s, 'CAD', 'fees', 'clearing', 5, 'fee short', 'alice', 'k1')", (adj, MCH))
    conn.commit()
    for statement in ("UPDATE bank_transactions SET amount = 1", "DELETE FROM bank_deposits",
                      "UPDATE adjustments SET reason = 'nothing'", "DELETE FROM adjustments"):
        refused(conn, errors.RestrictViolation, lambda s=statement: conn.execute(s))


# ------------------------------------------------------------------------------------------- documents
def test_a_fee_entry_without_its_settlement_line_is_refused(conn):
    acc = accounts(conn)
    fee = book_entry(conn, "fee", '["fee","B9","P9"]', 300)
    leg(conn, fee, acc["fees"], 300)
    leg(conn, fee, acc["clearing"], -300)
    exc = refused(conn, errors.ForeignKeyViolation, conn.commit)
    assert exc.diag.constraint_name == "books_entry_documented"


@pytest.mark.parametrize(("fees_leg", "line_fee"), [(290, 300), (300, 290)])
def test_a_line_whose_fee_entry_posts_another_amount_is_refused(conn, fees_leg, line_fee):
    fee_line(conn, fees_leg=fees_leg, clearing_leg=-fees_leg, line_fee=line_fee)
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "books_entry_matches_document"


def test_a_batch_must_pay_out_its_net(conn):
    acc = accounts(conn)
    payout = book_entry(conn, "payout", '["payout","B1"]', 9800)
    leg(conn, payout, acc["in_transit"], 9800)
    leg(conn, payout, acc["clearing"], -9800)
    batch(conn, "B1", 9800, payout)  # no total row: its net is its lines' net, 10000
    line(conn, "B1", "P1", 10000, 0, None)
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "books_batch_pays_its_net"


def test_a_deposit_must_put_its_bank_transaction_in_the_bank(conn):
    acc = accounts(conn)
    tid = bank_txn(conn, 9700)
    dep = book_entry(conn, "deposit", '["deposit","A1","T1"]', 9600)
    leg(conn, dep, acc["bank"], 9600)
    leg(conn, dep, acc["in_transit"], -9600)
    conn.execute("INSERT INTO bank_deposits (entry_id, bank_transaction_id, mch_id, currency) VALUES (%s, %s, %s, 'CAD')",
                 (dep, tid, MCH))
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "books_entry_matches_document"


def test_a_line_pointing_at_a_payout_entry_is_refused(conn):
    acc = accounts(conn)
    payout = book_entry(conn, "payout", '["payout","B1"]', 9700)
    leg(conn, payout, acc["in_transit"], 9700)
    leg(conn, payout, acc["clearing"], -9700)
    batch(conn, "B1", 9700, payout)
    line(conn, "B1", "P1", 10000, 300, payout)
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "books_entry_matches_document"


def test_an_adjustment_needs_a_reason_an_author_and_its_own_accounts(conn):
    acc = accounts(conn)
    adj = book_entry(conn, "adjustment", '["adjustment","k1"]', 5)
    leg(conn, adj, acc["fees"], 5)
    leg(conn, adj, acc["clearing"], -5)
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(
        "INSERT INTO adjustments (entry_id, mch_id, currency, debit_account, credit_account, amount, reason, author, key) "
        "VALUES (%s, %s, 'CAD', 'fees', 'clearing', 5, '  ', 'alice', 'k1')", (adj, MCH)))
    assert exc.diag.constraint_name == "adjustments_reason_check"
    acc = accounts(conn)
    adj = book_entry(conn, "adjustment", '["adjustment","k1"]', 5)
    leg(conn, adj, acc["fees"], 5)
    leg(conn, adj, acc["clearing"], -5)
    conn.execute("INSERT INTO adjustments (entry_id, mch_id, currency, debit_account, credit_account, amount, reason, "
                 "author, key) VALUES (%s, %s, 'CAD', 'fees', 'in_transit', 5, 'why', 'alice', 'k1')", (adj, MCH))
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "books_entry_matches_document"
    acc = accounts(conn)
    adj = book_entry(conn, "adjustment", '["adjustment","k1"]', 5)
    exc = refused(conn, errors.CheckViolation, lambda: leg(conn, adj, acc["sales"], 5))
    assert exc.diag.constraint_name == "entry_leg_accounts"


# ------------------------------------------------------------------------------------------- accounts and keys
@pytest.mark.parametrize(("kind", "account"), [("fee", "sales"), ("fee", "bank"), ("payout", "fees"),
                                               ("deposit", "clearing"), ("adjustment", "refunds")])
def test_a_books_entry_posts_only_to_its_accounts(conn, kind, account):
    acc = accounts(conn)
    eid = book_entry(conn, kind, f'["{kind}","X"]', 100)
    exc = refused(conn, errors.CheckViolation, lambda: leg(conn, eid, acc[account], 100))
    assert exc.diag.constraint_name == "entry_leg_accounts"


@pytest.mark.parametrize("account", ["fees", "in_transit", "bank"])
def test_a_pay_never_posts_to_the_books_accounts(conn, account):
    acc = accounts(conn)
    eid = pay_entry(conn, "PC1", "pay", 100)
    exc = refused(conn, errors.CheckViolation, lambda: leg(conn, eid, acc[account], 100))
    assert exc.diag.constraint_name == "entry_leg_accounts"


def test_a_books_entry_has_one_debit_and_one_credit(conn):
    acc = accounts(conn)
    fee = book_entry(conn, "fee", '["fee","B1","P1"]', 300)
    leg(conn, fee, acc["fees"], 300)
    exc = refused(conn, errors.CheckViolation, lambda: leg(conn, fee, acc["fees"], -300))
    assert exc.diag.constraint_name == "entry_leg_accounts"  # two legs on one account
    fee_line(conn)
    conn.commit()
    acc = accounts(conn)
    fee = conn.execute("SELECT id FROM journal_entries WHERE kind = 'fee'").fetchone()[0]
    # a balanced pair of legs added later to a committed fee entry
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(
        "INSERT INTO postings (entry_id, account_id, mch_id, currency, amount) VALUES (%s, %s, %s, 'CAD', 50), "
        "(%s, %s, %s, 'CAD', -50)", (fee, acc["fees"], MCH, fee, acc["clearing"], MCH)))
    assert exc.diag.constraint_name == "entry_leg_accounts"


@pytest.mark.parametrize(("kind", "pay_order_id", "doc_key"), [
    ("fee", "PC1", '["fee","B1","P1"]'), ("fee", None, None), ("payout", None, ""), ("pay", "PC1", '["pay"]'),
    ("pay", None, None)])
def test_an_entry_is_keyed_by_its_order_or_by_its_document_never_both(conn, kind, pay_order_id, doc_key):
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(
        "INSERT INTO journal_entries (kind, pay_order_id, doc_key, mch_id, currency, amount, occurred_at) "
        "VALUES (%s, %s, %s, %s, 'CAD', 100, now())", (kind, pay_order_id, doc_key, MCH)))
    assert exc.diag.constraint_name == "journal_entries_keyed"


def test_one_entry_per_document_line(conn):
    fee_line(conn)
    conn.commit()
    exc = refused(conn, errors.UniqueViolation, lambda: book_entry(conn, "fee", '["fee","B1","P1"]', 300))
    assert exc.diag.constraint_name == "journal_entries_one_per_document_line"


def test_a_books_entry_is_corrected_by_an_adjustment_not_a_reversal(conn):
    fee = fee_line(conn)
    conn.commit()
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(
        "INSERT INTO journal_entries (pay_order_id, kind, mch_id, currency, amount, reverses_entry_id, occurred_at) "
        "VALUES ('PC1', 'reversal', %s, 'CAD', 300, %s, now())", (MCH, fee)))
    assert exc.diag.constraint_name == "reversal_of_transaction"
    pay = posted(conn, "PC1", "pay", 1000)  # the twin: a pay is still reversed as before
    conn.execute("INSERT INTO journal_entries (pay_order_id, kind, mch_id, currency, amount, reverses_entry_id, "
                 "occurred_at) VALUES ('PC1', 'reversal', %s, 'CAD', 1000, %s, now())", (MCH, pay))
    conn.rollback()


def test_only_the_gateways_transactions_await_a_settlement_file(imported):
    conn = imported
    post(conn, v3_pay("PC1", 1000))
    kinds = conn.execute("SELECT je.kind, count(*) FROM entries_awaiting_file a JOIN journal_entries je "
                         "ON je.id = a.entry_id GROUP BY je.kind").fetchall()
    assert kinds == [("pay", 1)]
    assert conn.execute("SELECT count(*) FROM journal_entries WHERE kind IN ('fee', 'payout')").fetchone()[0] == 3
