"""The finance console in a real browser: Debian's Chromium driven by Playwright, against the
console under its real server (`iotledger console`: gunicorn, two processes) and the real
PostgreSQL. Each page's screenshot is saved under tests/output/console/ (IOTLEDGER_TEST_OUTPUT
moves it) for a reviewer to look at.

Chromium comes from Debian's `chromium` package (.ci/run installs it where it is missing);
Playwright's own browser download is not used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import cli
from tests.console_seed import KEY, OLD_KEY, PAN, PASSWORD, Seeded, seed
from tests.factories import MERCHANTS_JSON
from tests.fix_db import CI, create_database, drop_database, with_dbname

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OUTPUT = Path(os.environ.get("IOTLEDGER_TEST_OUTPUT") or Path(__file__).resolve().parent / "output") / "console"

if not Path(CHROMIUM).exists():
    if CI:
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@dataclass
class Server:
    url: str
    db_url: str
    seeded: Seeded

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.db_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON,
                "IOTLEDGER_SETTLEMENT_TZ": "America/Toronto"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pg_server_url: str, template_db: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    name = create_database(pg_server_url, "iotledger_console", template=template_db)
    db_url = with_dbname(pg_server_url, name)
    tmp = tmp_path_factory.mktemp("console")
    seeded = seed(db_url, redis_url, f"console{os.getpid()}", tmp)
    for user in ("victim",):
        proc = cli.run("users", "add", user, "--role", "resolver", stdin=PASSWORD + "\n",
                       env={"DATABASE_URL": db_url})
        assert proc.returncode == 0, proc.stderr
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
    env.update(DATABASE_URL=db_url, IOTPAY_MERCHANTS=MERCHANTS_JSON, IOTLEDGER_DATA_DIR=str(tmp / "data"),
               IOTLEDGER_SETTLEMENT_TZ="America/Toronto", IOTLEDGER_CONSOLE_PORT=str(port),
               IOTLEDGER_CONSOLE_WORKERS="2")
    log = open(tmp / "console.log", "w")
    proc = subprocess.Popen([str(cli.BIN), "console", "--out", str(seeded.out_dir)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/signin", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the console never answered: {(tmp / 'console.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield Server(url, db_url, seeded)
    finally:
        proc.send_signal(signal.SIGTERM)  # gunicorn's graceful stop
        try:
            proc.wait(timeout=30)
        finally:
            log.close()
        drop_database(pg_server_url, name)
    assert proc.returncode == 0, (tmp / "console.log").read_text()[-2000:]
    assert "Traceback" not in (tmp / "console.log").read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()


def shot(page: object, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: object, server: Server, name: str, password: str = PASSWORD) -> object:
    page.goto(server.url + "/signin")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    with page.expect_navigation() as nav:
        page.click("button[type=submit]")
    return nav.value


def post_form(page: object, action: str, fields: dict[str, str]) -> object:
    """Submit a form the page does not offer (as a hand-made request from this browser would)."""
    with page.expect_navigation() as nav:
        page.evaluate("""([action, fields]) => {
            const f = document.createElement('form'); f.method = 'post'; f.action = action;
            for (const [k, v] of Object.entries(fields)) {
                const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
            }
            document.body.appendChild(f); f.submit(); }""", [action, fields])
    return nav.value


def csrf_token(page: object) -> str:
    return page.get_attribute("form.who input[name=csrf_token]", "value")


def test_a_page_without_a_session_redirects_to_sign_in(page, server: Server) -> None:
    response = page.goto(server.url + "/days")
    assert page.url.startswith(server.url + "/signin?next=")
    assert response.status == 200 and page.is_visible("input[name=password]")
    assert str(server.seeded.day) not in page.content()
    shot(page, "01-signin")
    cookies = page.context.cookies()
    assert all(c["sameSite"] == "Strict" and c["httpOnly"] for c in cookies if c["name"] == "iotledger_console")


def test_a_wrong_password_is_refused_and_throttled_after_repeats(page, server: Server) -> None:
    for attempt in range(5):
        response = sign_in(page, server, "victim", "not the password")
        assert response.status == 401, attempt
        assert page.is_visible("text=Wrong name or password")
    shot(page, "02-wrong-password")
    response = sign_in(page, server, "victim", PASSWORD)  # even the right one waits now
    assert response.status == 429 and page.is_visible("text=Too many failed sign-ins")
    assert page.url.startswith(server.url + "/signin")
    shot(page, "03-throttled")


def test_the_overview_totals_of_a_day_equal_check_date_json(page, server: Server) -> None:
    sign_in(page, server, "viewer")
    assert page.url == server.url + "/"
    rows = page.query_selector_all("#last-day-totals tbody tr")
    shown = {(r.get_attribute("data-mch-id"), r.get_attribute("data-currency")):
             tuple(int(r.query_selector(f"td.{k}").get_attribute("data-cents")) for k in ("paid", "refunded", "net"))
             for r in rows}
    proc = cli.run("check", "--date", str(server.seeded.day), "--json", env=server.env())
    assert proc.returncode == 0, proc.stderr
    want = {(m["mch_id"], m["currency"]): (m["paid_cents"], m["refunded_cents"], m["net_cents"])
            for m in json.loads(proc.stdout)["day"]["merchants"]}
    assert shown == want and len(want) == 3
    texts = {(r.get_attribute("data-mch-id"), r.get_attribute("data-currency")): r.query_selector("td.net").inner_text()
             for r in rows}
    assert texts[("10000701", "CAD")] == "224.00"  # 123.45 + 25.00 + 99.00 - 23.45
    assert page.is_visible("#chart svg") and page.is_visible("text=amount_mismatch")
    shot(page, "04-overview")
    page.click("nav >> text=Days")
    assert page.is_visible(f"text={server.seeded.day}")
    shot(page, "05-days")
    page.click(f"a:text('{server.seeded.day}')")
    assert page.is_visible(f"text=settlement-{server.seeded.day}.csv")
    shot(page, "06-day")


def test_a_viewer_gets_403_on_a_resolver_action_a_resolver_does_not(page, server: Server) -> None:
    sign_in(page, server, "viewer")
    assert not page.is_visible("text=Verify the files now")
    response = post_form(page, "/verify", {"csrf_token": csrf_token(page)})
    assert response.status == 403 and page.is_visible("text=Only a resolver may do this")
    shot(page, "07-viewer-403")
    page.context.clear_cookies()
    sign_in(page, server, "resolver")
    with page.expect_navigation() as nav:
        page.click("text=Verify the files now")
    assert nav.value.status == 200 and page.url == server.url + "/"
    assert page.is_visible("text=files verify: every check holds") and page.is_visible("text=by resolver")


def test_a_post_without_the_csrf_token_is_refused(page, server: Server) -> None:
    sign_in(page, server, "resolver")
    response = post_form(page, "/verify", {})
    assert response.status == 400 and page.is_visible("text=The CSRF token is missing")
    shot(page, "08-csrf-refused")
    response = post_form(page, "/signout", {"csrf_token": "forged"})
    assert response.status == 400
    page.goto(server.url + "/")
    assert page.url == server.url + "/"  # still signed in: the forged sign-out did nothing


def test_an_order_lookup_shows_the_masked_card_and_never_the_key(page, server: Server) -> None:
    sign_in(page, server, "viewer")
    page.click("nav >> text=Order lookup")
    page.fill("input[name=q]", server.seeded.notified)
    with page.expect_navigation():
        page.click("button:text('Look up')")
    assert page.url == f"{server.url}/orders/{server.seeded.notified}"
    html = page.content()
    assert "432567******2266" in page.inner_text("dl.facts")
    assert "432567******2266" in page.inner_text("#notifies")
    for secret in (KEY, OLD_KEY, PAN):
        assert secret not in html
    assert "(not shown)" in page.inner_text("#notifies")  # the sign field
    assert page.is_visible("#timeline") and "RP-NOTIFIED" in html
    shot(page, "09-order")
    page.goto(f"{server.url}/orders/{server.seeded.old_key}")
    assert "key 2 of 2" in page.inner_text("#notifies")
    page.goto(f"{server.url}/orders?q=SHOP-1001")
    assert "PC-M2" in page.content() and "PC-NOTIFIED" in page.content()
    shot(page, "10-lookup")



def test_behind_a_proxy_saying_https_the_cookie_is_secure(server: Server) -> None:
    """gunicorn believes X-Forwarded-Proto from FORWARDED_ALLOW_IPS (127.0.0.1 here): the request is
    https, so the session cookie is Secure (and the CSRF check wants an https Referer of this host)."""
    https = {"X-Forwarded-Proto": "https"}
    with httpx.Client(base_url=server.url, headers=https) as client:
        first = client.get("/signin")
        token = first.text.split('name="csrf_token" type="hidden" value="', 1)[1].split('"', 1)[0]
        # the cookie is Secure already: a browser sends it over https to the proxy; httpx, speaking http
        # to the console here, would not, so it is handed on by hand
        jar = first.headers["set-cookie"].split(";", 1)[0]
        assert "Secure" in first.headers["set-cookie"]
        host = server.url.split("://", 1)[1]
        r = client.post("/signin", data={"name": "viewer", "password": PASSWORD, "csrf_token": token},
                        headers={"Referer": f"https://{host}/signin", "Cookie": jar})
        assert r.status_code == 302, r.text[:300]
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("iotledger_console="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    with httpx.Client(base_url=server.url) as plain:  # the same sign-in over plain http: not Secure
        page = plain.get("/signin").text
        token = page.split('name="csrf_token" type="hidden" value="', 1)[1].split('"', 1)[0]
        r = plain.post("/signin", data={"name": "viewer", "password": PASSWORD, "csrf_token": token})
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("iotledger_console="))
        assert r.status_code == 302 and "Secure" not in cookie
