"""Bank statements: OFX written by ofxtools, BAI2 written by the bai2 package, CSV through a mapping; each
transaction kept once by its account and own id; a contradicting statement refused with its differences; nothing
posted until a deposit is posted for a matched transaction, after which `check` still adds up."""

from __future__ import annotations

from datetime import date, datetime, timezone
import psycopg
import pytest

from tests.books_helpers import (BOOKS_MERCHANTS, TORONTO, bai2_statement, balances, counts, ofx_statement,
                                 settlement_csv, utc)
from tests.factories import MCH, MCH2
from worker.books.bank import import_bank
from worker.books.deposits import post_deposit
from worker.books.errors import ContradictionError, InputError
from worker.books.settlements import import_settlements
from worker.ledger.checks import run_checks

TXNS = [
    {"fitid": "F-1001", "amount": "135.75", "posted": utc(2026, 11, 3), "name": "IOTPAY TECH", "memo": "SETTLE B1"},
    {"fitid": "F-1002", "amount": "-12.00", "posted": utc(2026, 11, 3, 15), "name": "MONTHLY FEE"},
    {"fitid": "F-1003", "amount": "19.00", "posted": utc(2026, 11, 4), "name": "IOTPAY TECH", "memo": "SETTLE B2"},
]


def stored(conn: psycopg.Connection) -> list[tuple]:
    rows = conn.execute("SELECT account, txn_id, txn_id_derived, posted_on, amount, currency, type, description "
                        "FROM bank_transactions ORDER BY id").fetchall()
    conn.rollback()
    return rows


@pytest.mark.parametrize("version", [220, 102])
def test_an_ofx_statement_written_by_ofxtools_is_kept_and_posts_nothing(conn, tmp_path, version):
    path = ofx_statement(tmp_path / "nov.ofx", TXNS, version=version)
    result = import_bank(conn, path)
    assert result.status == "imported"
    assert result.counts == {"transactions": 3, "new": 3, "known": 0, "credits_new": 2, "debits_new": 1,
                             "skipped_without_money": 0, "derived_ids": 0}
    assert stored(conn) == [
        ("000123456789", "F-1001", False, date(2026, 11, 3), 13575, "CAD", "CREDIT", "IOTPAY TECH | SETTLE B1"),
        ("000123456789", "F-1002", False, date(2026, 11, 3), -1200, "CAD", "DEBIT", "MONTHLY FEE"),
        ("000123456789", "F-1003", False, date(2026, 11, 4), 1900, "CAD", "CREDIT", "IOTPAY TECH | SETTLE B2")]
    assert counts(conn)["journal_entries"] == 0  # a credit is IOTPay's only once matched: nothing posted yet
    assert conn.execute("SELECT format, file_name, rows_read, rows_new FROM book_imports").fetchone() == (
        "ofx", "nov.ofx", 3, 3)


def test_the_same_statement_twice_changes_nothing_and_an_overlapping_one_adds_what_is_new(conn, tmp_path):
    import_bank(conn, ofx_statement(tmp_path / "a.ofx", TXNS[:2]))
    before = counts(conn)
    again = import_bank(conn, ofx_statement(tmp_path / "a.ofx", TXNS[:2]))
    assert again.status == "unchanged" and counts(conn) == before
    more = import_bank(conn, ofx_statement(tmp_path / "b.ofx", TXNS))
    assert (more.status, more.counts["new"], more.counts["known"]) == ("imported", 1, 2)
    assert [r[1] for r in stored(conn)] == ["F-1001", "F-1002", "F-1003"]


def test_a_statement_contradicting_an_earlier_one_is_refused_listing_the_differences(conn, tmp_path):
    first = import_bank(conn, ofx_statement(tmp_path / "a.ofx", TXNS[:2]))
    before = counts(conn)
    changed = [{**TXNS[0], "amount": "135.70"}, {**TXNS[1], "posted": utc(2026, 11, 5)}, TXNS[2]]
    with pytest.raises(ContradictionError) as exc:
        import_bank(conn, ofx_statement(tmp_path / "b.ofx", changed))
    n = first.import_id
    assert exc.value.differences == [
        f"account 000123456789 transaction 'F-1001': amount 135.70 here, 135.75 in import #{n} (a.ofx)",
        f"account 000123456789 transaction 'F-1002': posted_on 2026-11-05 here, 2026-11-03 in import #{n} (a.ofx)"]
    assert counts(conn) == before  # not even F-1003


def test_the_posted_date_is_the_banks_own_day(conn, tmp_path):
    """23:30 in Toronto on the 3rd is the 4th in UTC; the bank's day, as it wrote it, is the 3rd."""
    path = ofx_statement(tmp_path / "a.ofx", TXNS[:1])
    text = path.read_text(encoding="utf-8").replace("<DTPOSTED>20261103120000.000[+0:UTC]</DTPOSTED>",
                                                    "<DTPOSTED>20261103233000.000[-5:EST]</DTPOSTED>")
    path.write_text(text, encoding="utf-8")
    import_bank(conn, path)
    assert conn.execute("SELECT posted_on, posted_at FROM bank_transactions").fetchone() == (
        date(2026, 11, 3), datetime(2026, 11, 4, 4, 30, tzinfo=timezone.utc))


def test_a_credit_card_statement_is_refused(conn, tmp_path):
    import xml.etree.ElementTree as ET
    from decimal import Decimal

    from ofxtools.header import make_header
    from ofxtools.models import (BANKTRANLIST, CCACCTFROM, CCSTMTRS, CCSTMTTRNRS, CREDITCARDMSGSRSV1, LEDGERBAL, OFX,
                                 SIGNONMSGSRSV1, SONRS, STATUS, STMTTRN)

    status = STATUS(code=0, severity="INFO")
    when = utc(2026, 11, 3)
    stmt = CCSTMTRS(curdef="CAD", ccacctfrom=CCACCTFROM(acctid="4111111111111111"),
                    banktranlist=BANKTRANLIST(STMTTRN(trntype="DEBIT", dtposted=when, trnamt=Decimal("-5.00"),
                                                      fitid="C1"), dtstart=when, dtend=when),
                    ledgerbal=LEDGERBAL(balamt=Decimal("-5.00"), dtasof=when))
    ofx = OFX(signonmsgsrsv1=SIGNONMSGSRSV1(sonrs=SONRS(status=status, dtserver=when, language="ENG")),
              creditcardmsgsrsv1=CREDITCARDMSGSRSV1(CCSTMTTRNRS(trnuid="1", status=status, ccstmtrs=stmt)))
    (tmp_path / "card.qfx").write_text(str(make_header(version=220)) + ET.tostring(ofx.to_etree()).decode(),
                                       encoding="utf-8")
    with pytest.raises(InputError, match=r"^card.qfx: holds CCSTMTRS \(credit card or investment statements\); only "
                                         r"bank statements \(STMTRS\) are imported$"):
        import_bank(conn, tmp_path / "card.qfx")
    assert counts(conn)["bank_transactions"] == 0


@pytest.mark.parametrize(("content", "message"), [
    (b"this is not OFX", "nope.ofx: not an OFX file ofxtools can read"),
    (b"\xff\xfe\x00garbage", "nope.ofx: not an OFX file ofxtools can read"),
])
def test_a_file_that_is_not_ofx_is_named(conn, tmp_path, content, message):
    (tmp_path / "nope.ofx").write_bytes(content)
    with pytest.raises(InputError) as exc:
        import_bank(conn, tmp_path / "nope.ofx")
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


BAI = [
    {"code": "165", "amount": 13575, "bank_reference": "BR-88", "customer_reference": "B1", "text": "IOTPAY SETTLE"},
    {"code": "469", "amount": 1200, "bank_reference": "BR-89", "text": "MONTHLY FEE"},
]


def test_a_bai2_statement_written_by_the_bai2_package_is_kept(conn, tmp_path):
    path = bai2_statement(tmp_path / "nov.bai2", BAI)
    result = import_bank(conn, path)
    assert (result.status, result.counts["credits_new"], result.counts["debits_new"]) == ("imported", 1, 1)
    assert stored(conn) == [
        ("000123456789", "BR-88", False, date(2026, 11, 3), 13575, "CAD", "165", "IOTPAY SETTLE"),
        ("000123456789", "BR-89", False, date(2026, 11, 3), -1200, "CAD", "469", "MONTHLY FEE")]
    assert conn.execute("SELECT reference FROM bank_transactions ORDER BY id").fetchall() == [("B1",), (None,)]
    assert import_bank(conn, path).status == "unchanged"


def test_a_bai2_file_whose_control_totals_do_not_add_up_is_refused(conn, tmp_path):
    path = bai2_statement(tmp_path / "nov.bai", BAI)
    path.write_text(path.read_text().replace("16,165,13575,", "16,165,13570,"))
    with pytest.raises(InputError, match=r"^nov.bai: not a BAI2 file the bai2 package can read \(Invalid account "
                                         r"control total"):
        import_bank(conn, path)


def test_transactions_without_ids_get_ids_from_their_content(conn, tmp_path):
    same = {"code": "165", "amount": 500, "text": "CASH DEPOSIT"}
    path = bai2_statement(tmp_path / "a.bai2", [same, same, {**same, "amount": 700}])
    result = import_bank(conn, path)
    assert (result.counts["new"], result.counts["derived_ids"]) == (3, 3)  # two identical deposits stay two
    ids = [r[1] for r in stored(conn)]
    assert len(set(ids)) == 3 and all(i.startswith("derived:") for i in ids)
    assert import_bank(conn, bai2_statement(tmp_path / "b.bai2", [same, same, {**same, "amount": 700}])).status \
        == "unchanged"
    more = import_bank(conn, bai2_statement(tmp_path / "c.bai2", [same, same, same]))
    assert (more.counts["new"], more.counts["known"]) == (1, 2)


BANK_MAPPING = """\
date_format = "%m/%d/%Y"
[columns]
date = "Date"
description = "Description"
credit = "Deposits"
debit = "Withdrawals"
transaction_id = "Ref"
[values]
account = "CHQ-0042"
currency = "CAD"
"""


def test_a_bank_csv_through_a_mapping(conn, tmp_path):
    (tmp_path / "m.toml").write_text(BANK_MAPPING, encoding="utf-8")
    (tmp_path / "rbc.csv").write_text('Date,Description,Withdrawals,Deposits,Ref\n'
                                      '11/03/2026,IOTPAY TECH,,"1,357.50",R1\n'
                                      '11/03/2026,MONTHLY FEE,12.00,,R2\n'
                                      '11/04/2026,NOTE,,,R3\n', encoding="utf-8")
    with pytest.raises(InputError) as exc:
        import_bank(conn, tmp_path / "rbc.csv", mapping_path=tmp_path / "m.toml")
    assert str(exc.value) == "rbc.csv line 4, column 'Deposits' (credit): is empty (and so is the other side)"
    (tmp_path / "rbc.csv").write_text('Date,Description,Withdrawals,Deposits,Ref\n'
                                      '11/03/2026,IOTPAY TECH,,"1,357.50",R1\n'
                                      '11/03/2026,MONTHLY FEE,12.00,,R2\n', encoding="utf-8")
    result = import_bank(conn, tmp_path / "rbc.csv", mapping_path=tmp_path / "m.toml")
    assert result.status == "imported"
    assert stored(conn) == [("CHQ-0042", "R1", False, date(2026, 11, 3), 135750, "CAD", None, "IOTPAY TECH"),
                            ("CHQ-0042", "R2", False, date(2026, 11, 3), -1200, "CAD", None, "MONTHLY FEE")]
    assert conn.execute("SELECT line_no FROM bank_transactions ORDER BY id").fetchall() == [(2,), (3,)]


def test_a_canonical_bank_csv_and_its_errors(conn, tmp_path):
    header = "account,transaction_id,date,amount,currency,description\n"
    (tmp_path / "b.csv").write_text(header + "A1,T1,2026-11-03,135.75,cad,IOTPAY\n", encoding="utf-8")
    assert import_bank(conn, tmp_path / "b.csv").status == "imported"
    (tmp_path / "c.csv").write_text(header + "A1,T2,2026-11-03,1.2.3,CAD,X\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"^c.csv line 2, column 'amount': '1.2.3' is not an amount"):
        import_bank(conn, tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text(header + "A1,T2,2026-11-03,1.00,CAD,X\nA1,T2,2026-11-04,1.00,CAD,X\n",
                                    encoding="utf-8")
    with pytest.raises(InputError, match=r"^d.csv line 3: account A1 transaction 'T2' appears twice with different"):
        import_bank(conn, tmp_path / "d.csv")
    (tmp_path / "e.txt").write_text(header, encoding="utf-8")
    with pytest.raises(InputError, match=r"^e.txt: say which format it is with --format \(ofx, bai2, csv\)$"):
        import_bank(conn, tmp_path / "e.txt")
    with pytest.raises(InputError, match=r"^--mapping reads CSV files; b.csv is read as ofx$"):
        import_bank(conn, tmp_path / "b.csv", fmt="ofx", mapping_path=tmp_path / "m.toml")


# --------------------------------------------------------------------- a deposit, once matched
def test_a_matched_deposit_moves_the_payout_into_the_bank_and_check_adds_up(conn, tmp_path):
    from tests.test_reconcile_seed import at, post

    post(conn, "PC1", 14000, at("2026-11-01 12:00:00"))
    import_settlements(conn, settlement_csv(tmp_path / "s.csv", [
        ("B1", "2026-11-02", MCH, "CAD", "PC1", "140.00", "4.25", "135.75")]), merchants=BOOKS_MERCHANTS, tz=TORONTO)
    import_bank(conn, ofx_statement(tmp_path / "nov.ofx", TXNS))
    credit = conn.execute("SELECT id FROM bank_transactions WHERE txn_id = 'F-1001'").fetchone()[0]
    conn.rollback()
    entry = post_deposit(conn, credit, MCH, tz=TORONTO)
    assert post_deposit(conn, credit, MCH, tz=TORONTO) == entry  # once per bank transaction
    assert balances(conn) == {"clearing": 0, "sales": -14000, "refunds": 0, "fees": 425, "in_transit": 0,
                              "bank": 13575}
    assert conn.execute("SELECT kind, doc_key, occurred_at FROM journal_entries WHERE id = %s", (entry,)).fetchone() == (
        "deposit", '["deposit","000123456789","F-1001"]', utc(2026, 11, 3))
    with pytest.raises(ContradictionError):
        post_deposit(conn, credit, MCH2, tz=TORONTO)
    report = run_checks(conn)
    assert report.ok, report.violations
    m = next(m for m in report.merchants if m["mch_id"] == MCH)
    assert m["net"] == m["clearing"] + m["fees"] + m["in_transit"] + m["bank"] == 14000


def test_a_bank_debit_posted_as_a_deposit_goes_the_other_way(conn, tmp_path):
    import_bank(conn, ofx_statement(tmp_path / "nov.ofx", TXNS))
    debit = conn.execute("SELECT id FROM bank_transactions WHERE txn_id = 'F-1002'").fetchone()[0]
    conn.rollback()
    post_deposit(conn, debit, MCH, tz=TORONTO)
    b = balances(conn)
    assert (b["bank"], b["in_transit"]) == (-1200, 1200)
    assert run_checks(conn).ok


def test_the_check_finds_what_the_rules_would_have_refused(conn, tmp_path):
    """With the database's triggers switched off (a superuser's session_replication_role), a fee posted to sales
    and a line whose fee differs from its entry: `check` reports both, the identity and the document."""
    import_settlements(conn, settlement_csv(tmp_path / "s.csv", [
        ("B1", "2026-11-02", MCH, "CAD", "PC1", "140.00", "4.25", "135.75")]), merchants=BOOKS_MERCHANTS, tz=TORONTO)
    conn.execute("SET session_replication_role = replica")
    sales = conn.execute("SELECT id FROM accounts WHERE mch_id = %s AND currency = 'CAD' AND kind = 'sales'",
                         (MCH,)).fetchone()[0]
    conn.execute("UPDATE postings SET account_id = %s WHERE amount < 0 AND entry_id = "
                 "(SELECT id FROM journal_entries WHERE kind = 'fee')", (sales,))
    conn.execute("UPDATE settlement_lines SET fee = 400, net = 13600, fee_reported = 400, net_reported = 13600")
    conn.commit()
    conn.execute("SET session_replication_role = origin")
    report = run_checks(conn)
    rules = sorted(v["rule"] for v in report.violations)
    assert rules == ["books_add_up", "clearing_equals_net", "fee_entry_matches_line", "payout_matches_batch"], \
        report.violations
    books = next(v for v in report.violations if v["rule"] == "books_add_up")
    assert books["detail"] == "clearing -13575 + in_transit 13575 + bank 0 + fees 425 = 425 but paid - refunded = 0"
