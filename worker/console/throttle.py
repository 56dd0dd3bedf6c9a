"""Repeated failed sign-ins are throttled, per name and source address, in PostgreSQL.

A sign-in attempt is first counted as a failure, under a transaction lock of its (name,
address), so attempts reaching several server processes at once take their turn and each counts
the ones before it; a right password takes it back (and forgives that name's earlier failures
from that address). Past `limit` failures within `window` seconds of one name from one address,
or ten times that of one address (a spray over many names), the attempt is refused before its
password is even checked, until the oldest failure leaves the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg.rows import dict_row

from worker.db import SIGNIN_LOCK_KEY
from worker.sqlfiles import q

ADDRESS_FACTOR = 10  # failures of one address (any names) allowed: this many times the per-name limit


@dataclass(frozen=True)
class Attempt:
    """One attempt, counted: whether it may go on, and when to try again if not."""

    allowed: bool
    retry_after_seconds: int = 0


def begin_attempt(conn: psycopg.Connection, name: str, remote_addr: str, *, limit: int, window: int) -> Attempt:
    """Count one attempt as a failure and commit; not allowed past the limits. Raises psycopg errors."""
    params = {"key": SIGNIN_LOCK_KEY, "name": name[:200], "remote_addr": remote_addr, "window": window}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q("console_signin_lock"), params)
        row = cur.execute(q("console_signin_attempt"), params).fetchone()
    if row["pair_failures"] <= limit and row["address_failures"] <= limit * ADDRESS_FACTOR:
        return Attempt(True)
    oldest = row["oldest"] or datetime.now(timezone.utc)
    wait = oldest + timedelta(seconds=window) - datetime.now(timezone.utc)
    return Attempt(False, max(1, int(wait.total_seconds()) + 1))


def succeeded(conn: psycopg.Connection, name: str, remote_addr: str) -> None:
    """The password was right: this name's failures from this address are forgiven. Commits."""
    with conn.transaction():
        conn.execute(q("console_signin_succeeded"), {"name": name[:200], "remote_addr": remote_addr})
