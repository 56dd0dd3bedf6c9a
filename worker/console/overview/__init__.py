"""The overview (the controller's morning): the last closed day and its close, `files verify`,
net per merchant and currency over 30 days, open mismatches by class and age. A resolver may run
`files verify` now (POST /verify); its report is kept and shown, as the clock's nightly one is.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, url_for
from flask_wtf import FlaskForm

from worker import logs
from worker.console.app import connection, console
from worker.console.auth import resolver_required
from worker.console.charts import net_charts
from worker.reports import views

log = logs.get("worker.console.overview")

bp = Blueprint("overview", __name__, template_folder="templates")


class VerifyForm(FlaskForm):
    """`files verify` now: a POST with its CSRF token."""


@bp.route("/")
def index() -> Any:
    """The overview page. Raises RetryableError when PostgreSQL is unavailable (a 503 page)."""
    c = console()
    with connection() as conn:
        data = views.overview(conn, c.settings.settlement_tz)
    return render_template("overview/index.html", o=data, charts=net_charts(data["chart"]), verify_form=VerifyForm())


@bp.route("/verify", methods=["POST"])
@resolver_required
def verify() -> Any:
    """Run `files verify` now and keep its report (a resolver's action; 403 for a viewer)."""
    from worker.reports.verify import verify_files

    c = console()
    with connection() as conn:
        report = verify_files(conn, c.out_dir, c.settings.settlement_tz, now=datetime.now(timezone.utc))
        views.record_verify(conn, report, "console", ran_by=g.user.name)
    log.info("console.files_verify", user=g.user.name, ok=report.ok, findings=len(report.findings))
    flash("files verify: " + ("every check holds" if report.ok else f"{len(report.findings)} problem(s)"),
          "ok" if report.ok else "error")
    return redirect(url_for("overview.index"))
