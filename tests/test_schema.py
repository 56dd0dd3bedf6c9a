"""The schema built by the migrations is the one the code expects.

Every named query in sql/queries/ is prepared against the migrated database: a table or
column the code uses but the migrations do not create (or a type mismatch) fails here.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from worker.sqlfiles import queries

_NAMED = re.compile(r"%\((\w+)\)s")


def _to_dollar(query: str) -> str:
    names: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return _NAMED.sub(repl, query.replace("%s", "$1"))


@pytest.mark.parametrize("name", sorted(queries()))
def test_named_query_prepares_against_migrated_schema(name, conn):
    res = conn.pgconn.prepare(name.encode(), _to_dollar(queries()[name]).encode())
    assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message.decode()
    desc = conn.pgconn.describe_prepared(name.encode())
    assert desc.status == psycopg.pq.ExecStatus.COMMAND_OK, desc.error_message.decode()


def test_ledger_tables_and_rules_exist(conn):
    tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"accounts", "orders", "journal_entries", "postings", "pay_balances", "ledger_exceptions",
            "schema_migrations"} <= tables
    triggers = {r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    assert {"entry_balanced", "posting_balanced", "journal_entries_append_only", "postings_append_only",
            "journal_entries_track_refundable", "pay_balances_guard"} <= triggers
