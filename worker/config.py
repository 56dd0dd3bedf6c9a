"""Configuration: read once from the environment into a frozen Settings object.

Every default is a named constant below; an invalid value fails at start with a ConfigError
that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs

from worker.errors import ConfigError
from worker.iotpay import notify
from worker.merchants import Merchants, load_merchants

# one absolute place per user, whatever the current directory (IOTLEDGER_DATA_DIR overrides it)
DEFAULT_DATA_DIR = platformdirs.user_data_dir("iotledger", appauthor=False)
DEFAULT_V3_BASE_URL = "https://ccapi.iotpaycloud.com/v3"
DEFAULT_V1_BASE_URL = "https://api.iotpaycloud.com/v1"
# IOTPay operates from British Columbia; V3 paySuccTime carries no zone. Uncertain, so configurable.
DEFAULT_GATEWAY_TZ = "America/Vancouver"
# When the merchant's business day starts; most merchants close their books on local midnight.
DEFAULT_SETTLEMENT_TZ = "America/Toronto"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_WEB_HOST = "127.0.0.1"
DEFAULT_WEB_PORT = 8000
DEFAULT_WEB_WORKERS = 2
DEFAULT_WORKER_PROCESSES = 2
DEFAULT_WORKER_THREADS = 4
DEFAULT_PARKED_ALERT_SECONDS = 3600
DEFAULT_REDRIVE_AFTER_SECONDS = 120
DEFAULT_SWEEP_GIVE_UP_SECONDS = 48 * 3600
DEFAULT_QUERY_RATE_PER_SECOND = 20.0
DEFAULT_REFUSALS_PER_MINUTE = 60
DEFAULT_QUEUE_NAME = "iotpay"
DEFAULT_MAX_AMOUNT_CENTS = notify.DEFAULT_MAX_AMOUNT_CENTS
DEFAULT_ALERTS_PER_CLASS = 20
# inbox rows a worker posts in one transaction (its message's row and up to 49 others waiting)
DEFAULT_BATCH_SIZE = 50
MAX_BATCH_SIZE = 1000  # one transaction holds a lock per order of the batch: keep it far from the lock table's size
MAX_AMOUNT_LIMIT = 10**15  # a million orders at this size still sum far inside a bigint
# a request's headers and body must arrive within this (408 after); IOTPay sends a notify at once
DEFAULT_WEB_REQUEST_TIMEOUT_SECONDS = 10.0
# a notify that would wait longer than this for a thread is answered 503 at once (IOTPay retries)
DEFAULT_WEB_MAX_WAIT_SECONDS = 1.0
# the finance console: its own address, never the ingress's
DEFAULT_CONSOLE_HOST = "127.0.0.1"
DEFAULT_CONSOLE_PORT = 8001
DEFAULT_CONSOLE_WORKERS = 2
DEFAULT_CONSOLE_SESSION_HOURS = 12
# failed sign-ins allowed per name and source address within the window (and ten times that per address)
DEFAULT_CONSOLE_SIGNIN_FAILURES = 5
DEFAULT_CONSOLE_SIGNIN_WINDOW_SECONDS = 900
MIN_CONSOLE_SECRET_CHARS = 32


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default, 1)
    if value > 65535:
        raise ConfigError(name, f"must be a port between 1 and 65535, got {value}")
    return value


def _max_amount(env: Mapping[str, str]) -> int:
    value = _int(env, "IOTLEDGER_MAX_AMOUNT_CENTS", DEFAULT_MAX_AMOUNT_CENTS, 1)
    if value > MAX_AMOUNT_LIMIT:
        raise ConfigError("IOTLEDGER_MAX_AMOUNT_CENTS", f"must be <= {MAX_AMOUNT_LIMIT} (sums must stay far from "
                                                        f"the bigint limit), got {value}")
    return value


def _batch_size(env: Mapping[str, str]) -> int:
    value = _int(env, "IOTLEDGER_BATCH_SIZE", DEFAULT_BATCH_SIZE, 1)
    if value > MAX_BATCH_SIZE:
        raise ConfigError("IOTLEDGER_BATCH_SIZE", f"must be <= {MAX_BATCH_SIZE}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(name, f"must be > 0, got {value}")
    return value


def _zone(env: Mapping[str, str], name: str, default: str) -> ZoneInfo:
    raw = env.get(name) or default
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(name, f"unknown IANA time zone {raw!r}") from None


def _url(env: Mapping[str, str], name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name) or default
    if raw is None:
        return None
    if not raw.startswith(tuple(s + "://" for s in schemes)) and not raw.startswith(tuple(s + ":" for s in schemes)):
        raise ConfigError(name, f"must start with one of {', '.join(s + '://' for s in schemes)}, got {raw!r}")
    return raw.rstrip("/") if schemes[0].startswith("http") else raw


def _secret(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) < MIN_CONSOLE_SECRET_CHARS:
        raise ConfigError(name, f"must be at least {MIN_CONSOLE_SECRET_CHARS} characters (it signs the session "
                                f"cookies), got {len(raw)}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once. See README 'Configuration' for each variable."""

    database_url: str | None
    redis_url: str | None
    data_dir: Path
    merchants: Merchants = field(repr=False)
    broker_url: str | None = None  # RabbitMQ (amqp://) or Redis; None: redis_url or the embedded Redis
    v3_base_url: str = DEFAULT_V3_BASE_URL
    v1_base_url: str = DEFAULT_V1_BASE_URL
    gateway_tz: ZoneInfo = ZoneInfo(DEFAULT_GATEWAY_TZ)
    settlement_tz: ZoneInfo = ZoneInfo(DEFAULT_SETTLEMENT_TZ)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    web_host: str = DEFAULT_WEB_HOST
    web_port: int = DEFAULT_WEB_PORT
    web_workers: int = DEFAULT_WEB_WORKERS
    worker_processes: int = DEFAULT_WORKER_PROCESSES
    worker_threads: int = DEFAULT_WORKER_THREADS
    parked_alert_seconds: int = DEFAULT_PARKED_ALERT_SECONDS
    redrive_after_seconds: int = DEFAULT_REDRIVE_AFTER_SECONDS
    sweep_give_up_seconds: int = DEFAULT_SWEEP_GIVE_UP_SECONDS
    query_rate_per_second: float = DEFAULT_QUERY_RATE_PER_SECOND
    refusals_per_minute: int = DEFAULT_REFUSALS_PER_MINUTE
    alert_webhook_url: str | None = None
    queue_name: str = DEFAULT_QUEUE_NAME
    max_amount_cents: int = DEFAULT_MAX_AMOUNT_CENTS
    alerts_per_class: int = DEFAULT_ALERTS_PER_CLASS
    web_request_timeout_seconds: float = DEFAULT_WEB_REQUEST_TIMEOUT_SECONDS
    web_max_wait_seconds: float = DEFAULT_WEB_MAX_WAIT_SECONDS
    batch_size: int = DEFAULT_BATCH_SIZE
    console_host: str = DEFAULT_CONSOLE_HOST
    console_port: int = DEFAULT_CONSOLE_PORT
    console_workers: int = DEFAULT_CONSOLE_WORKERS
    console_secret_key: str | None = field(default=None, repr=False)  # None: generated in data_dir
    console_session_hours: int = DEFAULT_CONSOLE_SESSION_HOURS
    console_signin_failures: int = DEFAULT_CONSOLE_SIGNIN_FAILURES
    console_signin_window_seconds: int = DEFAULT_CONSOLE_SIGNIN_WINDOW_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable. Raises ConfigError naming the first bad one."""
        env = os.environ if env is None else env
        return cls(
            database_url=_url(env, "DATABASE_URL", None, ("postgresql", "postgres")),
            redis_url=_url(env, "REDIS_URL", None, ("redis", "rediss", "unix")),
            broker_url=_url(env, "BROKER_URL", None, ("amqp", "amqps", "redis", "rediss", "unix")),
            data_dir=Path(env.get("IOTLEDGER_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().absolute(),
            merchants=load_merchants(env.get("IOTPAY_MERCHANTS"), env.get("IOTPAY_MERCHANTS_FILE")),
            v3_base_url=_url(env, "IOTPAY_V3_BASE_URL", DEFAULT_V3_BASE_URL, ("https", "http")),
            v1_base_url=_url(env, "IOTPAY_V1_BASE_URL", DEFAULT_V1_BASE_URL, ("https", "http")),
            gateway_tz=_zone(env, "IOTPAY_GATEWAY_TZ", DEFAULT_GATEWAY_TZ),
            settlement_tz=_zone(env, "IOTLEDGER_SETTLEMENT_TZ", DEFAULT_SETTLEMENT_TZ),
            max_body_bytes=_int(env, "IOTLEDGER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1024),
            web_host=env.get("IOTLEDGER_WEB_HOST") or DEFAULT_WEB_HOST,
            web_port=_port(env, "PORT", _port(env, "IOTLEDGER_WEB_PORT", DEFAULT_WEB_PORT)),
            web_workers=_int(env, "IOTLEDGER_WEB_WORKERS", DEFAULT_WEB_WORKERS, 1),
            worker_processes=_int(env, "IOTLEDGER_WORKER_PROCESSES", DEFAULT_WORKER_PROCESSES, 1),
            worker_threads=_int(env, "IOTLEDGER_WORKER_THREADS", DEFAULT_WORKER_THREADS, 1),
            parked_alert_seconds=_int(env, "IOTLEDGER_PARKED_ALERT_SECONDS", DEFAULT_PARKED_ALERT_SECONDS, 1),
            redrive_after_seconds=_int(env, "IOTLEDGER_REDRIVE_AFTER_SECONDS", DEFAULT_REDRIVE_AFTER_SECONDS, 1),
            sweep_give_up_seconds=_int(env, "IOTLEDGER_SWEEP_GIVE_UP_SECONDS", DEFAULT_SWEEP_GIVE_UP_SECONDS, 1),
            query_rate_per_second=_float(env, "IOTLEDGER_QUERY_RATE_PER_SECOND", DEFAULT_QUERY_RATE_PER_SECOND),
            refusals_per_minute=_int(env, "IOTLEDGER_REFUSALS_PER_MINUTE", DEFAULT_REFUSALS_PER_MINUTE, 1),
            alert_webhook_url=_url(env, "IOTLEDGER_ALERT_WEBHOOK_URL", None, ("https", "http")),
            queue_name=env.get("IOTLEDGER_QUEUE") or DEFAULT_QUEUE_NAME,
            max_amount_cents=_max_amount(env),
            alerts_per_class=_int(env, "IOTLEDGER_ALERTS_PER_CLASS", DEFAULT_ALERTS_PER_CLASS, 1),
            web_request_timeout_seconds=_float(env, "IOTLEDGER_WEB_REQUEST_TIMEOUT_SECONDS",
                                               DEFAULT_WEB_REQUEST_TIMEOUT_SECONDS),
            web_max_wait_seconds=_float(env, "IOTLEDGER_WEB_MAX_WAIT_SECONDS", DEFAULT_WEB_MAX_WAIT_SECONDS),
            batch_size=_batch_size(env),
            console_host=env.get("IOTLEDGER_CONSOLE_HOST") or DEFAULT_CONSOLE_HOST,
            console_port=_port(env, "IOTLEDGER_CONSOLE_PORT", DEFAULT_CONSOLE_PORT),
            console_workers=_int(env, "IOTLEDGER_CONSOLE_WORKERS", DEFAULT_CONSOLE_WORKERS, 1),
            console_secret_key=_secret(env, "IOTLEDGER_CONSOLE_SECRET_KEY"),
            console_session_hours=_int(env, "IOTLEDGER_CONSOLE_SESSION_HOURS", DEFAULT_CONSOLE_SESSION_HOURS, 1),
            console_signin_failures=_int(env, "IOTLEDGER_CONSOLE_SIGNIN_FAILURES", DEFAULT_CONSOLE_SIGNIN_FAILURES, 1),
            console_signin_window_seconds=_int(env, "IOTLEDGER_CONSOLE_SIGNIN_WINDOW_SECONDS",
                                               DEFAULT_CONSOLE_SIGNIN_WINDOW_SECONDS, 1),
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read from os.environ on first use."""
    return Settings.from_env()
