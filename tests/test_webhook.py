"""`Webhook` against a real HTTP server on 127.0.0.1 (http.server in a thread).

The failures each test guards against: a call that hangs on a slow server, a dead port or an
error status passing silently, and the secret URL (its path is often the credential) or a
header leaking into an error, a repr or a log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import traceback
from collections.abc import Iterator

import pytest
from http_sink import HttpSink, serve_sink

from blocks.errors import WebhookError
from blocks.system import Webhook

TOKEN = "T0123/B0456/s3cr3t-path-token"
HEADER_SECRET = "Bearer h3ad3r-s3cr3t"


@pytest.fixture
def server() -> Iterator[HttpSink]:
    with serve_sink() as sink:
        yield sink


def _url(server: HttpSink, path: str) -> str:
    return str(server.url(path))


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _all_texts(exc: BaseException) -> str:
    return f"{exc} {exc!r} {''.join(traceback.format_exception(exc))}"


def test_call_sends_json_text_and_bytes_with_the_secret_headers(server: HttpSink) -> None:
    hook = Webhook(url=_url(server, f"hooks/{TOKEN}"), headers={"Authorization": HEADER_SECRET})
    answer = hook.call({"text": "ETL finished", "rows": 3})
    assert answer.status_code == 200 and answer.json()["ok"] is True
    hook.call("plain text")
    hook.call(b"\x00raw")
    Webhook(method="PUT", url=_url(server, "put")).call(None)
    got = server.received
    assert [r["method"] for r in got] == ["POST", "POST", "POST", "PUT"]
    assert json.loads(got[0]["body"]) == {"text": "ETL finished", "rows": 3}
    assert got[0]["headers"]["Content-Type"] == "application/json"
    assert got[0]["headers"]["Authorization"] == HEADER_SECRET
    assert got[0]["path"] == f"/hooks/{TOKEN}"
    assert got[1]["body"] == b"plain text" and got[2]["body"] == b"\x00raw"
    print(f"\n{len(got)} calls received by the local server")


def test_acall_runs_off_the_event_loop(server: HttpSink) -> None:
    hook = Webhook(url=_url(server, "a"))

    async def main() -> list[int]:
        answers = await asyncio.gather(*(hook.acall({"i": i}) for i in range(5)))
        return [a.status_code for a in answers]

    assert asyncio.run(main()) == [200] * 5
    assert len(server.received) == 5


def test_failures_are_one_error_naming_method_and_host_only(
    server: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = server.server_address[1]
    dead = _dead_port()
    cases = {
        "error status": Webhook(url=_url(server, f"fail/{TOKEN}"), headers={"X": HEADER_SECRET}),
        "dead port": Webhook(url=f"http://127.0.0.1:{dead}/{TOKEN}", headers={"X": HEADER_SECRET}),
        "slow server": Webhook(
            url=_url(server, f"slow/{TOKEN}"), headers={"X": HEADER_SECRET}, timeout=0.5
        ),
    }
    messages = {}
    for name, hook in cases.items():
        with pytest.raises(WebhookError) as info:
            hook.call({"x": 1})
        text = _all_texts(info.value)
        assert TOKEN not in text and HEADER_SECRET not in text and "s3cr3t" not in text
        assert str(info.value).startswith("Webhook POST to http://127.0.0.1:")
        assert info.value.__cause__ is None
        messages[name] = str(info.value)
    assert f":{port} failed: the server answered HTTP 500" in messages["error status"]
    assert f":{dead} failed: cannot connect" in messages["dead port"]
    assert "no answer within its timeout of 0.5 s" in messages["slow server"]
    for hook in cases.values():
        assert TOKEN not in repr(hook) and HEADER_SECRET not in repr(hook)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    for name, message in messages.items():
        print(f"\n{name}: {message}")


def test_saved_webhook_keeps_url_and_headers_sealed(server: HttpSink) -> None:
    Webhook(url=_url(server, f"hooks/{TOKEN}"), headers={"Authorization": HEADER_SECRET}).save(
        "alerts"
    )
    loaded = Webhook.load("alerts")
    assert TOKEN not in repr(loaded)
    assert loaded.call({"a": 1}).status_code == 200
    assert server.received[-1]["headers"]["Authorization"] == HEADER_SECRET


def test_urls_that_are_not_http_are_refused_without_repeating_them() -> None:
    for bad in (f"file:///etc/{TOKEN}", f"ftp://host/{TOKEN}", f"not a url {TOKEN}"):
        with pytest.raises(ValueError) as info:
            Webhook(url=bad)
        assert TOKEN not in _all_texts(info.value)
    with pytest.raises(ValueError):
        Webhook(url="http://h/x", timeout=0)
