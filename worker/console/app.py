"""The finance console's Flask app: `create_app(settings, database_url, out_dir)`.

One blueprint per group of pages, each with its templates beside it:

    auth       /signin, /signout                   sign-in and sign-out
    overview   /  and POST /verify                 the morning's page; `files verify` now (resolver)
    days       /days, /days/D, /days/D/files/NAME  closed days, their files and manifests
    orders     /orders?q=ID, /orders/ID            an order's evidence chain

Nothing but the sign-in page and the stylesheet is served without a live session (everything
else redirects to /signin). The session is Flask's signed cookie (HttpOnly, SameSite=Strict,
Secure whenever the request came over https, directly or through a trusted proxy) holding a
session id that PostgreSQL keeps, so sign-out and a disabled user end it in every process.
Flask-WTF puts a CSRF token in every form and refuses a POST without it. Jinja2 autoescaping is
on. PostgreSQL unavailable is a 503 page; a database not migrated says so (503).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
from flask import Flask, current_app, g, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect

from worker import db, logs
from worker.config import Settings
from worker.console.proxy import TrustedProxy, trusted_from_env
from worker.console.secret import session_secret
from worker.errors import RetryableError

log = logs.get("worker.console")

COOKIE_NAME = "iotledger_console"
MAX_REQUEST_BYTES = 64 * 1024  # forms only: a sign-in, a note
POOL_TIMEOUT_S = 5.0  # a page waits this long for a connection, then says PostgreSQL is unavailable

csrf = CSRFProtect()


@dataclass
class Console:
    """What the pages need: the settings, a connection pool, and where the settlement files are."""

    settings: Settings
    pool: psycopg_pool.ConnectionPool
    out_dir: Path


class _SecureWhenHttps(SecureCookieSessionInterface):
    """Flask's signed cookie session, marked Secure when the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def console() -> Console:
    """The running app's Console."""
    return current_app.extensions["iotledger_console"]


@contextlib.contextmanager
def connection() -> Iterator[psycopg.Connection]:
    """A pooled connection for this request. Raises RetryableError when PostgreSQL is unavailable."""
    with db.translated("while reading for the console"), console().pool.connection() as conn:
        yield conn


def create_app(settings: Settings, database_url: str, out_dir: Path, *,
               pool: psycopg_pool.ConnectionPool | None = None, threads: int = 4) -> Flask:
    """The console for this configuration and database. The pool is opened here unless given.
    Raises OSError when the session key can be neither read nor kept in the data folder."""
    from worker.console import auth, days, orders, overview

    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(
        SECRET_KEY=session_secret(settings),
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.console_session_hours),
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as its session, whose end the database keeps
        JSON_SORT_KEYS=False,
    )
    app.session_interface = _SecureWhenHttps()
    if pool is None:
        pool = db.open_pool(database_url, name="console", max_size=threads, timeout=POOL_TIMEOUT_S)
    app.extensions["iotledger_console"] = Console(settings, pool, Path(out_dir).absolute())
    csrf.init_app(app)
    for blueprint in (auth.bp, overview.bp, days.bp, orders.bp):
        app.register_blueprint(blueprint)
    app.before_request(auth.load_user)
    app.after_request(_headers)
    app.context_processor(lambda: {"user": g.get("user"), "timezone": settings.settlement_tz.key})
    _errors(app)
    app.wsgi_app = TrustedProxy(app.wsgi_app, trusted_from_env())  # type: ignore[method-assign]
    return app


def _headers(response: Any) -> Any:
    """No page is cached, framed, sniffed or allowed scripts (the pages have none)."""
    response.headers.setdefault("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; "
                                                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _error(status: int, title: str, detail: str) -> tuple[str, int]:
    return render_template("error.html", status=status, title=title, detail=detail), status


def _errors(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError) -> tuple[str, int]:
        log.warning("console.csrf_refused", path=request.path, reason=exc.description)
        return _error(400, "Form refused", f"{exc.description} Reload the page and try again.")

    @app.errorhandler(400)
    def bad_request(exc: Any) -> tuple[str, int]:
        return _error(400, "Bad request", getattr(exc, "description", "") or "The request was not understood.")

    @app.errorhandler(403)
    def forbidden(exc: Any) -> tuple[str, int]:
        return _error(403, "Not allowed", getattr(exc, "description", "") or "Your role does not allow this.")

    @app.errorhandler(404)
    def not_found(exc: Any) -> tuple[str, int]:
        return _error(404, "Not found", "There is nothing here.")

    @app.errorhandler(405)
    def not_allowed(exc: Any) -> tuple[str, int]:
        return _error(405, "Method not allowed", "This address does not take that method.")

    @app.errorhandler(413)
    def too_large(exc: Any) -> tuple[str, int]:
        return _error(413, "Too large", "The form sent is too large.")

    @app.errorhandler(RetryableError)
    def unavailable(exc: RetryableError) -> tuple[str, int]:
        log.warning("console.unavailable", path=request.path, error=str(exc))
        return _error(503, "PostgreSQL unavailable", "The database does not answer; try again in a moment.")

    @app.errorhandler(psycopg.errors.UndefinedTable)
    @app.errorhandler(psycopg.errors.UndefinedColumn)
    def unmigrated(exc: psycopg.Error) -> tuple[str, int]:
        log.error("console.unmigrated", error=exc.diag.message_primary)
        return _error(503, "Database not migrated", "The database has no ledger schema or an older one: "
                                                    "run iotledger migrate.")

    @app.errorhandler(psycopg.OperationalError)
    def down(exc: psycopg.OperationalError) -> tuple[str, int]:
        log.warning("console.unavailable", path=request.path, error=str(exc).splitlines()[0] if str(exc) else "")
        return _error(503, "PostgreSQL unavailable", "The database does not answer; try again in a moment.")
