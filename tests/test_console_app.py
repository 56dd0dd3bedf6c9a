"""The finance console's Flask app against a real PostgreSQL: sign-in, sessions, CSRF, roles,
throttling, and that each page shows what the command line's --json gives.
(The same app under gunicorn in a real browser: tests/test_console_browser.py.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import cli
from tests.console_seed import KEY, OLD_KEY, PAN, PASSWORD, Seeded, seed, settings_for
from tests.factories import MERCHANTS_JSON
from worker import db
from worker.console.app import create_app

TOKEN = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


@pytest.fixture
def seeded(db_url: str, redis_url: str, queue_name: str, tmp_path: Path) -> Seeded:
    return seed(db_url, redis_url, queue_name, tmp_path)


def make_app(db_url: str, redis_url: str, queue: str, tmp_path: Path, out_dir: Path, **env: str) -> Flask:
    settings = settings_for(db_url, redis_url, queue, tmp_path / "data", **env)
    return create_app(settings, db_url, out_dir,
                      pool=db.open_pool(db_url, name="console-test", max_size=2, timeout=5))


@pytest.fixture
def app(db_url: str, redis_url: str, queue_name: str, tmp_path: Path, seeded: Seeded) -> Iterator[Flask]:
    a = make_app(db_url, redis_url, queue_name, tmp_path, seeded.out_dir)
    yield a
    a.extensions["iotledger_console"].pool.close()


def token(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    m = TOKEN.search(page.get_data(as_text=True))
    assert m, page.get_data(as_text=True)[:500]
    return m.group(1)


def sign_in(client: FlaskClient, name: str, password: str = PASSWORD, **kw) -> object:
    return client.post("/signin", data={"name": name, "password": password, "csrf_token": token(client, "/signin")},
                       **kw)


def env(db_url: str) -> dict[str, str]:
    return {"DATABASE_URL": db_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON, "IOTLEDGER_SETTLEMENT_TZ": "America/Toronto"}


def test_every_page_without_a_session_redirects_to_sign_in(app: Flask, seeded: Seeded) -> None:
    client = app.test_client()
    for path in ("/", "/days", f"/days/{seeded.day}", f"/orders/{seeded.notified}", "/orders?q=SHOP-1001",
                 f"/days/{seeded.day}/files/settlement-{seeded.day}.csv"):
        r = client.get(path)
        assert r.status_code == 302, path
        assert r.headers["Location"].startswith("/signin?next="), (path, r.headers["Location"])
        assert "12345" not in r.get_data(as_text=True)
    assert client.get("/signin").status_code == 200
    assert client.post("/verify").status_code == 400  # no CSRF token: refused before anything else


def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_ends_the_session(app: Flask, seeded: Seeded) -> None:
    client = app.test_client()
    r = sign_in(client, "viewer", query_string={"next": "/days"})
    assert r.status_code == 302 and r.headers["Location"] == "/days"
    cookie = [h for h in r.headers.getlist("Set-Cookie") if h.startswith("iotledger_console=")][-1]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    stolen = client.get_cookie("iotledger_console").value
    assert client.get("/").status_code == 200
    r = client.post("/signout", data={"csrf_token": token(client, "/")})
    assert r.status_code == 302 and r.headers["Location"] == "/signin"
    # the old cookie, replayed, no longer signs anybody in: the session ended in PostgreSQL
    other = app.test_client()
    other.set_cookie("iotledger_console", stolen)
    assert other.get("/").status_code == 302
    # over https (TLS, or a trusted proxy saying so) the cookie is Secure too
    secure = app.test_client()
    r = secure.post("/signin", base_url="https://localhost", headers={"Referer": "https://localhost/signin"},
                    data={"name": "viewer", "password": PASSWORD,
                          "csrf_token": TOKEN.search(secure.get("/signin", base_url="https://localhost")
                                                     .get_data(as_text=True)).group(1)})
    assert r.status_code == 302
    assert any("Secure" in h for h in r.headers.getlist("Set-Cookie") if h.startswith("iotledger_console="))
    # a redirect after sign-in never leaves the site
    assert sign_in(app.test_client(), "viewer", query_string={"next": "//evil.example/x"}).headers["Location"] == "/"


def test_a_wrong_password_is_refused_and_repeats_are_throttled_across_processes(
        app: Flask, seeded: Seeded, db_url: str, redis_url: str, queue_name: str, tmp_path: Path) -> None:
    client = app.test_client()
    for _ in range(5):
        r = sign_in(client, "resolver", "wrong password!!")
        assert r.status_code == 401 and "Wrong name or password" in r.get_data(as_text=True)
    # a second app (another server process) counts the same failures: even the right password waits
    second = make_app(db_url, redis_url, queue_name, tmp_path, seeded.out_dir)
    try:
        r = sign_in(second.test_client(), "resolver")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert "Too many failed sign-ins" in r.get_data(as_text=True)
    finally:
        second.extensions["iotledger_console"].pool.close()
    # another name from the same address is not locked out by these
    assert sign_in(app.test_client(), "viewer").status_code == 302
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM console_signin_failures WHERE name = 'resolver'").fetchone()[0] == 6
    # an unknown name is refused the same way
    assert sign_in(app.test_client(), "nobody").status_code == 401


def test_a_post_without_the_csrf_token_is_refused(app: Flask, seeded: Seeded) -> None:
    client = app.test_client()
    assert sign_in(client, "resolver").status_code == 302
    r = client.post("/verify")
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    r = client.post("/verify", data={"csrf_token": "forged"})
    assert r.status_code == 400
    r = client.post("/signin", data={"name": "viewer", "password": PASSWORD})
    assert r.status_code == 400


def test_a_viewer_gets_403_on_a_resolver_action_and_a_resolver_runs_it(app: Flask, seeded: Seeded,
                                                                       db_url: str) -> None:
    viewer = app.test_client()
    sign_in(viewer, "viewer")
    r = viewer.post("/verify", data={"csrf_token": token(viewer, "/")})
    assert r.status_code == 403
    assert "Verify the files now" not in viewer.get("/").get_data(as_text=True)
    resolver = app.test_client()
    sign_in(resolver, "resolver")
    r = resolver.post("/verify", data={"csrf_token": token(resolver, "/")})
    assert r.status_code == 302
    with psycopg.connect(db_url) as conn:
        runs = conn.execute("SELECT source, ran_by, ok FROM files_verify_runs ORDER BY id").fetchall()
    assert runs == [("cli", None, True), ("console", "resolver", True)]


def test_the_overview_totals_of_a_day_equal_check_date_json(app: Flask, seeded: Seeded, db_url: str) -> None:
    client = app.test_client()
    sign_in(client, "viewer")
    page = client.get("/").get_data(as_text=True)
    shown = {(m, c): (int(p), int(r), int(n)) for m, c, p, r, n in re.findall(
        r'data-mch-id="([^"]+)" data-currency="([^"]+)">.*?class="paid" data-cents="(-?\d+)".*?'
        r'class="refunded" data-cents="(-?\d+)".*?class="net" data-cents="(-?\d+)"', page, re.S)}
    proc = cli.run("check", "--date", str(seeded.day), "--json", env=env(db_url))
    assert proc.returncode == 0, proc.stderr
    day = json.loads(proc.stdout)["day"]
    want = {(m["mch_id"], m["currency"]): (m["paid_cents"], m["refunded_cents"], m["net_cents"])
            for m in day["merchants"]}
    assert shown == want and len(want) == 3
    assert want[("10000701", "CAD")] == (12345 + 2500 + 9900, 2345, 12345 + 2500 + 9900 - 2345)
    overview = json.loads(cli.run("overview", "--json", env=env(db_url)).stdout)
    assert {(t["mch_id"], t["currency"]): (t["paid_cents"], t["refunded_cents"], t["net_cents"])
            for t in overview["last_day_totals"]} == want
    assert overview["close"]["state"] == "closed" and overview["files_verify"]["ok"] is True
    classes = {c["class"]: c["count"] for c in overview["open_mismatches"]["classes"]}
    assert classes["amount_mismatch"] == 1 and classes["expected_not_paid"] == 1
    assert f">{classes['unknown_to_merchant']}<" in page and "amount_mismatch" in page
    assert "<svg" in page and "polyline" in page


def test_an_order_page_shows_the_masked_card_and_never_a_key_or_sign(app: Flask, seeded: Seeded,
                                                                      db_url: str) -> None:
    client = app.test_client()
    sign_in(client, "viewer")
    page = client.get(f"/orders/{seeded.notified}").get_data(as_text=True)
    assert "432567******2266" in page and PAN not in page
    assert KEY not in page and OLD_KEY not in page
    with psycopg.connect(db_url) as conn:
        signs = [json.loads(bytes(b))["sign"] for (b,) in conn.execute("SELECT body FROM inbox").fetchall()]
    assert signs and not any(s in page for s in signs)
    assert "verified at the ingress before its full card number was masked" in page  # the PAN body
    assert "RP-NOTIFIED" in page and "refundable" in page and "100.00 CAD" in page  # 123.45 - 23.45
    assert f"settlement-{seeded.day}" in page or f"manifest-{seeded.day}" in page
    old = client.get(f"/orders/{seeded.old_key}").get_data(as_text=True)
    assert "key 2 of 2" in old and OLD_KEY not in old
    # the command line gives the same chain
    proc = cli.run("order", seeded.notified, "--json", env=env(db_url))
    chain = json.loads(proc.stdout)
    assert chain["refundable_cents"] == 10000 and chain["card_num"] == "432567******2266"
    assert [e["kind"] for e in chain["timeline"]][:1] and KEY not in proc.stdout and PAN not in proc.stdout
    assert [n["verification"]["result"] for n in chain["notifies"]] == ["verified at the ingress"]
    assert {e["pay_order_id"] for e in chain["ledger_entries"]} == {"PC-NOTIFIED", "RP-NOTIFIED"}


def test_lookup_by_merchant_order_number(app: Flask, seeded: Seeded, db_url: str) -> None:
    client = app.test_client()
    sign_in(client, "viewer")
    r = client.get("/orders", query_string={"q": "SHOP-1001"})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "PC-NOTIFIED" in page and "PC-M2" in page  # two merchants use the number
    r = client.get("/orders", query_string={"q": "SHOP-1001", "mch_id": "10000702"})
    assert r.status_code == 302 and r.headers["Location"] == "/orders/PC-M2"
    assert "SHOP-9999" in client.get("/orders", query_string={"q": "SHOP-9999"}).get_data(as_text=True)
    assert client.get("/orders/NOPE").status_code == 404
    assert client.get("/orders", query_string={"q": "x" * 500}).status_code == 400
    proc = cli.run("order", "SHOP-1001", "--json", env=env(db_url))
    assert proc.returncode == 1 and len(json.loads(proc.stdout)["matches"]["orders"]) == 2
    proc = cli.run("order", "SHOP-1001", "--mch-id", "10000702", "--json", env=env(db_url))
    assert proc.returncode == 0 and json.loads(proc.stdout)["pay_order_id"] == "PC-M2"


def test_days_list_a_day_its_files_and_downloads(app: Flask, seeded: Seeded, db_url: str) -> None:
    client = app.test_client()
    sign_in(client, "viewer")
    page = client.get("/days").get_data(as_text=True)
    assert str(seeded.day) in page
    detail = client.get(f"/days/{seeded.day}").get_data(as_text=True)
    name = f"settlement-{seeded.day}.csv"
    assert name in detail and f"manifest-{seeded.day}.json" in detail
    r = client.get(f"/days/{seeded.day}/files/{name}")
    assert r.status_code == 200 and r.data == (seeded.out_dir / str(seeded.day) / name).read_bytes()
    assert "attachment" in r.headers["Content-Disposition"]
    for bad in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "settlement-x.csv"):
        assert client.get(f"/days/{seeded.day}/files/{bad}").status_code == 404
    assert client.get("/days/2001-01-01").status_code == 404
    assert client.get("/days/not-a-date").status_code == 404
    assert client.get("/days", query_string={"before": "nope"}).status_code == 400
    days = json.loads(cli.run("days", "--json", env=env(db_url)).stdout)
    assert [d["day"] for d in days["days"]] == [str(seeded.day)] and days["days"][0]["verify"]["state"] == "ok"
    one = json.loads(cli.run("day", str(seeded.day), "--json", env=env(db_url)).stdout)
    assert [v["version"] for v in one["versions"]] == [1]


def test_a_disabled_user_is_signed_out_at_once(app: Flask, seeded: Seeded, db_url: str) -> None:
    client = app.test_client()
    sign_in(client, "viewer")
    assert client.get("/").status_code == 200
    proc = cli.run("users", "disable", "viewer", env=env(db_url))
    assert proc.returncode == 0, proc.stderr
    assert client.get("/").status_code == 302
    assert sign_in(app.test_client(), "viewer").status_code == 401


def test_users_cli_reads_the_password_from_stdin_never_argv(db_url: str) -> None:
    proc = cli.run("users", "add", "alice", "--role", "resolver", stdin="a long enough password\n", env=env(db_url))
    assert proc.returncode == 0, proc.stderr
    proc = cli.run("users", "add", "alice", "--role", "viewer", stdin="a long enough password\n", env=env(db_url))
    assert proc.returncode == 2 and "exists already" in proc.stderr
    proc = cli.run("users", "add", "bob", "--role", "viewer", stdin="short\n", env=env(db_url))
    assert proc.returncode == 2 and "at least 12" in proc.stderr
    proc = cli.run("users", "add", "carol", "--role", "admin", stdin="a long enough password\n", env=env(db_url))
    assert proc.returncode == 2
    listed = json.loads(cli.run("users", "list", "--json", env=env(db_url)).stdout)["users"]
    assert [(u["name"], u["role"]) for u in listed] == [("alice", "resolver")]
    with psycopg.connect(db_url) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM console_users").fetchone()
        assert stored.startswith("$argon2id$") and "a long enough password" not in stored
        # the database refuses anything but an argon2id hash
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO console_users (name, role, password_hash) VALUES ('eve', 'viewer', 'plain')")


def test_postgresql_down_is_a_503_page(db_url: str, redis_url: str, queue_name: str, tmp_path: Path) -> None:
    down = "postgresql://postgres@127.0.0.1:9/nowhere"
    settings = settings_for(down, redis_url, queue_name, tmp_path / "data")
    app = create_app(settings, down, tmp_path, pool=db.open_pool(down, name="down", max_size=1, timeout=1))
    try:
        app.test_client().set_cookie("iotledger_console", "x")
        client = app.test_client()
        with client.session_transaction() as s:
            s["sid"] = "a-session"
        r = client.get("/")
        assert r.status_code == 503 and "PostgreSQL unavailable" in r.get_data(as_text=True)
    finally:
        app.extensions["iotledger_console"].pool.close()
