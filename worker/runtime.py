"""The composition root: what one iotledger process is built from, each part built once.

    app_settings()       the Settings, read once, with logging configured once (set_log_level first)
    app_endpoints()      where PostgreSQL and the broker are (BROKER_URL: RabbitMQ or Redis; else
                         Redis; embedded ones started on first use, and created only after
                         allow_new_services())
    connect()            a new connection to the configured database (worker.db.connect)
    ingress_app()        gunicorn's app factory: the ingress, its pool and the broker
    console_app(out)     gunicorn's app factory of `iotledger console`: the finance console
    worker_broker()      a `dramatiq` worker process's broker, with every actor of the queue on it
    worker_pool()        a worker process's connection pool, opened on first use (after the fork)

Its users are the command line (`iotledger`), gunicorn (`worker.runtime:ingress_app()`,
`worker.runtime:console_app('<reports folder>')`) and the
module the `dramatiq` command loads (worker/pipeline/workers.py). Nothing below them imports it:
the layers are handed their settings, URLs, pools and broker.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from worker import db, logs
from worker.config import Settings, settings
from worker.services import Endpoints, endpoints

if TYPE_CHECKING:  # imported where used: a command that needs no broker or pool does not load them
    import dramatiq
    from flask import Flask
    import psycopg_pool

    from worker.pipeline.ingress import Ingress

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_log_level = "INFO"
_create = False
_worker_pool: psycopg_pool.ConnectionPool | None = None
_worker_pool_lock = threading.Lock()


def set_log_level(level: str) -> None:
    """The level of the log lines, one of LOG_LEVELS (`iotledger -q` / `--log-level`, checked by the
    command line); it takes effect at the first app_settings()."""
    global _log_level
    _log_level = level


@lru_cache(maxsize=1)
def app_settings() -> Settings:
    """Settings read once, with logging configured to redact the merchants' keys. Raises ConfigError
    naming the first invalid variable."""
    s = settings()
    logs.configure(s.merchants.all_keys(), level=_log_level)
    return s


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
    """A new connection to the configured database. Raises ConfigError (no such database, role or
    password) or RetryableError (PostgreSQL down), as worker.db.connect."""
    return db.connect(app_endpoints().database_url, autocommit=autocommit)


def ingress_app() -> Ingress:
    """The ingress from the environment (gunicorn's entry point: `worker.runtime:ingress_app()`)."""
    from worker.broker import setup_broker
    from worker.pipeline.enqueuer import BackgroundEnqueuer
    from worker.pipeline.ingress import Ingress, make_pool

    s = app_settings()
    ep = app_endpoints()
    pool, broker = make_pool(ep.database_url), setup_broker(ep.broker_url)
    # the answer never waits for the broker: one thread per web process sends the ids
    return Ingress(s, pool, broker, enqueuer=BackgroundEnqueuer(broker, s.queue_name, pool))


def console_app(out_dir: str = "reports") -> Flask:
    """The finance console from the environment (gunicorn's entry point of `iotledger console`):
    its settings, the database and the settlement files folder. Raises ConfigError for an invalid
    configuration, OSError when the session key cannot be kept in the data folder."""
    from worker.console.app import create_app
    from worker.console.gunicorn_conf import THREADS

    return create_app(app_settings(), app_endpoints().database_url, Path(out_dir), threads=THREADS)


def worker_pool() -> psycopg_pool.ConnectionPool:
    """This worker process's connection pool (created after the fork, on first use)."""
    from worker.pipeline.actors import open_pool

    global _worker_pool
    with _worker_pool_lock:
        if _worker_pool is None:
            _worker_pool = open_pool(app_endpoints().database_url, app_settings().worker_threads)
        return _worker_pool


def worker_broker() -> dramatiq.Broker:
    """The broker of a `dramatiq` worker process (with its Prometheus middleware), and on it every
    actor consuming IOTLEDGER_QUEUE, since a worker drops messages for actors it does not know:
    the notify pipeline's and the gateway's `expect_order` / `expect_refund`. Settings (and so
    logging) come first. Raises ConfigError for an invalid configuration."""
    from worker.broker import setup_broker

    s = app_settings()  # configures logging (with the merchants' keys redacted) before anything logs
    broker = setup_broker(app_endpoints().broker_url, prometheus=True)
    from worker.gateway import actors as expect_actors
    from worker.pipeline import actors as notify_actors

    notify_actors.declare(broker, s, worker_pool)
    expect_actors.declare(broker, s.queue_name, lambda: app_endpoints().database_url)
    return broker
