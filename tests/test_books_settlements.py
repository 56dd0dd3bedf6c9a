"""Settlement reports: a fee entry per line and a payout per batch, imported once; a contradicting report refused
with its differences; a portal's export through a TOML mapping; every unusable row named by line and column;
`check` holds, and the day's settlement CSV is the same bytes with the books' entries in the ledger."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.books_helpers import BOOKS_MERCHANTS, TORONTO, balances, counts, settlement_csv
from tests.factories import MCH, MCH2
from tests.test_reconcile_seed import at, post
from worker.books.errors import ContradictionError, InputError
from worker.books.settlements import import_settlements
from worker.ledger.checks import run_checks
from worker.ledger.outcome import Outcome

DAY = "2026-11-02"


def imp(conn: psycopg.Connection, path: Path, mapping: Path | None = None):
    return import_settlements(conn, path, merchants=BOOKS_MERCHANTS, tz=TORONTO, mapping_path=mapping)


def seed_pays(conn: psycopg.Connection) -> None:
    """PC1 100.00 (PF_CC), PC2 50.00 (UPI_EX), a refund of 10.00 on PC1, and a USD pay."""
    for oid, amount, kw in (("PC1", 10000, {}), ("PC2", 5000, {"channel": "UPI_EX"}),
                            ("RP1", 1000, {"pay_type": "refund", "original": "PC1"}),
                            ("PU1", 2000, {"currency": "USD"})):
        assert post(conn, oid, amount, at("2026-11-01 12:00:00"), **kw).outcome is Outcome.POSTED


REPORT = [
    ("B1", DAY, MCH, "CAD", "PC1", "100.00", "2.50", "97.50"),   # fee reported (the PF_CC schedule: 2.50)
    ("B1", DAY, MCH, "CAD", "PC2", "50.00", None, None),         # fee from the schedule, by the ledger's channel
    ("B1", DAY, MCH, "CAD", "RP1", "-10.00", "0.00", "-10.00"),  # a refund line, no fee
    ("B2", DAY, MCH, "USD", "PU1", "20.00", None, "19.00"),      # fee derived: gross - net
]


def test_a_report_posts_a_fee_per_line_and_a_payout_per_batch(conn, tmp_path):
    seed_pays(conn)
    result = imp(conn, settlement_csv(tmp_path / "r.csv", REPORT))
    assert result.status == "imported" and result.rows_read == 4
    assert result.counts == {"batches": 2, "batches_new": 2, "batches_known": 0, "lines_new": 4, "fee_entries": 3,
                             "payout_entries": 2, "fees_off_schedule": 1}
    # PC2: 2.9 % of 50.00 = 1.45 + 0.30 = 1.75; B1 pays out 97.50 + 48.25 - 10.00 = 135.75
    assert balances(conn) == {"clearing": 15000 - 1000 - 250 - 175 - 13575, "sales": -15000, "refunds": 1000,
                              "fees": 425, "in_transit": 13575, "bank": 0}
    assert balances(conn, currency="USD") == {"clearing": 0, "sales": -2000, "refunds": 0, "fees": 100,
                                              "in_transit": 1900, "bank": 0}
    lines = conn.execute("SELECT pay_order_id, fee, net, fee_reported, net_reported, fee_expected, fee_source, "
                         "fee_entry_id IS NOT NULL FROM settlement_lines ORDER BY line_no").fetchall()
    assert lines == [("PC1", 250, 9750, 250, 9750, 250, "report", True),
                     ("PC2", 175, 4825, None, None, 175, "schedule", True),
                     ("RP1", 0, -1000, 0, -1000, 0, "report", False),
                     ("PU1", 100, 1900, None, 1900, 50, "derived", True)]  # off the PF_CC schedule
    entries = conn.execute("SELECT kind, doc_key, amount, occurred_at FROM journal_entries "
                           "WHERE kind IN ('fee', 'payout') ORDER BY id").fetchall()
    assert [(k, d, a) for k, d, a, _ in entries] == [
        ("fee", '["fee","B1","PC1"]', 250), ("fee", '["fee","B1","PC2"]', 175), ("payout", '["payout","B1"]', 13575),
        ("fee", '["fee","B2","PU1"]', 100), ("payout", '["payout","B2"]', 1900)]
    assert {o for *_, o in entries} == {at(f"{DAY} 00:00:00")}  # the start of the settlement date, in its zone
    report = run_checks(conn)
    assert report.ok, report.violations
    cad = next(m for m in report.merchants if m["mch_id"] == MCH and m["currency"] == "CAD")
    assert (cad["net"], cad["clearing"], cad["fees"], cad["in_transit"], cad["bank"]) == (14000, 0, 425, 13575, 0)


def test_importing_the_same_report_twice_changes_nothing(conn, tmp_path):
    seed_pays(conn)
    path = settlement_csv(tmp_path / "r.csv", REPORT)
    first = imp(conn, path)
    before, money = counts(conn), balances(conn)
    again = imp(conn, path)
    assert again.status == "unchanged" and again.import_id is None
    assert again.counts["batches_known"] == 2 and again.counts["lines_new"] == 0
    assert counts(conn) == before and balances(conn) == money
    assert conn.execute("SELECT id FROM book_imports").fetchall() == [(first.import_id,)]


def test_a_later_report_holding_known_batches_adds_only_the_new_ones(conn, tmp_path):
    seed_pays(conn)
    imp(conn, settlement_csv(tmp_path / "r1.csv", REPORT[:3]))
    before = counts(conn)
    result = imp(conn, settlement_csv(tmp_path / "r2.csv", REPORT))
    assert result.status == "imported"
    assert (result.counts["batches_known"], result.counts["batches_new"], result.counts["lines_new"]) == (1, 1, 1)
    after = counts(conn)
    assert (after["settlement_batches"] - before["settlement_batches"], after["journal_entries"]
            - before["journal_entries"], after["book_imports"] - before["book_imports"]) == (1, 2, 1)


@pytest.mark.parametrize(("rows", "differences"), [
    ([("B1", DAY, MCH, "CAD", "PC1", "100.00", "2.60", "97.40")] + REPORT[1:3], [
        "batch 'B1': 'PC1' fee 2.60 here (line 2), 2.50 in import #{n} (r1.csv)",
        "batch 'B1': 'PC1' net 97.40 here (line 2), 97.50 in import #{n} (r1.csv)"]),
    (REPORT[:2], ["batch 'B1': 'RP1' is missing here, it is in import #{n} (r1.csv)"]),
    (REPORT[:3] + [("B1", DAY, MCH, "CAD", "PC9", "1.00", "0.00", "1.00")],
     ["batch 'B1': 'PC9' (line 5) is not in the batch as import #{n} (r1.csv) has it"]),
    ([(b, "2026-11-03", m, c, p, g, f, n) for b, _, m, c, p, g, f, n in REPORT[:3]],
     ["batch 'B1': settlement_date 2026-11-03 here (line 2), 2026-11-02 in import #{n} (r1.csv)"]),
    (REPORT[:3] + [("B1", DAY, MCH, "CAD", None, "140.00", "4.25", "135.75")],
     ["batch 'B1': total gross 140.00 here (line 5), (none) in import #{n} (r1.csv)",
      "batch 'B1': total fee 4.25 here (line 5), (none) in import #{n} (r1.csv)",
      "batch 'B1': total net 135.75 here (line 5), (none) in import #{n} (r1.csv)"]),
])
def test_a_report_contradicting_an_earlier_import_is_refused_listing_the_differences(conn, tmp_path, rows,
                                                                                   differences):
    seed_pays(conn)
    first = imp(conn, settlement_csv(tmp_path / "r1.csv", REPORT[:3]))
    before, money = counts(conn), balances(conn)
    with pytest.raises(ContradictionError) as exc:
        imp(conn, settlement_csv(tmp_path / "r2.csv", rows + [REPORT[3]]))  # with a new batch too
    assert exc.value.differences == [d.format(n=first.import_id) for d in differences]
    assert counts(conn) == before and balances(conn) == money  # nothing imported, not even the new batch B2


def test_a_total_row_states_the_net_paid_out(conn, tmp_path):
    seed_pays(conn)
    # IOTPay states 135.70 paid for B1 while its lines' net is 135.75: the payout is what it says it paid,
    # the 0.05 stays in clearing (part of what IOTPay still owes)
    rows = REPORT[:3] + [("B1", DAY, MCH, "CAD", None, "140.00", "4.30", "135.70")]
    imp(conn, settlement_csv(tmp_path / "r.csv", rows))
    assert conn.execute("SELECT stated_gross, stated_fee, stated_net, payout_amount, total_line_no "
                        "FROM settlement_batches").fetchone() == (14000, 430, 13570, 13570, 5)
    b = balances(conn)
    assert (b["in_transit"], b["fees"], b["clearing"]) == (13570, 425, 5)
    assert run_checks(conn).ok


def test_a_returned_fee_and_a_negative_batch_post_the_other_way(conn, tmp_path):
    seed_pays(conn)
    rows = [("B7", DAY, MCH, "CAD", "RP1", "-10.00", "-0.25", "-9.75")]  # IOTPay returns a fee, debits the merchant
    imp(conn, settlement_csv(tmp_path / "r.csv", rows))
    legs = conn.execute("SELECT je.kind, a.kind, p.amount FROM journal_entries je JOIN postings p ON p.entry_id = je.id "
                        "JOIN accounts a ON a.id = p.account_id WHERE je.kind IN ('fee', 'payout') "
                        "ORDER BY je.id, a.kind").fetchall()
    assert legs == [("fee", "clearing", 25), ("fee", "fees", -25), ("payout", "clearing", 975),
                    ("payout", "in_transit", -975)]
    assert run_checks(conn).ok


MAPPING = """\
# the merchant portal's "Settlement details" export
delimiter = ";"
skip_lines = 2
date_format = "%d/%m/%Y"
decimal_separator = ","

[columns]
batch_id = "Settlement No."
settlement_date = "Settled"
mch_id = "Merchant"
pay_order_id = "Order"
gross = "Amount"
fee = "Commission"
channel = "Method"

[values]
currency = "CAD"
"""

EXPORT = """\
Settlement details;;;;;;
Exported 03/11/2026;;;;;;
Settled;Settlement No.;Merchant;Order;Method;Amount;Commission
02/11/2026;S-77;10000701;PC1;PF_CC;1.000,00;25,00
02/11/2026;S-77;10000701;PC2;UPI_EX;"50,00";
"""


def test_a_portal_export_through_a_mapping(conn, tmp_path):
    seed_pays(conn)
    (tmp_path / "portal.toml").write_text(MAPPING, encoding="utf-8")
    (tmp_path / "export.csv").write_text(EXPORT, encoding="utf-8")
    result = imp(conn, tmp_path / "export.csv", tmp_path / "portal.toml")
    assert result.status == "imported" and result.rows_read == 2
    assert conn.execute("SELECT batch_id, pay_order_id, line_no, channel, gross, fee, fee_source, fee_expected "
                        "FROM settlement_lines ORDER BY line_no").fetchall() == [
        ("S-77", "PC1", 4, "PF_CC", 100000, 2500, "report", 2500),
        ("S-77", "PC2", 5, "UPI_EX", 5000, 175, "schedule", 175)]
    assert conn.execute("SELECT mapping_name, length(mapping_sha256), rows_read, rows_new FROM book_imports"
                        ).fetchone() == ("portal.toml", 64, 2, 3)
    assert imp(conn, tmp_path / "export.csv", tmp_path / "portal.toml").status == "unchanged"


def test_amounts_in_cents_through_a_mapping(conn, tmp_path):
    (tmp_path / "m.toml").write_text('amounts = "cents"\n[columns]\nbatch_id = "batch"\nsettlement_date = "date"\n'
                                     'pay_order_id = "order"\ngross = "gross"\nnet = "net"\n'
                                     f'[values]\nmch_id = "{MCH}"\ncurrency = "USD"\n', encoding="utf-8")
    (tmp_path / "e.csv").write_text("batch,date,order,gross,net\nU1,2026-11-02,PU1,2000,1900\n", encoding="utf-8")
    imp(conn, tmp_path / "e.csv", tmp_path / "m.toml")
    assert conn.execute("SELECT gross, fee, net, fee_source FROM settlement_lines").fetchone() == (
        2000, 100, 1900, "derived")


@pytest.mark.parametrize(("rows", "message"), [
    ([("B1", DAY, MCH, "CAD", "PC1", "10O.00", "2.50", "97.50")],
     "r.csv line 2, column 'gross': '10O.00' is not an amount with at most two decimals"),
    ([("B1", DAY, MCH, "CAD", "PC1", "100.005", "2.50", "97.50")],
     "r.csv line 2, column 'gross': '100.005' is not an amount with at most two decimals"),
    ([("B1", "02/11/2026", MCH, "CAD", "PC1", "100.00", "2.50", "97.50")],
     "r.csv line 2, column 'settlement_date': '02/11/2026' is not a date in the format '%Y-%m-%d'"),
    ([("B1", DAY, "99999", "CAD", "PC1", "100.00", "2.50", "97.50")],
     "r.csv line 2, column 'mch_id': merchant '99999' is not configured (IOTPAY_MERCHANTS)"),
    ([("B1", DAY, MCH, "C$", "PC1", "100.00", "2.50", "97.50")],
     "r.csv line 2, column 'currency': 'C$' is not a three-letter currency code"),
    ([("B1", DAY, MCH, "CAD", "PC1", "100.00", "2.50", "97.00")],
     "r.csv line 2, column 'net': 97.00 is not gross 100.00 - fee 2.50"),
    ([("B1", DAY, MCH, "CAD", "PC1", "", "2.50", "97.50")], "r.csv line 2, column 'gross': is empty"),
    ([("", DAY, MCH, "CAD", "PC1", "1.00", "0", "1.00")], "r.csv line 2, column 'batch_id': is empty"),
    (REPORT[:1] + [("B1", DAY, MCH, "CAD", "PC1", "1.00", "0", "1.00")],
     "r.csv line 3, column 'pay_order_id': 'PC1' is already on line 2 of batch 'B1'"),
    (REPORT[:1] + [("B1", DAY, MCH, "USD", "PC2", "1.00", "0", "1.00")],
     "r.csv line 3, column 'currency': batch 'B1' has CAD on line 2, USD here (a batch is one date, merchant and "
     "currency)"),
    (REPORT[:1] + [("B1", DAY, MCH, "CAD", None, None, None, None)],
     "r.csv line 3, column 'gross': empty on the total row of batch 'B1' (and fee and net too)"),
    ([("B1", DAY, MCH, "CAD", None, "1.00", "0", "1.00")],
     "r.csv line 2: batch 'B1' has a total row but no transactions"),
    ([("B1", DAY, MCH2, "CAD", "PX", "1.00", None, None)],
     "r.csv line 2, column fee: empty, the net too, and merchant 10000702 has no fee schedule for channel "
     "(unknown) (fees in IOTPAY_MERCHANTS)"),
])
def test_an_unusable_row_is_named_by_line_and_column_and_nothing_is_imported(conn, tmp_path, rows, message):
    with pytest.raises(InputError) as exc:
        imp(conn, settlement_csv(tmp_path / "r.csv", rows))
    assert str(exc.value) == message
    assert counts(conn)["journal_entries"] == 0 and counts(conn)["settlement_lines"] == 0


COLUMNS = ('[columns]\nbatch_id = "b"\nsettlement_date = "d"\nmch_id = "m"\ncurrency = "c"\npay_order_id = "p"\n'
           'gross = "g"\n')


@pytest.mark.parametrize(("text", "message"), [
    ("nonsense = 1\n" + COLUMNS, "unknown key(s) ['nonsense']"),
    ('[columns]\nbatch_id = "B"\n', "no settlement_date in [columns] or [values]"),
    (COLUMNS + 'colour = "C"\n', "[columns] colour: not a field of this format"),
    (COLUMNS + "[values]\ncurrency = 'CAD'\n", "['currency'] given both in [columns] and in [values]"),
    ('amounts = "euros"\n' + COLUMNS, 'amounts: must be "decimal" or "cents", got \'euros\''),
    ('date_format = "%d/%m"\n' + COLUMNS, "date_format: '%d/%m' does not read back the date it writes"),
    ('delimiter = ";;"\n' + COLUMNS, "delimiter: must be one character"),
    ('encoding = "klingon"\n' + COLUMNS, "encoding: unknown encoding 'klingon'"),
    ("skip_lines = -1\n" + COLUMNS, "skip_lines: must be a whole number >= 0, got -1"),
    ("[columns\n", "not valid TOML"),
])
def test_a_bad_mapping_is_named(conn, tmp_path, text, message):
    (tmp_path / "m.toml").write_text(text, encoding="utf-8")
    settlement_csv(tmp_path / "r.csv", REPORT)
    with pytest.raises(InputError) as exc:
        imp(conn, tmp_path / "r.csv", tmp_path / "m.toml")
    assert str(exc.value).startswith(f"mapping {tmp_path / 'm.toml'}: ")
    assert message in str(exc.value)


def test_a_mapped_column_the_file_lacks_is_named(conn, tmp_path):
    (tmp_path / "m.toml").write_text(MAPPING, encoding="utf-8")
    (tmp_path / "e.csv").write_text(EXPORT.replace("Commission", "Fee"), encoding="utf-8")
    with pytest.raises(InputError) as exc:
        imp(conn, tmp_path / "e.csv", tmp_path / "m.toml")
    assert str(exc.value) == "e.csv line 3 (the header): no column 'Commission' (named in the mapping m.toml)"


def test_a_canonical_file_missing_a_column_is_named(conn, tmp_path):
    settlement_csv(tmp_path / "r.csv", [r[:5] + r[6:] for r in REPORT],
                   header=("batch_id", "settlement_date", "mch_id", "currency", "pay_order_id", "fee", "net"))
    with pytest.raises(InputError, match=r"^r.csv line 1 \(the header\): no column 'gross' \(the canonical columns"):
        imp(conn, tmp_path / "r.csv")


def test_a_missing_file_is_named(conn, tmp_path):
    with pytest.raises(InputError, match=r"^cannot read .*nope.csv: No such file or directory$"):
        imp(conn, tmp_path / "nope.csv")


# --------------------------------------------------------------------- the settlement file series stays the same
def test_the_days_settlement_files_are_the_same_bytes_with_the_books_entries(conn, tmp_path):
    """The golden day (tests/golden) again, with a settlement report, its fees and payout and an adjustment
    dated that day in the ledger: the settlement CSV, the summary and the manifest do not change, and files
    verify finds nothing."""
    from tests.test_export_files import FALL_BACK, GOLDEN, export, seed_fall_back_day
    from worker.books.adjustments import Adjustment, add_adjustment
    from worker.reports.verify import verify_files

    seed_fall_back_day(conn)
    rows = [("G1", "2026-11-01", MCH, "CAD", "PC-MIDNIGHT", "10.00", "0.59", "9.41"),
            ("G1", "2026-11-01", MCH, "CAD", "RP-PARTIAL", "-7.50", "0", "-7.50"),
            ("G2", "2026-11-01", MCH, "USD", "P-USD", "49.99", "1.45", "48.54")]
    imp(conn, settlement_csv(tmp_path / "g.csv", rows))
    add_adjustment(conn, Adjustment(MCH, "CAD", "fees", "clearing", 1, "rounding", "alice", "g1"), BOOKS_MERCHANTS,
                   occurred_at=at("2026-11-01 12:00:00"))
    export(conn, FALL_BACK - timedelta(days=1), tmp_path / "out")
    r = export(conn, FALL_BACK, tmp_path / "out")
    for key, name in (("settlement", "settlement-2026-11-01.csv"), ("summary", "summary-2026-11-01.csv"),
                      ("manifest", "manifest-2026-11-01.json")):
        got = r.files[key].read_bytes()
        if key == "manifest":
            m = json.loads(got)
            m["files"]["settlement-2026-11-01.xlsx"].update(sha256="(xlsx)", bytes=0)
            m["previous_manifest"]["sha256"] = "(previous)"
            got = json.dumps(m, indent=2, sort_keys=True).encode() + b"\n"
        assert got == (GOLDEN / name).read_bytes(), f"{name} differs from tests/golden/{name}"
    report = verify_files(conn, tmp_path / "out", TORONTO, now=at("2026-11-02 12:00:00"))
    assert report.ok, report.to_json()
    assert run_checks(conn).ok
