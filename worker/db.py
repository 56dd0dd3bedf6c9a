"""The database boundary: connections, connection pools, psycopg's errors, advisory-lock keys.

psycopg's errors become the project's here, once (procrastinate's `wrap_exceptions` is the model):

    psycopg.OperationalError       RetryableError ("PostgreSQL unavailable ...": down, restarting,
    (psycopg_pool.PoolTimeout)      unreachable, or no pooled connection in time)
    connecting: missing database,  ConfigError naming DATABASE_URL (exit 2): no retry can fix it
    role, or refused password
    IntegrityError, DataError      for the caller to name: `refusal()` says what PostgreSQL refused
    anything else                  unchanged (a missing table is a schema not migrated: the CLI says so)

Beside config and errors at the bottom of the imports: every layer may use it, it uses none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg

from worker.errors import ConfigError, RetryableError

if TYPE_CHECKING:
    import psycopg_pool

CONNECT_TIMEOUT_S = 5  # a command with PostgreSQL down fails within seconds
POOL_TIMEOUT_S = 30.0  # psycopg_pool's default wait for a connection

# Advisory-lock keys, all of one family (7201944...) so that they collide with nobody else's.
ORDER_LOCK_SEED = 7_201_944  # hashtextextended seed of the per-order transaction locks (lock_order_tree)
MIGRATE_LOCK_KEY = 7_201_944_031  # session lock of `iotledger migrate`
EXPORT_LOCK_KEY = 7_201_944_032  # transaction lock: exports of any day serialise (export_lock)
SWEEP_LOCK_KEY = 7_201_944_105  # session lock of one sweep pass (sweep_try_lock)
# transaction lock (with a second int key per name and address): sign-in attempts take turns (console_signin_lock)
SIGNIN_LOCK_KEY = 7_201_944
BOOKS_LOCK_KEY = 7_201_944_160  # transaction lock: book imports and adjustments serialise (books_lock_imports)

REFUSALS = (psycopg.IntegrityError, psycopg.DataError)  # PostgreSQL refused the data: no retry can fix it


def order_lock_keys(pay_order_id: str, original_order_id: str | None = None) -> tuple[str, ...]:
    """The keys a post of one order locks (with ORDER_LOCK_SEED), in the order they are taken.

    A pay locks its own id. A refund (original_order_id given) locks its pay's id (the tree: the
    pay and all its refunds serialise) and its own id, so that a pay and a refund that share one
    payOrderId serialise too. Keys are taken in sorted order, so two posts never wait on each
    other in a cycle.
    """
    if original_order_id:
        return tuple(sorted({original_order_id, pay_order_id}))
    return (pay_order_id,)


def unavailable(exc: BaseException, where: str = "") -> RetryableError:
    """The RetryableError for PostgreSQL being unavailable; `where` says what was being done
    ("while posting PC-1"). Returned, not raised: `raise db.unavailable(exc) from exc`."""
    return RetryableError(f"PostgreSQL unavailable{' ' + where if where else ''}: {exc}".strip())


@contextlib.contextmanager
def translated(where: str = "") -> Iterator[None]:
    """Run a block (or, as a decorator, a function) with psycopg's 'unavailable' errors, pool
    timeouts included, raised as RetryableError (see `unavailable`). Other errors pass unchanged."""
    try:
        yield
    except psycopg.OperationalError as exc:  # AdminShutdown and psycopg_pool.PoolTimeout are ones too
        raise unavailable(exc, where) from exc


def refusal(exc: psycopg.Error, what: str) -> str:
    """What PostgreSQL refused and why, for a PermanentError: 'PostgreSQL refused <what> (<the
    constraint, or the SQLSTATE>): <its message>'."""
    return f"PostgreSQL refused {what} ({exc.diag.constraint_name or exc.diag.sqlstate}): {exc.diag.message_primary}"


def connect_error(exc: psycopg.OperationalError) -> ConfigError | RetryableError:
    """One line: a database or role that does not exist, or a refused password, is configuration (exit 2);
    anything else is the service being unavailable (exit 3)."""
    text = str(exc).strip()
    fatal = next((line.split("FATAL:", 1)[1].strip() for line in text.splitlines() if "FATAL:" in line), None)
    if fatal and ("does not exist" in fatal or "authentication failed" in fatal or "no password" in fatal):
        return ConfigError("DATABASE_URL", fatal)
    first = text.splitlines()[0] if text else type(exc).__name__
    return RetryableError(f"PostgreSQL unavailable: {first}")


def connect(database_url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A new connection, given up after CONNECT_TIMEOUT_S. Raises ConfigError for a database,
    role or password that PostgreSQL refuses, RetryableError when it is down (see connect_error)."""
    try:
        return psycopg.connect(database_url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        raise connect_error(exc) from exc


def open_pool(database_url: str, *, name: str, max_size: int, timeout: float = POOL_TIMEOUT_S,
              autocommit: bool = False, reconnect_timeout: float | None = None) -> psycopg_pool.ConnectionPool:
    """A connection pool of 1 to max_size connections, opening in the background (so a process
    starts with PostgreSQL down). `timeout` is how long `connection()` waits before raising
    psycopg_pool.PoolTimeout (an OperationalError: `translated` makes it a RetryableError);
    `reconnect_timeout` how long the pool keeps trying to reconnect (psycopg_pool's default
    without). Raises nothing: connections are made by the pool's own threads."""
    import psycopg_pool  # imported here: a command that opens no pool does not load it

    options = {} if reconnect_timeout is None else {"reconnect_timeout": reconnect_timeout}
    return psycopg_pool.ConnectionPool(database_url, min_size=1, max_size=max_size, timeout=timeout, open=True,
                                       name=name, kwargs={"autocommit": True} if autocommit else None, **options)
