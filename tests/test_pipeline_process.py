"""One inbox row through the ledger (process.handle), redrive's selection, and the inbox's own rules."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import dramatiq
import psycopg
import pytest
import redis
import structlog

from tests.factories import KEY, MERCHANTS_JSON, v1_pay, v3_pay
from tests.pipeline_procs import encode
from worker.config import Settings
from worker.errors import ValidationError
from worker.iotpay.signature import signed
from worker.pipeline import inbox, process
from worker.pipeline.redrive import BATCH, redrive_once
from worker.pipeline.screening import screen

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def settings(db_url, redis_url, queue_name) -> Settings:
    return Settings.from_env({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON,
                              "IOTLEDGER_QUEUE": queue_name, "IOTLEDGER_REDRIVE_AFTER_SECONDS": "120"})


def put(conn: psycopg.Connection, settings: Settings, params: dict, *, form: bool = False, now: datetime = NOW) -> int:
    body, ctype = encode(params, form=form)
    return inbox.store(conn, screen(body, ctype, settings.merchants), content_type=ctype, remote_addr="127.0.0.1",
                       now=now).id


def test_a_row_posts_once_then_is_skipped_and_a_forced_replay_posts_nothing_new(conn, settings):
    i = put(conn, settings, v3_pay("PC1", 1500))
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        first = process.handle(conn, i, settings)
    assert (first.outcome, first.pay_order_id, first.skipped) == ("posted", "PC1", False)
    # the posting code's own log lines carry the inbox id bound by the pipeline
    assert any(e.get("inbox_id") == i and e.get("pay_order_id") == "PC1" for e in logs if e["event"] != "worker.processed")
    assert process.handle(conn, i, settings).skipped
    again = process.handle(conn, i, settings, force=True)
    assert again.outcome == "duplicate"
    assert conn.execute("SELECT count(*), sum(amount) FROM journal_entries").fetchone() == (1, 1500)
    assert conn.execute("SELECT state, outcome, attempts FROM inbox WHERE id = %s", (i,)).fetchone() == ("done", "posted", 2)
    conn.rollback()


def test_a_v1_form_row_posts(conn, settings):
    i = put(conn, settings, v1_pay("P01", 2500, currency="USD"), form=True)
    assert process.handle(conn, i, settings).outcome == "posted"
    assert conn.execute("SELECT currency, amount FROM journal_entries").fetchone() == ("USD", 2500)
    conn.rollback()


def test_a_masked_row_posts_without_the_sign_it_can_no_longer_match(conn, settings):
    i = put(conn, settings, v3_pay("PC2", 900, cardNum="4325 6712 3456 2266"))
    row = inbox.load(conn, i)
    assert row.pan_masked and b"3456" not in row.body
    assert process.handle(conn, i, settings).outcome == "posted"
    assert conn.execute("SELECT card_num FROM orders WHERE pay_order_id = 'PC2'").fetchone() == ("432567******2266",)
    conn.rollback()


def test_a_row_with_a_bad_field_is_marked_failed_naming_it(conn, settings):
    i = put(conn, settings, signed(dict(v3_pay("PC3", 100), amount="12.50"), KEY))
    with pytest.raises(ValidationError) as info:
        process.handle(conn, i, settings)
    assert info.value.field == "amount"
    state, reason = conn.execute("SELECT state, reason FROM inbox WHERE id = %s", (i,)).fetchone()
    conn.rollback()
    assert state == "failed" and reason.startswith("amount:")
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    conn.rollback()


def test_a_missing_row_is_a_permanent_error(conn, settings):
    with pytest.raises(process.InboxRowMissing):
        process.handle(conn, 424242, settings)


def test_the_database_refuses_a_done_row_without_outcome_and_a_masked_row_never_verified(conn, settings):
    i = put(conn, settings, v3_pay("PC4", 100))
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE inbox SET state = 'done' WHERE id = %s", (i,))
    conn.rollback()
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE inbox SET pan_masked = true, verified_at = NULL WHERE id = %s", (i,))
    conn.rollback()
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO inbox (body_sha256, body, family) SELECT body_sha256, body, family FROM inbox")
    conn.rollback()


def test_the_worker_takes_the_family_the_ingress_stored(conn, settings):
    # a JSON body the inbox says is v1 is held to v1's rules (USD allowed), not told V3 by its looks
    i = put(conn, settings, v3_pay("PC8", 700, currency="USD"))
    assert inbox.load(conn, i).family == "v3"
    conn.execute("UPDATE inbox SET family = 'v1' WHERE id = %s", (i,))
    conn.commit()
    assert process.handle(conn, i, settings).outcome == "posted"
    assert conn.execute("SELECT currency, amount FROM journal_entries").fetchone() == ("USD", 700)
    conn.rollback()


def test_a_v3_body_whose_card_number_was_masked_by_encoding_it_again_stays_v3(conn, settings):
    # params=<json> with numbers is V3; its card digits stand twice, so the ingress encodes the fields
    # again as flat form fields (all strings, which alone would read as v1): the stored family holds
    params = signed({k: v for k, v in v3_pay("PC9", 700, currency="USD").items() if k != "sign"}
                    | {"cardNum": "4111111111111111", "invoiceNum": "4111111111111111"}, KEY)
    raw = urlencode({"params": json.dumps(params)}).encode()
    i = inbox.store(conn, screen(raw, "application/x-www-form-urlencoded", settings.merchants),
                    content_type="application/x-www-form-urlencoded", remote_addr="127.0.0.1", now=NOW).id
    row = inbox.load(conn, i)
    assert (row.family, row.pan_masked) == ("v3", True) and b"params" not in row.body
    with pytest.raises(ValidationError, match="^currency: V3 orders are CAD only"):
        process.handle(conn, i, settings)
    conn.rollback()
    assert conn.execute("SELECT state FROM inbox WHERE id = %s", (i,)).fetchone() == ("failed",)
    conn.rollback()


def test_redrive_queues_only_unfinished_rows_older_than_the_age_in_batches(conn, settings, redis_url, queue_name, db_url):
    old = NOW - timedelta(seconds=600)
    ids = [put(conn, settings, v3_pay(f"PC{n:05d}", 100), now=old) for n in range(BATCH + 3)]
    fresh = put(conn, settings, v3_pay("PCNEW", 100), now=NOW)
    done = put(conn, settings, v3_pay("PCDONE", 100), now=old)
    process.handle(conn, done, settings)
    r = redis.Redis.from_url(redis_url)
    try:
        assert redrive_once(db_url, redis_url, settings, now=NOW) == BATCH + 3
        # 500 ids a round, 50 a message: 10 messages, then 1 of the last 3
        queued = [dramatiq.Message.decode(r.hget(f"dramatiq:{queue_name}.msgs", m)).args[0]
                  for m in r.lrange(f"dramatiq:{queue_name}", 0, -1)]
        assert [len(m) for m in queued] == [50] * 10 + [3]
        assert sorted(i for m in queued for i in m) == sorted(ids)
        assert redrive_once(db_url, redis_url, settings, now=NOW) == 0
        # a redriven row still not done is queued again once the age has passed again
        assert redrive_once(db_url, redis_url, settings, now=NOW + timedelta(seconds=121)) == BATCH + 4
    finally:
        r.delete(f"dramatiq:{queue_name}", f"dramatiq:{queue_name}.msgs")
    redrives = dict(conn.execute("SELECT id, redrives FROM inbox").fetchall())
    conn.rollback()
    assert redrives[ids[0]] == 2 and redrives[fresh] == 1 and redrives[done] == 0


def test_inbox_and_redrive_commands(conn, settings, db_url, redis_url, queue_name, tmp_path):
    from tests.cli import run as run_cli

    ok = put(conn, settings, v3_pay("PCC1", 100), now=datetime.now(timezone.utc) - timedelta(seconds=600))
    bad = put(conn, settings, signed(dict(v3_pay("PCC2", 100), currency="EUR"), KEY))
    with pytest.raises(ValidationError):
        process.handle(conn, bad, settings)
    env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON,
           "IOTLEDGER_QUEUE": queue_name, "IOTLEDGER_DATA_DIR": str(tmp_path)}
    listing = run_cli("inbox", env=env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "state", "outcome"]
    assert lines[1].split()[:2] == [str(ok), "queued"] and "PCC1" in lines[1]
    assert lines[2].split()[:2] == [str(bad), "failed"] and "currency:" in lines[2]
    assert run_cli("inbox", "--state", "queued", "--json", env=env).stdout.count('"id"') == 1
    r = redis.Redis.from_url(redis_url)
    try:
        redriven = run_cli("redrive", env=env)
        assert (redriven.returncode, redriven.stdout.strip()) == (0, "redriven: 1 inbox row(s) queued again")
        assert r.llen(f"dramatiq:{queue_name}") == 1
    finally:
        r.delete(f"dramatiq:{queue_name}", f"dramatiq:{queue_name}.msgs")
    assert run_cli("inbox", "--state", "nonsense", env=env).returncode == 2


def test_redrive_leaves_rows_whose_message_still_waits_in_the_queue(conn, settings, redis_url, queue_name, db_url):
    # a long backlog: rows older than the age, but their messages are still in line in Redis
    from worker.broker import sender_broker
    from worker.pipeline import messages

    real_now = datetime.now(timezone.utc)
    ids = [put(conn, settings, v3_pay(f"PCW{n}", 100), now=real_now) for n in range(5)]
    broker = sender_broker(redis_url)
    for i in ids:
        messages.send(broker, queue_name, i)
    later = real_now + timedelta(seconds=settings.redrive_after_seconds + 60)
    r = redis.Redis.from_url(redis_url)
    try:
        assert messages.oldest_waiting(broker, queue_name) is not None
        assert redrive_once(db_url, redis_url, settings, now=later) == 0  # no snowball of duplicates
        r.delete(f"dramatiq:{queue_name}", f"dramatiq:{queue_name}.msgs")  # Redis lost them
        assert messages.oldest_waiting(broker, queue_name) is None
        assert redrive_once(db_url, redis_url, settings, now=later) == 5
        assert redrive_once(db_url, redis_url, settings, now=later + timedelta(seconds=600)) == 0  # waiting again
    finally:
        r.delete(f"dramatiq:{queue_name}", f"dramatiq:{queue_name}.msgs")


def test_a_row_acknowledged_under_a_key_removed_since_still_posts(conn, settings, db_url, redis_url, queue_name):
    from tests.factories import MCH, OLD_KEY

    i = put(conn, settings, v3_pay("PC77", 1200, key=OLD_KEY))  # accepted while the old key was configured
    rotated = Settings.from_env({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTLEDGER_QUEUE": queue_name,
                                 "IOTPAY_MERCHANTS": json.dumps({MCH: {"keys": [KEY]}})})
    with structlog.testing.capture_logs() as logs:
        handled = process.handle(conn, i, rotated)
    assert (handled.outcome, handled.pay_order_id) == ("posted", "PC77")
    assert any(e["event"] == "intake.key_rotated_out" and "no longer verifies" in e["detail"] for e in logs)
    assert conn.execute("SELECT amount FROM journal_entries WHERE pay_order_id = 'PC77'").fetchone() == (1200,)
