"""The demo's scratch database: created on the configured server, dropped at the end unless kept.

CREATE and DROP DATABASE take an identifier, not a value, so they are composed with
`psycopg.sql.Identifier` here rather than kept as named queries (which are plain statements).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def create_scratch_database(server_url: str) -> str:
    """Create a database named after the time on the server; return its URL. Raises psycopg errors."""
    name = f"iotledger_demo_{datetime.now(timezone.utc):%Y%m%d_%H%M%S}_{secrets.token_hex(2)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_dbname(server_url, name)


def drop_scratch_database(server_url: str, db_url: str) -> None:
    """Drop the database db_url names, closing whatever is still connected. Raises psycopg errors."""
    name = urlsplit(db_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def with_dbname(url: str, name: str) -> str:
    """The same server URL naming another database (kept a URL: the settings insist on one)."""
    parts = urlsplit(url)
    if parts.scheme.startswith("postgres"):
        return urlunsplit(parts._replace(path="/" + name))
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)
