"""Days: each closed day (newest first, a page at a time), and one day's files to download, its
manifests, its versions (restatements and what changed) and its verify status.

A file is served only under a name one of the day's recorded manifests gives it, from the day's
folder under the settlement files folder: no other path can be asked for.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, abort, render_template, request, send_from_directory

from worker.console.app import connection, console
from worker.reports import views

bp = Blueprint("days", __name__, template_folder="templates", url_prefix="/days")


def _date(text: str | None, field: str) -> date | None:
    if text in (None, ""):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        abort(400, f"{field}: expected a date YYYY-MM-DD, got {text[:40]!r}")


@bp.route("")
def index() -> Any:
    """Closed days, newest first, a page at a time (?before=D). 400 for a bad date."""
    before = _date(request.args.get("before"), "before")
    with connection() as conn:
        data = views.days(conn, before)
    return render_template("days/index.html", d=data)


@bp.route("/<day>")
def detail(day: str) -> Any:
    """One day's files, manifests, versions and verify status. 404 for a day never recorded."""
    try:
        when = date.fromisoformat(day)
    except ValueError:
        abort(404)
    with connection() as conn:
        data = views.day(conn, when, console().settings.settlement_tz)
    if data is None:
        abort(404)
    return render_template("days/detail.html", d=data)


@bp.route("/<day>/files/<name>")
def download(day: str, name: str) -> Any:
    """One file of the day, by a name its recorded manifests give. 404 for any other name."""
    try:
        when = date.fromisoformat(day)
    except ValueError:
        abort(404)
    with connection() as conn:
        names = views.day_file_names(conn, when)
    if name not in names:
        abort(404)
    folder = console().out_dir / str(when)
    return send_from_directory(folder, name, as_attachment=True, max_age=0)
