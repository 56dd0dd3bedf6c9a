"""Every rule of the schema reached directly: plain SQL writes exactly the row a rule forbids, bypassing
the Python code, and the test names the constraint or trigger that refused it. Each has a twin at the
boundary that must be accepted, so a rule made stricter is caught as well as a rule made weaker.

sql/001_ledger.sql: CHECKs, the balance constraint triggers, the refund/void/reversal trigger, the
pay_balances guard, append-only triggers. sql/002-004: the CHECKs that guard money or state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.factories import MCH, MCH2

LEGS = {  # kind -> (debited account, credited account)
    "pay": ("clearing", "sales"),
    "refund": ("refunds", "clearing"),
    "void": ("sales", "clearing"),
}


# ------------------------------------------------------------------------------------------- helpers
def accounts(conn: psycopg.Connection, mch: str = MCH, currency: str = "CAD") -> dict[str, int]:
    conn.execute("INSERT INTO accounts (mch_id, currency, kind) SELECT %s, %s, k "
                 "FROM unnest(ARRAY['clearing','sales','refunds']) k ON CONFLICT DO NOTHING", (mch, currency))
    return dict(conn.execute("SELECT kind, id FROM accounts WHERE mch_id = %s AND currency = %s",
                             (mch, currency)).fetchall())


def entry(conn: psycopg.Connection, order_id: str, kind: str, amount: int, original: str | None = None, *,
          mch: str = MCH, currency: str = "CAD", reverses: int | None = None) -> int:
    """Insert one journal entry row (no legs) and return its id."""
    return conn.execute(
        "INSERT INTO journal_entries (pay_order_id, kind, original_order_id, mch_id, currency, amount, "
        "reverses_entry_id, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now()) RETURNING id",
        (order_id, kind, original, mch, currency, amount, reverses)).fetchone()[0]


def leg(conn: psycopg.Connection, entry_id: int, account_id: int, amount: int, *, mch: str = MCH,
        currency: str = "CAD") -> None:
    conn.execute("INSERT INTO postings (entry_id, account_id, mch_id, currency, amount) VALUES (%s, %s, %s, %s, %s)",
                 (entry_id, account_id, mch, currency, amount))


def posted(conn: psycopg.Connection, order_id: str, kind: str, amount: int, original: str | None = None, *,
           mch: str = MCH, currency: str = "CAD") -> int:
    """A balanced entry with its two legs, committed; returns the entry id."""
    acc = accounts(conn, mch, currency)
    eid = entry(conn, order_id, kind, amount, original, mch=mch, currency=currency)
    dr, cr = LEGS[kind]
    leg(conn, eid, acc[dr], amount, mch=mch, currency=currency)
    leg(conn, eid, acc[cr], -amount, mch=mch, currency=currency)
    conn.commit()
    return eid


def reversal(conn: psycopg.Connection, of: int, *, amount: int | None = None, mch: str | None = None,
             currency: str | None = None, order_id: str | None = None) -> int:
    """Insert a reversal of entry `of` (its mirror unless told otherwise) with mirrored legs; not committed."""
    row = conn.execute("SELECT pay_order_id, mch_id, currency, amount FROM journal_entries WHERE id = %s",
                       (of,)).fetchone()
    order_id, mch, currency, amount = (order_id or row[0], mch or row[1], currency or row[2], amount or row[3])
    eid = entry(conn, order_id, "reversal", amount, mch=mch, currency=currency, reverses=of)
    for account_id, leg_amount in conn.execute(
            "SELECT account_id, amount FROM postings WHERE entry_id = %s ORDER BY id", (of,)).fetchall():
        leg(conn, eid, account_id, -leg_amount, mch=mch, currency=currency)
    return eid


def balance(conn: psycopg.Connection, pay: str) -> tuple[int, int, int] | None:
    row = conn.execute("SELECT amount, refunded, refundable FROM pay_balances WHERE pay_order_id = %s",
                       (pay,)).fetchone()
    return tuple(row) if row else None


def refused(conn: psycopg.Connection, error: type[Exception], action: Callable[[], Any]) -> Exception:
    """Run action (which must raise `error`), roll back, return the exception."""
    with pytest.raises(error) as exc:
        action()
    conn.rollback()
    return exc.value


def n_rows(conn: psycopg.Connection, table: str) -> int:
    n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # table names are literals of this file
    conn.rollback()
    return n


# ------------------------------------------------------------------------------------------- balance
@pytest.mark.parametrize(("debit", "credit", "total"), [(100, -99, 1), (99, -100, -1)])
def test_an_entry_off_by_one_cent_either_way_fails_at_commit(conn, debit, credit, total):
    acc = accounts(conn)
    eid = entry(conn, "PC1", "pay", 100)
    leg(conn, eid, acc["clearing"], debit)
    leg(conn, eid, acc["sales"], credit)
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "entry_balanced"
    assert f"journal entry {eid} does not balance: 2 leg(s) summing to {total}" in str(exc)
    assert n_rows(conn, "journal_entries") == 0 and n_rows(conn, "postings") == 0


def test_an_entry_with_three_legs_summing_to_zero_commits(conn):
    acc = accounts(conn)
    eid = entry(conn, "PC1", "pay", 100)
    leg(conn, eid, acc["clearing"], 100)
    leg(conn, eid, acc["sales"], -60)
    leg(conn, eid, acc["sales"], -40)
    conn.commit()
    assert conn.execute("SELECT count(*), sum(amount) FROM postings WHERE entry_id = %s", (eid,)).fetchone() == (3, 0)


@pytest.mark.parametrize("legs", [[], [100]], ids=["no-leg", "one-leg"])
def test_an_entry_with_fewer_than_two_legs_fails_at_commit(conn, legs):
    acc = accounts(conn)
    eid = entry(conn, "PC1", "pay", 100)
    for amount in legs:
        leg(conn, eid, acc["clearing"], amount)
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "entry_balanced"
    assert f"{len(legs)} leg(s)" in str(exc)


def test_a_leg_added_later_to_a_committed_entry_fails_at_commit(conn):
    """Only posting_balanced fires here (entry_balanced fires on the entry's INSERT, long committed)."""
    eid = posted(conn, "PC1", "pay", 100)
    acc = accounts(conn)
    leg(conn, eid, acc["clearing"], 5)  # accepted for now: the check is deferred to commit
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "entry_balanced"
    assert f"journal entry {eid} does not balance: 3 leg(s) summing to 5" in str(exc)
    assert conn.execute("SELECT count(*), sum(amount) FROM postings WHERE entry_id = %s", (eid,)).fetchone() == (2, 0)


def test_a_leg_pointing_at_another_merchants_entry_is_refused(conn):
    acc2 = accounts(conn, MCH2)
    eid = entry(conn, "PC1", "pay", 100)
    exc = refused(conn, errors.ForeignKeyViolation, lambda: leg(conn, eid, acc2["clearing"], 100, mch=MCH2))
    assert exc.diag.constraint_name == "postings_entry_id_mch_id_currency_fkey"


def test_cad_and_usd_cannot_meet_through_an_account(conn):
    usd = accounts(conn, currency="USD")
    eid = entry(conn, "PC1", "pay", 100)
    exc = refused(conn, errors.ForeignKeyViolation, lambda: leg(conn, eid, usd["sales"], -100))
    assert exc.diag.constraint_name == "postings_account_id_mch_id_currency_fkey"


# ------------------------------------------------------------------------------------------- amounts
@pytest.mark.parametrize("amount", [0, -1])
def test_an_entry_amount_of_zero_or_less_is_refused(conn, amount):
    accounts(conn)
    exc = refused(conn, errors.CheckViolation, lambda: entry(conn, "PC1", "pay", amount))
    assert exc.diag.constraint_name == "journal_entries_amount_check"


def test_an_entry_of_one_cent_is_accepted(conn):
    posted(conn, "PC1", "pay", 1)
    assert balance(conn, "PC1") == (1, 0, 1)


def test_a_leg_of_zero_is_refused_and_one_cent_is_accepted(conn):
    acc = accounts(conn)
    eid = entry(conn, "PC1", "pay", 1)
    exc = refused(conn, errors.CheckViolation, lambda: leg(conn, eid, acc["clearing"], 0))
    assert exc.diag.constraint_name == "postings_amount_check"
    posted(conn, "PC1", "pay", 1)
    assert conn.execute("SELECT amount FROM postings ORDER BY id").fetchall() == [(1,), (-1,)]


# ------------------------------------------------------------------------------------------- refunds and voids
@pytest.mark.parametrize("kind", ["refund", "void"])
def test_a_refund_or_void_without_a_posted_original_is_refused(conn, kind):
    accounts(conn)
    exc = refused(conn, errors.ForeignKeyViolation, lambda: entry(conn, "RP1", kind, 10, "PC404"))
    assert exc.diag.constraint_name == "refund_needs_original"


@pytest.mark.parametrize(("mch", "currency"), [(MCH2, "CAD"), (MCH, "USD")], ids=["merchant", "currency"])
def test_a_refund_for_another_merchant_or_currency_is_refused(conn, mch, currency):
    posted(conn, "PC1", "pay", 1000)
    accounts(conn, mch, currency)
    exc = refused(conn, errors.CheckViolation,
                  lambda: entry(conn, "RP1", "refund", 10, "PC1", mch=mch, currency=currency))
    assert exc.diag.constraint_name == "refund_same_currency"
    assert balance(conn, "PC1") == (1000, 0, 1000)


def test_a_refund_of_the_same_merchant_and_currency_draws_the_refundable_down(conn):
    posted(conn, "PC1", "pay", 1000)
    posted(conn, "RP1", "refund", 300, "PC1")
    assert balance(conn, "PC1") == (1000, 300, 700)
    posted(conn, "RP2", "refund", 700, "PC1")  # exactly what is left: accepted
    assert balance(conn, "PC1") == (1000, 1000, 0)


def test_a_refund_beyond_the_refundable_is_refused_by_refunded_within_amount(conn):
    posted(conn, "PC1", "pay", 1000)
    posted(conn, "RP1", "refund", 300, "PC1")
    exc = refused(conn, errors.CheckViolation, lambda: entry(conn, "RP2", "refund", 701, "PC1"))
    assert exc.diag.constraint_name == "refunded_within_amount"
    assert balance(conn, "PC1") == (1000, 300, 700)


@pytest.mark.parametrize("amount", [999, 1001])
def test_a_partial_or_excess_void_is_refused(conn, amount):
    posted(conn, "PC1", "pay", 1000)
    exc = refused(conn, errors.CheckViolation, lambda: entry(conn, "RP1", "void", amount, "PC1"))
    assert exc.diag.constraint_name == "void_in_full"


def test_a_void_in_full_is_accepted(conn):
    posted(conn, "PC1", "pay", 1000)
    posted(conn, "RP1", "void", 1000, "PC1")
    assert balance(conn, "PC1") == (1000, 1000, 0)


@pytest.mark.parametrize("amount", [1000, 900])
def test_a_void_after_a_partial_refund_is_refused(conn, amount):
    posted(conn, "PC1", "pay", 1000)
    posted(conn, "RP1", "refund", 100, "PC1")
    exc = refused(conn, errors.CheckViolation, lambda: entry(conn, "RP2", "void", amount, "PC1"))
    assert exc.diag.constraint_name == "void_in_full"
    assert balance(conn, "PC1") == (1000, 100, 900)


# ------------------------------------------------------------------------------------------- reversals
@pytest.mark.parametrize("change", [{"amount": 999}, {"amount": 1001}, {"mch": MCH2}, {"currency": "USD"},
                                    {"order_id": "PC2"}], ids=lambda c: next(iter(c)) + str(next(iter(c.values()))))
def test_a_reversal_that_does_not_mirror_its_entry_is_refused(conn, change):
    pay = posted(conn, "PC1", "pay", 1000)
    accounts(conn, change.get("mch", MCH), change.get("currency", "CAD"))
    conn.commit()
    exc = refused(conn, errors.CheckViolation, lambda: entry(
        conn, change.get("order_id", "PC1"), "reversal", change.get("amount", 1000), mch=change.get("mch", MCH),
        currency=change.get("currency", "CAD"), reverses=pay))
    assert exc.diag.constraint_name == "reversal_mirrors"
    assert balance(conn, "PC1") == (1000, 0, 1000)


def test_a_mirrored_reversal_of_a_pay_leaves_nothing_refundable(conn):
    pay = posted(conn, "PC1", "pay", 1000)
    reversal(conn, pay)
    conn.commit()
    assert balance(conn, "PC1") == (1000, 1000, 0)
    assert conn.execute("SELECT coalesce(sum(amount), 0) FROM postings p JOIN accounts a ON a.id = p.account_id "
                        "WHERE a.kind = 'clearing'").fetchone() == (0,)


@pytest.mark.parametrize("first", ["pay", "refund"])
def test_a_reversal_of_a_reversal_is_refused(conn, first):
    pay = posted(conn, "PC1", "pay", 1000)
    refund = posted(conn, "RP1", "refund", 100, "PC1")
    if first == "refund":
        rev = reversal(conn, refund)
    else:
        reversal(conn, refund)  # the refund goes first, then the pay may be reversed
        conn.commit()
        rev = reversal(conn, pay)
    conn.commit()
    exc = refused(conn, errors.CheckViolation, lambda: reversal(conn, rev))
    assert exc.diag.constraint_name == "reversal_mirrors"


def test_reversing_a_pay_that_has_refunds_is_refused_until_they_are_reversed(conn):
    pay = posted(conn, "PC1", "pay", 1000)
    refund = posted(conn, "RP1", "refund", 100, "PC1")
    exc = refused(conn, errors.CheckViolation, lambda: reversal(conn, pay))
    assert exc.diag.constraint_name == "reversal_order"
    assert balance(conn, "PC1") == (1000, 100, 900)
    reversal(conn, refund)
    conn.commit()
    assert balance(conn, "PC1") == (1000, 0, 1000)  # the refund's amount is refundable again
    reversal(conn, pay)
    conn.commit()
    assert balance(conn, "PC1") == (1000, 1000, 0)


def test_an_entry_is_reversed_at_most_once(conn):
    posted(conn, "PC1", "pay", 1000)
    refund = posted(conn, "RP1", "refund", 100, "PC1")
    reversal(conn, refund)
    conn.commit()
    exc = refused(conn, errors.UniqueViolation, lambda: reversal(conn, refund))
    assert exc.diag.constraint_name == "journal_entries_reverses_entry_id_key"
    assert balance(conn, "PC1") == (1000, 0, 1000)


def test_one_entry_per_order_id_but_a_reversal_may_share_it(conn):
    pay = posted(conn, "PC1", "pay", 1000)
    exc = refused(conn, errors.UniqueViolation, lambda: posted(conn, "PC1", "pay", 1000))
    assert exc.diag.constraint_name == "journal_entries_one_per_order"
    reversal(conn, pay)
    conn.commit()
    assert conn.execute("SELECT kind FROM journal_entries WHERE pay_order_id = 'PC1' ORDER BY id").fetchall() == [
        ("pay",), ("reversal",)]


@pytest.mark.parametrize(("kind", "original", "reverses", "constraint"), [
    ("refund", None, None, "journal_entries_check"),
    ("void", None, None, "journal_entries_check"),
    ("pay", "PC0", None, "journal_entries_check"),
    ("reversal", None, None, "journal_entries_check1"),
    ("pay", None, "self", "journal_entries_check1"),
    ("chargeback", None, None, "journal_entries_kind_check"),
])
def test_entry_kind_original_and_reversal_must_agree(conn, kind, original, reverses, constraint):
    pay = posted(conn, "PC0", "pay", 100)
    exc = refused(conn, errors.CheckViolation, lambda: entry(
        conn, "X1", kind, 100, original, reverses=pay if reverses else None))
    assert exc.diag.constraint_name == constraint


# ------------------------------------------------------------------------------------------- pay_balances
@pytest.mark.parametrize(("statement", "op"), [
    ("INSERT INTO pay_balances (pay_order_id, entry_id, mch_id, currency, amount) "
     "SELECT 'PC9', id, mch_id, currency, 5 FROM journal_entries LIMIT 1", "INSERT"),
    ("UPDATE pay_balances SET refunded = 1", "UPDATE"),
    ("DELETE FROM pay_balances", "DELETE"),
])
def test_pay_balances_change_only_through_the_journal(conn, statement, op):
    posted(conn, "PC1", "pay", 1000)
    exc = refused(conn, errors.RestrictViolation, lambda: conn.execute(statement))
    assert f"pay_balances is maintained by the journal: {op} is not allowed" in str(exc)
    assert balance(conn, "PC1") == (1000, 0, 1000) and n_rows(conn, "pay_balances") == 1


@pytest.mark.parametrize(("refunded", "ok"), [(-1, False), (0, True), (1000, True), (1001, False)])
def test_refunded_within_amount_at_both_ends(conn, db_url, refunded, ok):
    """Reached directly: as a superuser with the triggers off (replica role), the CHECK still holds."""
    posted(conn, "PC1", "pay", 1000)
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SET session_replication_role = replica")
        update = lambda: admin.execute("UPDATE pay_balances SET refunded = %s", (refunded,))  # noqa: E731
        if ok:
            update()
        else:
            with pytest.raises(errors.CheckViolation) as exc:
                update()
            assert exc.value.diag.constraint_name == "refunded_within_amount"
    assert balance(conn, "PC1") == ((1000, refunded, 1000 - refunded) if ok else (1000, 0, 1000))


def test_a_pay_balance_of_zero_is_refused_even_behind_the_triggers(conn, db_url):
    eid = posted(conn, "PC1", "pay", 1000)
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SET session_replication_role = replica")
        with pytest.raises(errors.CheckViolation) as exc:
            admin.execute("INSERT INTO pay_balances (pay_order_id, entry_id, mch_id, currency, amount) "
                          "VALUES ('PC9', %s, %s, 'CAD', 0)", (eid + 1000, MCH))
        assert exc.value.diag.constraint_name == "pay_balances_amount_check"


# ------------------------------------------------------------------------------------------- append-only
@pytest.mark.parametrize(("statement", "message"), [
    ("UPDATE journal_entries SET memo = 'x'", "journal_entries is append-only: UPDATE is not allowed"),
    ("DELETE FROM journal_entries WHERE kind = 'refund'", "journal_entries is append-only: DELETE is not allowed"),
    ("UPDATE postings SET amount = -amount", "postings is append-only: UPDATE is not allowed"),
    ("DELETE FROM postings", "postings is append-only: DELETE is not allowed"),
    ("TRUNCATE journal_entries CASCADE", "journal_entries is append-only: TRUNCATE is not allowed"),
    ("TRUNCATE postings", "postings is append-only: TRUNCATE is not allowed"),
    ("TRUNCATE pay_balances", "pay_balances is append-only: TRUNCATE is not allowed"),
])
def test_each_append_only_table_refuses_each_change(conn, statement, message):
    posted(conn, "PC1", "pay", 1000)
    posted(conn, "RP1", "refund", 100, "PC1")
    exc = refused(conn, errors.RestrictViolation, lambda: conn.execute(statement))
    assert message in str(exc)
    assert (n_rows(conn, "journal_entries"), n_rows(conn, "postings"), n_rows(conn, "pay_balances")) == (2, 4, 1)


# ------------------------------------------------------------------------------------------- orders
ORDER = {"pay_order_id": "PC1", "mch_id": MCH, "pay_type": "pay", "original_order_id": None, "currency": "CAD",
         "amount": 100, "status": 2, "state": "pending", "fingerprint": "f", "source": "notify", "card_num": None}


def insert_order(conn: psycopg.Connection, **change: Any) -> None:
    row = {**ORDER, **change}
    conn.execute(f"INSERT INTO orders ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
                 list(row.values()))


@pytest.mark.parametrize(("card_num", "ok"), [
    ("1234567890", True), ("12345678901", False), ("4111111111111111", False), ("432567******2266", True),
    ("XXXXXXXXXXXX1166", True), ("card 41111111111 x", False),
])
def test_card_numbers_of_eleven_digits_in_a_row_are_refused(conn, card_num, ok):
    if ok:
        insert_order(conn, card_num=card_num)
        conn.commit()
        assert conn.execute("SELECT card_num FROM orders").fetchone() == (card_num,)
    else:
        exc = refused(conn, errors.CheckViolation, lambda: insert_order(conn, card_num=card_num))
        assert exc.diag.constraint_name == "orders_card_num_check"


@pytest.mark.parametrize(("change", "constraint"), [
    ({"pay_type": "pay", "original_order_id": "PC0"}, "orders_check"),
    ({"pay_type": "refund", "original_order_id": None}, "orders_check"),
    ({"pay_type": "void", "original_order_id": None}, "orders_check"),
    ({"pay_type": "chargeback", "original_order_id": "PC0"}, "orders_pay_type_check"),
    ({"state": "done"}, "orders_state_check"),
    ({"source": "email"}, "orders_source_check"),
    ({"pay_order_id": ""}, "orders_pay_order_id_check"),
])
def test_order_rows_that_contradict_themselves_are_refused(conn, change, constraint):
    exc = refused(conn, errors.CheckViolation, lambda: insert_order(conn, **change))
    assert exc.diag.constraint_name == constraint


@pytest.mark.parametrize("change", [
    {"pay_type": "refund", "original_order_id": "PC0"}, {"pay_type": "void", "original_order_id": "PC0"},
    {"state": "parked", "source": "query"}, {"state": "unknown", "source": "ingest"},
])
def test_consistent_order_rows_are_accepted(conn, change):
    insert_order(conn, **change)
    conn.commit()
    assert conn.execute("SELECT pay_type, original_order_id, state, source FROM orders").fetchone() == tuple(
        {**ORDER, **change}[k] for k in ("pay_type", "original_order_id", "state", "source"))


# ------------------------------------------------------------------------------------------- accounts, exceptions
@pytest.mark.parametrize(("mch", "currency", "kind", "constraint"), [
    ("", "CAD", "sales", "accounts_mch_id_check"),
    (MCH, "cad", "sales", "accounts_currency_check"),
    (MCH, "CAD", "cash", "accounts_kind_check"),
])
def test_account_rows_are_checked(conn, mch, currency, kind, constraint):
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(
        "INSERT INTO accounts (mch_id, currency, kind) VALUES (%s, %s, %s)", (mch, currency, kind)))
    assert exc.diag.constraint_name == constraint


def test_ledger_exception_kinds_are_a_closed_list(conn):
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(
        "INSERT INTO ledger_exceptions (pay_order_id, kind, reason, dedup_key) VALUES ('PC1', 'oops', 'r', 'k')"))
    assert exc.diag.constraint_name == "ledger_exceptions_kind_check"
    conn.execute("INSERT INTO ledger_exceptions (pay_order_id, kind, reason, dedup_key) "
                 "VALUES ('PC1', 'void_not_full', 'r', 'k')")
    conn.commit()
    assert n_rows(conn, "ledger_exceptions") == 1


# ------------------------------------------------------------------------------------------- 002-004
SHA = b"\x01" * 32
INBOX = ("INSERT INTO inbox (body_sha256, body, family, state, outcome, reason, pan_masked, verified_at, attempts) "
         "VALUES (%(sha)s, %(body)s, %(family)s, %(state)s, %(outcome)s, %(reason)s, %(pan_masked)s, %(verified_at)s, "
         "%(attempts)s)")
INBOX_OK = {"sha": SHA, "body": b"{}", "family": "v3", "state": "received", "outcome": None, "reason": None,
            "pan_masked": False, "verified_at": None, "attempts": 0}


@pytest.mark.parametrize(("change", "constraint"), [
    ({"sha": b"\x01" * 31}, "inbox_body_sha256_check"),
    ({"body": b""}, "inbox_body_check"),
    ({"family": "v2"}, "inbox_family_check"),
    ({"state": "lost"}, "inbox_state_check"),
    ({"state": "done", "outcome": None}, "inbox_done_has_outcome"),
    ({"state": "queued", "outcome": "posted"}, "inbox_done_has_outcome"),
    ({"state": "done", "outcome": "maybe"}, "inbox_outcome_check"),
    ({"state": "failed", "reason": None}, "inbox_failure_has_reason"),
    ({"state": "dead", "reason": None}, "inbox_failure_has_reason"),
    ({"pan_masked": True, "verified_at": None}, "inbox_masked_needs_verified"),
    ({"attempts": -1}, "inbox_attempts_check"),
])
def test_inbox_rows_are_checked(conn, change, constraint):
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(INBOX, {**INBOX_OK, **change}))
    assert exc.diag.constraint_name == constraint


@pytest.mark.parametrize("change", [
    {}, {"state": "done", "outcome": "posted"}, {"state": "failed", "reason": "amount: missing"},
    {"state": "dead", "reason": "timeout"}, {"pan_masked": True, "verified_at": "2026-01-01T00:00:00Z"},
])
def test_consistent_inbox_rows_are_accepted(conn, change):
    conn.execute(INBOX, {**INBOX_OK, **change})
    conn.commit()
    assert conn.execute("SELECT state, outcome FROM inbox").fetchone() == (
        change.get("state", "received"), change.get("outcome"))


EXPECTED = ("INSERT INTO expected_orders (mch_id, mch_order_no, amount, currency, channel, family, created_at, "
            "next_query_at, resolved_at, resolution, gave_up_at) VALUES (%(mch)s, 'M1', %(amount)s, %(currency)s, "
            "'PF_CC', %(family)s, now(), %(next)s, %(resolved)s, %(resolution)s, %(gave_up)s)")
EXPECTED_OK = {"mch": MCH, "amount": 1, "currency": "CAD", "family": "v3", "next": None, "resolved": None,
               "resolution": None, "gave_up": None}
NOW = "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(("change", "constraint"), [
    ({"amount": 0}, "expected_orders_amount_check"),
    ({"currency": "EUR", "family": "v1"}, "expected_orders_currency_check"),
    ({"currency": "USD", "family": "v3"}, "expected_orders_check"),
    ({"resolved": NOW}, "expected_orders_check1"),
    ({"resolution": "paid"}, "expected_orders_check1"),
    ({"resolved": NOW, "resolution": "paid", "next": NOW}, "expected_orders_check2"),
    ({"gave_up": NOW, "next": NOW}, "expected_orders_check2"),
    ({"mch": ""}, "expected_orders_mch_id_check"),
])
def test_expected_orders_are_checked(conn, change, constraint):
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(EXPECTED, {**EXPECTED_OK, **change}))
    assert exc.diag.constraint_name == constraint


@pytest.mark.parametrize("change", [
    {}, {"currency": "USD", "family": "v1"}, {"resolved": NOW, "resolution": "paid"}, {"next": NOW},
    {"gave_up": NOW},
])
def test_consistent_expected_orders_are_accepted(conn, change):
    conn.execute(EXPECTED, {**EXPECTED_OK, **change})
    conn.commit()
    assert conn.execute("SELECT amount, currency, family FROM expected_orders").fetchone() == (
        1, change.get("currency", "CAD"), change.get("family", "v3"))


def test_reports_tables_guard_their_money_and_state(conn):
    for statement, constraint in [
        ("INSERT INTO reconcile_runs (business_date, settlement_tz, window_start, window_end) "
         "VALUES ('2026-01-01', 'UTC', '2026-01-01', '2026-01-01')", "reconcile_runs_check"),
        ("INSERT INTO settlement_exports (export_date, settlement_tz, version, manifest) "
         "VALUES ('2026-01-01', 'UTC', 0, '{}')", "settlement_exports_version_check"),
        ("INSERT INTO alerts (dedup_key, kind, text, webhook_state) VALUES ('k', 'x', 't', 'lost')",
         "alerts_webhook_state_check"),
        ("INSERT INTO job_runs (job, slot, clock_id, status) VALUES ('j', 's', 'c', 'queued')",
         "job_runs_status_check"),
        ("INSERT INTO sweep_runs (swept_at, concurrency) VALUES (now(), 0)", "sweep_runs_concurrency_check"),
    ]:
        exc = refused(conn, errors.CheckViolation, lambda: conn.execute(statement))
        assert exc.diag.constraint_name == constraint, statement
    # the boundary values are accepted
    conn.execute("INSERT INTO reconcile_runs (business_date, settlement_tz, window_start, window_end) "
                 "VALUES ('2026-01-01', 'UTC', '2026-01-01', '2026-01-01 00:00:00.000001')")
    conn.execute("INSERT INTO settlement_exports (export_date, settlement_tz, version, manifest) "
                 "VALUES ('2026-01-01', 'UTC', 1, '{}')")
    conn.execute("INSERT INTO sweep_runs (swept_at, concurrency) VALUES (now(), 1)")
    conn.commit()
    assert (n_rows(conn, "reconcile_runs"), n_rows(conn, "settlement_exports"), n_rows(conn, "sweep_runs")) == (1, 1, 1)


def test_an_entry_is_exported_no_later_than_its_day_is_settled(conn):
    eid = posted(conn, "PC1", "pay", 100)
    conn.execute("INSERT INTO settlement_exports (export_date, settlement_tz, manifest) VALUES ('2026-01-02', 'UTC', '{}')")
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(
        "INSERT INTO exported_entries (entry_id, export_date, business_date) VALUES (%s, '2026-01-02', '2026-01-03')",
        (eid,)))
    assert exc.diag.constraint_name == "exported_entries_check"
    conn.execute("INSERT INTO settlement_exports (export_date, settlement_tz, manifest) VALUES ('2026-01-02', 'UTC', '{}')")
    conn.execute("INSERT INTO exported_entries (entry_id, export_date, business_date) VALUES (%s, '2026-01-02', '2026-01-02')",
                 (eid,))
    # an entry is in a file or awaiting one, never both: checked at commit
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "entry_filed_once"
    conn.execute("INSERT INTO settlement_exports (export_date, settlement_tz, manifest) VALUES ('2026-01-02', 'UTC', '{}')")
    conn.execute("DELETE FROM entries_awaiting_file WHERE entry_id = %s", (eid,))
    conn.execute("INSERT INTO exported_entries (entry_id, export_date, business_date) VALUES (%s, '2026-01-02', '2026-01-02')",
                 (eid,))
    conn.commit()
    assert n_rows(conn, "exported_entries") == 1
