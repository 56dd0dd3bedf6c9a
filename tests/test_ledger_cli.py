"""The ledger through `iotledger ingest`, `order --json` and `check --json` on real PostgreSQL."""

from __future__ import annotations

import json

from tests import cli
from tests.factories import MERCHANTS_JSON, v1_pay, v3_pay, v3_refund, vector_merchants, vectors


def _env(db_url: str, merchants: str = MERCHANTS_JSON) -> dict[str, str]:
    return {"DATABASE_URL": db_url, "IOTPAY_MERCHANTS": merchants}


def _jsonl(*msgs: dict) -> str:
    return "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in msgs)


def test_ingest_order_and_check_tell_the_whole_story(db_url, tmp_path):
    stream = _jsonl(
        v3_refund("RP0", "PC1", 100),  # before its pay: parked, then released
        v3_pay("PC1", 1000),
        v3_pay("PC1", 1000),  # duplicate
        v3_refund("RP1", "PC1", 250),
        v3_refund("RP2", "PC1", 900),  # beyond the refundable
        v1_pay("P2", 500, currency="USD"),
        {**v3_pay("PC3", 700), "amount": 701},  # forged
    ) + "not json\n"
    path = tmp_path / "day.jsonl"
    path.write_text(stream)
    r = cli.run("ingest", str(path), "--json", env=_env(db_url))
    assert r.returncode == 1, r.stderr
    summary = json.loads(r.stdout)
    assert summary["lines"] == 8
    assert summary["counts"] == {"duplicate": 1, "parked": 1, "posted": 3, "rejected": 3, "released_posted": 1}
    reasons = {d["line"]: d["reason"] for d in summary["details"]}
    assert "exceeds the original's refundable 650" in reasons[5]
    assert "sign" in reasons[7] and "not JSON" in reasons[8]

    order = json.loads(cli.run("order", "PC1", "--json", env=_env(db_url)).stdout)
    keys = ("pay_order_id", "currency", "amount_cents", "amount", "refunded_cents", "refundable_cents", "refundable",
            "status", "state")
    assert {k: order[k] for k in keys} == {
        "pay_order_id": "PC1", "currency": "CAD", "amount_cents": 1000, "amount": "10.00", "refunded_cents": 350,
        "refundable_cents": 650, "refundable": "6.50", "status": 2, "state": "posted"}
    assert [(r["pay_order_id"], r["state"]) for r in order["refunds"]] == [("RP0", "posted"), ("RP1", "posted"),
                                                                           ("RP2", "rejected")]
    assert order["entries"][0]["legs"] == [
        {"account": "clearing", "debit_cents": 1000, "debit": "10.00", "credit_cents": 0, "credit": "0.00"},
        {"account": "sales", "debit_cents": 0, "debit": "0.00", "credit_cents": 1000, "credit": "10.00"}]
    assert [n["state"] for n in order["notifies"]] == []  # ingested, not notified: no inbox rows

    rejected = json.loads(cli.run("order", "RP2", "--json", env=_env(db_url)).stdout)
    assert rejected["state"] == "rejected" and rejected["exceptions"][0]["kind"] == "over_refund"

    check = cli.run("check", "--json", env=_env(db_url))
    assert check.returncode == 0, check.stdout
    report = json.loads(check.stdout)
    assert report["ok"] is True
    cad = report["currencies"]["CAD"]
    assert (cad["paid_cents"], cad["refunded_cents"], cad["net_cents"], cad["net"]) == (1000, 350, 650, "6.50")
    assert report["currencies"]["USD"]["net_cents"] == 500

    # replaying the same file posts nothing new
    again = json.loads(cli.run("ingest", str(path), "--json", env=_env(db_url)).stdout)
    assert again["counts"].get("posted", 0) == 0
    # and a line refused the first time is refused again, for its first reason (not a duplicate)
    assert {d["line"]: (d["outcome"], d["reason"]) for d in again["details"]}[5] == ("rejected", reasons[5])
    assert json.loads(cli.run("check", "--json", env=_env(db_url)).stdout)["currencies"]["CAD"]["net_cents"] == 650


def test_every_shared_notify_vector_ingests_and_an_altered_one_is_rejected(db_url):
    merchants = json.dumps(vector_merchants())
    notifies = [{**v["payload"], "sign": v["sign"]} for v in vectors() if v["kind"] in ("v3pay", "v3refund", "v3void", "v1notify")]
    r = cli.run("ingest", "-", "--json", stdin=_jsonl(*notifies), env=_env(db_url, merchants))
    summary = json.loads(r.stdout)
    assert r.returncode == 0 and summary["rejected"] == 0
    assert summary["counts"] == {"posted": 14, "parked": 22}  # the vectors' refunds name pays not in the file
    altered = [{**n, "amount": n["amount"] + 1 if isinstance(n["amount"], int) else str(int(n["amount"]) + 1)} for n in notifies]
    r = cli.run("ingest", "-", "--json", stdin=_jsonl(*altered), env=_env(db_url, merchants))
    assert r.returncode == 1 and json.loads(r.stdout)["counts"] == {"rejected": 36}


def test_order_unknown_and_ingest_stdin_text_output(db_url):
    r = cli.run("order", "NOPE", env=_env(db_url))
    assert r.returncode == 1 and "no order" in r.stderr
    r = cli.run("ingest", "-", stdin=_jsonl(v3_pay("PC1", 1999)), env=_env(db_url))
    assert r.returncode == 0 and "posted 1" in r.stdout
    text = cli.run("order", "PC1", env=_env(db_url)).stdout
    assert "clearing Dr 19.99" in text and "sales Cr 19.99" in text
    assert "CAD: paid 1999  refunded 0  net 1999" in cli.run("check", env=_env(db_url)).stdout
