"""`iotledger settlements import`, `bank import`, `adjust` and `check`, run as a user runs them: exit codes, one
readable line for an operator's mistake, every difference of a refused file, and the books adding up."""

from __future__ import annotations

import json

import pytest

from tests import cli
from tests.books_helpers import BOOKS_MERCHANTS_JSON, ofx_statement, settlement_csv, utc
from tests.factories import MCH, v3_pay
from tests.ledger_helpers import post
from tests.test_cli_matrix import DOWN_URL

ROWS = [("B1", "2026-11-02", MCH, "CAD", "PC1", "140.00", "4.25", "135.75"),
        ("B1", "2026-11-02", MCH, "CAD", "PC2", "10.00", None, None)]


def run(db_url: str, *args: str):
    return cli.run(*args, env={"DATABASE_URL": db_url, "IOTPAY_MERCHANTS": BOOKS_MERCHANTS_JSON,
                               "IOTLEDGER_LOG_LEVEL": "WARNING"})


def one_line(proc, start: str) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith(start), proc.stderr


@pytest.mark.slow
def test_settlements_import_from_the_command_line(db_url, conn, tmp_path):
    post(conn, v3_pay("PC1", 14000))
    post(conn, v3_pay("PC2", 1000))
    report = settlement_csv(tmp_path / "r.csv", ROWS)
    first = run(db_url, "settlements", "import", str(report))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("imported r.csv as import #1: batches 1, batches new 1"), first.stdout
    again = run(db_url, "settlements", "import", str(report), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "unchanged"
    changed = settlement_csv(tmp_path / "r2.csv", [ROWS[0][:6] + ("4.30", "135.70"), ROWS[1]])
    refused = run(db_url, "settlements", "import", str(changed))
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "iotledger settlements import: refused: settlement report r2.csv contradicts what was imported before; "
        "nothing was imported. 2 difference(s):",
        "  batch 'B1': 'PC1' fee 4.30 here (line 2), 4.25 in import #1 (r.csv)",
        "  batch 'B1': 'PC1' net 135.70 here (line 2), 135.75 in import #1 (r.csv)"]
    check = run(db_url, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    # PC2's fee is the PF_CC schedule's: 2.5 % of 10.00
    assert "    net 15000 = clearing 0 + fees 450 + in_transit 14550 + bank 0: adds up" in check.stdout
    data = json.loads(run(db_url, "check", "--json").stdout)
    cad = data["currencies"]["CAD"]
    assert (cad["net_cents"], cad["clearing_cents"], cad["fees_cents"], cad["in_transit"], cad["bank_cents"]) == (
        15000, 0, 450, "145.50", 0)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "files", "start"), [
    (["settlements", "import", "{tmp}/nope.csv"], {}, "iotledger settlements: cannot read {tmp}/nope.csv: No such file"),
    (["settlements", "import", "{tmp}/r.csv", "--mapping", "{tmp}/nope.toml"], {"r.csv": "ok"},
     "iotledger settlements: mapping {tmp}/nope.toml: cannot read it: No such file"),
    (["settlements", "import", "{tmp}/r.csv", "--mapping", "{tmp}/m.toml"], {"r.csv": "ok", "m.toml": "[columns]\n"},
     "iotledger settlements: mapping {tmp}/m.toml: no batch_id in [columns] or [values]"),
    (["settlements", "import", "{tmp}/r.csv"], {"r.csv": "bad"},
     "iotledger settlements: r.csv line 3, column 'gross': '1O.00' is not an amount with at most two decimals"),
    (["bank", "import", "{tmp}/nope.ofx"], {}, "iotledger bank: cannot read {tmp}/nope.ofx: No such file"),
    (["bank", "import", "{tmp}/s.qfx"], {"s.qfx": "<OFX>nonsense"}, "iotledger bank: s.qfx: not an OFX file"),
    (["bank", "import", "{tmp}/s.dat"], {"s.dat": "x"}, "iotledger bank: s.dat: say which format it is with --format"),
    (["bank", "import", "{tmp}/s.dat", "--format", "xls"], {"s.dat": "x"}, "usage: iotledger bank import"),
    (["adjust", "--mch-id", MCH, "--currency", "CAD", "--debit", "fees", "--credit", "clearing", "--amount", "1.234",
      "--reason", "r", "--by", "me"], {}, "iotledger adjust: --amount: '1.234' is not an amount"),
    (["adjust", "--mch-id", "123", "--currency", "CAD", "--debit", "fees", "--credit", "clearing", "--amount", "1",
      "--reason", "r", "--by", "me"], {}, "iotledger adjust: --mch-id: merchant '123' is not configured"),
    (["adjust", "--mch-id", MCH, "--currency", "CAD", "--debit", "fees", "--credit", "fees", "--amount", "1",
      "--reason", "r", "--by", "me"], {}, "iotledger adjust: --debit and --credit are both fees"),
    (["adjust", "--mch-id", MCH, "--currency", "CAD", "--debit", "fees", "--credit", "clearing", "--amount", "0",
      "--reason", "r", "--by", "me"], {}, "iotledger adjust: --amount: must be more than 0"),
    (["adjust", "--mch-id", MCH, "--currency", "CAD", "--debit", "fees", "--credit", "clearing", "--amount", "1",
      "--reason", " ", "--by", "me"], {}, "iotledger adjust: --reason: say why"),
    (["adjust", "--mch-id", MCH, "--currency", "CAD", "--debit", "sales", "--credit", "clearing", "--amount", "1",
      "--reason", "r", "--by", "me"], {}, "usage: iotledger adjust"),
])
def test_an_operators_mistake_is_one_line_and_exit_2(db_url, conn, tmp_path, args, files, start):
    contents = {"ok": None, "bad": [ROWS[0], ("B1", "2026-11-02", MCH, "CAD", "PC2", "1O.00", None, None)]}
    for name, content in files.items():
        if content in contents:
            settlement_csv(tmp_path / name, contents[content] or ROWS)
        else:
            (tmp_path / name).write_text(content, encoding="utf-8")
    proc = run(db_url, *[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2, proc.stderr
    if start.startswith("usage:"):
        assert proc.stderr.startswith(start) and "Traceback" not in proc.stderr
    else:
        one_line(proc, start.format(tmp=tmp_path))
    assert conn.execute("SELECT count(*) FROM journal_entries").fetchone()[0] == 0


@pytest.mark.slow
def test_bank_import_and_adjust_from_the_command_line(db_url, conn, tmp_path):
    path = ofx_statement(tmp_path / "nov.ofx", [{"fitid": "F1", "amount": "135.75", "posted": utc(2026, 11, 3)}])
    first = run(db_url, "bank", "import", str(path), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["totals"] == [{"account": "000123456789", "currency": "CAD", "transactions": 1,
                                                    "credits_cents": 13575, "credits": "135.75", "debits_cents": 0,
                                                    "debits": "0.00"}]
    assert run(db_url, "bank", "import", str(path)).stdout.startswith("unchanged: nov.ofx holds nothing new")
    other = ofx_statement(tmp_path / "dec.ofx", [{"fitid": "F1", "amount": "135.70", "posted": utc(2026, 11, 3)}])
    refused = run(db_url, "bank", "import", str(other))
    assert refused.returncode == 1 and refused.stderr.splitlines()[1:] == [
        "  account 000123456789 transaction 'F1': amount 135.70 here, 135.75 in import #1 (nov.ofx)"]

    adjust = ["adjust", "--mch-id", MCH, "--currency", "cad", "--debit", "fees", "--credit", "in_transit",
              "--amount", "0.05", "--reason", "short deposit of B1 written off", "--by", "alice", "--key", "B1-short"]
    done = run(db_url, *adjust)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("posted adjustment B1-short: entry #")
    assert done.stdout.rstrip().endswith("10000701 CAD Dr fees Cr in_transit 0.05 by alice: short deposit of B1 "
                                         "written off")
    again = run(db_url, *adjust, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "unchanged"
    clash = run(db_url, *adjust[:-4], "--by", "bob", "--key", "B1-short")
    assert clash.returncode == 1
    assert clash.stderr.splitlines()[1:] == ["  author 'bob' here, 'alice' in entry 1"]
    rows = conn.execute("SELECT a.reason, a.author, a.key, a.mismatch_id, je.kind, je.memo FROM adjustments a "
                        "JOIN journal_entries je ON je.id = a.entry_id").fetchall()
    assert rows == [("short deposit of B1 written off", "alice", "B1-short", None, "adjustment",
                     "short deposit of B1 written off")]
    assert run(db_url, "check").returncode == 0


@pytest.mark.slow
def test_the_books_commands_on_an_unmigrated_database_and_with_postgresql_down(empty_db_url, tmp_path):
    report = settlement_csv(tmp_path / "r.csv", ROWS)
    statement = ofx_statement(tmp_path / "s.ofx", [{"fitid": "F1", "amount": "1.00", "posted": utc(2026, 11, 3)}])
    commands = [["settlements", "import", str(report)], ["bank", "import", str(statement)],
                ["adjust", "--mch-id", MCH, "--currency", "CAD", "--debit", "fees", "--credit", "clearing",
                 "--amount", "1", "--reason", "r", "--by", "me"]]
    for args in commands:
        proc = run(empty_db_url, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "run iotledger migrate" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        down = run(DOWN_URL, *args)
        assert down.returncode == 3, (args, down.stderr)
        assert "PostgreSQL" in down.stderr and "Traceback" not in down.stderr, down.stderr
