"""pytest plugin: a real PostgreSQL database per test, cloned from a migrated template.

The server comes from TEST_DATABASE_URL (default: the local service at 127.0.0.1:5432, user
postgres). On a laptop without it, the embedded PostgreSQL is used; under CI=true a missing
server fails the run instead of falling back.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

from worker.migrations import migrate

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return url
    except psycopg.OperationalError:
        if CI:
            raise
    from worker.config import Settings
    from worker.services import embedded_database_url

    from tests.fix_services import started

    folder = os.path.abspath(".iotledger")
    started.append(Path(folder))
    return embedded_database_url(Settings.from_env({"IOTLEDGER_DATA_DIR": folder}))


def with_dbname(url: str, dbname: str) -> str:
    """The same server URL (postgresql://...) pointing at another database."""
    params = conninfo_to_dict(url)
    user = quote(params.get("user") or "postgres", safe="")
    password = ":" + quote(params["password"], safe="") if params.get("password") else ""
    host = params.get("host") or "127.0.0.1"
    port = params.get("port") or "5432"
    if host.startswith("/"):  # unix socket folder (the embedded server)
        return f"postgresql://{user}{password}@/{quote(dbname)}?host={quote(host, safe='/')}&port={port}"
    return f"postgresql://{user}{password}@{host}:{port}/{quote(dbname)}"


def create_database(server_url: str, prefix: str, template: str | None = None) -> str:
    """Create a uniquely named database on the server (optionally from a template); return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(stmt)
    return name


def drop_database(server_url: str, name: str) -> None:
    """Drop a database created by create_database, closing whatever is still connected."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the PostgreSQL server the tests use (maintenance database)."""
    return _server_url()


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    """A database with every migration applied, used as template for each test's database."""
    name = create_database(pg_server_url, f"iotledger_tpl_{os.getpid()}")
    migrate(with_dbname(pg_server_url, name))
    yield name
    drop_database(pg_server_url, name)


@pytest.fixture
def db_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test only."""
    name = create_database(pg_server_url, "iotledger_t", template=template_db)
    yield with_dbname(pg_server_url, name)
    drop_database(pg_server_url, name)


@pytest.fixture
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """URL of an empty database (no migrations), for migration tests."""
    name = create_database(pg_server_url, "iotledger_e")
    yield with_dbname(pg_server_url, name)
    drop_database(pg_server_url, name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """An open connection (autocommit off) to this test's database."""
    with psycopg.connect(db_url) as c:
        yield c
