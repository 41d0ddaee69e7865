"""Notification blocks (`blocks/notifications.py`) against real servers on 127.0.0.1: an HTTP
server (http.server in a thread) standing in for Slack, Teams, Discord and any webhook, and
aiosmtpd receiving the e-mail.

The failures each test guards against: a payload the service would refuse, a hook that sends
twice or not at all, a dead endpoint that holds a run up past the timeout or changes its state,
and the webhook URL's token, the SMTP password or a run's secret in a log line, a state message
or a payload.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from http_sink import HttpSink, serve_sink

from blocks import Block, flow, task
from blocks.errors import NotificationError
from blocks.notifications import (
    AppriseNotification,
    CustomWebhookNotificationBlock,
    DiscordWebhook,
    MicrosoftTeamsWebhook,
    SlackWebhook,
    SMTPEmail,
    notify,
)
from blocks.system import Secret

TOKEN = "T0123/B0456/n0t1fy-s3cr3t-token"
SMTP_PASSWORD = "sm:tp/p@ss-w0rd-9"
RUN_SECRET = "run-secret-value-4242"


# -- servers -------------------------------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with serve_sink() as server:
        yield server


def _url(server: HttpSink, path: str) -> str:
    return str(server.url(path))


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append(data.login)
            return AuthResult(success=data.password == SMTP_PASSWORD.encode())
        return AuthResult(success=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _smtp(**options: Any) -> Iterator[tuple[_Mailbox, int]]:
    """aiosmtpd on a free loopback port, with `_Mailbox`'s login check."""
    box = _Mailbox()
    port = _free_port()
    server = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=box.authenticate, **options
    )
    server.start()
    try:
        yield box, port
    finally:
        server.stop()


@pytest.fixture
def mailbox() -> Iterator[tuple[_Mailbox, int]]:
    # Plain SMTP with AUTH on loopback; `tls_mailbox` for STARTTLS.
    with _smtp(auth_require_tls=False) as served:
        yield served


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/services/{TOKEN}"
    listener.close()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _leaks(texts: list[str], *secrets: str) -> list[str]:
    found = [
        text
        for text in texts
        for secret in secrets
        if secret in text or urllib.parse.quote(secret, safe="") in text
    ]
    print(f"grepped {len(texts)} log lines, messages and payloads: {len(found)} leak(s)")
    return found


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every line this process logged, the test SMTP server's own ("mail.log") left out."""
    return [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]


# -- each service's payload ----------------------------------------------------------------------


def test_slack_gets_its_text_payload_with_the_subject_in_bold(sink: HttpSink) -> None:
    SlackWebhook(url=_url(sink, f"/services/{TOKEN}")).notify("load <done> & ok", subject="ETL")
    [got] = sink.received
    assert (got["method"], got["path"]) == ("POST", f"/services/{TOKEN}")
    assert got["headers"]["Content-Type"] == "application/json"
    assert json.loads(got["body"]) == {"text": "*ETL*\nload &lt;done&gt; &amp; ok"}


def test_anotify_sends_from_async_code_without_blocking_the_loop(sink: HttpSink) -> None:
    import asyncio

    hook = SlackWebhook(url=_url(sink, f"/services/{TOKEN}"))

    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        await asyncio.gather(*(hook.anotify(f"message {i}") for i in range(5)))
        ticker.cancel()
        return ticks

    ticks = asyncio.run(main())
    assert sorted(json.loads(r["body"])["text"] for r in sink.received) == [
        f"message {i}" for i in range(5)
    ]
    assert ticks > 0
    print(f"5 messages sent concurrently; the loop ticked {ticks} times meanwhile")


def test_teams_gets_one_adaptive_card(sink: HttpSink) -> None:
    MicrosoftTeamsWebhook(url=_url(sink, f"/workflows/{TOKEN}")).notify("body", subject="Title")
    [got] = sink.received
    assert json.loads(got["body"]) == {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": "Title", "weight": "Bolder", "wrap": True},
                        {"type": "TextBlock", "text": "body", "wrap": True},
                    ],
                },
            }
        ],
    }


def test_discord_gets_content_and_its_options_cut_to_2000_characters(sink: HttpSink) -> None:
    hook = DiscordWebhook(url=_url(sink, f"/api/webhooks/{TOKEN}"), botname="etl-bot", tts=True)
    hook.notify("x" * 3000, subject="Big")
    hook.notify("short")
    first, second = (json.loads(r["body"]) for r in sink.received)
    assert first["username"] == "etl-bot" and first["tts"] is True
    assert len(first["content"]) == 2000 and first["content"].startswith("**Big**\nxxx")
    assert second == {"content": "short", "username": "etl-bot", "tts": True}


def test_custom_webhook_fills_its_templates_with_the_message_and_its_secrets(
    sink: HttpSink,
) -> None:
    block = CustomWebhookNotificationBlock(
        name="pager",
        url=_url(sink, "/alert/{{route}}"),
        method="PUT",
        params={"key": "{{api_key}}"},
        json_data={"title": "{{subject}}", "text": "{{body}}", "from": "{{name}}", "n": "{{n}}"},
        headers={"Authorization": "Bearer {{api_key}}"},
        cookies={"session": "{{api_key}}"},
        secrets={"api_key": "k3y-" + TOKEN, "route": "ops", "n": 3},
    )
    block.save("pager")
    CustomWebhookNotificationBlock.load("pager").notify("disk full", subject="db-1")
    [got] = sink.received
    assert got["method"] == "PUT"
    assert got["path"] == "/alert/ops?" + urllib.parse.urlencode({"key": "k3y-" + TOKEN})
    assert got["headers"]["Authorization"] == f"Bearer k3y-{TOKEN}"
    assert got["headers"]["Cookie"] == f"session=k3y-{TOKEN}"
    sent = json.loads(got["body"])
    assert sent == {"title": "db-1", "text": "disk full", "from": "pager", "n": 3}


def test_custom_webhook_sends_form_data(sink: HttpSink) -> None:
    CustomWebhookNotificationBlock(
        name="form", url=_url(sink, "/form"), form_data={"msg": "{{subject}}: {{body}}"}
    ).notify("b", subject="s")
    [got] = sink.received
    assert got["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert urllib.parse.parse_qs(got["body"].decode()) == {"msg": ["s: b"]}


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"json_data": {"t": "{{token}}"}}, "json_data uses {{token}}"),
        ({"json_data": {}, "form_data": {}}, "not both"),
    ],
)
def test_custom_webhook_refuses_unknown_placeholders_and_two_bodies(
    fields: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        CustomWebhookNotificationBlock(name="x", url="https://example.invalid/", **fields)


def _mail(port: int, password: str, to: list[str]) -> SMTPEmail:
    """An `SMTPEmail` for the test server: plain SMTP with a login on loopback."""
    return SMTPEmail(
        host="127.0.0.1",
        port=port,
        smtp_type="INSECURE",
        username="etl@example.com",
        password=password,
        from_address="etl@example.com",
        to=to,
    )


def test_smtp_email_is_delivered_with_a_login_and_never_shows_the_password(
    mailbox: tuple[_Mailbox, int], all_logs: pytest.LogCaptureFixture
) -> None:
    box, port = mailbox
    _mail(port, SMTP_PASSWORD, ["ops@example.com", "dba@example.com"]).save("ops-mail")
    mail = Block.load("smtp-email/ops-mail")
    assert SMTP_PASSWORD not in repr(mail)
    mail.notify("The nightly load failed.", subject="ETL failed")  # type: ignore[attr-defined]
    # Apprise sends one message per recipient, each after its own login.
    assert sorted(r for _, recipients, _ in box.messages for r in recipients) == [
        "dba@example.com",
        "ops@example.com",
    ]
    for sender, _, message in box.messages:
        assert sender == "etl@example.com" and message["Subject"] == "ETL failed"
        text = next(p for p in message.walk() if p.get_content_type() == "text/plain")
        payload = text.get_payload(decode=True)
        assert isinstance(payload, bytes) and b"The nightly load failed." in payload
    assert set(box.logins) == {b"etl@example.com"}
    print(f"{len(box.messages)} messages received by aiosmtpd after {len(box.logins)} logins")
    assert _leaks(_logged(all_logs), SMTP_PASSWORD) == []


def _self_signed_server_context(folder: Path) -> ssl.SSLContext:
    """A server-side TLS context with a fresh self-signed certificate for 127.0.0.1."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@pytest.fixture
def tls_mailbox(tmp_path: Path) -> Iterator[tuple[_Mailbox, int]]:
    """aiosmtpd that takes a login only after STARTTLS, with a self-signed certificate."""
    context = _self_signed_server_context(tmp_path)
    # A client that stays in clear cannot even say MAIL FROM; AUTH needs TLS too.
    with _smtp(tls_context=context, require_starttls=True) as served:
        yield served


@pytest.fixture
def ssl_mailbox(tmp_path: Path) -> Iterator[tuple[_Mailbox, int]]:
    """aiosmtpd speaking TLS from the first byte (SMTPS, as on port 465)."""
    # aiosmtpd counts only STARTTLS as TLS for AUTH; here every byte is TLS already.
    context = _self_signed_server_context(tmp_path)
    with _smtp(ssl_context=context, auth_require_tls=False) as served:
        yield served


@pytest.mark.parametrize("mode", ["STARTTLS", "SSL"])
def test_smtp_email_over_tls_logs_in_only_over_tls_and_checks_the_certificate(
    mode: str,
    request: pytest.FixtureRequest,
    all_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # STARTTLS: a server that takes a login only after STARTTLS; SSL: one that speaks TLS from
    # the first byte (SMTPS, port 465).
    box, port = request.getfixturevalue("tls_mailbox" if mode == "STARTTLS" else "ssl_mailbox")
    monkeypatch.setenv("BLOCKS_NOTIFY_RETRIES", "0")
    monkeypatch.setenv("BLOCKS_NOTIFY_TIMEOUT", "2")  # a client in clear waits for a banner
    mail = _mail(port, SMTP_PASSWORD, ["ops@example.com"])
    mail.smtp_type = mode  # type: ignore[assignment]
    mail.verify = False  # the test's self-signed certificate
    mail.notify(f"over {mode}", subject=mode)
    [(_, recipients, message)] = box.messages
    assert recipients == ["ops@example.com"] and message["Subject"] == mode
    assert box.logins == [b"etl@example.com"]
    mail.smtp_type = "INSECURE"  # asked in clear: nothing gets through
    with pytest.raises(NotificationError, match="smtp-email"):
        mail.notify("not sent")
    mail.smtp_type, mail.verify = mode, True  # type: ignore[assignment]
    with pytest.raises(NotificationError, match="smtp-email"):  # an unknown certificate
        mail.notify("not sent")
    assert len(box.messages) == 1
    print(
        f"{mode}: 1 message after 1 login; in clear or with a verified self-signed "
        "certificate: refused"
    )
    assert _leaks(_logged(all_logs), SMTP_PASSWORD) == []


def test_a_wrong_smtp_password_is_a_notification_error_without_the_password(
    mailbox: tuple[_Mailbox, int], all_logs: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setenv("BLOCKS_NOTIFY_RETRIES", "0")
    box, port = mailbox
    wrong = "wr0ng-" + SMTP_PASSWORD
    mail = _mail(port, wrong, ["ops@example.com"])
    with pytest.raises(NotificationError, match=r"smtp-email via 127\.0\.0\.1") as caught:
        mail.notify("x")
    assert box.messages == []
    print(f"error: {caught.value}")
    assert _leaks([str(caught.value), *_logged(all_logs)], wrong) == []


def test_an_apprise_url_reaches_its_service(sink: HttpSink) -> None:
    port = sink.server_address[1]
    AppriseNotification(url=f"json://127.0.0.1:{port}/apprise/{TOKEN}").notify("hi", "Subj")
    [got] = sink.received
    assert got["path"].startswith(f"/apprise/{TOKEN}")
    sent = json.loads(got["body"])
    assert (sent["title"], sent["message"], sent["type"]) == ("Subj", "hi", "info")


def test_every_notification_type_is_a_known_block_type_with_a_description() -> None:
    from blocks.core._block import BUILTIN_BLOCK_MODULES, block_class_for

    slugs = [s for s, module in BUILTIN_BLOCK_MODULES.items() if module == "blocks.notifications"]
    assert sorted(slugs) == sorted(
        [
            "slack-webhook",
            "ms-teams-webhook",
            "discord-webhook",
            "custom-webhook",
            "smtp-email",
            "apprise-notification",
        ]
    )
    for slug in slugs:
        assert block_class_for(slug).get_description()


# -- retries and failures --------------------------------------------------------------------------


def test_a_5xx_is_retried_with_backoff_and_a_4xx_is_not(
    sink: HttpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = SlackWebhook(url=_url(sink, f"/services/{TOKEN}"))
    sink.statuses = [503, 502]
    started = time.monotonic()
    hook.notify("third time lucky")
    took = time.monotonic() - started
    assert len(sink.received) == 3
    assert 1.4 <= took < 5, took  # 0.5 s then 1 s of backoff
    sink.received.clear()
    sink.statuses = [404]
    with pytest.raises(NotificationError) as caught:
        hook.notify("gone")
    assert len(sink.received) == 1
    assert TOKEN not in str(caught.value) and "HTTP 404" in str(caught.value)
    print(f"503, 502, 200: 3 requests in {took:.2f} s; 404: 1 request, {caught.value}")


# -- the state hook ------------------------------------------------------------------------------


def test_a_failing_flow_sends_exactly_one_message_naming_it_and_no_secret(
    sink: HttpSink, all_logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    SlackWebhook(url=_url(sink, f"/services/{TOKEN}")).save("ops")
    Secret(value=RUN_SECRET).save("db-password")

    @flow(name="nightly-etl", on_failure=[notify("slack-webhook/ops")])
    def nightly_etl() -> None:
        password = Secret.load("db-password").get()
        raise ValueError(f"login refused for password {password}")

    state = nightly_etl(return_state=True)
    assert state.is_failed()
    [got] = sink.received
    text = json.loads(got["body"])["text"]
    print(text)
    assert "nightly-etl" in text and "Failed" in text and "ValueError" in text
    assert "Run: nightly-etl-" in text
    console = capfd.readouterr()
    lines = [text, state.message or "", *_logged(all_logs), *console.out.splitlines()]
    lines += console.err.splitlines()
    assert _leaks(lines, RUN_SECRET, TOKEN) == []


def test_task_hooks_send_on_failure_and_on_completion(sink: HttpSink) -> None:
    hook = SlackWebhook(url=_url(sink, f"/services/{TOKEN}"))

    @task(on_failure=[notify(hook)], on_completion=[notify(hook, subject="done")])
    def step(fail: bool) -> int:
        if fail:
            raise RuntimeError("step broke")
        return 1

    @flow
    def pipeline() -> None:
        step(False)
        step(True, return_state=True)

    pipeline()
    texts = [json.loads(r["body"])["text"] for r in sink.received]
    assert len(texts) == 2
    assert texts[0].startswith("*done*\nTask: step") and "State: Completed" in texts[0]
    assert "State: Failed" in texts[1] and "RuntimeError: step broke" in texts[1]


def test_a_dead_endpoint_costs_at_most_the_timeout_and_leaves_the_state(
    dead_endpoint: str, monkeypatch: pytest.MonkeyPatch, all_logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BLOCKS_NOTIFY_TIMEOUT", "1.5")
    SlackWebhook(url=dead_endpoint).save("dead")
    timings: list[float] = []

    def started(flow: Any, run: Any, state: Any) -> None:
        timings.append(time.monotonic())

    @flow(on_running=[started], on_failure=[notify("slack-webhook/dead")])
    def breaks() -> None:
        raise KeyError("boom")

    @flow(on_completion=[notify("slack-webhook/dead")])
    def works() -> int:
        return 7

    failed = breaks(return_state=True)
    took = time.monotonic() - timings[0]
    assert failed.is_failed() and "KeyError" in (failed.message or "")
    started_ok = time.monotonic()
    assert works() == 7
    took_ok = time.monotonic() - started_ok
    warnings = [r for r in all_logs.records if r.name == "blocks.notifications"]
    print(f"dead endpoint: failed flow {took:.2f} s, completed flow {took_ok:.2f} s (timeout 1.5)")
    assert took < 1.5 + 1.0 and took_ok < 1.5 + 1.0
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert "slack-webhook/dead" in warnings[0].getMessage()
    assert _leaks(_logged(all_logs), TOKEN) == []


def test_a_missing_block_or_unreachable_port_is_one_warning_never_a_failure(
    all_logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLOCKS_NOTIFY_RETRIES", "0")
    SlackWebhook(url=f"http://127.0.0.1:{_free_port()}/services/{TOKEN}").save("closed")

    @flow(on_completion=[notify("slack-webhook/nobody"), notify("slack-webhook/closed")])
    def fine() -> str:
        return "ok"

    assert fine() == "ok"
    warnings = [r.getMessage() for r in all_logs.records if r.name == "blocks.notifications"]
    print("\n".join(warnings))
    assert len(warnings) == 2
    assert "No slack-webhook block named 'nobody'" in warnings[0]
    assert "cannot connect" in warnings[1] and TOKEN not in warnings[1]


def test_notify_refuses_a_malformed_name_when_the_flow_is_defined() -> None:
    with pytest.raises(ValueError, match="TYPE/NAME"):
        notify("slack-webhook")


def test_a_cold_secret_load_does_not_import_the_notification_packages() -> None:
    Secret(value="cold-value").save("cold")
    check = (
        "import sys\n"
        "from blocks.system import Secret\n"
        "assert Secret.load('cold').get() == 'cold-value'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('apprise', 'blocks') "
        "and 'notifications' in m or m.startswith('apprise')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], env=os.environ.copy(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
