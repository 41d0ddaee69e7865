"""The gate in front of every page: access token, CSRF token, host and origin checks.

- **Token**: a request is served only with the token, as ``?token=`` (then it is kept as an
  HttpOnly, SameSite=Strict cookie and the browser is sent to the same URL without it, so the
  token leaves the address bar and history), as the cookie, or as ``Authorization: token T``.
  Anything else is 403, static files included.
- **CSRF**: every POST carries a CSRF token (form field ``_csrf`` or ``X-CSRF-Token`` header)
  derived from the access token. SameSite=Strict alone is not enough: another port of
  127.0.0.1 is the *same site*, so a page served there would send the cookie along.
- **Origin**: a POST whose ``Origin`` is not this server, or that the browser marks
  cross-site (``Sec-Fetch-Site``), is refused before its body is read.
- **Host**: on loopback only ``127.0.0.1``, ``localhost`` and ``[::1]`` are served, which
  defeats DNS rebinding.

Every response gets ``Cache-Control: no-store``, a strict Content-Security-Policy (no inline
script, nothing from other origins) and a ``Server-Timing`` header with the time spent in the
app.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Largest POST body read (forms are small; a bigger one is refused, not buffered).
MAX_BODY = 1024 * 1024
CSRF_FIELD = "_csrf"  # block fields cannot start with "_": no clash

_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" makes Chromium send Origin: null
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
]

FORBIDDEN = "Forbidden: open the URL that `block ui` printed (it carries the access token)."


def csrf_token(token: str) -> str:
    """The CSRF token for pages served under access `token` (public in forms, not the token)."""
    return hmac.new(token.encode(), b"blocks-ui-csrf", hashlib.sha256).hexdigest()[:40]


class TokenGate:
    """ASGI middleware enforcing the module's rules before `app` sees a request."""

    def __init__(
        self,
        app: ASGI,
        *,
        token: str,
        cookie_name: str,
        allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.csrf = csrf_token(token)
        self.cookie_name = cookie_name
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _headers(scope)
        send = _decorated(send, started)
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _hostname(host) not in self.allowed_hosts:
            await _text(send, 403, "Forbidden: unexpected Host header.")
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if "token" in query and self._matches(query["token"]):
            if scope["method"] in ("GET", "HEAD"):
                await self._set_cookie_and_redirect(scope, query, send)
                return
        elif not (self._matches(self._cookie(headers)) or self._matches(_bearer(headers))):
            await _text(send, 403, FORBIDDEN)
            return
        if scope["method"] not in ("GET", "HEAD"):
            if not self._same_origin(headers, scope):
                await _text(send, 403, "Forbidden: cross-origin request refused.")
                return
            body = await _read_body(receive)
            if body is None:
                await _text(send, 413, "Request body too large.")
                return
            given = headers.get("x-csrf-token") or _form_field(headers, body, CSRF_FIELD)
            if not self._csrf_matches(given):
                await _text(send, 403, "Forbidden: missing or wrong CSRF token; reload the page.")
                return
            receive = _replay(body)
        scope.setdefault("state", {})["csrf"] = self.csrf
        await self.app(scope, receive, send)

    def _matches(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.token.encode())

    def _csrf_matches(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf.encode())

    def _cookie(self, headers: dict[str, str]) -> str | None:
        raw = headers.get("cookie")
        if not raw:
            return None
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(raw)
        except Exception:
            return None
        morsel = cookie.get(self.cookie_name)
        return morsel.value if morsel is not None else None

    @staticmethod
    def _same_origin(headers: dict[str, str], scope: Scope) -> bool:
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = headers.get("origin")
        if origin is None:  # not a browser form (a script with the token and CSRF header)
            return True
        return origin == f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"

    async def _set_cookie_and_redirect(
        self, scope: Scope, query: dict[str, str], send: Send
    ) -> None:
        rest = {k: v for k, v in query.items() if k != "token"}
        location = scope.get("path", "/") + (f"?{urlencode(rest)}" if rest else "")
        cookie = f"{self.cookie_name}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode()),
                    (b"set-cookie", cookie.encode()),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("token", "bearer") else None


def _form_field(headers: dict[str, str], body: bytes, name: str) -> str | None:
    if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        if key == name:
            return value
    return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _decorated(send: Send, started: float) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            elapsed = (time.perf_counter() - started) * 1000
            message["headers"] = [
                *message.get("headers", []),
                *_SECURITY_HEADERS,
                (b"server-timing", f"app;dur={elapsed:.2f}".encode()),
            ]
        await send(message)

    return wrapped


async def _text(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
