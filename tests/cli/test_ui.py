"""`block ui` over real HTTP: token gate, CSRF, schema-generated forms, results, keys.

Each test talks to a real uvicorn server (`tests/ui_server.py`) on 127.0.0.1 with httpx, and
the last ones run the `block ui` command itself. The browser tests are in `test_ui_browser.py`.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, Field, SecretBytes, SecretStr
from ui_server import UIServer, serve_ui

from blocks import flow, task
from blocks.core._block import Block, SecretDict
from blocks.filesystems import S3, AwsCredentials
from blocks.system import JSON, Secret, String

BLOCK = str(Path(sys.executable).with_name("block"))
SECRET = "ui-s3cr3t-Kq7W"  # distinctive: finding it in any response is meaningful
SECRET_2 = "ui-s3cr3t-Pz4M"
SECRET_3 = "ui-s3cr3t-Wd8J"


class Endpoint(BaseModel):
    host: str
    port: int = 5432
    password: SecretStr | None = None


class UiKitchenSink(Block):
    """Every kind of field a form has to offer."""

    title: str
    replicas: int = 1
    ratio: float = 0.5
    enabled: bool = False
    tier: Literal["small", "large"] = "small"
    start: date | None = None
    at: datetime | None = None
    endpoint: Endpoint
    backup: Endpoint | None = None
    tags: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    login: Secret | None = None
    token: SecretStr
    extra: SecretDict | None = None
    api_keys: dict[str, SecretStr] = Field(default_factory=dict)


class UiLooseSettings(Block):
    """Fields whose type says nothing about secrets, though a saved value may hold some."""

    settings: Any = None
    options: dict[str, Any] = Field(default_factory=dict)


@pytest.fixture
def ui_server() -> Iterator[UIServer]:
    with serve_ui() as server:
        yield server


def csrf_of(html: str) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def field_errors(html: str) -> list[str]:
    return re.findall(r'class="field-error" role="alert">([^<]*)<', html)


# -- the gate ---------------------------------------------------------------------------------


def test_every_request_without_a_session_or_the_token_is_403(ui_server: UIServer) -> None:
    anonymous = ui_server.client(authed=False)
    paths = [
        "/",
        "/blocks",
        "/blocks/new/secret",
        "/results",
        "/keys",
        "/keys/rotation",
        "/static/ui.css",
        "/nowhere",
    ]
    paths += [ui_server.prefix + path for path in paths]
    forged = {"Cookie": f"{ui_server.cookie_name}={ui_server.token}"}  # the old cookie
    answers = []
    for path in paths:
        answers += [
            anonymous.get(path),
            # The access token is never read from a URL (it would stay in the history).
            anonymous.get(path, params={"token": ui_server.token}),
            anonymous.get(path, params={"code": "x" * 43}),
            anonymous.get(path, headers={"Authorization": "token nope"}),
            anonymous.get(path, headers=forged),
        ]
    answers.append(anonymous.post("/keys/rotate", data={"_csrf": ui_server.csrf}))
    assert [a.status_code for a in answers] == [403] * len(answers)
    # Nor do the sign-in pages tell a stranger the path the cookie is scoped to (another local
    # service that learnt it could send the browser there on its own port to receive it).
    answers += [
        anonymous.get("/login"),
        anonymous.get("/login", params={"code": "spent"}),
        anonymous.post("/login", data={"token": "wrong"}),
    ]
    for answer in answers:
        assert ui_server.prefix not in answer.text + str(answer.headers), answer.url
    print(f"{len(answers)} requests without a session or the token: none served, none told")


def test_the_printed_url_signs_in_once_for_a_session_that_is_neither_code_nor_token(
    ui_server: UIServer,
) -> None:
    url = ui_server.login_url()
    code = url.rsplit("=", 1)[1]
    browser = ui_server.client(authed=False)
    assert browser.head(url).status_code == 200  # a link preview's HEAD spends nothing
    first = browser.get(url)
    assert first.status_code == 200
    target = f"{ui_server.prefix}/blocks"
    assert f'http-equiv="refresh" content="0;url={target}"' in first.text  # no code in it
    cookie = first.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    sid = rest.split(";")[0]
    assert name == ui_server.cookie_name and sid not in (code, ui_server.token) and len(sid) >= 40
    assert f"Path={ui_server.prefix};" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = browser.get(target)  # httpx sends the cookie under its path only, as a browser
    assert page.status_code == 200
    assert f'href="{ui_server.prefix}/blocks/new"' in page.text  # links stay under the prefix
    assert browser.get("/blocks").status_code == 403  # outside the prefix: no cookie sent
    # The same URL again (from the history, a terminal's scrollback): spent.
    again = ui_server.client(authed=False).get(url)
    assert again.status_code == 403 and "used already" in again.text
    assert "set-cookie" not in again.headers
    # A code that expired before its first use opens nothing either.
    expired = ui_server.client(authed=False).get(ui_server.login_url(ttl=0.0))
    assert expired.status_code == 403
    # A handler's redirect keeps the browser under the prefix.
    Secret(value=SECRET).save("api")
    csrf = csrf_of(browser.get(f"{target}/secret/api/delete").text)
    done = browser.post(f"{target}/secret/api/delete", data={"_csrf": csrf})
    assert done.status_code == 303
    assert done.headers["location"] == f"{ui_server.prefix}/blocks?deleted=secret/api"
    scripted = ui_server.client(authed=False, headers={"Authorization": f"token {ui_server.token}"})
    page = scripted.get("/blocks")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["server-timing"].startswith("app;dur=")


def test_a_session_of_another_server_or_port_is_refused(ui_server: UIServer) -> None:
    with serve_ui() as other:
        stolen = other.session
        for name in (ui_server.cookie_name, other.cookie_name):
            cookie = {"Cookie": f"{name}={stolen}"}
            refused = ui_server.client(authed=False).get("/blocks", headers=cookie)
            assert refused.status_code == 403
        assert other.client().get("/blocks").status_code == 200  # at home it works
    # Under its own name, but for another port: the name is not this server's either.
    elsewhere = {"Cookie": f"blocks-ui-{ui_server.port + 1}={ui_server.session}"}
    assert ui_server.client(authed=False).get("/blocks", headers=elsewhere).status_code == 403


def test_the_sign_in_form_takes_the_access_token_in_a_post_body(ui_server: UIServer) -> None:
    browser = ui_server.client(authed=False)
    form = browser.get("/login")
    assert form.status_code == 200 and 'type="password"' in form.text
    wrong = browser.post("/login", data={"token": "x" * 32})
    assert wrong.status_code == 403 and "set-cookie" not in wrong.headers
    cross = {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}
    assert browser.post("/login", data={"token": ui_server.token}, headers=cross).status_code == 403
    right = browser.post("/login", data={"token": ui_server.token})
    assert right.status_code == 200 and ui_server.token not in right.headers["set-cookie"]
    assert browser.get(f"{ui_server.prefix}/blocks").status_code == 200
    ui_server.assert_never_sent(ui_server.token)


def test_unexpected_host_header_is_refused(ui_server: UIServer) -> None:
    client = ui_server.client()
    assert client.get("/blocks", headers={"Host": "evil.example"}).status_code == 403
    assert client.get("/blocks", headers={"Host": f"localhost:{ui_server.port}"}).status_code == 200


def test_a_post_without_the_csrf_token_is_refused(ui_server: UIServer) -> None:
    Secret(value=SECRET).save("api")
    client = ui_server.client()
    for data in ({}, {"_csrf": ""}, {"_csrf": "0" * 40}, {"_csrf": ui_server.token}):
        assert client.post("/blocks/secret/api/delete", data=data).status_code == 403
    cross = {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}
    refused = client.post(
        "/blocks/secret/api/delete", data={"_csrf": ui_server.csrf}, headers=cross
    )
    assert refused.status_code == 403
    assert Secret.load("api").get() == SECRET  # still there after six attempts
    same = {"Origin": ui_server.url, "Sec-Fetch-Site": "same-origin"}
    done = client.post("/blocks/secret/api/delete", data={"_csrf": ui_server.csrf}, headers=same)
    assert done.status_code == 303 and "api" not in Secret.list()


# -- blocks -----------------------------------------------------------------------------------


def test_secret_and_s3_with_a_linked_credentials_block_through_the_forms(
    ui_server: UIServer,
) -> None:
    client = ui_server.client()
    form = client.get("/blocks/new/secret").text
    assert 'type="password"' in form and 'name="value"' in form
    made = client.post(
        "/blocks/new/secret", data={"_csrf": csrf_of(form), "_name": "api", "value": SECRET}
    )
    assert made.status_code == 303 and made.headers["location"] == "/blocks/secret/api?saved=1"
    assert Secret.load("api").get() == SECRET
    client.post(
        "/blocks/new/aws-credentials",
        data={
            "_csrf": ui_server.csrf,
            "_name": "prod",
            "aws_access_key_id": "AKIATEST",
            "aws_secret_access_key": SECRET_2,
        },
    )
    form = client.get("/blocks/new/s3").text
    assert '<option value="aws-credentials/prod"' in form  # references: a select of saved blocks
    made = client.post(
        "/blocks/new/s3",
        data={
            "_csrf": ui_server.csrf,
            "_name": "lake",
            "bucket_path": "lake/raw",
            "credentials": "aws-credentials/prod",
            "client_config": '{"connect_timeout": 2}',
        },
    )
    assert made.status_code == 303
    lake = S3.load("lake")
    assert lake.credentials is not None and lake.credentials.block_document_name == "prod"
    assert lake.client_config == {"connect_timeout": 2}
    AwsCredentials(aws_access_key_id="AKIANEW", aws_secret_access_key=SECRET_2).save(
        "prod", overwrite=True
    )
    assert S3.load("lake").credentials.aws_access_key_id == "AKIANEW"  # type: ignore[union-attr]

    page = client.get("/blocks/s3/lake").text
    assert 'href="/blocks/aws-credentials/prod"' in page  # the reference is a link
    shown = client.get("/blocks/secret/api").text
    assert "••••••" in shown
    edit = client.get("/blocks/secret/api/edit").text
    assert "stored — leave empty to keep" in edit
    # Edit: empty secret keeps the stored value; a new one replaces it.
    kept = client.post("/blocks/secret/api/edit", data={"_csrf": ui_server.csrf, "value": ""})
    assert kept.status_code == 303 and Secret.load("api").get() == SECRET
    client.post("/blocks/secret/api/edit", data={"_csrf": ui_server.csrf, "value": '{"u": "x"}'})
    assert Secret.load("api").get() == {"u": "x"}  # JSON object: a secret dict
    edited = client.post(
        "/blocks/s3/lake/edit",
        data={
            "_csrf": ui_server.csrf,
            "bucket_path": "lake/curated",
            "credentials": "aws-credentials/prod",
            "client_config": "{}",
        },
    )
    assert edited.status_code == 303 and S3.load("lake").bucket_path == "lake/curated"
    for path in (
        "/blocks",
        "/blocks/s3/lake",
        "/blocks/s3/lake/edit",
        "/blocks/aws-credentials/prod",
        "/blocks/aws-credentials/prod/edit",
        "/keys",
    ):
        assert client.get(path).status_code == 200
    checked = ui_server.assert_never_sent(SECRET, SECRET_2)
    print(f"{checked} response bodies checked: no secret value in any")


class UiRefKeys(Block):
    """Secret fields of the three kinds, each of which may be a reference."""

    token: SecretStr
    private_key: SecretBytes
    login: SecretDict


def test_references_show_on_the_block_page_and_are_kept_or_entered_in_the_form(
    ui_server: UIServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    login = {"user": "etl", "password": SECRET_3}
    monkeypatch.setenv("BLOCKS_TEST_UI_TOKEN", SECRET)
    monkeypatch.setenv("BLOCKS_TEST_UI_LOGIN", json.dumps(login))
    (tmp_path / "key.pem").write_text(SECRET_2)
    UiRefKeys.register_type_and_schema()
    client = ui_server.client()
    made = client.post(
        "/blocks/new/ui-ref-keys",
        data={
            "_csrf": ui_server.csrf,
            "_name": "refs",
            "__ref__.token": "env:BLOCKS_TEST_UI_TOKEN",
            "__ref__.private_key": f"file:{tmp_path / 'key.pem'}",
            "__ref__.login": "env:BLOCKS_TEST_UI_LOGIN",
        },
    )
    assert made.status_code == 303, field_errors(made.text)
    saved = UiRefKeys.load("refs")
    assert saved.token.get_secret_value() == SECRET
    assert saved.private_key.get_secret_value() == SECRET_2.encode()
    assert saved.login.get_secret_value() == login

    page = client.get("/blocks/ui-ref-keys/refs").text
    for reference in ("env:BLOCKS_TEST_UI_TOKEN", f"file:{tmp_path / 'key.pem'}"):
        assert '<span class="secret-ref"' in page and f"ref {reference}" in page
    edit = client.get("/blocks/ui-ref-keys/refs/edit").text
    assert 'name="__ref__.login" value="env:BLOCKS_TEST_UI_LOGIN"' in edit
    assert "stored as a reference" in edit

    # Saved again untouched: every reference kept. A value typed over one replaces it.
    kept = client.post(
        "/blocks/ui-ref-keys/refs/edit",
        data={
            "_csrf": ui_server.csrf,
            "__ref__.token": "env:BLOCKS_TEST_UI_TOKEN",
            "__ref__.private_key": f"file:{tmp_path / 'key.pem'}",
            "__ref__.login": "env:BLOCKS_TEST_UI_LOGIN",
            "token": "typed-over-value",
        },
    )
    assert kept.status_code == 303
    again = UiRefKeys.load("refs")
    assert repr(again.login) == "SecretDictRef('env:BLOCKS_TEST_UI_LOGIN')"
    assert again.token.get_secret_value() == "typed-over-value"
    assert type(again.token) is SecretStr

    # A bad reference, or a value and a new reference at once: an error beside the field.
    for data, why in (
        ({"__ref__.token": "vault:x"}, "does not start with one of env:, file:, aws-sm:"),
        ({"__ref__.token": "env:OTHER", "token": "v"}, "a value or a reference, not both"),
    ):
        refused = client.post(
            "/blocks/ui-ref-keys/refs/edit", data={"_csrf": ui_server.csrf, **data}
        )
        assert refused.status_code == 400 and any(why in e for e in field_errors(refused.text))
    checked = ui_server.assert_never_sent(SECRET, SECRET_2, SECRET_3)
    print(f"{checked} response bodies checked: references shown, no referenced value in any")


def test_new_block_page_describes_every_built_in_type(ui_server: UIServer) -> None:
    from blocks.core._block import BUILTIN_BLOCK_MODULES

    page = ui_server.client().get("/blocks/new").text
    items = dict(re.findall(r'<li data-type="([a-z0-9-]+)">(.*?)</li>', page, re.S))
    missing = [s for s in BUILTIN_BLOCK_MODULES if 'class="muted description"' not in items[s]]
    assert missing == []
    assert "Store data in an S3 bucket" in items["s3"] and "built in" in items["s3"]
    print(f"{len(BUILTIN_BLOCK_MODULES)} built-in types on the New block page, each described")


def test_every_field_kind_round_trips_through_the_generated_form(ui_server: UIServer) -> None:
    Secret(value=SECRET).save("db-login")
    client = ui_server.client()
    form = client.get("/blocks/new/ui-kitchen-sink").text
    kinds = {
        "title": 'type="text"',
        "replicas": 'type="number" step="1"',
        "ratio": 'type="number" step="any"',
        "enabled": 'type="checkbox"',
        "start": 'type="date"',
        "at": 'type="datetime-local"',
        "endpoint.host": 'type="text"',
        "endpoint.password": 'type="password"',
        "token": 'type="password"',
        "extra": 'type="password"',
        "api_keys": 'type="password"',
    }
    for name, kind in kinds.items():
        assert re.search(rf'<input {re.escape(kind)}[^>]*name="{re.escape(name)}"', form), name
    assert '<select id="f-tier" name="tier">' in form
    assert '<option value="secret/db-login"' in form
    assert '<textarea id="f-tags" name="tags"' in form
    data = {
        "_csrf": ui_server.csrf,
        "_name": "main",
        "title": "Main",
        "replicas": "3",
        "ratio": "0.25",
        "enabled": "true",
        "tier": '"large"',
        "start": "2026-01-31",
        "at": "2026-01-31T10:20:30",
        "endpoint.host": "db.local",
        "endpoint.port": "6543",
        "endpoint.password": SECRET_2,
        "tags": '["a", "b"]',
        "labels": '{"team": "data"}',
        "login": "secret/db-login",
        "token": SECRET,
        "extra": '{"k": "v"}',
        "api_keys": '{"x": "' + SECRET_2 + '"}',
    }
    assert client.post("/blocks/new/ui-kitchen-sink", data=data).status_code == 303
    saved = UiKitchenSink.load("main")
    assert (saved.title, saved.replicas, saved.ratio, saved.enabled, saved.tier) == (
        "Main",
        3,
        0.25,
        True,
        "large",
    )
    assert saved.start == date(2026, 1, 31) and saved.at == datetime(2026, 1, 31, 10, 20, 30)
    assert saved.endpoint.host == "db.local" and saved.endpoint.port == 6543
    assert saved.backup is None  # an optional nested model left empty
    assert saved.endpoint.password.get_secret_value() == SECRET_2  # type: ignore[union-attr]
    assert saved.tags == ["a", "b"] and saved.labels == {"team": "data"}
    assert saved.login is not None and saved.login.get() == SECRET
    assert saved.token.get_secret_value() == SECRET
    assert saved.extra is not None and saved.extra.get_secret_value() == {"k": "v"}
    assert saved.api_keys["x"].get_secret_value() == SECRET_2

    edit = client.get("/blocks/ui-kitchen-sink/main/edit").text
    assert 'value="db.local"' in edit and 'value="6543"' in edit and "checked" in edit
    assert '<option value="&#34;large&#34;" selected>' in edit
    # Unchanged form posted back: every secret kept, the checkbox cleared, "clear" honoured.
    again = {k: v for k, v in data.items() if k not in ("_name", "enabled")}
    again.update(
        {
            "token": "",
            "extra": "",
            "api_keys": "",
            "endpoint.password": "",
            "__clear__.extra": "1",
            "backup.host": "replica",
        }
    )
    assert client.post("/blocks/ui-kitchen-sink/main/edit", data=again).status_code == 303
    saved = UiKitchenSink.load("main")
    assert saved.token.get_secret_value() == SECRET and saved.enabled is False
    assert saved.endpoint.password.get_secret_value() == SECRET_2  # type: ignore[union-attr]
    assert saved.api_keys["x"].get_secret_value() == SECRET_2 and saved.extra is None
    assert saved.backup is not None and (saved.backup.host, saved.backup.port) == ("replica", 5432)
    for path in ("/blocks/ui-kitchen-sink/main", "/blocks/ui-kitchen-sink/main/edit"):
        client.get(path)
    ui_server.assert_never_sent(SECRET, SECRET_2)


def test_what_is_typed_into_a_field_shown_as_secret_is_stored_encrypted(
    ui_server: UIServer,
) -> None:
    from stored_rows import row_columns

    # Two `Any`-typed fields and a JSON block's value, saved holding secrets: the edit form
    # shows each as a secret (a password input); what is typed there must not land in clear.
    UiLooseSettings(
        settings=SecretStr("old-" + SECRET), options={"password": SecretStr("old-" + SECRET)}
    ).save("main")
    JSON(value={"user": "bob", "password": SecretStr("old-" + SECRET)}).save("conn")
    client = ui_server.client()
    cases = [
        ("ui-loose-settings", "main", "settings", SECRET),
        ("ui-loose-settings", "main", "options", '{"password": "' + SECRET_2 + '", "n": 7}'),
        ("json", "conn", "value", '{"user": "alice", "password": "' + SECRET_3 + '"}'),
    ]
    for type_slug, name, field_name, typed in cases:
        form = client.get(f"/blocks/{type_slug}/{name}/edit").text
        marked = re.search(rf'<input type="password" id="f-{field_name}" name="{field_name}"', form)
        assert marked, f"{type_slug}/{name}: {field_name} is not shown as secret"
        done = client.post(
            f"/blocks/{type_slug}/{name}/edit",
            data={"_csrf": ui_server.csrf, field_name: typed},
        )
        assert done.status_code == 303, done.text
    stored = [str(row_columns("ui-loose-settings", "main")), str(row_columns("json", "conn"))]
    for typed in (SECRET, SECRET_2, SECRET_3):
        assert not any(typed in columns for columns in stored), "a typed secret stored in clear"
    saved = UiLooseSettings.load("main")
    assert saved.settings.get_secret_value() == SECRET
    assert saved.options["password"].get_secret_value() == SECRET_2
    assert saved.options["n"].get_secret_value() == 7
    conn = JSON.load("conn").value
    assert conn["user"].get_secret_value() == "alice"
    assert conn["password"].get_secret_value() == SECRET_3
    for type_slug, name, _, _ in cases:  # still shown as secret, never its value
        assert "••••••" in client.get(f"/blocks/{type_slug}/{name}").text
    ui_server.assert_never_sent(SECRET, SECRET_2, SECRET_3)
    print(f"{len(cases)} secrets typed into Any/JSON fields: 0 in clear in the registry rows")


def test_validation_errors_sit_next_to_their_field_and_never_echo_a_secret(
    ui_server: UIServer,
) -> None:
    client = ui_server.client()
    bad = client.post(
        "/blocks/new/ui-kitchen-sink",
        data={
            "_csrf": ui_server.csrf,
            "_name": "Not A Name",
            "replicas": "many",
            "tags": "[1,",
            "token": SECRET,
            "extra": "{" + SECRET,
            "endpoint.port": "x",
        },
    )
    assert bad.status_code == 400
    html = bad.text
    errors = field_errors(html)
    assert any("Invalid block name" in e for e in errors)
    for name, expected in (
        ("replicas", "whole number"),
        ("tags", "not valid JSON"),
        ("title", "required"),
        ("endpoint.host", "required"),
        ("extra", "JSON object"),
        ("endpoint.port", "whole number"),
    ):
        chunk = html.split(f'data-field="{name}"', 1)[1].split('data-field="', 1)[0]
        assert expected in chunk, name
    assert 'value="many"' in html  # non-secret input is shown again to fix
    assert SECRET not in html
    Secret(value="x").save("taken")
    taken = client.post(
        "/blocks/new/secret", data={"_csrf": ui_server.csrf, "_name": "taken", "value": SECRET}
    )
    assert taken.status_code == 400
    assert "already exists" in " ".join(field_errors(taken.text))
    ui_server.assert_never_sent(SECRET)


def test_delete_is_refused_while_referenced_then_allowed(ui_server: UIServer) -> None:
    AwsCredentials(aws_access_key_id="AKIA").save("prod")
    S3(bucket_path="b", credentials=AwsCredentials.load("prod")).save("lake")
    client = ui_server.client()
    assert "Delete aws-credentials/prod?" in client.get("/blocks/aws-credentials/prod/delete").text
    refused = client.post("/blocks/aws-credentials/prod/delete", data={"_csrf": ui_server.csrf})
    assert refused.status_code == 409
    assert "Cannot delete aws-credentials/prod: it is referenced by s3/lake." in refused.text
    for slug in ("s3/lake", "aws-credentials/prod"):
        done = client.post(f"/blocks/{slug}/delete", data={"_csrf": ui_server.csrf})
        assert done.status_code == 303 and done.headers["location"] == f"/blocks?deleted={slug}"
    assert Block.list() == []
    assert client.get("/blocks/s3/lake").status_code == 404


def test_list_shows_types_with_counts_pages_and_search(ui_server: UIServer) -> None:
    for i in range(120):
        String(value=str(i)).save(f"item-{i:03d}")
    Secret(value=SECRET).save("item-secret")
    client = ui_server.client()
    first = client.get("/blocks").text
    assert "121 blocks" in first and first.count('<tr>\n        <td><a href="/blocks/') == 50
    assert re.search(r'>string</a> <span class="count">120</span>', first)
    last = client.get("/blocks", params={"type": "string", "page": 3}).text
    assert "Page 3 of 3" in last and last.count('href="/blocks/string/item-') == 20
    assert '<a href="?type=string&amp;q=&amp;page=2">← Previous</a>' in last
    assert "Next →" not in last
    assert '<a href="?q=&amp;page=2">Next →</a>' in first and "← Previous" not in first
    found = client.get("/blocks", params={"q": "item-04"}).text
    assert "10 blocks" in found
    assert "0 blocks" in client.get("/blocks", params={"q": "item_%"}).text  # LIKE escaped
    assert "0 blocks" in client.get("/blocks", params={"type": "Bad Type"}).text


# -- results ----------------------------------------------------------------------------------


def test_results_page_lists_a_flows_records_and_prunes_the_expired(
    ui_server: UIServer, blocks_home: Path
) -> None:
    @task(persist_result=True, cache_key_fn=lambda: "extract-key")
    def extract() -> dict[str, Any]:
        return {"records": list(range(100))}

    @task(
        persist_result=True,
        cache_key_fn=lambda: "short-lived",
        cache_expiration=timedelta(milliseconds=50),
    )
    def scratch() -> str:
        return "x" * 1000

    @flow
    def etl() -> None:
        extract()
        scratch()

    etl()
    time.sleep(0.1)  # let the short-lived record expire (not a timing assertion)
    client = ui_server.client()
    html = client.get("/results").text
    assert "2 record(s)" in html and "1 expired" in html
    assert str(blocks_home / "storage") in html
    for key, name in (("extract-key", "extract"), ("short-lived", "scratch")):
        assert f">{key}</a>" in html and f"<td>{name}</td>" in html
    assert re.search(r"<td>extract</td><td>1</td><td>\d", html)  # total per task
    header = client.get("/results/record", params={"key": "extract-key"}).text
    assert "payload_size" in header and "checksum" in header and "extract" in header
    assert client.get("/results/record", params={"key": "nope"}).status_code == 404

    preview = client.get("/results/prune").text
    assert "Dry run: 1 record(s)" in preview and "short-lived" in preview
    assert "extract-key" not in preview
    assert (blocks_home / "storage" / "short-lived").exists()  # a preview deletes nothing
    done = client.post("/results/prune", data={"_csrf": ui_server.csrf, "storage": ""})
    assert done.status_code == 303 and "pruned=1" in done.headers["location"]
    after = client.get(done.headers["location"]).text
    assert "Pruned 1 expired record(s)" in after and "1 record(s)" in after
    assert not (blocks_home / "storage" / "short-lived").exists()
    sorted_page = client.get("/results", params={"sort": "size", "desc": "1"}).text
    assert "size ↓" in sorted_page


def test_results_storage_may_be_a_saved_filesystem_block(
    ui_server: UIServer, tmp_path: Path
) -> None:
    from blocks.filesystems import LocalFileSystem
    from blocks.results import ResultStore

    LocalFileSystem(basepath=str(tmp_path / "elsewhere")).save("archive")
    ResultStore.resolve("local-file-system/archive", "json").write("a/b", [1], task="load")
    client = ui_server.client()
    assert '<option value="local-file-system/archive">' in client.get("/results").text
    page = client.get("/results", params={"storage": "local-file-system/archive"}).text
    assert "1 record(s)" in page and ">a/b</a>" in page


def test_results_pages_refuse_a_storage_that_is_neither_saved_nor_the_default(
    ui_server: UIServer, tmp_path: Path
) -> None:
    from blocks.results import ResultStore

    # A readable folder with a record in it: before, `?storage=` listed and pruned it.
    outside = tmp_path / "outside"
    ResultStore.resolve(str(outside), "json").write("stolen", [1], task="load")
    client = ui_server.client()
    attempts = [
        ("GET", "/results", {"storage": "/etc"}),
        ("GET", "/results", {"storage": str(outside)}),
        ("GET", "/results", {"storage": f"file://{outside}"}),
        ("GET", "/results", {"storage": "local-file-system/not-saved"}),
        ("GET", "/results/record", {"storage": str(outside), "key": "stolen"}),
        ("GET", "/results/prune", {"storage": str(outside)}),
        ("POST", "/results/prune", {"storage": str(outside), "_csrf": ui_server.csrf}),
    ]
    for method, path, params in attempts:
        if method == "GET":
            refused = client.get(path, params=params)
        else:
            refused = client.post(path, data=params)
        assert refused.status_code == 400, (method, path, params)
        assert "neither the default storage nor a saved filesystem block" in refused.text
        assert "stolen" not in refused.text and "/etc" not in refused.text
    assert (outside / "stolen").exists()  # nothing pruned
    assert client.get("/results").status_code == 200  # the default
    assert client.get("/results", params={"storage": ""}).status_code == 200
    print(f"{len(attempts)} requests for storages outside the allowed ones: all 400")


def test_results_page_pages_through_many_records_in_the_chosen_order(
    ui_server: UIServer, tmp_path: Path
) -> None:
    from blocks.filesystems import LocalFileSystem
    from blocks.results import ResultStore

    LocalFileSystem(basepath=str(tmp_path / "many")).save("many")  # only saved storages open
    storage = "local-file-system/many"
    store = ResultStore.resolve(storage, "json")
    for i in range(150):
        store.write(f"k{i:03d}", i, task="load")
    client = ui_server.client()
    first = client.get("/results", params={"storage": storage, "sort": "key", "desc": "1"}).text
    assert "Page 1 of 2" in first and ">k149</a>" in first and ">k049</a>" not in first
    found = re.search(r'<a href="(/results\?[^"]+)">Next →</a>', first)
    assert found and "← Previous" not in first
    second = client.get(found.group(1).replace("&amp;", "&")).text
    assert "Page 2 of 2" in second and ">k049</a>" in second and ">k149</a>" not in second
    assert "Next →" not in second and "← Previous" in second


# -- keys -------------------------------------------------------------------------------------


def test_keys_page_and_a_rotation_with_progress(
    ui_server: UIServer, monkeypatch: pytest.MonkeyPatch, blocks_home: Path
) -> None:
    monkeypatch.delenv("BLOCKS_MASTER_KEY")
    monkeypatch.setenv("BLOCKS_KEY_SOURCE", "file")
    client = ui_server.client()
    assert "No master key yet" in client.get("/keys").text
    for i in range(40):
        Secret(value=f"{SECRET}-{i}").save(f"s-{i}")
    page = client.get("/keys").text
    old = re.search(r'id="active-key">([0-9a-f]+)<', page).group(1)  # type: ignore[union-attr]
    assert str(blocks_home / "master.key") in page and "<td>40</td>" in page
    material = (blocks_home / "master.key").read_text().strip()

    assert client.post("/keys/rotate", data={"_csrf": ui_server.csrf}).status_code == 303
    seen = []
    deadline = time.monotonic() + 120
    while (status := client.get("/keys/rotation").json())["state"] == "running":
        seen.append(status["done"])
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert status["state"] == "done", status
    assert status["done"] == status["total"] == 40
    assert f"retired key(s) {old}" in status["message"]
    page = client.get("/keys").text
    new = re.search(r'id="active-key">([0-9a-f]+)<', page).group(1)  # type: ignore[union-attr]
    assert new != old and old not in page.split("<h2>Rotate")[0]
    assert [Secret.load(f"s-{i}").get() for i in (0, 39)] == [f"{SECRET}-0", f"{SECRET}-39"]
    new_material = (blocks_home / "master.key").read_text().strip()
    ui_server.assert_never_sent(SECRET, material, new_material)
    print(f"rotation of 40 blocks: {len(seen)} progress polls, values seen {sorted(set(seen))}")


def test_keys_page_says_the_registry_has_a_key_no_source_here_provides(
    ui_server: UIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `block key info`: a recorded key that no source provides is a mismatch, not "no key".
    Secret(value=SECRET).save("api")
    client = ui_server.client()
    recorded = re.search(r'id="active-key">([0-9a-f]+)<', client.get("/keys").text)
    assert recorded is not None
    material = os.environ["BLOCKS_MASTER_KEY"]
    monkeypatch.delenv("BLOCKS_MASTER_KEY")
    monkeypatch.setenv("BLOCKS_KEY_SOURCE", "file")  # an empty key file: no source has a key
    page = client.get("/keys").text
    found = re.search(r'id="key-mismatch">([^<]+)<', page)
    assert found is not None and "No master key yet" not in page
    message = html.unescape(found.group(1))
    assert recorded.group(1) in message and "no key source here provides it" in message
    assert re.search(r'<button type="submit" id="rotate"\s+disabled', page)
    ui_server.assert_never_sent(material)
    print(f"/keys without the recorded key: {message[:120]}...")


# -- the command ------------------------------------------------------------------------------


def _start_ui(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, str]:
    """`block ui --port 0 ARGS`, its base URL and the one-time code of the URL it printed."""
    proc = subprocess.Popen(
        [BLOCK, "ui", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"(http://[\d.]+:\d+)/login\?code=([\w-]+)$", line.strip())
    if not found:
        proc.kill()
        raise AssertionError(f"no sign-in URL printed: {line!r} {proc.communicate()[1]!r}")
    return proc, found.group(1), found.group(2)


def _stop_ui(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    return proc.communicate(timeout=30)[1]


@pytest.mark.parametrize("given", ["env", "file"])
def test_block_ui_keeps_the_token_off_its_command_line_and_its_url_works_once(
    given: str, tmp_path: Path
) -> None:
    Secret(value=SECRET).save("api")
    token = "ui-access-token-" + os.urandom(12).hex()
    env = dict(os.environ)
    args: list[str] = []
    if given == "env":
        env["BLOCKS_UI_TOKEN"] = token
    else:
        (tmp_path / "token").write_text(token + "\n")
        (tmp_path / "token").chmod(0o600)
        args = ["--token-file", str(tmp_path / "token")]
    proc, base, code = _start_ui(args, env)
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline and code.encode() not in cmdline
        shown = cmdline.replace(b"\0", b" ").decode()
        print(f"/proc/{proc.pid}/cmdline: {shown!r}")
        with httpx.Client(base_url=base, timeout=30) as browser:
            assert browser.get("/blocks").status_code == 403
            signed_in = browser.get(f"/login?code={code}")
            assert signed_in.status_code == 200
            prefix = re.search(r"url=(/ui-[\w-]+)/blocks", signed_in.text).group(1)  # type: ignore[union-attr]
            page = browser.get(f"{prefix}/blocks")
            assert page.status_code == 200 and "secret" in page.text and SECRET not in page.text
        with httpx.Client(base_url=base, timeout=30) as replay:
            assert replay.get(f"/login?code={code}").status_code == 403  # spent
            scripted = replay.get("/blocks", headers={"Authorization": f"token {token}"})
            assert scripted.status_code == 200
    finally:
        err = _stop_ui(proc)
    assert token not in err and code not in err and SECRET not in err  # no access log


def test_block_ui_open_gives_the_browser_no_secret_on_its_command_line(tmp_path: Path) -> None:
    record = tmp_path / "browser.json"
    fake_browser = tmp_path / "fake-browser"
    fake_browser.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "seen = {'argv': sys.argv, 'environ': dict(os.environ)}\n"
        f"json.dump(seen, open({str(record)!r}, 'w'))\n"
    )
    fake_browser.chmod(0o755)
    token = "ui-access-token-" + os.urandom(12).hex()
    env = {**os.environ, "BROWSER": str(fake_browser), "BLOCKS_UI_TOKEN": token}
    proc, base, printed = _start_ui(["--open"], env)
    try:
        deadline = time.monotonic() + 60
        while not record.exists() or not record.read_text().endswith("}"):
            assert time.monotonic() < deadline, "the browser command was not run"
            time.sleep(0.05)
        seen = json.loads(record.read_text())
        argv, environ = seen["argv"], seen["environ"]
        print(f"browser argv: {argv}")
        assert len(argv) == 2 and argv[1].startswith("file:///")
        assert "code=" not in argv[1] and printed not in argv[1] and token not in argv[1]
        assert "BLOCKS_UI_TOKEN" not in environ and token not in json.dumps(environ)
        launch = Path(argv[1].removeprefix("file://"))
        assert launch.stat().st_mode & 0o777 == 0o600
        assert launch.parent.stat().st_mode & 0o777 == 0o700
        url = re.search(r'url=([^"]+)"', launch.read_text()).group(1)  # type: ignore[union-attr]
        url = url.replace("&amp;", "&")
        assert url.startswith(f"{base}/login?code=") and printed not in url
        with httpx.Client(timeout=30) as browser:
            assert browser.get(url).status_code == 200  # what the browser does with the file
            assert browser.get(url).status_code == 403  # once only
        assert not launch.exists()  # removed once used
        with httpx.Client(base_url=base, timeout=30) as other:  # the printed URL still works
            assert other.get(f"/login?code={printed}").status_code == 200
    finally:
        _stop_ui(proc)


def test_block_ui_on_another_loopback_address_serves_the_url_it_prints() -> None:
    Secret(value=SECRET).save("api")
    proc, base, code = _start_ui(["--host", "127.0.0.2"])
    try:
        assert base.startswith("http://127.0.0.2:")
        with httpx.Client(base_url=base, timeout=30) as browser:
            signed_in = browser.get(f"/login?code={code}")
            assert signed_in.status_code == 200, signed_in.text
            prefix = re.search(r"url=(/ui-[\w-]+)/blocks", signed_in.text).group(1)  # type: ignore[union-attr]
            page = browser.get(f"{prefix}/blocks/secret/api/delete")
            assert page.status_code == 200
            same = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
            done = browser.post(
                f"{prefix}/blocks/secret/api/delete",
                data={"_csrf": csrf_of(page.text)},
                headers=same,
            )
            assert done.status_code == 303, done.text
            rebinding = browser.get(f"{prefix}/blocks", headers={"Host": "evil.example"})
            assert rebinding.status_code == 403
    finally:
        _stop_ui(proc)
    assert Secret.list() == []


@pytest.mark.parametrize(
    ("args", "token", "expected"),
    [
        (["--host", "0.0.0.0"], None, "without an access token"),
        (["--host", "192.168.1.20"], None, "without an access token"),
        ([], "short", "at least 16 characters"),
        (["--token", "x" * 32], None, "--token puts the access token in the process list"),
    ],
)
def test_block_ui_refuses_unsafe_options(args: list[str], token: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BLOCKS_UI_TOKEN"}
    if token is not None:
        env["BLOCKS_UI_TOKEN"] = token
    done = subprocess.run([BLOCK, "ui", *args], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and expected in done.stderr
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1


def test_create_app_names_the_extra_when_a_package_is_missing() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "from blocks.cli.ui import create_app\n"
        "try:\n    create_app(token='x' * 20)\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert "MissingDependency" in done.stdout and "blocks[ui]" in done.stdout


def test_page_documents_pages_and_escapes_the_search_on_both_registries(backend: str) -> None:
    from blocks.core._registry import Registry

    for i in range(7):
        String(value="v").save(f"item-{i}")
    Secret(value=SECRET).save("item-x")
    registry = Registry.default()
    rows, total = registry.page_documents(limit=3, offset=3)
    # By type, then name: secret/item-x first.
    assert total == 8 and [r.slug for r in rows] == [
        "string/item-2",
        "string/item-3",
        "string/item-4",
    ]
    rows, total = registry.page_documents("string", search="item-", limit=50)
    assert total == 7 and len(rows) == 7
    assert registry.page_documents(search="item_")[1] == 0  # _ and % are literal
    assert registry.page_documents(search="%")[1] == 0
    assert registry.page_documents(search="x")[0][0].slug == "secret/item-x"
