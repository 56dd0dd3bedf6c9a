"""Order lookup: by payOrderId or merchant order number, then one order's evidence chain in time
order (each notify masked with its verification and key, the sweep's questions, the ledger
entries, the refundable balance, the settlement file, exceptions and mismatches), the same as
`iotledger order ID --json`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for

from worker.console.app import connection, console
from worker.reports import views

bp = Blueprint("orders", __name__, template_folder="templates", url_prefix="/orders")
MAX_ID_CHARS = 128


def _text(name: str) -> str | None:
    value = (request.args.get(name) or "").strip()
    if len(value) > MAX_ID_CHARS:
        abort(400, f"{name}: at most {MAX_ID_CHARS} characters")
    return value or None


@bp.route("")
def lookup() -> Any:
    """Look an id up; one order found is shown at once. 400 for an id over MAX_ID_CHARS."""
    text, mch_id = _text("q"), _text("mch_id")
    found = None
    if text:
        with connection() as conn:
            found = views.find_orders(conn, text, mch_id)
        if len(found["orders"]) == 1 and not found["expected_only"]:
            return redirect(url_for("orders.detail", pay_order_id=found["orders"][0]["pay_order_id"]))
    return render_template("orders/lookup.html", q=text, mch_id=mch_id, found=found)


@bp.route("/<path:pay_order_id>")
def detail(pay_order_id: str) -> Any:
    """One order's evidence chain. 404 when neither the ledger nor the inbox knows it."""
    if len(pay_order_id) > MAX_ID_CHARS:
        abort(404)
    with connection() as conn:
        chain = views.order_evidence(conn, pay_order_id, console().settings.merchants)
    if chain is None:
        abort(404)
    return render_template("orders/detail.html", o=chain)
