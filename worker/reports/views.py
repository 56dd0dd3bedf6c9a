"""The finance read models: what the console's pages and the command line's --json both show.

    overview(conn, tz, now)               the last closed day and its close, the last `files verify`,
                                          net per merchant and currency per day over 30 days, open
                                          mismatches by class and age
    days(conn, before, limit)             closed days, newest first, a page at a time (keyset)
    day(conn, day, tz)                    one day: its close, every version of its files and manifest,
                                          what each restatement changed, its verify findings
    find_orders(conn, text, mch_id)       what a typed id names: orders, or expected orders never paid
    order_evidence(conn, id, merchants)   one order's whole evidence chain, in time order
    record_verify(conn, report, ...)      keep a `files verify` report (the overview shows the last)

Every function reads through the named queries of sql/queries/views.sql (and the ledger's own
`merchant_day_totals`, which `check --date` uses), and returns plain JSON-ready values with every
amount as `X_cents` and `X`: a page only shapes what it is given, so it cannot disagree with
`iotledger overview|days|day|order --json`. No key, signature or full card number is returned.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from worker import money
from worker.ledger.checks import merchant_day_totals
from worker.ledger.views import order_view
from worker.merchants import Merchants
from worker.reports import evidence
from worker.reports.businessday import business_day, last_closed_day
from worker.reports.verify import VerifyReport
from worker.sqlfiles import q

CHART_DAYS = 30
AGE_BUCKETS = ("0-1 days", "2-7 days", "8-30 days", "over 30 days")
DAYS_PAGE = 30
MAX_DAYS_PAGE = 200
MAX_MATCHES = 50
MAX_LISTED = 100  # entry ids of a restatement's changes shown; the counts are always whole


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


@contextlib.contextmanager
def _reading(conn: psycopg.Connection) -> Iterator[psycopg.Cursor]:
    """A cursor of dict rows in one read-only snapshot (when the connection is idle: everything a
    page shows is of one moment), ended when the block ends."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if idle:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield cur


# ---------------------------------------------------------------- overview

def overview(conn: psycopg.Connection, tz: ZoneInfo, now: datetime | None = None,
             chart_days: int = CHART_DAYS) -> dict[str, Any]:
    """The overview: the last closed day and its close status, the last `files verify` run, net per
    merchant and currency per business day over the last `chart_days` closed days (each day's
    figures are `check --date D`'s), and the open mismatches by class and age. Raises psycopg errors."""
    now = now or datetime.now(timezone.utc)
    last = last_closed_day(now, tz)
    first = last - timedelta(days=chart_days - 1)
    with _reading(conn) as cur:
        close = _close_status(cur, last)
        totals, fresh = _day_totals(cur, tz, first, last)
        verify = cur.execute(q("views_last_verify")).fetchone()
        mismatches = cur.execute(q("views_open_mismatches_by_class_age"), {"today": now.astimezone(tz).date()}).fetchall()
    if fresh:
        _keep_day_totals(conn, tz, fresh)
    series: dict[tuple[str, str], dict[str, Any]] = {}
    for t in totals:
        s = series.setdefault((t["mch_id"], t["currency"]), {"mch_id": t["mch_id"], "currency": t["currency"],
                                                              "days": {}})
        s["days"][str(t["business_date"])] = t
    dates = [str(first + timedelta(days=i)) for i in range(chart_days)]
    chart = []
    for (mch, cur_code), s in sorted(series.items()):
        points = [{"date": d, **money.fields("net", s["days"].get(d, {}).get("net", 0))} for d in dates]
        total = sum(p["net_cents"] for p in points)
        chart.append({"mch_id": mch, "currency": cur_code, "points": points, **money.fields("total_net", total)})
    last_day_totals = [{"mch_id": t["mch_id"], "currency": t["currency"], **money.fields("paid", t["paid"]),
                        **money.fields("refunded", t["refunded"]), **money.fields("net", t["net"]),
                        "pay_count": t["pay_count"], "refund_count": t["refund_count"]}
                       for t in totals if str(t["business_date"]) == str(last)]
    return {
        "now": now.isoformat(),
        "timezone": tz.key,
        "last_closed_day": str(last),
        "close": close,
        "last_day_totals": last_day_totals,
        "files_verify": _verify_row(verify),
        "chart": {"first_day": str(first), "last_day": str(last), "days": dates, "series": chart},
        "open_mismatches": _mismatch_table(mismatches),
    }


def _day_totals(cur: psycopg.Cursor, tz: ZoneInfo, first: date, last: date
                ) -> tuple[list[dict[str, Any]], dict[date, tuple[int, list[dict[str, Any]]]]]:
    """Each closed day's totals per merchant and currency (merchant_day_totals, the query of `check
    --date`), taken from day_totals_cache where the day's window still holds the number of entries
    they were computed from (the journal is append-only: the same count is the same entries), and
    computed again in this snapshot for the other days. Returns the totals and the days computed
    (with their counts) to keep."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    windows = [business_day(d, tz) for d in days]
    counts = {r["day"]: int(r["entries"]) for r in cur.execute(q("views_day_entry_counts"), {
        "days": days, "starts": [w.start for w in windows], "ends": [w.end for w in windows]}).fetchall()}
    kept = {r["business_date"]: r for r in cur.execute(q("views_day_totals_kept"), {"tz": tz.key, "days": days})}
    out: list[dict[str, Any]] = []
    fresh: dict[date, tuple[int, list[dict[str, Any]]]] = {}
    for d, w in zip(days, windows):
        k = kept.get(d)
        if k is not None and int(k["entries"]) == counts[d]:
            out += [{**t, "business_date": d} for t in k["totals"]]
            continue
        rows = [{**t, "business_date": d} for t in merchant_day_totals(cur, tz.key, w.start, w.end)] if counts[d] else []
        fresh[d] = (counts[d], [{k2: v for k2, v in t.items() if k2 != "business_date"} for t in rows])
        out += rows
    return out, fresh


def _keep_day_totals(conn: psycopg.Connection, tz: ZoneInfo, fresh: dict[date, tuple[int, list[dict[str, Any]]]]) -> None:
    """Keep the days just computed (with the counts of their snapshot) for the next view."""
    days = sorted(fresh)
    with conn.transaction():
        conn.execute(q("views_day_totals_keep"), {"tz": tz.key, "days": days, "entries": [fresh[d][0] for d in days],
                                                  "totals": [Jsonb(fresh[d][1]) for d in days]})


def _close_status(cur: psycopg.Cursor, day: date) -> dict[str, Any]:
    row = cur.execute(q("views_close_status"), {"day": day}).fetchone()
    nightly, export, rec = row["nightly"], row["export"], row["reconcile"]
    if export is not None:
        state = "closed" if nightly is None or nightly["status"] == "done" else f"closed, nightly {nightly['status']}"
    elif nightly is not None:
        state = {"failed": "close failed", "running": "closing"}.get(nightly["status"], nightly["status"])
    else:
        state = "not closed"
    if export is not None:
        export = {**export, "totals": {c: {**money.fields("gross", t["gross_cents"]),
                                           **money.fields("refunds", t["refunds_cents"]),
                                           **money.fields("net", t["net_cents"]), "count": t["count"]}
                                       for c, t in sorted((export.get("totals") or {}).items())}}
    return {"day": str(day), "state": state, "nightly": nightly, "export": export, "reconcile": rec}


def _verify_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    report = row["report"] or {}
    return {"id": row["id"], "ran_at": _plain(row["ran_at"]), "source": row["source"], "ran_by": row["ran_by"],
            "out_dir": row["out_dir"], "ok": row["ok"], "closed_days": row["closed_days"],
            "first_day": _plain(row["first_day"]), "last_day": _plain(row["last_day"]),
            "files_checked": row["files_checked"], "findings_count": row["findings_count"],
            "findings": report.get("findings", [])[:MAX_LISTED], "totals": report.get("totals", [])}


def _mismatch_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    classes: dict[str, dict[str, Any]] = {}
    for r in rows:
        c = classes.setdefault(r["class"], {"class": r["class"], "count": 0, "by_age": [0] * len(AGE_BUCKETS),
                                            "amounts": defaultdict(int), "oldest": None})
        c["count"] += int(r["count"])
        c["by_age"][r["age_bucket"]] += int(r["count"])
        if r["currency"]:
            c["amounts"][r["currency"]] += int(r["amount"])
        oldest = str(r["oldest"])
        c["oldest"] = oldest if c["oldest"] is None else min(c["oldest"], oldest)
    out = []
    for c in sorted(classes.values(), key=lambda c: (-c["count"], c["class"])):
        out.append({**c, "amounts": [{"currency": k, **money.fields("amount", v)} for k, v in sorted(c["amounts"].items())]})
    return {"age_buckets": list(AGE_BUCKETS), "classes": out, "total": sum(c["count"] for c in out),
            "source": "the latest finished reconcile run of each business day"}


def record_verify(conn: psycopg.Connection, report: VerifyReport, source: str,
                  ran_by: str | None = None) -> dict[str, Any]:
    """Keep one `files verify` report (source: clock, cli or console) and commit. Raises psycopg errors."""
    data = report.to_json()
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("views_record_verify"), {
            "source": source, "ran_by": ran_by, "out_dir": report.out_dir, "ok": report.ok,
            "closed_days": report.closed_days, "first_day": report.first_day, "last_day": report.last_day,
            "files_checked": report.files_checked, "findings_count": len(report.findings), "report": Jsonb(data),
        }).fetchone()
    return {"id": row["id"], "ran_at": _plain(row["ran_at"])}


# ---------------------------------------------------------------- days

def days(conn: psycopg.Connection, before: date | None = None, limit: int = DAYS_PAGE) -> dict[str, Any]:
    """Closed days (and days whose close was tried) newest first, `limit` of them before `before`
    (keyset: pass the page's `next_before` for the next page). Raises psycopg errors."""
    limit = max(1, min(limit, MAX_DAYS_PAGE))
    with _reading(conn) as cur:
        rows = cur.execute(q("views_days"), {"before": before or date.max, "limit": limit}).fetchall()
        verify = _verify_row(cur.execute(q("views_last_verify")).fetchone())
    flagged = _findings_by_day(verify)
    out = []
    for r in rows:
        day_s = str(r["day"])
        out.append({
            "day": day_s, "version": r["version"], "file_status": r["file_status"],
            "closed_at": _plain(r["created_at"]), "restated_at": _plain(r["restated_at"]),
            "close_status": r["close_status"] or ("done" if r["version"] else None), "close_error": r["close_error"],
            "rows": r["rows"], "mismatch_count": r["mismatch_count"],
            "totals": [{"currency": c, "count": t["count"], **money.fields("net", t["net_cents"])}
                       for c, t in sorted((r["totals"] or {}).items())],
            "verify": _day_verify(verify, flagged, day_s),
        })
    return {"days": out, "limit": limit, "before": str(before) if before else None,
            "next_before": out[-1]["day"] if len(out) == limit else None, "files_verify": verify}


def _findings_by_day(verify: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    flagged: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in (verify or {}).get("findings", []):
        flagged[f.get("settlement_date") or ""].append(f)
    return flagged


def _day_verify(verify: dict[str, Any] | None, flagged: dict[str, list[dict[str, Any]]], day_s: str) -> dict[str, Any]:
    if verify is None:
        return {"state": "never verified", "findings": []}
    covered = verify["first_day"] is not None and verify["first_day"] <= day_s <= verify["last_day"]
    found = flagged.get(day_s, [])
    if found:
        state = "problems"
    elif flagged.get(""):
        state = "series has problems"
    else:
        state = "ok" if covered else "not verified yet"
    return {"state": state, "verified_at": verify["ran_at"], "findings": found}


def day(conn: psycopg.Connection, day_: date, tz: ZoneInfo) -> dict[str, Any] | None:
    """One business day: its close, every version of its files (names, bytes, SHA-256, rows), each
    manifest, what each restatement changed (the first MAX_LISTED entry ids of each list, and the
    whole counts), and the last verify's findings for it; None when nothing was ever recorded
    for the day. Raises psycopg errors."""
    with _reading(conn) as cur:
        close = _close_status(cur, day_)
        versions = cur.execute(q("views_day_versions"), {"day": day_}).fetchall()
        verify = _verify_row(cur.execute(q("views_last_verify")).fetchone())
    if not versions and close["nightly"] is None and close["reconcile"] is None:
        return None
    out_versions = []
    for v in versions:
        m = v["manifest"]
        files = [{"name": name, "bytes": meta.get("bytes"), "rows": meta.get("rows"), "sha256": meta.get("sha256"),
                  "complete": meta.get("complete", True)} for name, meta in sorted(m.get("files", {}).items())]
        files.append({"name": v["manifest_name"], "bytes": None, "rows": None, "sha256": v["manifest_sha256"],
                      "complete": True})
        changes = m.get("changes")
        if changes and changes.get("known"):
            changes = {"known": True, **{k: {"count": len(changes.get(k, [])), "first": changes.get(k, [])[:MAX_LISTED]}
                                         for k in ("added", "removed", "changed")},
                       "fields_changed": dict(list((changes.get("fields_changed") or {}).items())[:MAX_LISTED])}
        shown = {k: val for k, val in m.items() if k != "changes"}
        out_versions.append({
            "version": v["version"], "status": v["status"], "manifest_name": v["manifest_name"],
            "manifest_sha256": v["manifest_sha256"], "created_at": _plain(v["created_at"]), "files": files,
            "supersedes": m.get("supersedes"), "previous_manifest": m.get("previous_manifest"), "changes": changes,
            "rows": m.get("rows"), "totals": [{"currency": c, "count": t["count"], **money.fields("gross", t["gross_cents"]),
                                               **money.fields("refunds", t["refunds_cents"]),
                                               **money.fields("net", t["net_cents"])}
                                              for c, t in sorted(m.get("totals", {}).items())],
            "totals_by_merchant": [{**t, **money.fields("net", t["net_cents"])} for t in m.get("totals_by_merchant", [])],
            "manifest": shown,
        })
    bd = business_day(day_, tz)
    return {"day": str(day_), "timezone": tz.key, "window_start": bd.start.isoformat(), "window_end": bd.end.isoformat(),
            "close": close, "versions": out_versions,
            "verify": _day_verify(verify, _findings_by_day(verify), str(day_))}


def day_file_names(conn: psycopg.Connection, day_: date) -> set[str]:
    """Every file name a recorded version of the day's manifest names (the files the console serves)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        versions = cur.execute(q("views_day_versions"), {"day": day_}).fetchall()
    names = set()
    for v in versions:
        names.add(v["manifest_name"])
        names.update(v["manifest"].get("files", {}))
    return names


# ---------------------------------------------------------------- orders

def find_orders(conn: psycopg.Connection, text: str, mch_id: str | None = None) -> dict[str, Any]:
    """What a typed id names: the order with that payOrderId, else orders with that merchant order
    number (of merchant `mch_id` when given), and expected orders under it the gateway never
    reported. At most MAX_MATCHES of each. Raises psycopg errors."""
    params = {"text": text, "mch_id": mch_id, "limit": MAX_MATCHES}
    with _reading(conn) as cur:
        orders = cur.execute(q("views_find_orders"), params).fetchall()
        if not orders:
            inbox = cur.execute(q("views_order_notifies"), {"ids": [text]}).fetchall()
            if inbox:
                orders = [{"pay_order_id": text, "mch_id": inbox[0]["mch_id"], "mch_order_no": None, "pay_type": None,
                           "original_order_id": None, "amount": None, "currency": None, "state": "not_in_ledger",
                           "at": inbox[0]["received_at"], "matched_by": "pay_order_id"}]
        expected = cur.execute(q("views_find_expected"), params).fetchall()
    return {
        "query": text, "mch_id": mch_id,
        "orders": [{**{k: _plain(v) for k, v in o.items() if k != "amount"}, **money.fields("amount", o["amount"])}
                   for o in orders],
        "expected_only": [{**{k: _plain(v) for k, v in e.items() if k != "amount"}, **money.fields("amount", e["amount"])}
                          for e in expected],
    }


def order_evidence(conn: psycopg.Connection, pay_order_id: str, merchants: Merchants) -> dict[str, Any] | None:
    """Everything known about one gateway order, and its evidence chain in time order (see
    worker/reports/evidence.py); None when neither the ledger nor the inbox has heard of it.
    The keys of `iotledger order --json` (worker/ledger/views.py order_view) are kept as they were.
    Raises psycopg errors."""
    view = order_view(conn, pay_order_id)
    if view is None:
        return None
    root = view.get("original_order_id") or pay_order_id
    with _reading(conn) as cur:
        family = cur.execute(q("views_order_family"), {"root": root}).fetchall()
        ids = sorted({pay_order_id, root, *(o["pay_order_id"] for o in family)})
        notifies = cur.execute(q("views_order_notifies"), {"ids": ids}).fetchall()
        entries = cur.execute(q("views_order_entries"), {"ids": ids}).fetchall()
        exceptions = cur.execute(q("views_order_exceptions"), {"ids": ids}).fetchall()
        pay = next((o for o in family if o["pay_order_id"] == root), None)
        mch_id = (pay or {}).get("mch_id") or view.get("mch_id")
        mch_order_no = (pay or {}).get("mch_order_no") if pay else view.get("mch_order_no")
        expected = cur.execute(q("views_order_expected"), {"pay_order_id": root, "mch_id": mch_id,
                                                            "mch_order_no": mch_order_no}).fetchall()
        parked = cur.execute(q("views_order_parked_queries"), {"root": root}).fetchall()
        expected_refunds = cur.execute(q("views_order_expected_refunds"), {"root": root}).fetchall()
        mismatches = cur.execute(q("views_order_mismatches"), {"ids": ids, "mch_id": mch_id,
                                                                "mch_order_no": mch_order_no}).fetchall()
    chain = evidence.build(root=root, family=family, notifies=notifies, entries=entries, exceptions=exceptions,
                           expected=expected, parked=parked, expected_refunds=expected_refunds,
                           mismatches=mismatches, merchants=merchants)
    view.pop("notifies", None)
    return {**view, "root_order_id": root, **chain}
