"""`block ui` in a real browser: Playwright drives Debian's headless Chromium.

Chromium comes from the OS package (``/usr/bin/chromium``; `.ci/run` installs it), since
Playwright's own browser download is not reachable from our machines. Without it the tests
skip, except under ``CI=true`` where they fail. Screenshots of the blocks list, a form and the
results page are written to ``tests/artifacts/ui/`` (kept by CI as artefacts).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, shot
from ui_server import UIServer, serve_ui

from blocks import flow, task
from blocks.filesystems import S3, AwsCredentials
from blocks.system import JSON, Secret, String

SECRET = "ui-browser-s3cr3t-Vb9R"
SECRET_2 = "ui-browser-s3cr3t-Hn2T"


@pytest.fixture
def ui() -> Iterator[UIServer]:
    with serve_ui() as server:
        yield server


def sign_in(page: Any, ui: UIServer, url: str | None = None) -> None:
    """Open a one-time sign-in URL (the printed one by default) and land on the blocks."""
    page.goto(url or ui.login_url())
    page.wait_for_url(f"{ui.url}{ui.prefix}/blocks")


@pytest.fixture
def page(browser: Any, ui: UIServer) -> Iterator[Any]:
    """A fresh browser profile that opened the printed URL (so it holds a session cookie)."""
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    sign_in(opened, ui)
    yield opened
    context.close()


def assert_secret_free(page: Any, ui: UIServer, *values: str) -> None:
    html = page.content()
    for value in values:
        assert value not in html
    ui.assert_never_sent(*values)


def test_session_cookie_and_a_visit_without_it(browser: Any, page: Any, ui: UIServer) -> None:
    assert page.url == f"{ui.url}{ui.prefix}/blocks"  # no code in the address bar
    cookie = next(c for c in page.context.cookies() if c["name"] == ui.cookie_name)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == ui.prefix
    assert cookie["value"] != ui.token and len(cookie["value"]) >= 40
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
    shot(page, "signed-in")
    stranger = browser.new_context()
    try:
        response = stranger.new_page().goto(f"{ui.url}{ui.prefix}/blocks")
        assert response.status == 403
    finally:
        stranger.close()


class Recorder(BaseHTTPRequestHandler):
    """Another local service: answers any GET and keeps the Cookie header it was sent."""

    seen: list[tuple[str, str]]

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("cookie", "")))
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(b"<!doctype html><title>another local service</title><p>hello</p>")

    def log_message(self, *args: Any) -> None:
        pass


def test_another_local_port_the_browser_visits_gets_no_cookie_that_works_here(
    page: Any, ui: UIServer
) -> None:
    # Proof that the browser does share cookies across ports: one set for 127.0.0.1 at "/".
    page.context.add_cookies([{"name": "control", "value": "any-port", "url": ui.url}])
    seen: list[tuple[str, str]] = []
    handler = type("Seen", (Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    other = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        # It knows the UI's port and cookie name, and tries the UI's own paths on its port.
        for path in ("/", "/blocks", "/login", "/keys", "/static/ui.css"):
            page.goto(other + path)
        shot(page, "another-port")
    finally:
        server.shutdown()
        server.server_close()
    received = [cookie for _, cookie in seen]
    print(f"the other service got {len(seen)} requests with cookies {sorted(set(received))}")
    assert any("control=any-port" in cookie for cookie in received)  # cookies do cross ports
    assert not any(ui.cookie_name in cookie or "blocks-ui" in cookie for cookie in received)
    # Whatever it got, replayed against the UI (as the attacker did): refused.
    for cookie in set(received):
        for path in ("/blocks", f"{ui.prefix}/blocks"):
            replay = httpx.get(ui.url + path, headers={"Cookie": cookie}, timeout=30)
            assert replay.status_code == 403, (path, cookie)
    page.goto(f"{ui.url}{ui.prefix}/blocks")  # and the browser itself is still signed in
    assert page.locator("h1").count() >= 1 and "Forbidden" not in page.content()


def test_the_history_after_sign_in_holds_no_url_that_signs_in_again(
    chromium: Any, ui: UIServer, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"  # a real profile on disk: its History database is read
    context = chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS
    )
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        first = ui.login_url()
        sign_in(page, ui, first)
        assert page.url == f"{ui.url}{ui.prefix}/blocks" and "code=" not in page.url
        page.goto(f"{ui.url}{ui.prefix}/results")
        again = context.new_page()
        spent = again.goto(first)  # the first URL, replayed in the same browser
        assert spent.status == 403 and "used already" in again.content()
        shot(again, "spent-link")
    finally:
        context.close()
    with sqlite3.connect(profile / "Default" / "History") as db:
        urls = [url for (url,) in db.execute("SELECT url FROM urls")]
    print(f"history after sign-in: {urls}")
    assert first in urls  # Chromium keeps the first URL, as the issue said...
    assert not any(ui.token in url for url in urls)
    for url in urls:  # ...and none of them opens a session any more
        replay = httpx.get(url, timeout=30)
        assert replay.status_code == 403, url
        assert "set-cookie" not in replay.headers, url


def test_the_open_launch_file_signs_the_browser_in_once(
    browser: Any, ui: UIServer, tmp_path: Path
) -> None:
    from blocks.cli.ui._launch import OPEN_TTL, LaunchFile

    launch = LaunchFile(ui.login_url(ttl=OPEN_TTL))
    try:
        # What `block ui --open` gives the browser: a local file, no secret in its path.
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(launch.path.as_uri())
        page.wait_for_url(f"{ui.url}{ui.prefix}/blocks")  # file:// -> sign-in -> the blocks
        assert "Blocks" in page.content()
        shot(page, "opened-from-launch-file")
        again = context.new_page().goto(launch.path.as_uri())
        assert again is not None
        context.close()
    finally:
        launch.remove()


def test_create_edit_and_delete_blocks_through_the_forms(page: Any, ui: UIServer) -> None:
    for i, region in enumerate(("eu-west-1", "us-east-1", "ap-south-1")):
        String(value=region).save(f"region-{i}")
    JSON(value={"retries": 3, "tables": ["orders", "customers"]}).save("etl-settings")

    page.click("text=New block")
    page.click(f"a[href='{ui.prefix}/blocks/new/secret']")
    page.fill("#block-name", "api-key")
    page.fill("input[name=value]", SECRET)
    assert page.get_attribute("input[name=value]", "type") == "password"
    page.click("#save")
    page.wait_for_url(re.compile(r"/blocks/secret/api-key\?saved=1$"))
    assert page.inner_text("tr[data-field=value] td").strip() == "••••••"
    assert Secret.load("api-key").get() == SECRET

    page.goto(f"{ui.url}{ui.prefix}/blocks/new/aws-credentials")
    page.fill("#block-name", "prod")
    page.fill("input[name=aws_access_key_id]", "AKIABROWSER")
    page.fill("input[name=aws_secret_access_key]", SECRET_2)
    page.click("#save")
    page.wait_for_url(re.compile(r"/blocks/aws-credentials/prod\?saved=1$"))

    page.goto(f"{ui.url}{ui.prefix}/blocks/new/s3")
    page.fill("#block-name", "lake")
    page.fill("input[name=bucket_path]", "lake/raw")
    page.select_option("select[name=credentials]", "aws-credentials/prod")
    page.fill("textarea[name=client_config]", '{"connect_timeout": 2}')
    shot(page, "form")
    page.click("#save")
    page.wait_for_url(re.compile(r"/blocks/s3/lake\?saved=1$"))
    lake = S3.load("lake")
    assert lake.bucket_path == "lake/raw" and lake.client_config == {"connect_timeout": 2}
    assert isinstance(lake.credentials, AwsCredentials)
    assert lake.credentials.block_document_name == "prod"

    page.click("a.ref")  # the reference links to the saved credentials
    page.wait_for_url(f"{ui.url}{ui.prefix}/blocks/aws-credentials/prod")
    assert page.inner_text("tr[data-field=aws_secret_access_key] td").strip() == "••••••"

    page.goto(f"{ui.url}{ui.prefix}/blocks/s3/lake")
    page.click("text=Edit")
    assert page.input_value("input[name=aws_secret_access_key]") == ""
    page.fill("input[name=bucket_path]", "lake/curated")
    page.click("#save")
    page.wait_for_url(re.compile(r"/blocks/s3/lake\?saved=1$"))
    assert "lake/curated" in page.inner_text("tr[data-field=bucket_path]")
    assert S3.load("lake").credentials.aws_secret_access_key.get_secret_value() == SECRET_2  # type: ignore[union-attr]

    page.goto(f"{ui.url}{ui.prefix}/blocks/aws-credentials/prod")
    page.click("text=Delete")
    page.click("#confirm-delete")
    alert = page.inner_text("p.error")
    assert "Cannot delete aws-credentials/prod: it is referenced by s3/lake." in alert
    assert "prod" in AwsCredentials.list()

    page.goto(f"{ui.url}{ui.prefix}/blocks")
    shot(page, "blocks")
    # The README's picture (docs/ui-blocks.png is a copy): cropped to the table, to stay small.
    crop = {"x": 0, "y": 0, "width": 1100, "height": 470}
    page.screenshot(path=str(ARTIFACTS / "readme-blocks.png"), clip=crop)
    for slug in ("s3/lake", "aws-credentials/prod"):
        page.goto(f"{ui.url}{ui.prefix}/blocks/{slug}/delete")
        page.click("#confirm-delete")
        page.wait_for_url(re.compile(r"/blocks\?deleted="))
        assert f"Deleted {slug}." in page.inner_text("p.notice")
    assert AwsCredentials.list() == [] and S3.list() == []
    assert_secret_free(page, ui, SECRET, SECRET_2)
    print(f"{len(ui.bodies)} responses to the browser checked: no secret value in any")


def test_results_page_lists_a_flows_records_and_prunes_the_expired(page: Any, ui: UIServer) -> None:
    @task(persist_result=True, cache_key_fn=lambda: "orders-extract")
    def extract() -> list[int]:
        return list(range(1000))

    @task(
        persist_result=True,
        cache_key_fn=lambda: "orders-scratch",
        cache_expiration=timedelta(milliseconds=50),
    )
    def scratch() -> str:
        return "x" * 5000

    @flow
    def orders() -> None:
        extract()
        scratch()

    orders()
    time.sleep(0.1)  # the scratch record expires (not a timing assertion)
    page.goto(f"{ui.url}{ui.prefix}/results")
    rows = page.locator("#records tbody tr")
    assert rows.count() == 2
    assert "expired" in page.inner_text("#records tbody tr.expired")
    assert "orders-scratch" in page.inner_text("#records tbody tr.expired")
    assert "extract" in page.inner_text("#tasks")
    shot(page, "results")
    page.click("text=orders-extract")
    assert "payload_size" in page.inner_text("#header")
    page.go_back()

    page.click("#prune")
    assert "Dry run: 1 record(s)" in page.inner_text("#preview-summary")
    assert "orders-scratch" in page.inner_text("#preview")
    page.click("#confirm-prune")
    assert "Pruned 1 expired record(s)." in page.inner_text("p.notice")
    assert page.locator("#records tbody tr").count() == 1
    assert "orders-extract" in page.inner_text("#records")


def test_a_cross_site_post_without_the_csrf_token_is_refused(page: Any, ui: UIServer) -> None:
    Secret(value=SECRET).save("api-key")
    target = f"{ui.url}{ui.prefix}/blocks/secret/api-key/delete"
    # Another port of 127.0.0.1 is the *same site*: the browser sends the cookie along.
    evil = (
        "<!doctype html><form id=f method=post action='" + target + "'>"
        "<input name=confirm value=yes></form><script>f.submit()</script>"
    ).encode()

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(evil)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with page.expect_response(target) as posted:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        response = posted.value
        assert response.status == 403
        assert "Forbidden" in response.text()
    finally:
        server.shutdown()
        server.server_close()
    assert Secret.load("api-key").get() == SECRET  # not deleted
    # The same POST from the UI's own page carries the token and goes through.
    page.goto(target)
    page.click("#confirm-delete")
    page.wait_for_url(re.compile(r"/blocks\?deleted="))
    assert Secret.list() == []
    assert_secret_free(page, ui, SECRET)


def test_a_secret_by_reference_is_entered_shown_and_changed_in_the_browser(
    page: Any, ui: UIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLOCKS_TEST_BROWSER_REF", SECRET)
    monkeypatch.setenv("BLOCKS_TEST_BROWSER_REF_2", SECRET_2)
    page.goto(f"{ui.url}{ui.prefix}/blocks/new/secret")
    page.fill("#block-name", "by-ref")
    page.fill("input[name='__ref__.value']", "env:BLOCKS_TEST_BROWSER_REF")
    page.click("#save")
    page.wait_for_url(re.compile(r"/blocks/secret/by-ref\?saved=1$"))
    shown = page.inner_text("tr[data-field=value] td").strip()
    assert shown == "ref env:BLOCKS_TEST_BROWSER_REF"
    assert Secret.load("by-ref").get() == SECRET

    page.click("text=Edit")
    field = page.locator("input[name='__ref__.value']")
    assert field.input_value() == "env:BLOCKS_TEST_BROWSER_REF"
    assert page.input_value("input[name=value]") == ""
    field.fill("env:BLOCKS_TEST_BROWSER_REF_2")
    shot(page, "secret-reference-form")
    page.click("#save")
    page.wait_for_url(re.compile(r"/blocks/secret/by-ref\?saved=1$"))
    assert "ref env:BLOCKS_TEST_BROWSER_REF_2" in page.inner_text("tr[data-field=value]")
    assert Secret.load("by-ref").get() == SECRET_2
    assert_secret_free(page, ui, SECRET, SECRET_2)
    print(f"{len(ui.bodies)} responses to the browser checked: the reference shown, no value")
