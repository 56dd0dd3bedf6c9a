"""The file series' rules as the database enforces them (sql/006_file_series.sql, sql/007_filing_set_based.sql),
reached with plain SQL that bypasses the export: every entry is awaiting a file or in exactly one file,
a filed entry is a journal entry, the day it is filed into is recorded, and a filed entry stays filed.
Each refusal names its constraint; each has a twin that is accepted. The checks run once per
statement, so filing many entries in one statement is checked as strictly as filing one."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from tests.test_ledger_schema_rules import n_rows, posted, refused

DAY = "2026-01-02"
FILE_DAY = "INSERT INTO settlement_exports (export_date, settlement_tz, manifest) VALUES (%s, 'UTC', '{}')"
# what the export does: take the entries out of entries_awaiting_file and file them, in one statement
FILE_ALL = """
WITH taken AS (DELETE FROM entries_awaiting_file RETURNING entry_id)
INSERT INTO exported_entries (entry_id, export_date, business_date) SELECT entry_id, %s, %s FROM taken
"""
FILE_ONE = "INSERT INTO exported_entries (entry_id, export_date, business_date) VALUES (%s, %s, %s)"


@pytest.fixture
def entries(conn: psycopg.Connection) -> list[int]:
    return [posted(conn, f"PC{i}", "pay", 100 + i) for i in range(5)]


def test_a_day_filed_in_one_statement_holds_each_entry_once(conn, entries):
    conn.execute(FILE_ALL, (DAY, DAY))
    conn.execute(FILE_DAY, (DAY,))  # recorded after its entries, as the export does: checked at commit
    conn.commit()
    assert conn.execute("SELECT entry_id FROM exported_entries ORDER BY 1").fetchall() == [(e,) for e in entries]
    assert (n_rows(conn, "entries_awaiting_file"), n_rows(conn, "filing_checks")) == (0, 0)
    # in a second file too: never
    exc = refused(conn, errors.UniqueViolation, lambda: conn.execute(FILE_ONE, (entries[0], DAY, DAY)))
    assert exc.diag.constraint_name == "exported_entries_pkey"


def test_an_entry_still_awaiting_a_file_is_refused_at_commit_among_many(conn, entries):
    conn.execute(FILE_DAY, (DAY,))
    conn.execute("DELETE FROM entries_awaiting_file WHERE entry_id <> %s", (entries[2],))
    conn.execute("INSERT INTO exported_entries (entry_id, export_date, business_date) "
                 "SELECT unnest(%s::bigint[]), %s, %s", (entries, DAY, DAY))  # one of them still awaits
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "entry_filed_once" and str(entries[2]) in str(exc)
    # taken out of entries_awaiting_file later in the same transaction: the rule holds at commit
    conn.execute(FILE_DAY, (DAY,))
    conn.execute(FILE_ONE, (entries[2], DAY, DAY))
    conn.execute("DELETE FROM entries_awaiting_file WHERE entry_id = %s", (entries[2],))
    conn.commit()
    assert (n_rows(conn, "exported_entries"), n_rows(conn, "filing_checks")) == (1, 0)
    assert n_rows(conn, "entries_awaiting_file") == 4


def test_only_journal_entries_are_filed(conn, entries):
    conn.execute(FILE_DAY, (DAY,))
    exc = refused(conn, errors.ForeignKeyViolation, lambda: conn.execute(
        "INSERT INTO exported_entries (entry_id, export_date, business_date) VALUES (%s, %s, %s), (%s, %s, %s)",
        (entries[0], DAY, DAY, 999_999, DAY, DAY)))
    assert exc.diag.constraint_name == "exported_entries_entry_id_fkey" and "999999" in str(exc)


def test_entries_are_filed_only_into_a_recorded_day(conn, entries):
    conn.execute(FILE_ALL, (DAY, DAY))
    exc = refused(conn, errors.ForeignKeyViolation, conn.commit)
    assert exc.diag.constraint_name == "exported_entries_export_date_fkey"
    assert (n_rows(conn, "exported_entries"), n_rows(conn, "entries_awaiting_file")) == (0, 5)


def test_a_recorded_day_holding_entries_keeps_its_date_and_stays(conn, entries):
    conn.execute(FILE_DAY, (DAY,))
    conn.execute(FILE_DAY, ("2026-01-03",))  # a day with no entries may change
    conn.execute(FILE_ALL, (DAY, DAY))
    conn.commit()
    for statement in (f"DELETE FROM settlement_exports WHERE export_date = '{DAY}'",
                      f"UPDATE settlement_exports SET export_date = '2026-01-04' WHERE export_date = '{DAY}'",
                      "TRUNCATE settlement_exports"):
        exc = refused(conn, errors.ForeignKeyViolation, lambda: conn.execute(statement))
        assert exc.diag.constraint_name == "exported_entries_export_date_fkey", statement
    conn.execute(f"UPDATE settlement_exports SET version = 2 WHERE export_date = '{DAY}'")  # a restatement
    conn.execute("UPDATE settlement_exports SET export_date = '2026-01-04' WHERE export_date = '2026-01-03'")
    conn.execute("DELETE FROM settlement_exports WHERE export_date = '2026-01-04'")
    conn.commit()
    assert n_rows(conn, "settlement_exports") == 1


def test_a_filed_entry_stays_in_its_file(conn, entries):
    conn.execute(FILE_DAY, (DAY,))
    conn.execute(FILE_ALL, (DAY, DAY))
    conn.commit()
    for statement, op in (("UPDATE exported_entries SET export_date = '2026-01-03'", "UPDATE"),
                          ("DELETE FROM exported_entries", "DELETE"), ("TRUNCATE exported_entries", "TRUNCATE")):
        exc = refused(conn, errors.RestrictViolation, lambda: conn.execute(statement))
        assert f"exported_entries is append-only: {op} is not allowed" in str(exc)
    assert n_rows(conn, "exported_entries") == 5
