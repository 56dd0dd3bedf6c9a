"""The rules PostgreSQL itself enforces: hand-written SQL cannot break them either."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from tests.factories import MCH, v3_pay, v3_refund
from tests.ledger_helpers import post


def _accounts(conn, currency="CAD"):
    conn.execute("INSERT INTO accounts (mch_id, currency, kind) SELECT %s, %s, k FROM unnest(ARRAY['clearing','sales','refunds']) k "
                 "ON CONFLICT DO NOTHING", (MCH, currency))
    return dict(conn.execute("SELECT kind, id FROM accounts WHERE mch_id = %s AND currency = %s", (MCH, currency)).fetchall())


def _entry(conn, order_id="PCX", kind="pay", amount=100, original=None, currency="CAD"):
    return conn.execute(
        "INSERT INTO journal_entries (pay_order_id, kind, original_order_id, mch_id, currency, amount, occurred_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, now()) RETURNING id", (order_id, kind, original, MCH, currency, amount)).fetchone()[0]


def _leg(conn, entry_id, account_id, amount, currency="CAD"):
    conn.execute("INSERT INTO postings (entry_id, account_id, mch_id, currency, amount) VALUES (%s, %s, %s, %s, %s)",
                 (entry_id, account_id, MCH, currency, amount))


def test_an_unbalanced_entry_fails_at_commit(conn):
    acc = _accounts(conn)
    eid = _entry(conn)
    _leg(conn, eid, acc["clearing"], 100)
    _leg(conn, eid, acc["sales"], -99)
    with pytest.raises(errors.CheckViolation, match="does not balance"):
        conn.commit()


def test_an_entry_with_no_legs_fails_at_commit(conn):
    _accounts(conn)
    _entry(conn)
    with pytest.raises(errors.CheckViolation, match="0 leg"):
        conn.commit()


def test_a_balanced_hand_written_entry_commits(conn):
    acc = _accounts(conn)
    eid = _entry(conn)
    _leg(conn, eid, acc["clearing"], 100)
    _leg(conn, eid, acc["sales"], -100)
    conn.commit()
    assert conn.execute("SELECT refundable FROM pay_balances WHERE pay_order_id = 'PCX'").fetchone()[0] == 100


def test_cad_and_usd_cannot_meet_in_one_entry(conn):
    cad = _accounts(conn, "CAD")
    usd = _accounts(conn, "USD")
    eid = _entry(conn, currency="CAD")
    _leg(conn, eid, cad["clearing"], 100)
    with pytest.raises(errors.ForeignKeyViolation):
        _leg(conn, eid, usd["sales"], -100, currency="CAD")


@pytest.mark.parametrize("statement", [
    "UPDATE journal_entries SET amount = amount + 1",
    "DELETE FROM journal_entries",
    "UPDATE postings SET amount = amount * 2",
    "DELETE FROM postings",
    "TRUNCATE postings",
    "TRUNCATE journal_entries CASCADE",
    "UPDATE pay_balances SET refunded = 0",
    "DELETE FROM pay_balances",
])
def test_the_journal_is_append_only(conn, statement):
    post(conn, v3_pay("PC1", 1000))
    post(conn, v3_refund("RP1", "PC1", 100))
    with pytest.raises((errors.RestrictViolation, errors.RaiseException, errors.FeatureNotSupported)):
        conn.execute(statement)
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM postings").fetchone()[0] == 4


def test_one_entry_per_gateway_order_id(conn):
    acc = _accounts(conn)
    eid = _entry(conn, "PC1")
    _leg(conn, eid, acc["clearing"], 100)
    _leg(conn, eid, acc["sales"], -100)
    with pytest.raises(errors.UniqueViolation) as exc:
        _entry(conn, "PC1")
    assert exc.value.diag.constraint_name == "journal_entries_one_per_order"


def test_refunded_total_never_exceeds_the_pay(conn):
    post(conn, v3_pay("PC1", 1000))
    acc = _accounts(conn)
    with pytest.raises(errors.CheckViolation) as exc:
        eid = _entry(conn, "RPX", "refund", 1001, "PC1")
        _leg(conn, eid, acc["refunds"], 1001)
        _leg(conn, eid, acc["clearing"], -1001)
        conn.commit()
    assert exc.value.diag.constraint_name == "refunded_within_amount"


def test_a_refund_cannot_post_against_nothing(conn):
    _accounts(conn)
    with pytest.raises(errors.ForeignKeyViolation) as exc:
        _entry(conn, "RPX", "refund", 10, "PC404")
    assert exc.value.diag.constraint_name == "refund_needs_original"


def test_a_refund_in_another_currency_cannot_post(conn):
    post(conn, v3_pay("PC1", 1000))
    _accounts(conn, "USD")
    with pytest.raises(errors.CheckViolation) as exc:
        _entry(conn, "RPX", "refund", 10, "PC1", currency="USD")
    assert exc.value.diag.constraint_name == "refund_same_currency"


def test_a_reversal_corrects_a_refund_and_gives_the_refundable_back(conn):
    post(conn, v3_pay("PC1", 1000))
    post(conn, v3_refund("RP1", "PC1", 300))
    acc = _accounts(conn)
    rid = conn.execute("SELECT id FROM journal_entries WHERE pay_order_id = 'RP1'").fetchone()[0]
    eid = conn.execute(
        "INSERT INTO journal_entries (pay_order_id, kind, mch_id, currency, amount, reverses_entry_id, occurred_at, memo) "
        "VALUES ('RP1', 'reversal', %s, 'CAD', 300, %s, now(), 'refund posted in error') RETURNING id", (MCH, rid)).fetchone()[0]
    _leg(conn, eid, acc["clearing"], 300)
    _leg(conn, eid, acc["refunds"], -300)
    conn.commit()
    assert conn.execute("SELECT refunded, refundable FROM pay_balances WHERE pay_order_id='PC1'").fetchone() == (0, 1000)
    from worker.ledger.checks import run_checks
    assert run_checks(conn).ok


def test_card_numbers_cannot_be_stored_unmasked(conn):
    with pytest.raises(errors.CheckViolation):
        conn.execute("INSERT INTO orders (pay_order_id, mch_id, pay_type, currency, amount, status, state, fingerprint, source, card_num) "
                     "VALUES ('X', '1', 'pay', 'CAD', 1, 2, 'pending', 'f', 'notify', '4111111111111111')")


def test_check_finds_a_violation_planted_behind_the_triggers(conn, db_url):
    """`check` re-derives every invariant; prove it can fail by disabling the guards as a superuser would."""
    from worker.ledger.checks import run_checks

    post(conn, v3_pay("PC1", 1000))
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SET session_replication_role = replica")  # triggers off: what a careless hand could do
        admin.execute("UPDATE postings SET amount = amount + 1 WHERE amount > 0")
    report = run_checks(conn)
    assert not report.ok
    assert {v["rule"] for v in report.violations} >= {"entry_balanced", "currency_sums_to_zero"}
