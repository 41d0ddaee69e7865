"""A real `block ui` server (uvicorn on 127.0.0.1, in a thread of the test process) for tests.

The server reads the registry of the test's BLOCKS_HOME, as `block ui` would. Every response
it sends (headers and body, to httpx or to the browser) is kept in `UIServer.bodies`, so a test
can grep them all for a secret. `UIServer.login_url()` mints a one-time sign-in URL (what
`block ui` prints); `client()` is an httpx client holding a session cookie, as a signed-in
browser does.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from blocks.cli.ui import LOOPBACK_NAMES, create_app
from blocks.cli.ui._security import TokenGate


@dataclass
class UIServer:
    url: str
    token: str  # the access token (``Authorization: token T``)
    port: int
    gate: TokenGate
    session: str  # a session opened for `client()`
    bodies: list[bytes] = field(default_factory=list)

    @property
    def cookie_name(self) -> str:
        return f"blocks-ui-{self.port}"

    @property
    def prefix(self) -> str:
        """The path the browser sees every page under (its cookie's scope)."""
        return self.gate.prefix

    @property
    def csrf(self) -> str:
        """The CSRF token of `session`."""
        return self.gate.sessions.csrf_for(self.session)

    def login_url(self, **kwargs: float) -> str:
        """A new one-time sign-in URL, as `block ui` prints."""
        return f"{self.url}/login?code={self.gate.sessions.login_code(**kwargs)}"  # type: ignore[arg-type]

    def client(self, *, authed: bool = True, **kwargs: object) -> httpx.Client:
        """An HTTP client; `authed` ones carry the session cookie as a signed-in browser."""
        cookies = {self.cookie_name: self.session} if authed else {}
        return httpx.Client(
            base_url=self.url,
            cookies=cookies,
            timeout=30,
            **kwargs,  # type: ignore[arg-type]
        )

    def assert_never_sent(self, *values: str) -> int:
        """Fail if any response so far (headers and body) held one of `values`; return how
        many responses were checked."""
        for body in self.bodies:
            for value in values:
                assert value.encode() not in body, "a secret value was sent over HTTP"
        return len(self.bodies)


def recording(app: Any, responses: list[bytes]) -> Any:
    """`app`, keeping every response it sends (status line, headers, body) in `responses`:
    whoever the client is (httpx or the browser), a test can grep all of them."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        parts: list[bytes] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                parts.append(str(message["status"]).encode())
                parts.extend(k + b": " + v for k, v in message.get("headers", []))
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    responses.append(b"\n".join(parts))
            await send(message)

        await app(scope, receive, capture)

    return wrapped


@contextmanager
def serve_ui(storage: str | None = None) -> Iterator[UIServer]:
    token = secrets.token_urlsafe(24)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    responses: list[bytes] = []
    gate = create_app(token=token, port=port, storage=storage, allowed_hosts=LOOPBACK_NAMES)
    app = recording(gate, responses)
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
        yield UIServer(
            url=f"http://127.0.0.1:{port}",
            token=token,
            port=port,
            gate=gate,
            session=gate.sessions.open_session(),
            bodies=responses,
        )
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
