"""What every command needs: settings, logging, and the database and broker URLs."""

from __future__ import annotations

from functools import lru_cache

import psycopg

from worker import logs
from worker.config import Settings, settings
from worker.errors import ConfigError, RetryableError
from worker.services import Endpoints, endpoints


CONNECT_TIMEOUT_S = 5  # a command with PostgreSQL down fails within seconds
log_level = "INFO"  # set by `iotledger -q` / `--log-level` before the first app_settings()


@lru_cache(maxsize=1)
def app_settings() -> Settings:
    """Settings read once, with logging configured to redact the merchants' keys."""
    s = settings()
    logs.configure(s.merchants.all_keys(), level=log_level)
    return s


_create = False


def allow_new_services() -> None:
    """This command may create the embedded services (services up, run, demo, migrate, web, worker,
    clock); a command that only reads or posts never creates an empty database."""
    global _create
    _create = True
    app_endpoints().create = True


@lru_cache(maxsize=1)
def app_endpoints() -> Endpoints:
    """Database and broker URLs, each resolved (and an embedded service started) on first use."""
    return endpoints(app_settings(), create=_create)


def connect(autocommit: bool = False) -> psycopg.Connection:
    """A new connection to the configured database. Raises RetryableError when it is down."""
    try:
        return psycopg.connect(app_endpoints().database_url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        raise connect_error(exc) from exc


def connect_error(exc: psycopg.OperationalError) -> Exception:
    """One line: a database or role that does not exist, or a refused password, is configuration (exit 2);
    anything else is the service being unavailable (exit 3)."""
    text = str(exc).strip()
    fatal = next((line.split("FATAL:", 1)[1].strip() for line in text.splitlines() if "FATAL:" in line), None)
    if fatal and ("does not exist" in fatal or "authentication failed" in fatal or "no password" in fatal):
        return ConfigError("DATABASE_URL", fatal)
    first = text.splitlines()[0] if text else type(exc).__name__
    return RetryableError(f"PostgreSQL unavailable: {first}")
