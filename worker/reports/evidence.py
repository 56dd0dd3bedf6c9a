"""One order's evidence chain: every fact behind it, in the order it happened.

From the rows worker/reports/views.py reads (the order, its refunds and voids, their notifies,
journal entries, exceptions, what the checkout said to expect, the sweep's questions, the
reconcile mismatches), `build` makes:

    notifies   each notify as received: its fields (the stored body, card number masked; the
               `sign` never shown), and its verification: which configured key of the merchant
               verifies the stored bytes now ("key 1 of 2"), or why that cannot be told
    entries    the journal entries and their legs, and the settlement file each is in
    queries    what the sweep asked the gateway and the last answer it recorded
    timeline   all of it as events sorted by time

Which key verified a notify is not recorded by the ingress (it records that and when it was
verified: inbox.verified_at), so it is told here by verifying the stored bytes again with each
configured key of the merchant. A body whose card number the ingress masked no longer carries
the signed text: for it only the ingress's check (verified_at) stands. Nothing here ever holds a
key: a key is named by its position in the merchant's configuration.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from worker import money
from worker.errors import PermanentError
from worker.iotpay import signature
from worker.iotpay.body import CARD_FIELD, decode_body
from worker.iotpay.cards import mask_pan, redact_pans
from worker.merchants import Merchants

MAX_VALUE_CHARS = 200
HIDDEN = "(not shown)"


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _scrub(text: str, keys: frozenset[str]) -> str:
    """Text fit to show: any configured key replaced, any card number masked, at most MAX_VALUE_CHARS."""
    for key in keys:
        if key and key in text:
            text = text.replace(key, HIDDEN)
    text = redact_pans(text)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def notify_fields(params: dict[str, Any], keys: frozenset[str]) -> list[dict[str, str]]:
    """A notify's fields as (name, value) text, sorted by name: `sign` hidden, the card number
    masked, keys and card numbers scrubbed from every other value."""
    out = []
    for name in sorted(params):
        value = params[name]
        if name == signature.SIGN_FIELD:
            text = HIDDEN
        else:
            text = value if isinstance(value, str) else signature.php_json(value) if isinstance(value, (dict, list)) \
                else str(value)
            if name == CARD_FIELD:
                text = mask_pan(text)
            text = _scrub(text, keys)
        out.append({"name": _scrub(str(name), keys), "value": text})
    return out


def verification(params: dict[str, Any] | None, row: dict[str, Any], merchants: Merchants) -> dict[str, Any]:
    """How a stored notify verifies: `key` is "key N of M" of its merchant's configured keys, or None
    with the reason in `detail`."""
    at = _plain(row["verified_at"])
    base = {"verified_at_ingress": at, "key": None}
    if params is None:
        return {**base, "result": "unreadable", "detail": "the stored body cannot be decoded"}
    mch_id = str(params.get("mchId") or row.get("mch_id") or "")
    merchant = merchants.get(mch_id)
    if merchant is None:
        return {**base, "result": "merchant not configured",
                "detail": f"merchant {mch_id or '?'} is not configured now: its keys cannot be tried"}
    for i, key in enumerate(merchant.keys):
        try:
            ok = signature.is_valid(params, [key])
        except PermanentError:
            ok = False
        if ok:
            role = "the signing key" if i == 0 else "an older key, still accepted"
            return {**base, "result": "verified", "key": f"key {i + 1} of {len(merchant.keys)}",
                    "detail": f"the stored bytes verify under key {i + 1} of {len(merchant.keys)} of merchant "
                              f"{mch_id} ({role})"}
    if row.get("pan_masked"):
        return {**base, "result": "verified at the ingress",
                "detail": "verified at the ingress before its full card number was masked; the stored body no "
                          "longer carries the signed text, so which key is not known"}
    if at is not None:
        return {**base, "result": "verified at the ingress, key rotated out",
                "detail": f"verified at the ingress at {at}; no key configured now verifies it (rotated out since)"}
    return {**base, "result": "not verified", "detail": "no configured key verifies it"}


def _notify(row: dict[str, Any], merchants: Merchants, keys: frozenset[str]) -> dict[str, Any]:
    try:
        params = decode_body(bytes(row["body"]), row["content_type"], family=row["family"]).params
    except PermanentError:
        params = None
    return {
        "inbox_id": row["inbox_id"], "pay_order_id": row["pay_order_id"], "family": row["family"],
        "received_at": _plain(row["received_at"]), "remote_addr": row["remote_addr"], "state": row["state"],
        "outcome": row["outcome"], "reason": _scrub(row["reason"], keys) if row["reason"] else None,
        "attempts": row["attempts"], "processed_at": _plain(row["processed_at"]), "pan_masked": row["pan_masked"],
        "verification": verification(params, row, merchants),
        "fields": notify_fields(params, keys) if params is not None else [],
    }


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    legs = [{"account": leg["account"], **money.fields("debit", max(leg["amount"], 0)),
             **money.fields("credit", max(-leg["amount"], 0))} for leg in row["legs"] or []]
    filed = None
    if row["export_date"] is not None:
        filed = {"settlement_date": _plain(row["export_date"]), "business_date": _plain(row["business_date"]),
                 "manifest_name": row["manifest_name"], "version": row["file_version"],
                 "filed_at": _plain(row["filed_at"]),
                 "record": "transaction" if row["business_date"] == row["export_date"] else "prior_day_adjustment"}
    return {"id": row["id"], "kind": row["kind"], "pay_order_id": row["pay_order_id"],
            "original_order_id": row["original_order_id"], "reverses_entry_id": row["reverses_entry_id"],
            "mch_id": row["mch_id"], **money.fields("amount", row["amount"]), "currency": row["currency"],
            "occurred_at": _plain(row["occurred_at"]), "posted_at": _plain(row["posted_at"]), "legs": legs,
            "settlement_file": filed}


def _amounts(row: dict[str, Any], *names: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in names:
        out.update(money.fields(n, row.get(n)))
    return out


def build(*, root: str, family: list[dict[str, Any]], notifies: list[dict[str, Any]], entries: list[dict[str, Any]],
          exceptions: list[dict[str, Any]], expected: list[dict[str, Any]], parked: list[dict[str, Any]],
          expected_refunds: list[dict[str, Any]], mismatches: list[dict[str, Any]],
          merchants: Merchants) -> dict[str, Any]:
    """The chain's sections and its timeline (see the module's docstring). Raises nothing."""
    keys = merchants.all_keys()
    notes = [_notify(n, merchants, keys) for n in notifies]
    ents = [_entry(e) for e in entries]
    orders = [{"pay_order_id": o["pay_order_id"], "pay_type": o["pay_type"], "original_order_id": o["original_order_id"],
               "mch_id": o["mch_id"], "mch_order_no": o["mch_order_no"], **money.fields("amount", o["amount"]),
               "currency": o["currency"], "status": o["status"], "state": o["state"],
               "reason": _scrub(o["reason"], keys) if o["reason"] else None, "source": o["source"],
               "channel": o["channel"], "card_num": mask_pan(o["card_num"]) if o["card_num"] else None,
               "pay_succ_time": _plain(o["pay_succ_time"]), "first_seen_at": _plain(o["first_seen_at"]),
               "posted_at": _plain(o["posted_at"])} for o in family]
    excs = [{"pay_order_id": x["pay_order_id"], "kind": x["kind"], "reason": _scrub(x["reason"], keys),
             "created_at": _plain(x["created_at"])} for x in exceptions]
    exp = [{**{k: _plain(v) for k, v in e.items() if k != "amount"}, **money.fields("amount", e["amount"])}
           for e in expected]
    queries = ([{"about": "expected order", "mch_id": e["mch_id"], "mch_order_no": e["mch_order_no"],
                 "query_count": e["query_count"], "last_queried_at": e["last_queried_at"],
                 "last_status": e["last_status"], "last_error": e["last_error"], "resolution": e["resolution"],
                 "resolved_at": e["resolved_at"], "gave_up_at": e["gave_up_at"]} for e in exp]
               + [{"about": "original of parked refunds", "mch_id": p["mch_id"], "mch_order_no": None,
                   "query_count": p["query_count"], "last_queried_at": _plain(p["last_queried_at"]),
                   "last_status": p["last_status"], "last_error": p["last_error"], "resolution": None,
                   "resolved_at": _plain(p["resolved_at"]), "gave_up_at": _plain(p["gave_up_at"])} for p in parked])
    refunds_asked = [{**{k: _plain(v) for k, v in r.items() if k != "amount"}, **money.fields("amount", r["amount"])}
                     for r in expected_refunds]
    mms = [{"run_id": m["run_id"], "business_date": _plain(m["business_date"]), "class": m["class"],
            "description": m["description"], "subject": m["subject"], "pay_order_id": m["pay_order_id"],
            "currency": m["currency"], **_amounts(m, "expected_amount", "gateway_amount", "ledger_amount"),
            "open": bool(m["open"]), "found_at": _plain(m["finished_at"])} for m in mismatches]
    timeline = _timeline(orders, notes, ents, excs, exp, queries, refunds_asked, mms)
    return {"orders": orders, "notifies": notes, "ledger_entries": ents, "ledger_exceptions": excs,
            "expected": exp, "gateway_queries": queries, "requested_refunds": refunds_asked, "mismatches": mms,
            "timeline": timeline,
            "recorded": {"gateway_queries": "the sweep keeps per order the number of queries and the last answer "
                                            "(status or error), not each query",
                         "verifying_key": "told by verifying the stored bytes again with each configured key; the "
                                          "ingress records only that and when it verified"}}


def _timeline(orders: list[dict[str, Any]], notes: list[dict[str, Any]], ents: list[dict[str, Any]],
              excs: list[dict[str, Any]], exp: list[dict[str, Any]], queries: list[dict[str, Any]],
              refunds_asked: list[dict[str, Any]], mms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    def add(at: Any, kind: str, order: str | None, text: str, ref: Any = None) -> None:
        if at is not None:
            events.append({"at": at, "kind": kind, "pay_order_id": order, "text": text, "ref": ref})

    for e in exp:
        add(e["created_at"], "expected", e["pay_order_id"],
            f"the checkout created merchant order {e['mch_order_no']} for {e['amount']} {e['currency']} "
            f"({e['channel']})")
    for r in refunds_asked:
        add(r["requested_at"], "refund_requested", r["original_order_id"],
            f"the merchant requested refund {r['mch_refund_no']} of {r['amount']} {r['currency']}")
    for o in orders:
        add(o["pay_succ_time"], "gateway_time", o["pay_order_id"],
            f"the gateway says the {o['pay_type']} of {o['amount']} {o['currency']} happened (paySuccTime)")
        add(o["first_seen_at"], "order_recorded", o["pay_order_id"],
            f"{o['pay_type']} {o['pay_order_id']} first recorded from a {o['source']} "
            f"(now {o['state']}, status {o['status']})")
    for n in notes:
        add(n["received_at"], "notify", n["pay_order_id"],
            f"notify inbox/{n['inbox_id']} received ({n['family']}); {n['verification']['result']}"
            + (f" with {n['verification']['key']}" if n["verification"]["key"] else ""), n["inbox_id"])
        add(n["processed_at"], "notify_processed", n["pay_order_id"],
            f"notify inbox/{n['inbox_id']} processed: {n['state']}" + (f" {n['outcome']}" if n["outcome"] else "")
            + (f" ({n['reason']})" if n["reason"] else ""), n["inbox_id"])
    for q in queries:
        if q["last_queried_at"]:
            answer = (f"status {q['last_status']}" if q["last_status"] is not None else f"no answer: {q['last_error']}")
            add(q["last_queried_at"], "gateway_query", None,
                f"the sweep asked the gateway about the {q['about']} ({q['query_count']} time(s)); last answer: "
                f"{answer}")
        add(q["gave_up_at"], "gateway_query", None, f"the sweep gave up asking about the {q['about']}")
    for e in ents:
        legs = "; ".join(f"{leg['account']} Dr {leg['debit']}" if leg["debit_cents"] else
                         f"{leg['account']} Cr {leg['credit']}" for leg in e["legs"])
        add(e["posted_at"], "ledger_entry", e["pay_order_id"],
            f"journal entry #{e['id']} {e['kind']} {e['amount']} {e['currency']} posted: {legs}", e["id"])
        f = e["settlement_file"]
        if f:
            add(f["filed_at"], "settlement_file", e["pay_order_id"],
                f"entry #{e['id']} is in the settlement file of {f['settlement_date']} ({f['manifest_name']}, "
                f"{f['record']})", e["id"])
    for x in excs:
        add(x["created_at"], "ledger_exception", x["pay_order_id"], f"ledger exception {x['kind']}: {x['reason']}")
    for m in mms:
        add(m["found_at"], "mismatch", m["pay_order_id"],
            f"reconcile of {m['business_date']} found {m['class']}" + (" (open)" if m["open"] else " (no longer found)"))
    return sorted(events, key=lambda ev: (_instant(ev["at"]), ev["kind"]))


def _instant(at: str) -> datetime:
    when = datetime.fromisoformat(at)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
