"""Posting rules (placeholder: being written)."""

from __future__ import annotations

import psycopg

from worker.iotpay.notify import Notify
from worker.ledger.outcome import PostResult


def post_notify(conn: psycopg.Connection, notify: Notify, *, source: str = "notify") -> PostResult:
    """Post one notify exactly once, in its own transaction. Raises RetryableError when the DB is down."""
    raise NotImplementedError
