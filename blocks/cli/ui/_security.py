"""The gate in front of every page: sign-in, session, CSRF token, host and origin checks.

- **Sign-in**: ``GET /login?code=C`` with a one-time code (the URL `block ui` prints) opens a
  session (`blocks.cli.ui._sessions`); the code is then spent, so the URL left in the history
  opens nothing. ``POST /login`` with the access token (``BLOCKS_UI_TOKEN``) opens one too.
- **Session cookie**: ``blocks-ui-PORT=<session id>``, HttpOnly, SameSite=Strict, and scoped to a
  random path *prefix* of this server (``Path=/ui-xxxx``) under which the browser sees every page.
  Browsers send a cookie to every port of its host, so a plain ``Path=/`` cookie would reach any
  other local service the user opens (which could replay it here); a cookie scoped to a path
  that only this server's pages use is sent to no other port. The session id is random and
  known only to this process: a cookie from another port or an earlier server is refused.
- **Access token**: ``Authorization: token T`` (scripts). Never read from a URL.
  Anything else is 403, static files included.
- **CSRF**: every POST carries the CSRF token of its session (form field ``_csrf`` or
  ``X-CSRF-Token`` header). SameSite=Strict alone is not enough: another port of 127.0.0.1 is the
  *same site*, so a page served there could make the browser post here.
- **Origin**: a POST whose ``Origin`` is not this server, or that the browser marks
  cross-site (``Sec-Fetch-Site``), is refused before its body is read.
- **Host**: on loopback only ``127.0.0.1``, ``localhost``, ``[::1]`` and the bound address are
  served, which defeats DNS rebinding.

Every response gets ``Cache-Control: no-store``, a strict Content-Security-Policy (no inline
script, nothing from other origins) and a ``Server-Timing`` header with the time spent in the
app.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from blocks.cli.ui._sessions import Sessions

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Largest POST body read (forms are small; a bigger one is refused, not buffered).
MAX_BODY = 1024 * 1024
CSRF_FIELD = "_csrf"  # block fields cannot start with "_": no clash
LOGIN_PATH = "/login"

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

FORBIDDEN = "Forbidden: open the URL that `block ui` printed (it signs this browser in once)."
SPENT = (
    "Forbidden: this sign-in link was used already or has expired (each works once). "
    "Restart `block ui` for a new one, or sign in at {login} with the access token."
)


class TokenGate:
    """ASGI middleware enforcing the module's rules before `app` sees a request."""

    def __init__(
        self,
        app: ASGI,
        *,
        sessions: Sessions,
        cookie_name: str,
        allowed_hosts: frozenset[str] | None = None,
        prefix: str | None = None,
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.cookie_name = cookie_name
        self.allowed_hosts = allowed_hosts
        #: The path every page is served under (the cookie's scope), e.g. ``/ui-Xk3...``.
        self.prefix = prefix or "/ui-" + secrets.token_urlsafe(12)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _headers(scope)
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _hostname(host) not in self.allowed_hosts:
            await _text(_decorated(send, started, ""), 403, "Forbidden: unexpected Host header.")
            return
        # Pages live under the prefix (so the browser sends the cookie to nothing else); a
        # script with the token may leave it out.
        root = ""
        path = scope.get("path", "/")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            root, path = self.prefix, path[len(self.prefix) :] or "/"
            scope = {**scope, "path": path, "raw_path": path.encode()}
        send = _decorated(send, started, root)
        if path == LOGIN_PATH:
            await self._login(scope, headers, receive, send)
            return
        csrf = self.sessions.session_csrf(self._cookie(headers))
        if csrf is None and self.sessions.token_matches(_bearer(headers)):
            csrf = self.sessions.csrf_for(None)
        if csrf is None:
            await _text(send, 403, FORBIDDEN)
            return
        if scope["method"] not in ("GET", "HEAD"):
            if not _same_origin(headers, scope):
                await _text(send, 403, "Forbidden: cross-origin request refused.")
                return
            body = await _read_body(receive)
            if body is None:
                await _text(send, 413, "Request body too large.")
                return
            given = headers.get("x-csrf-token") or _form_field(headers, body, CSRF_FIELD)
            if not (given and secrets.compare_digest(given.encode(), csrf.encode())):
                await _text(send, 403, "Forbidden: missing or wrong CSRF token; reload the page.")
                return
            receive = _replay(body)
        state = scope.setdefault("state", {})
        state["csrf"], state["root"] = csrf, root
        await self.app(scope, receive, send)

    async def _login(
        self, scope: Scope, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        """``GET /login?code=C`` (the printed URL), ``GET /login`` (the form), ``POST /login``.

        Nothing here shows the path prefix before a sign-in succeeds: another local service
        could ask, then send the browser to that path on its own port to receive the cookie."""
        login = LOGIN_PATH
        if scope["method"] in ("GET", "HEAD"):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if "code" not in query or scope["method"] == "HEAD":  # a HEAD spends no code
                await _html(send, 200, _login_form(login, self.sessions.has_token))
                return
            sid = self.sessions.redeem(query["code"])
            if sid is None:
                await _text(send, 403, SPENT.format(login=login))
                return
            await self._signed_in(sid, send)
            return
        if not _same_origin(headers, scope):
            await _text(send, 403, "Forbidden: cross-origin request refused.")
            return
        body = await _read_body(receive)
        given = _form_field(headers, body or b"", "token")
        if body is None or not self.sessions.token_matches(given):
            await _html(send, 403, _login_form(login, self.sessions.has_token, failed=True))
            return
        await self._signed_in(self.sessions.open_session(), send)

    async def _signed_in(self, sid: str, send: Send) -> None:
        """Set the session cookie and move on to the blocks, by a page of this origin.

        Not a 303: a SameSite=Strict cookie is withheld along a redirect chain that a page of
        another site started (``--open``'s local file is one), so the next page would be 403.
        A page of ours that refreshes to the blocks is a same-site navigation."""
        target = html.escape(self.prefix + "/blocks")
        cookie = (
            f"{self.cookie_name}={sid}; Path={self.prefix}; HttpOnly; SameSite=Strict"
        ).encode()
        body = (
            f'<!doctype html><meta http-equiv="refresh" content="0;url={target}">'
            f'<title>blocks UI</title><p>Signed in. <a href="{target}">Open the blocks</a>.</p>'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"set-cookie", cookie),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

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


def _same_origin(headers: dict[str, str], scope: Scope) -> bool:
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:  # not a browser form (a script with the token and CSRF header)
        return True
    return origin == f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"


def _login_form(action: str, has_token: bool, *, failed: bool = False) -> str:
    if not has_token:
        return (
            "<!doctype html><title>Sign in · blocks</title><h1>Sign in</h1>"
            "<p>Open the URL that <code>block ui</code> printed: it signs one browser in, once. "
            "For more browsers, start <code>block ui</code> with an access token "
            "(<code>BLOCKS_UI_TOKEN</code> or <code>--token-file</code>) and paste it here.</p>"
        )
    error = '<p role="alert">That is not the access token.</p>' if failed else ""
    return (
        "<!doctype html><title>Sign in · blocks</title><h1>Sign in</h1>" + error + ""
        f'<form method="post" action="{html.escape(action)}">'
        '<label for="token">Access token</label> '
        '<input type="password" id="token" name="token" autocomplete="current-password"> '
        '<button type="submit" id="sign-in">Sign in</button></form>'
    )


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


def _decorated(send: Send, started: float, root: str) -> Send:
    """`send` adding the security and timing headers, and `root` before a redirect to a path
    of ours (handlers redirect to ``/blocks/...``; the browser must stay under the prefix)."""
    prefix = root.encode()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            elapsed = (time.perf_counter() - started) * 1000
            message["headers"] = [
                *(_rooted(k, v, prefix) for k, v in message.get("headers", [])),
                *_SECURITY_HEADERS,
                (b"server-timing", f"app;dur={elapsed:.2f}".encode()),
            ]
        await send(message)

    return wrapped


def _rooted(name: bytes, value: bytes, prefix: bytes) -> tuple[bytes, bytes]:
    ours = value.startswith(b"/") and not value.startswith(b"//")
    if prefix and name.lower() == b"location" and ours and not value.startswith(prefix + b"/"):
        return name, prefix + value
    return name, value


async def _text(send: Send, status: int, text: str, *, kind: bytes = b"text/plain") -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind + b"; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _html(send: Send, status: int, page: str) -> None:
    await _text(send, status, page, kind=b"text/html")
