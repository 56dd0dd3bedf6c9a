"""Fuzzing the notify pipeline: hypothesis bodies through the real ingress app and the worker.

`FuzzRun` builds the app with the real factory (`worker.runtime.ingress_app()`, from the
environment), POSTs a body in process, and for every body it stored runs the worker's processing
(`worker.pipeline.process.handle`) at once. It asserts, per body: no 5xx; a stored row ends
`done` or `failed`; a row that posted parses as a valid notify. `finish()` asserts every inbox
row is finished and `iotledger check` holds. Used by tests/test_ingress_fuzz.py (bounded, CI)
and tests/benchmarks/fuzz_ingress.py (long).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import redis
from hypothesis import strategies as st

from tests.factories import KEY, MCH, MERCHANTS_JSON
from worker.errors import PermanentError, ValidationError
from worker.iotpay.notify import KNOWN_FIELDS, parse_body
from worker.iotpay.signature import signed
from worker.ledger.checks import run_checks
from worker.pipeline import process

ORDER_IDS = [f"PCF{n:03d}" for n in range(12)]
CONTENT_TYPES = ["application/json", "application/json;charset=UTF-8", "application/x-www-form-urlencoded", "",
                 "text/plain", "application/xml", "multipart/form-data; boundary=x", "application/json; charset=latin-1"]

# ------------------------------------------------------------------ strategies
big_ints = st.one_of(st.integers(), st.integers(-(2**70), 2**70), st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**15 + 1,
                                                                                  10**40, 0, -1]))
scalars = st.one_of(st.none(), st.booleans(), big_ints, st.floats(), st.text(max_size=30),
                    st.from_regex(r"-?\d{1,45}", fullmatch=True), st.sampled_from(["", "CAD", "USD", "EUR", "pay",
                                                                                   "refund", "void", "2", "3"]))
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)
field_values = {
    "payOrderId": st.one_of(st.sampled_from(ORDER_IDS), scalars),
    "originalOrderId": st.one_of(st.sampled_from(ORDER_IDS + ["", None]), scalars),
    "mchId": st.one_of(st.just(MCH), st.just(MCH), scalars),
    "amount": st.one_of(st.integers(-5, 10**6), big_ints, scalars),
    "refundable": st.one_of(st.integers(-5, 10**6), big_ints, scalars),
    "status": st.one_of(st.sampled_from([0, 1, 2, 3, 4, 9]), big_ints, scalars),
    "currency": st.one_of(st.sampled_from(["CAD", "USD"]), scalars),
    "payType": st.one_of(st.sampled_from(["pay", "refund", "void"]), scalars),
    "paySuccTime": st.one_of(st.sampled_from(["2025-06-13 20:04:12", "9999-12-31 23:59:59", "0001-01-01 00:00:00",
                                              "2025-02-30 10:00:00", 1749870252000, 10**13 * 9]), scalars),
    "cardNum": st.one_of(st.sampled_from(["432567******2266", "4325671234562266", 4325671234562266]), scalars),
}


@st.composite
def signed_notify(draw: st.DrawFn) -> dict[str, Any]:
    """A notify signed with the merchant's key, any field any value (values the sign cannot render left out)."""
    params: dict[str, Any] = {"payOrderId": draw(st.sampled_from(ORDER_IDS)), "mchId": MCH, "amount": 1000,
                              "currency": "CAD", "payType": "pay", "status": 2, "paySuccTime": "2025-06-13 20:04:12"}
    for name in draw(st.lists(st.sampled_from(sorted(field_values)), max_size=4, unique=True)):
        params[name] = draw(field_values[name])
    for name in draw(st.lists(st.text(max_size=10).filter(lambda n: n not in KNOWN_FIELDS), max_size=2)):
        params[name] = draw(json_values)
    try:
        return signed(params, KEY)
    except (ValidationError, ValueError):
        params.pop("sign", None)
        return params


def _as_form(params: dict[str, Any]) -> bytes:
    return urlencode({k: "" if v is None else str(v) for k, v in params.items()}).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A body and its Content-Type: anything a client could send, genuine notifies included."""
    kind = draw(st.sampled_from(["bytes", "deep", "json", "signed_json", "signed_form", "mutated"]))
    ctype = draw(st.sampled_from(CONTENT_TYPES + [None]))
    if kind == "bytes":
        return draw(st.binary(max_size=300)), ctype
    if kind == "deep":
        depth = draw(st.integers(1, 40_000))
        shape = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"a":[', "]}")]))
        inner = draw(st.sampled_from(["", "1", '"x"', "null"]))
        return (shape[0] * depth + inner + shape[1] * depth).encode(), draw(st.sampled_from(["application/json", None]))
    if kind == "json":
        return json.dumps(draw(json_values)).encode("utf-8", "surrogatepass"), ctype
    params = draw(signed_notify())
    if kind == "signed_form":
        return _as_form(params), draw(st.sampled_from(["application/x-www-form-urlencoded", "", None]))
    text = json.dumps(params, ensure_ascii=draw(st.booleans()))
    if kind == "mutated" and len(params) > 1:
        key = draw(st.sampled_from(sorted(params)))
        text = draw(st.sampled_from([
            text[:-1] + f", {json.dumps(key)}: {json.dumps(params[key])}}}",  # the same key twice
            text[:-1] + ', "x": "a\\u0000b"}',
            text[:-1] + ', "x": "\\udc80"}',
            text[:-1] + ', "x": ' + "9" * draw(st.integers(20, 6000)) + "}",
            text[:-1] + ', "x": 1e400}',
            text[:-1] + ', "x": -Infinity}',
            text[: draw(st.integers(0, len(text)))],
        ]))
    return text.encode("utf-8", "surrogatepass"), draw(st.sampled_from(["application/json", None, ""]))


# ------------------------------------------------------------------ the run
@contextmanager
def real_app(db_url: str, redis_url: str, queue: str) -> Iterator[Any]:
    """The ingress from the real factory, configured through the environment as gunicorn's is."""
    from worker import config
    from worker import runtime

    env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON,
           "IOTLEDGER_QUEUE": queue, "IOTLEDGER_REFUSALS_PER_MINUTE": "100000000"}
    saved = {k: os.environ.get(k) for k in [*env, "IOTPAY_MERCHANTS_FILE"]}
    os.environ.update(env)
    os.environ.pop("IOTPAY_MERCHANTS_FILE", None)
    for cached in (config.settings, runtime.app_settings, runtime.app_endpoints):
        cached.cache_clear()
    app = runtime.ingress_app()
    try:
        yield app
    finally:
        app.pool.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for cached in (config.settings, runtime.app_settings, runtime.app_endpoints):
            cached.cache_clear()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"dramatiq:{queue}*"):
            client.delete(key)


class FuzzRun:
    """Bodies through the ingress and the worker, with the checks after each and at the end."""

    def __init__(self, app: Any, db_url: str) -> None:
        self.app = app
        self.settings = app.settings
        self.client = httpx.Client(transport=httpx.WSGITransport(app=app, remote_addr="198.51.100.9"),
                                   base_url="http://ingress")
        self.conn = psycopg.connect(db_url, autocommit=True)
        self.statuses: Counter[int] = Counter()
        self.outcomes: Counter[str] = Counter()

    def post(self, body: bytes, content_type: str | None) -> int:
        headers = {"Content-Type": content_type} if content_type is not None else {}
        try:
            response = self.client.post("/iotpay/notify", content=body, headers=headers)
        except Exception as exc:  # the app raised: a server would have answered 500
            self.statuses[500] += 1
            raise AssertionError(f"500 ({type(exc).__name__}: {exc}) for {body[:200]!r}") from exc
        self.statuses[response.status_code] += 1
        assert response.status_code < 500, f"{response.status_code} {response.text!r} for {body[:200]!r}"
        if response.status_code == 200:
            self._process_new_rows()
        return response.status_code

    def _process_new_rows(self) -> None:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM inbox WHERE state IN ('received', 'queued')")]
        for inbox_id in ids:
            try:
                handled = process.handle(self.conn, inbox_id, self.settings)
                self.outcomes[handled.outcome or "skipped"] += 1
            except PermanentError:
                self.outcomes["failed"] += 1
            except Exception as exc:  # the worker would retry this row forever, then mark it dead
                self.outcomes["worker raised"] += 1
                raise AssertionError(f"worker raised {type(exc).__name__}: {exc} on inbox row {inbox_id}") from exc
            state, outcome, body, ctype = self.conn.execute(
                "SELECT state, outcome, body, content_type FROM inbox WHERE id = %s", (inbox_id,)).fetchone()
            assert state in ("done", "failed"), f"inbox row {inbox_id} left {state}"
            if outcome == "posted":  # nothing invalid posted: what posted parses as a valid notify
                parse_body(bytes(body), ctype, self.settings.gateway_tz, max_amount=self.settings.max_amount_cents)

    def unfinished(self) -> int:
        return self.conn.execute("SELECT count(*) FROM inbox WHERE state NOT IN ('done', 'failed')").fetchone()[0]

    def finish(self) -> None:
        """Every row finished, and the ledger's invariants hold."""
        assert self.unfinished() == 0
        report = run_checks(self.conn)
        assert report.ok, report.as_json()

    def close(self) -> None:
        self.client.close()
        self.conn.close()
