"""Sign-in, sign-out, and who may see and do what.

`load_user` runs before every request: without a live session every page redirects to /signin
(the sign-in page and the stylesheet excepted). `resolver_required` guards the actions that
change something (a viewer gets 403). Sign-ins are throttled per name and address (throttle.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from worker import logs
from worker.console import throttle, users
from worker.console.app import connection, console

log = logs.get("worker.console.auth")

bp = Blueprint("auth", __name__, template_folder="templates")
OPEN_ENDPOINTS = {"auth.signin", "static"}
F = TypeVar("F", bound=Callable[..., Any])


class SignInForm(FlaskForm):
    """Name and password (and the CSRF token Flask-WTF adds)."""

    name = StringField("Name", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=users.MAX_PASSWORD_CHARS)])


class SignOutForm(FlaskForm):
    """Sign-out is a POST with its CSRF token."""


def load_user() -> Any:
    """Before each request: the session's user in g.user, or a redirect to /signin."""
    g.user = None
    if request.endpoint == "static":  # the stylesheet is the same for everyone: no session read
        return None
    sid = session.get("sid")
    if isinstance(sid, str) and sid:
        with connection() as conn:
            g.user = users.session_user(conn, sid)
        if g.user is None:
            session.clear()
    if g.user is None and request.endpoint not in OPEN_ENDPOINTS:
        if request.method != "GET":
            abort(403, "Sign in first.")
        return redirect(url_for("auth.signin", next=request.full_path if request.query_string else request.path))
    return None


def resolver_required(view: F) -> F:
    """The view changes something: a viewer gets 403."""
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if g.user is None or not g.user.may_resolve:
            log.warning("console.forbidden", user=getattr(g.user, "name", None), path=request.path)
            abort(403, "Only a resolver may do this; you are signed in as a viewer.")
        return view(*args, **kwargs)
    return guarded  # type: ignore[return-value]


def _next_page(target: str | None) -> str:
    """Only a path on this site (never another host) is followed after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("overview.index")
    parts = urlsplit(target)
    return url_for("overview.index") if parts.scheme or parts.netloc else target


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    """The sign-in form; a wrong password is 401, a throttled attempt 429 with Retry-After."""
    if g.user is not None and request.method == "GET":
        return redirect(url_for("overview.index"))
    form = SignInForm()
    status = 200
    if form.validate_on_submit():
        s = console().settings
        addr = request.remote_addr or "?"
        name = form.name.data.strip()
        with connection() as conn:
            attempt = throttle.begin_attempt(conn, name, addr, limit=s.console_signin_failures,
                                             window=s.console_signin_window_seconds)
            if not attempt.allowed:
                log.warning("console.signin_throttled", name=name, remote_addr=addr)
                minutes = max(1, (attempt.retry_after_seconds + 59) // 60)
                flash(f"Too many failed sign-ins: try again in {minutes} minute(s).", "error")
                return (render_template("auth/signin.html", form=form, next=request.args.get("next")), 429,
                        {"Retry-After": str(attempt.retry_after_seconds)})
            user = users.check_password(conn, name, form.password.data)
            if user is None:
                log.info("console.signin_failed", name=name, remote_addr=addr)
                flash("Wrong name or password.", "error")
                status = 401
            else:
                throttle.succeeded(conn, name, addr)
                sid = users.start_session(conn, user, s.console_session_hours, addr)
                session.clear()
                session.permanent = True
                session["sid"] = sid
                log.info("console.signin", name=user.name, role=user.role, remote_addr=addr)
                return redirect(_next_page(request.args.get("next")))
    elif request.method == "POST":
        status = 400
    return render_template("auth/signin.html", form=form, next=request.args.get("next")), status


@bp.route("/signout", methods=["POST"])
def signout() -> Any:
    """End the session in PostgreSQL and clear the cookie (a POST with its CSRF token)."""
    if SignOutForm().validate_on_submit():
        sid = session.get("sid")
        if isinstance(sid, str) and sid:
            with connection() as conn:
                users.end_session(conn, sid)
        log.info("console.signout", name=g.user.name if g.user else None)
        session.clear()
        return redirect(url_for("auth.signin"))
    abort(400)
