"""`iotledger migrate`: in order, recorded, idempotent, safe when run twice at once."""

from __future__ import annotations

import multiprocessing

import psycopg
import pytest

from tests import cli
from worker.migrations import MigrationError, discover, migrate


def test_migrate_applies_everything_once_and_records_it(empty_db_url):
    names = [m.name for m in discover()]
    assert names and names == sorted(names)
    assert migrate(empty_db_url) == names
    assert migrate(empty_db_url) == []
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == names


def _migrate(url: str, out) -> None:
    out.put(migrate(url))


def test_two_processes_migrating_at_once_apply_each_file_once(empty_db_url):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_migrate, args=(empty_db_url, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = sorted((out.get(timeout=5) for _ in procs), key=len)
    assert results[0] == [] and results[1] == [] and results[2] == [m.name for m in discover()]


def test_an_edited_applied_migration_is_refused(empty_db_url, tmp_path):
    (tmp_path / "001_first.sql").write_text("CREATE TABLE t1 (id int);")
    assert migrate(empty_db_url, tmp_path) == ["001_first.sql"]
    (tmp_path / "001_first.sql").write_text("CREATE TABLE t1 (id bigint);")
    with pytest.raises(MigrationError, match="forward-only"):
        migrate(empty_db_url, tmp_path)


def test_a_failing_migration_leaves_nothing_half_applied(empty_db_url, tmp_path):
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE t1 (id int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE t2 (id int); SELECT no_such_function();")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate(empty_db_url, tmp_path)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('t2')").fetchone()[0] is None
        assert [r[0] for r in conn.execute("SELECT name FROM schema_migrations")] == ["001_ok.sql"]


def test_migrate_command(empty_db_url):
    r = cli.run("migrate", env={"DATABASE_URL": empty_db_url})
    assert r.returncode == 0 and "applied" in r.stdout
    r = cli.run("migrate", env={"DATABASE_URL": empty_db_url})
    assert r.returncode == 0 and "up to date" in r.stdout
