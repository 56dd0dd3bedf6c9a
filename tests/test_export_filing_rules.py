"""The file series' rules as the database enforces them (sql/006_file_series.sql, sql/007_filing_set_based.sql,
sql/009_filing_runs.sql),
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


# ---------------------------------------------------------------------------------------------- runs (sql/009)
# The export files a day as runs of consecutive entry ids (filed_runs). The entries of these tests
# occurred now(): their file's day is one far ahead.
RUN_DAY = "2099-01-02"
FILE_RUNS = """
WITH taken AS (DELETE FROM entries_awaiting_file RETURNING entry_id),
numbered AS (SELECT entry_id, entry_id - row_number() OVER (ORDER BY entry_id) AS run FROM taken)
INSERT INTO filed_runs (export_date, settlement_tz, first_entry, last_entry)
SELECT %s, 'UTC', min(entry_id), max(entry_id) FROM numbered GROUP BY run
"""
FILE_RUN = "INSERT INTO filed_runs (export_date, settlement_tz, first_entry, last_entry) VALUES (%s, 'UTC', %s, %s)"


def test_a_day_filed_as_runs_holds_each_entry_once_and_a_gap_splits_a_run(conn, entries):
    conn.execute("DELETE FROM entries_awaiting_file WHERE entry_id = %s", (entries[2],))
    conn.execute(FILE_ONE, (entries[2], RUN_DAY, RUN_DAY))  # filed alone: the others are two runs around it
    conn.execute(FILE_RUNS, (RUN_DAY,))
    conn.execute(FILE_DAY, (RUN_DAY,))
    conn.commit()
    assert conn.execute("SELECT first_entry, last_entry FROM filed_runs ORDER BY 1").fetchall() == [
        (entries[0], entries[1]), (entries[3], entries[4])]
    assert conn.execute("SELECT entry_id, export_date::text, business_date <= export_date FROM filed_entries "
                        "ORDER BY 1").fetchall() == [(e, RUN_DAY, True) for e in entries]
    assert (n_rows(conn, "entries_awaiting_file"), n_rows(conn, "filing_checks")) == (0, 0)
    # in a second file too: never, as a run or alone
    later = "2099-01-03"
    exc = refused(conn, errors.ExclusionViolation, lambda: conn.execute(FILE_RUN, (later, entries[1], entries[1])))
    assert exc.diag.constraint_name == "filed_runs_no_overlap"
    exc = refused(conn, errors.UniqueViolation, lambda: conn.execute(FILE_RUN, (later, entries[2], entries[2])))
    assert exc.diag.constraint_name == "filed_runs_filed_once" and str(entries[2]) in str(exc)
    exc = refused(conn, errors.UniqueViolation, lambda: conn.execute(FILE_ONE, (entries[4], later, later)))
    assert exc.diag.constraint_name == "filed_runs_filed_once" and str(entries[4]) in str(exc)


def test_a_run_holds_journal_entries_only(conn, entries):
    conn.execute(FILE_DAY, (RUN_DAY,))
    conn.execute("DELETE FROM entries_awaiting_file")
    beyond = (RUN_DAY, entries[3], entries[4] + 1)
    exc = refused(conn, errors.ForeignKeyViolation, lambda: conn.execute(FILE_RUN, beyond))
    assert exc.diag.constraint_name == "filed_runs_entry_id_fkey"
    conn.execute(FILE_DAY, (RUN_DAY,))
    conn.execute("DELETE FROM entries_awaiting_file")
    conn.execute(FILE_RUN, (RUN_DAY, entries[0], entries[4]))  # the twin: every id an entry
    conn.commit()
    assert n_rows(conn, "filed_entries") == 5


def test_a_run_of_a_later_business_day_than_its_file_is_refused(conn, entries):
    conn.execute(FILE_DAY, (DAY,))  # the entries occurred now(), after 2026-01-02
    conn.execute("DELETE FROM entries_awaiting_file")
    exc = refused(conn, errors.CheckViolation, lambda: conn.execute(FILE_RUN, (DAY, entries[0], entries[0])))
    assert exc.diag.constraint_name == "filed_runs_business_date_check"


def test_a_run_still_awaiting_or_of_an_unrecorded_day_is_refused_at_commit(conn, entries):
    conn.execute(FILE_DAY, (RUN_DAY,))
    conn.execute("DELETE FROM entries_awaiting_file WHERE entry_id <> %s", (entries[2],))
    conn.execute(FILE_RUN, (RUN_DAY, entries[0], entries[4]))  # one of them still awaits
    exc = refused(conn, errors.CheckViolation, conn.commit)
    assert exc.diag.constraint_name == "entry_filed_once" and str(entries[2]) in str(exc)
    conn.execute(FILE_RUNS, (RUN_DAY,))  # its day is not recorded
    exc = refused(conn, errors.ForeignKeyViolation, conn.commit)
    assert exc.diag.constraint_name == "exported_entries_export_date_fkey"
    assert (n_rows(conn, "filed_runs"), n_rows(conn, "entries_awaiting_file")) == (0, 5)


def test_runs_stay_and_so_does_their_recorded_day(conn, entries):
    conn.execute(FILE_DAY, (RUN_DAY,))
    conn.execute(FILE_RUNS, (RUN_DAY,))
    conn.commit()
    for statement, op in (("UPDATE filed_runs SET export_date = '2099-01-03'", "UPDATE"),
                          ("DELETE FROM filed_runs", "DELETE"), ("TRUNCATE filed_runs", "TRUNCATE")):
        exc = refused(conn, errors.RestrictViolation, lambda: conn.execute(statement))
        assert f"filed_runs is append-only: {op} is not allowed" in str(exc)
    for statement in (f"DELETE FROM settlement_exports WHERE export_date = '{RUN_DAY}'",
                      f"UPDATE settlement_exports SET export_date = '2099-01-04' WHERE export_date = '{RUN_DAY}'",
                      "TRUNCATE settlement_exports"):
        exc = refused(conn, errors.ForeignKeyViolation, lambda: conn.execute(statement))
        assert exc.diag.constraint_name == "exported_entries_export_date_fkey", statement
    assert n_rows(conn, "filed_entries") == 5
