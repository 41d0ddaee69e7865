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
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from blocks.errors import WebhookError
from blocks.system import Webhook

TOKEN = "T0123/B0456/s3cr3t-path-token"
HEADER_SECRET = "Bearer h3ad3r-s3cr3t"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    received: list[dict[str, Any]]
    delay: float


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.received.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        if self.path.startswith("/slow"):
            time.sleep(self.server.delay)
        status = 500 if self.path.startswith("/fail") else 200
        reply = json.dumps({"ok": status == 200, "n": len(body)}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except OSError:  # the client gave up (the slow case)
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.received, httpd.delay = [], 3.0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server: _Server, path: str) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}/{path}"


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _all_texts(exc: BaseException) -> str:
    return f"{exc} {exc!r} {''.join(traceback.format_exception(exc))}"


def test_call_sends_json_text_and_bytes_with_the_secret_headers(server: _Server) -> None:
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


def test_acall_runs_off_the_event_loop(server: _Server) -> None:
    hook = Webhook(url=_url(server, "a"))

    async def main() -> list[int]:
        answers = await asyncio.gather(*(hook.acall({"i": i}) for i in range(5)))
        return [a.status_code for a in answers]

    assert asyncio.run(main()) == [200] * 5
    assert len(server.received) == 5


def test_failures_are_one_error_naming_method_and_host_only(
    server: _Server, caplog: pytest.LogCaptureFixture
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


def test_saved_webhook_keeps_url_and_headers_sealed(server: _Server) -> None:
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
