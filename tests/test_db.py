"""The database boundary (worker/db.py): connecting, pools, psycopg's errors, advisory-lock keys."""

from __future__ import annotations

import psycopg
import pytest

from tests.fix_db import with_dbname
from worker import db
from worker.errors import ConfigError, RetryableError


def test_a_pay_locks_its_id_and_a_refund_its_tree_in_sorted_order():
    assert db.order_lock_keys("PC-2") == ("PC-2",)
    assert db.order_lock_keys("RP-1", "PC-2") == ("PC-2", "RP-1")
    assert db.order_lock_keys("A-1", "PC-2") == ("A-1", "PC-2")
    assert db.order_lock_keys("PC-2", "PC-2") == ("PC-2",)  # a refund under its pay's own id


def test_every_lock_key_is_of_one_family_and_distinct():
    keys = [db.MIGRATE_LOCK_KEY, db.EXPORT_LOCK_KEY, db.SWEEP_LOCK_KEY]
    assert len(set(keys)) == len(keys)
    assert all(str(k).startswith(str(db.ORDER_LOCK_SEED)) for k in keys)


def test_unavailable_errors_become_retryable_and_say_where():
    with pytest.raises(RetryableError, match=r"^PostgreSQL unavailable while posting PC-1: server closed") as caught:
        with db.translated("while posting PC-1"):
            raise psycopg.OperationalError("server closed the connection unexpectedly")
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


def test_translated_is_also_a_decorator_and_lets_other_errors_through():
    @db.translated()
    def refused() -> None:
        raise psycopg.errors.UniqueViolation("duplicate key")

    with pytest.raises(psycopg.errors.UniqueViolation):
        refused()


def test_a_pool_timeout_is_unavailable(db_url):
    pool = db.open_pool(db_url, name="test", max_size=1, timeout=0.2)
    try:
        with pool.connection():
            with pytest.raises(RetryableError, match="^PostgreSQL unavailable: couldn't get a connection"):
                with db.translated(), pool.connection():
                    pass
    finally:
        pool.close()


def test_the_database_refusing_data_is_described_by_its_constraint(conn):
    with pytest.raises(psycopg.IntegrityError) as caught:
        conn.execute("CREATE TEMP TABLE t (n int CONSTRAINT n_positive CHECK (n > 0))")
        conn.execute("INSERT INTO t VALUES (-1)")
    conn.rollback()
    assert isinstance(caught.value, db.REFUSALS)
    assert db.refusal(caught.value, "the row").startswith("PostgreSQL refused the row (n_positive): new row")


def test_connecting_to_a_missing_database_is_configuration(pg_server_url):
    with pytest.raises(ConfigError, match='DATABASE_URL: database "iotledger_no_such_db" does not exist'):
        db.connect(with_dbname(pg_server_url, "iotledger_no_such_db"))


def test_connecting_to_nothing_is_unavailable():
    with pytest.raises(RetryableError, match="^PostgreSQL unavailable: "):
        db.connect("postgresql://postgres@127.0.0.1:1/postgres")


def test_connect_errors_are_configuration_only_when_no_retry_can_help():
    assert isinstance(db.connect_error(psycopg.OperationalError(
        'connection failed: FATAL:  role "nobody" does not exist')), ConfigError)
    assert isinstance(db.connect_error(psycopg.OperationalError(
        'connection failed: FATAL:  password authentication failed for user "x"')), ConfigError)
    err = db.connect_error(psycopg.OperationalError("connection failed: Connection refused\n\tIs the server running?"))
    assert isinstance(err, RetryableError) and str(err) == "PostgreSQL unavailable: connection failed: Connection refused"
