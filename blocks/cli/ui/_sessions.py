"""Who may use one `block ui` server: one-time login codes, server-side sessions, the access token.

- A **login code** is what the printed URL carries (``/login?code=...``): random, kept here,
  good for one sign-in, optionally only for a few seconds. Once used (or expired) it is
  forgotten, so the URL left in the browser's history or a terminal's scrollback opens nothing.
- A **session** is what a signed-in browser holds in its cookie: a random id that is neither
  the code nor the access token, known only to this server process (a session of another
  instance, or of this port's previous server, is unknown here and refused).
- The **access token** (``BLOCKS_UI_TOKEN`` or ``--token-file``) is long-lived and never goes in a
  URL: scripts send it as ``Authorization: token T``; a person may paste it into the sign-in form
  to open another session. Without one, the printed one-time URL is the only way in.
- Every session (and the token) has its own CSRF token, an HMAC under a key of this process.

Example:
    >>> sessions = Sessions(token=None)
    >>> code = sessions.login_code()
    >>> sid = sessions.redeem(code)
    >>> sessions.redeem(code) is None  # one time only
    True
    >>> sessions.is_session(sid)
    True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

#: Sessions kept at once; past it the oldest is dropped (its browser signs in again).
MAX_SESSIONS = 256
#: Login codes waiting at once; past it the oldest is dropped.
MAX_CODES = 64
#: What the CSRF token of a request authenticated by the access token is derived from.
_TOKEN_SUBJECT = "access-token"


class Sessions:
    """The login codes, sessions and access token of one server (thread-safe)."""

    def __init__(self, token: str | None) -> None:
        self._token = token
        self._csrf_key = secrets.token_bytes(32)
        # code -> (deadline on the monotonic clock or None, called when redeemed)
        self._codes: OrderedDict[str, tuple[float | None, Callable[[], None] | None]]
        self._codes = OrderedDict()
        self._sessions: OrderedDict[str, str] = OrderedDict()  # id -> its CSRF token
        self._token_csrf = self._csrf(_TOKEN_SUBJECT)
        self._lock = threading.Lock()

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def login_code(
        self, *, ttl: float | None = None, on_redeem: Callable[[], None] | None = None
    ) -> str:
        """A new one-time code; `ttl` seconds to use it (None: until used)."""
        code = secrets.token_urlsafe(32)
        deadline = None if ttl is None else time.monotonic() + ttl
        with self._lock:
            self._codes[code] = (deadline, on_redeem)
            while len(self._codes) > MAX_CODES:
                self._codes.popitem(last=False)
        return code

    def redeem(self, code: str | None) -> str | None:
        """A new session id for a valid, unused, unexpired `code` (which is then forgotten)."""
        if not code:
            return None
        with self._lock:
            pending = self._codes.pop(code, None)  # popped: a second use finds nothing
        if pending is None:
            return None
        deadline, on_redeem = pending
        if deadline is not None and time.monotonic() > deadline:
            return None
        if on_redeem is not None:
            on_redeem()
        return self.open_session()

    def open_session(self) -> str:
        """A new session id (random; not derived from any code or token)."""
        sid = secrets.token_urlsafe(32)
        csrf = self._csrf(sid)
        with self._lock:
            self._sessions[sid] = csrf
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return sid

    def is_session(self, sid: str | None) -> bool:
        return self.session_csrf(sid) is not None

    def session_csrf(self, sid: str | None) -> str | None:
        """The CSRF token of session `sid`, or None if this server opened no such session."""
        if not sid:
            return None
        return self._sessions.get(sid)  # one dict read: atomic, no lock needed

    def token_matches(self, given: str | None) -> bool:
        if not given or self._token is None:
            return False
        return hmac.compare_digest(given.encode(), self._token.encode())

    def csrf_for(self, subject: str | None) -> str:
        """The CSRF token of session `subject` (None: of the access token)."""
        if subject is None:
            return self._token_csrf
        return self._sessions.get(subject) or self._csrf(subject)

    def _csrf(self, subject: str) -> str:
        return hmac.new(self._csrf_key, subject.encode(), hashlib.sha256).hexdigest()[:40]
