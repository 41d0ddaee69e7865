"""A real `block ui` server (uvicorn on 127.0.0.1, in a thread of the test process) for tests.

The server reads the registry of the test's BLOCKS_HOME, as `block ui` would. Every response
body a test's client receives is kept in `UIServer.bodies`, so a test can grep them all for a
secret.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn

from blocks.cli.ui import create_app
from blocks.cli.ui._security import csrf_token

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass
class UIServer:
    url: str
    token: str
    port: int
    bodies: list[bytes] = field(default_factory=list)

    @property
    def cookie_name(self) -> str:
        return f"blocks-ui-{self.port}"

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)

    def client(self, *, authed: bool = True, **kwargs: object) -> httpx.Client:
        """An HTTP client; `authed` ones carry the token cookie as a browser would."""

        def keep(response: httpx.Response) -> None:
            response.read()
            self.bodies.append(response.content)

        cookies = {self.cookie_name: self.token} if authed else {}
        return httpx.Client(
            base_url=self.url,
            cookies=cookies,
            event_hooks={"response": [keep]},
            timeout=30,
            **kwargs,  # type: ignore[arg-type]
        )

    def assert_never_sent(self, *values: str) -> int:
        """Fail if any response body so far held one of `values`; return bodies checked."""
        for body in self.bodies:
            for value in values:
                assert value.encode() not in body, "a secret value was sent to the browser"
        return len(self.bodies)


@contextmanager
def serve_ui(storage: str | None = None) -> Iterator[UIServer]:
    token = secrets.token_urlsafe(24)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    app = create_app(token=token, port=port, storage=storage, allowed_hosts=LOOPBACK)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the UI server did not start")
        time.sleep(0.01)
    try:
        yield UIServer(url=f"http://127.0.0.1:{port}", token=token, port=port)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
