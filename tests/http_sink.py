"""A real HTTP server on 127.0.0.1 (http.server in a thread) that records every request.

Each request is kept in `HttpSink.received` (method, path, headers, body). The answer is the
next status queued in `statuses` if any, else 500 for a path under ``/fail`` and 200 otherwise,
with ``{"ok": ..., "n": <body length>}``; a path under ``/slow`` waits `delay` seconds first.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HttpSink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.delay = 3.0

    def url(self, path: str) -> str:
        """``http://127.0.0.1:PORT/path``."""
        return f"http://127.0.0.1:{self.server_address[1]}/{path.lstrip('/')}"


class _Handler(BaseHTTPRequestHandler):
    server: HttpSink

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.received.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        if self.path.startswith("/slow"):
            time.sleep(self.server.delay)
        if self.server.statuses:
            status = self.server.statuses.pop(0)
        else:
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


@contextmanager
def serve_sink() -> Iterator[HttpSink]:
    """An `HttpSink` serving in a daemon thread until the block ends."""
    sink = HttpSink()
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()
