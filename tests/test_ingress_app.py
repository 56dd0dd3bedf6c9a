"""The ingress WSGI app, in process (httpx.WSGITransport), with real PostgreSQL and Redis.

What is stored, what is answered, what is queued, and what is refused (and then queued: nothing).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import dramatiq
import httpx
import psycopg
import pytest
import redis
import structlog
from prometheus_client import REGISTRY

from tests.factories import KEY, MCH, MERCHANTS_JSON, OLD_KEY, v1_pay, v3_pay
from worker.broker import sender_broker
from worker.config import Settings
from worker.iotpay.signature import signed
from worker.pipeline.ingress import Ingress, make_pool
from worker.pipeline.limiter import RefusalLimiter

DOWN_DB = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1"
DOWN_REDIS = "redis://127.0.0.1:1/0"


def settings_for(db_url: str, redis_url: str, queue: str, **env: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON,
                              "IOTLEDGER_QUEUE": queue, **env})


class Stack:
    """An Ingress wired to a database and a Redis, with helpers to look at both."""

    def __init__(self, db_url: str, redis_url: str, queue: str, **env: str) -> None:
        self.db_url, self.redis_url, self.queue = db_url, redis_url, queue
        self.settings = settings_for(db_url, redis_url, queue, **env)
        self.pool = make_pool(db_url, 4)
        self.limiter = RefusalLimiter(self.settings.refusals_per_minute, clock=lambda: self.now)
        self.now = 1_000_000.0
        self.app = Ingress(self.settings, self.pool, sender_broker(redis_url), limiter=self.limiter)

    def client(self, remote_addr: str = "198.51.100.7") -> httpx.Client:
        return httpx.Client(transport=httpx.WSGITransport(app=self.app, remote_addr=remote_addr),
                            base_url="http://ingress")

    def rows(self) -> list[dict]:
        with psycopg.connect(self.db_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute("SELECT * FROM inbox ORDER BY id").fetchall()

    def queued(self) -> int:
        return redis.Redis.from_url(self.redis_url).llen(f"dramatiq:{self.queue}")

    def close(self) -> None:
        self.pool.close()
        r = redis.Redis.from_url(self.redis_url)
        r.delete(f"dramatiq:{self.queue}", f"dramatiq:{self.queue}.msgs")


@pytest.fixture
def stack(db_url: str, redis_url: str, queue_name: str) -> Iterator[Stack]:
    s = Stack(db_url, redis_url, queue_name)
    yield s
    s.close()


def sample(name: str, **labels: str) -> float:
    """A metric's value in this process (counters are process-wide: tests compare before and after)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def post_json(client: httpx.Client, params: dict, **kw) -> httpx.Response:
    return client.post("/iotpay/notify", content=json.dumps(params).encode(),
                       headers={"Content-Type": "application/json;charset=UTF-8"}, **kw)


def post_form(client: httpx.Client, params: dict) -> httpx.Response:
    return client.post("/iotpay/notify", content=urlencode(params).encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_v3_json_is_stored_with_its_metadata_then_answered_and_queued(stack):
    params = v3_pay("PC100", 1234)
    body = json.dumps(params).encode()
    with stack.client() as c:
        r = c.post("/iotpay/notify", content=body, headers={"Content-Type": "application/json;charset=UTF-8"})
    assert (r.status_code, r.text) == (200, "SUCCESS")
    [row] = stack.rows()
    assert bytes(row["body"]) == body
    assert bytes(row["body_sha256"]) == hashlib.sha256(body).digest()
    assert row["content_type"] == "application/json;charset=UTF-8"
    assert row["remote_addr"] == "198.51.100.7"
    assert row["family"] == "v3" and row["mch_id"] == MCH and row["pay_order_id"] == "PC100"
    assert row["received_at"].tzinfo is not None and row["verified_at"] == row["received_at"]
    assert row["state"] == "queued" and not row["pan_masked"]
    assert stack.queued() == 1


def test_v1_form_is_answered_lowercase_success(stack):
    with stack.client() as c:
        r = post_form(c, v1_pay("P0100", 500))
    assert (r.status_code, r.text) == (200, "success")
    [row] = stack.rows()
    assert row["family"] == "v1" and row["pay_order_id"] == "P0100"
    assert bytes(row["body"]) == urlencode(v1_pay("P0100", 500)).encode()


def test_a_notify_signed_with_the_merchants_old_key_is_kept(stack):
    with stack.client() as c:
        assert post_json(c, v3_pay("PC101", 100, key=OLD_KEY)).status_code == 200
    assert len(stack.rows()) == 1


def test_the_same_body_again_is_acknowledged_but_stored_and_queued_once(stack):
    params = v3_pay("PC200", 999)
    before = sample("iotledger_notify_duplicate_total")
    with stack.client() as c:
        answers = [post_json(c, params) for _ in range(3)]
        # the same order in another field order is another body: stored (the ledger de-duplicates)
        reordered = c.post("/iotpay/notify", content=json.dumps(dict(reversed(list(params.items())))).encode(),
                           headers={"Content-Type": "application/json"})
    assert [(a.status_code, a.text) for a in answers] == [(200, "SUCCESS")] * 3
    assert reordered.status_code == 200
    assert [r["pay_order_id"] for r in stack.rows()] == ["PC200", "PC200"]
    assert stack.queued() == 2
    assert sample("iotledger_notify_duplicate_total") - before == 2
    assert "iotledger_notify_duplicate_total" in stack.client().get("/metrics").text


def _bad_sign(params: dict) -> dict:
    return dict(params, amount=params["amount"] + 1)


@pytest.mark.parametrize(
    ("make", "status", "reason", "label"),
    [
        (lambda: (b"x" * (64 * 1024 + 1), "application/json"), 413, "body: larger than 65536 bytes", "too_large"),
        (lambda: (b"<xml>payOrderId</xml>", "text/xml"), 415, "body: neither JSON nor form fields", "unsupported_body"),
        (lambda: (b"{not json", "application/json"), 400, "body: invalid JSON", "malformed_body"),
        (lambda: (json.dumps({k: v for k, v in v3_pay("PC1", 1).items() if k != "sign"}).encode(), "application/json"),
         400, "sign: missing", "missing_sign"),
        (lambda: (json.dumps(v3_pay("PC1", 1, mch="99999999")).encode(), "application/json"), 403,
         "mchId: unknown merchant", "unknown_merchant"),
        (lambda: (json.dumps(_bad_sign(v3_pay("PC1", 1))).encode(), "application/json"), 403, "sign: does not verify",
         "bad_signature"),
        (lambda: (urlencode(dict(v1_pay("P01", 5), amount="6")).encode(), "application/x-www-form-urlencoded"), 403,
         "sign: does not verify", "bad_signature"),
        (lambda: (json.dumps(v3_pay("PC1", 1, key="a-key-we-never-gave-out")).encode(), "application/json"), 403,
         "sign: does not verify", "bad_signature"),
        (lambda: (json.dumps(dict(v3_pay("PC1", 1), sign="ABC")).encode(), "application/json"), 403,
         "sign: must be a 32-character hex string", "bad_signature"),
        (lambda: (b"[1, 2]", "application/json"), 400, "body: JSON body must be an object", "malformed_body"),
        (lambda: (json.dumps({k: v for k, v in v3_pay("PC1", 1).items() if k != "mchId"}).encode(), "application/json"),
         400, "mchId: missing", "missing_mch_id"),
        (lambda: (b"", "application/json"), 400, "body: empty", "malformed_body"),
        (lambda: (b"[" * 30000 + b"]" * 30000, "application/json"), 400, "body: nested deeper than", "malformed_body"),
        (lambda: (b'{"a":' * 10000 + b"1" + b"}" * 10000, "application/json"), 400, "body: nested deeper than",
         "malformed_body"),
        (lambda: (b'{"mchId":"\xff\xfe"}', "application/json"), 400, "body: not UTF-8 text", "malformed_body"),
        (lambda: (b'"just a string"', "application/json"), 400, "body: JSON body must be an object", "malformed_body"),
        (lambda: (b'{"amount":' + b"9" * 5000 + b"}", "application/json"), 400, "body: a number has more than",
         "malformed_body"),
        (lambda: (b'{"amount":1e999}', "application/json"), 400, "body: a number is out of range", "malformed_body"),
        (lambda: (b'{"amount":NaN}', "application/json"), 400, "body: NaN is not JSON", "malformed_body"),
        (lambda: (json.dumps(v3_pay("PC1", 1))[:-1].encode() + b', "amount": 5}', "application/json"), 400,
         "body: key 'amount' appears twice", "malformed_body"),
        (lambda: (b'{"mchId":"\\ud800"}', "application/json"), 400, "body: a field is not valid Unicode",
         "malformed_body"),
    ],
    ids=["too_large", "not_json_nor_form", "malformed_json", "missing_sign", "unknown_mch", "bad_sign_v3", "bad_sign_v1",
         "wrong_key", "sign_shape", "json_array", "missing_mch", "empty", "deep_arrays", "deep_objects", "not_utf8",
         "json_string", "huge_int", "huge_float", "nan", "repeated_key", "lone_surrogate"],
)
def test_refusals_answer_4xx_with_a_reason_and_store_and_queue_nothing(stack, make, status, reason, label):
    body, ctype = make()
    before = sample("iotledger_notify_refused_total", reason=label)
    with structlog.testing.capture_logs() as logs, stack.client() as c:
        r = c.post("/iotpay/notify", content=body, headers={"Content-Type": ctype})
        metrics = c.get("/metrics").text
    assert r.status_code == status
    assert r.text.startswith(reason)
    assert stack.rows() == [] and stack.queued() == 0
    assert sample("iotledger_notify_refused_total", reason=label) - before == 1
    assert f'iotledger_notify_refused_total{{reason="{label}"}}' in metrics
    [line] = [e for e in logs if e["event"] == "ingress.refused"]
    assert line["reason"] == label and line["remote_addr"] == "198.51.100.7"
    assert KEY not in repr(logs) and OLD_KEY not in repr(logs)


def test_body_limit_is_enforced_without_a_content_length(stack):
    def chunks() -> Iterator[bytes]:
        for _ in range(70):
            yield b"x" * 1024

    with stack.client() as c:
        r = c.post("/iotpay/notify", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and stack.rows() == []


def test_a_flood_of_forgeries_from_one_address_is_cut_off_without_starving_others(db_url, redis_url, queue_name):
    s = Stack(db_url, redis_url, queue_name, IOTLEDGER_REFUSALS_PER_MINUTE="3")
    try:
        with s.client("203.0.113.66") as forger, s.client("198.51.100.7") as gateway:
            forged = [post_json(forger, _bad_sign(v3_pay(f"PC{i}", 1))).status_code for i in range(6)]
            # once cut off, forgeries get 429 without more work, but a genuine notify from the same
            # address (a proxy shared with the forger) still gets through
            assert post_json(forger, v3_pay("PC900", 1)).status_code == 200
            assert post_json(forger, _bad_sign(v3_pay("PC903", 1))).status_code == 429
            assert post_json(gateway, v3_pay("PC901", 1)).status_code == 200
            s.now += 60
            assert post_json(forger, v3_pay("PC902", 1)).status_code == 200
            metrics = gateway.get("/metrics").text
    finally:
        s.close()
    assert forged == [403, 403, 403, 429, 429, 429]
    assert [r["pay_order_id"] for r in s.rows()] == ["PC900", "PC901", "PC902"]
    assert 'iotledger_notify_refused_total{reason="rate_limited"}' in metrics


def test_a_full_card_number_is_never_stored_and_the_row_is_marked_verified_at_ingress(stack):
    params = v3_pay("PC300", 700, cardNum="4325671234562266")
    raw = json.dumps(params).encode()
    with stack.client() as c:
        r = c.post("/iotpay/notify", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    [row] = stack.rows()
    stored = bytes(row["body"])
    assert b"4325671234562266" not in stored and b'"432567******2266"' in stored
    assert row["pan_masked"] and row["verified_at"] is not None
    assert bytes(row["body_sha256"]) == hashlib.sha256(raw).digest()  # the same notify again is recognised
    assert stored == raw.replace(b"4325671234562266", b"432567******2266")  # the rest byte for byte
    with stack.client() as c:
        assert c.post("/iotpay/notify", content=raw, headers={"Content-Type": "application/json"}).status_code == 200
    assert len(stack.rows()) == 1


def test_postgresql_down_answers_503_and_queues_nothing(redis_url, queue_name):
    s = Stack(DOWN_DB, redis_url, queue_name)
    try:
        with s.client() as c:
            r = post_json(c, v3_pay("PC400", 100))
            ready = c.get("/readyz")
            assert c.get("/healthz").status_code == 200
            metrics = c.get("/metrics")
    finally:
        s.pool.close()
    assert r.status_code == 503 and r.headers["Retry-After"] == "30"
    assert s.queued() == 0
    assert ready.status_code == 503 and "postgresql" in ready.text and "redis" not in ready.text
    assert metrics.status_code == 200 and "iotledger_inbox_up 0.0" in metrics.text


def test_redis_down_still_answers_success_and_redrive_queues_it_later(db_url, redis_url, queue_name):
    s = Stack(db_url, DOWN_REDIS, queue_name)
    try:
        with s.client() as c:
            r = post_json(c, v3_pay("PC500", 100))
            ready = c.get("/readyz")
    finally:
        s.pool.close()
    assert (r.status_code, r.text) == (200, "SUCCESS")
    assert ready.status_code == 503 and "redis" in ready.text
    [row] = s.rows()
    assert row["state"] == "received"  # stored, not queued: redrive's job

    from datetime import datetime, timedelta, timezone

    from worker.pipeline.redrive import redrive_once

    later = datetime.now(timezone.utc) + timedelta(seconds=s.settings.redrive_after_seconds + 1)
    assert redrive_once(db_url, redis_url, s.settings, now=datetime.now(timezone.utc)) == 0  # not old enough
    assert redrive_once(db_url, redis_url, s.settings, now=later) == 1
    assert redrive_once(db_url, redis_url, s.settings, now=later) == 0  # just queued again: not due
    [row] = s.rows()
    assert row["state"] == "queued" and row["redrives"] == 1
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.llen(f"dramatiq:{queue_name}") == 1
    finally:
        r.delete(f"dramatiq:{queue_name}", f"dramatiq:{queue_name}.msgs")


def test_a_duplicate_of_a_row_that_could_not_be_queued_is_queued_on_its_second_arrival(db_url, redis_url, queue_name):
    params = v3_pay("PC600", 100)
    down = Stack(db_url, DOWN_REDIS, queue_name)
    with down.client() as c:
        assert post_json(c, params).status_code == 200
    down.pool.close()
    up = Stack(db_url, redis_url, queue_name)
    try:
        with up.client() as c:
            assert post_json(c, params).status_code == 200
            assert post_json(c, params).status_code == 200  # now queued: not queued a second time
        assert up.queued() == 1
    finally:
        up.close()


def test_routes_health_ready_metrics_and_wrong_methods(stack):
    with stack.client() as c:
        assert (c.get("/healthz").status_code, c.get("/healthz").text) == (200, "ok")
        assert (c.get("/readyz").status_code, c.get("/readyz").text) == (200, "ready")
        assert c.get("/iotpay/notify").status_code == 405
        assert c.post("/healthz").status_code == 405
        assert c.get("/nope").status_code == 404
        assert post_json(c, v3_pay("PC700", 100)).status_code == 200
        m = c.get("/metrics")
    assert m.headers["Content-Type"].startswith("text/plain")
    assert 'iotledger_notify_accepted_total{family="v3"}' in m.text
    assert 'iotledger_inbox_backlog{state="queued"} 1.0' in m.text
    assert "iotledger_inbox_oldest_unfinished_age_seconds" in m.text


def test_a_signed_notify_with_a_bad_field_is_kept_for_the_worker_to_record(stack):
    # IOTPay signed it: it is the gateway's word. The worker records why it cannot be posted.
    params = signed(dict(v3_pay("PC800", 100), currency="EUR"), KEY)
    with stack.client() as c:
        assert post_json(c, params).status_code == 200
    assert len(stack.rows()) == 1


def test_a_card_number_sent_as_a_json_number_is_masked_too(stack):
    params = v3_pay("PC301", 700, cardNum=4325671234562266)
    raw = json.dumps(params).encode()
    with stack.client() as c:
        r = c.post("/iotpay/notify", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    [row] = stack.rows()
    assert b"4325671234562266" not in bytes(row["body"]) and row["pan_masked"]


def test_a_signed_notify_with_a_nul_character_in_its_order_id_is_kept_not_answered_5xx(stack):
    # PostgreSQL refuses NUL in a text column: the listing column gets U+FFFD, the body keeps the
    # signed bytes, and the worker records why it cannot post it
    params = v3_pay("P\u0000C1", 100)
    with stack.client() as c:
        r = post_json(c, params)
    assert (r.status_code, r.text) == (200, "SUCCESS")
    [row] = stack.rows()
    assert row["pay_order_id"] == "P\ufffdC1" and b"P\\u0000C1" in bytes(row["body"])

    from worker.errors import PermanentError
    from worker.pipeline import process

    with psycopg.connect(stack.db_url) as conn, pytest.raises(PermanentError):
        process.handle(conn, row["id"], stack.settings)
    [row] = stack.rows()
    assert row["state"] == "failed" and "PostgreSQL refused" in row["reason"]


@pytest.mark.parametrize("card", [4325671234562266.0, ["4325671234562266"], {"pan": "4325671234562266"}])
def test_a_card_number_of_another_json_type_is_kept_masked(stack, card):
    # IOTPay sends a string; a signed body with anything else is kept for the worker, never unmasked
    params = v3_pay("PC302", 700, cardNum=card)
    raw = json.dumps(params).encode()
    with stack.client() as c:
        r = c.post("/iotpay/notify", content=raw, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.text) == (200, "SUCCESS")
    [row] = stack.rows()
    stored = json.loads(bytes(row["body"]))
    assert "4325671234562266" not in bytes(row["body"]).decode() and row["pan_masked"]
    assert "432567******2266" in stored["cardNum"]


def test_under_gunicorn_the_answer_does_not_wait_for_the_broker_and_every_stored_row_is_queued_in_order(stack):
    # runtime.ingress_app() sends from one thread per web process: the answer is sent without
    # waiting for Redis, the ids follow in the order their rows were stored, close() sends what waits
    from worker.pipeline.enqueuer import BackgroundEnqueuer

    enqueuer = BackgroundEnqueuer(stack.app.broker, stack.queue, stack.pool)
    app = Ingress(stack.settings, stack.pool, stack.app.broker, enqueuer=enqueuer)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://ingress") as c:
        answers = [post_json(c, v3_pay(f"PC95{i}", 100 + i)) for i in range(5)]
        assert post_json(c, v3_pay("PC950", 100)).status_code == 200  # a duplicate: not queued again
    enqueuer.close()
    assert [(a.status_code, a.text) for a in answers] == [(200, "SUCCESS")] * 5
    rows = stack.rows()
    assert [r["state"] for r in rows] == ["queued"] * 5
    client = redis.Redis.from_url(stack.redis_url)
    queued = [json.loads(client.hget(f"dramatiq:{stack.queue}.msgs", mid))["args"][0]
              for mid in client.lrange(f"dramatiq:{stack.queue}", 0, -1)]
    # an id alone in a message, or several sent together in one
    assert [i for m in queued for i in (m if isinstance(m, list) else [m])] == [r["id"] for r in rows]


def test_under_gunicorn_with_redis_down_the_notify_is_answered_and_left_for_redrive(db_url, queue_name):
    from worker.pipeline.enqueuer import BackgroundEnqueuer

    s = Stack(db_url, DOWN_REDIS, queue_name)
    before = sample("iotledger_notify_enqueue_failed_total")
    enqueuer = BackgroundEnqueuer(s.app.broker, queue_name, s.pool)
    app = Ingress(s.settings, s.pool, s.app.broker, enqueuer=enqueuer)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://ingress") as c:
            r = post_json(c, v3_pay("PC960", 100))
        enqueuer.close()
    finally:
        s.pool.close()
    assert (r.status_code, r.text) == (200, "SUCCESS")
    [row] = s.rows()
    assert row["state"] == "received"  # stored, not queued: redrive's job
    assert sample("iotledger_notify_enqueue_failed_total") - before == 1


def test_ids_sent_together_go_in_one_message_as_dramatiq_would_have_sent_it(stack):
    import dramatiq

    from worker.pipeline import messages
    from worker.pipeline.enqueuer import Enqueuer
    from worker.pipeline.inbox import Stored

    broker = stack.app.broker
    messages.send(broker, stack.queue, 1)  # the reference: dramatiq's own enqueue
    client = redis.Redis.from_url(stack.redis_url)
    client.script_flush()  # as after a Redis restart: the script is loaded again
    Enqueuer(broker, stack.queue, stack.pool).send_all([Stored(id=i, duplicate=False, state="queued") for i in (2, 3, 4)])
    sent = [dramatiq.Message.decode(client.hget(f"dramatiq:{stack.queue}.msgs", mid))
            for mid in client.lrange(f"dramatiq:{stack.queue}", 0, -1)]
    assert [(m.queue_name, m.actor_name, m.args, m.kwargs) for m in sent] == [
        (stack.queue, "process_notify", (1,), {}), (stack.queue, "process_notifies", ([2, 3, 4],), {})]
    assert sorted(sent[1].options) == sorted(sent[0].options) == ["redis_message_id"]
    assert len({m.options["redis_message_id"] for m in sent}) == 2
    # more than a batch: a message a batch, in one round trip
    client.delete(f"dramatiq:{stack.queue}", f"dramatiq:{stack.queue}.msgs")
    ids = list(range(10, 10 + 2 * messages.IDS_PER_MESSAGE + 1))
    messages.send_many(broker, stack.queue, ids)
    sent = [dramatiq.Message.decode(client.hget(f"dramatiq:{stack.queue}.msgs", mid))
            for mid in client.lrange(f"dramatiq:{stack.queue}", 0, -1)]
    assert [m.args[0] for m in sent] == [ids[:50], ids[50:100], ids[100:]]


def test_the_enqueuer_thread_outlives_an_unexpected_error_and_sends_the_next_ids(stack):
    # a bug in sending must not end the web process's only enqueuer thread (every later notify
    # would then wait for redrive): it is logged and the next ids go out
    from dramatiq.brokers.stub import StubBroker

    from worker.pipeline.enqueuer import LINGER_S, BackgroundEnqueuer
    from worker.pipeline.inbox import Stored

    class Flaky(StubBroker):
        failed = False

        def enqueue(self, message, *, delay=None):
            if not self.failed:
                self.failed = True
                raise RuntimeError("a bug")
            return super().enqueue(message, delay=delay)

    broker = Flaky()
    broker.declare_queue(stack.queue)
    enqueuer = BackgroundEnqueuer(broker, stack.queue, stack.pool)
    with structlog.testing.capture_logs() as logs:
        enqueuer.send(Stored(id=1, duplicate=False, state="queued"))
        time.sleep(LINGER_S * 5)
        enqueuer.send(Stored(id=2, duplicate=False, state="queued"))
        enqueuer.close()
    assert [e["inbox_ids"] for e in logs if e["event"] == "ingress.enqueue_failed"] == [[1]]
    sent = [broker.queues[stack.queue].get_nowait() for _ in range(broker.queues[stack.queue].qsize())]
    assert [dramatiq.Message.decode(m).args for m in sent] == [(2,)]
