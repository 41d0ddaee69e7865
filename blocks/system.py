"""System blocks: `Secret`, `JSON`, `String`, `DateTime` and `Webhook`.

Example:
    >>> Secret(value="s3cr3t").save("my-api-key")
    >>> Secret.load("my-api-key").get()
    's3cr3t'
    >>> Secret(value={"user": "etl", "password": "pw"}).save("db-login")
    >>> Secret.load("db-login").get()["user"]
    'etl'
    >>> Secret(value=["token-a", "token-b"]).save("rotating-tokens")
    >>> Webhook(url="https://hooks.example.com/T0/B0/xyz").call({"text": "done"}).status_code
    200
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import pydantic
from pydantic import Field, SecretStr, field_validator

from blocks.core._block import Block, SecretDict
from blocks.core._masking import note as note_secret
from blocks.core._references import SecretRef
from blocks.errors import WebhookError

if TYPE_CHECKING:  # urllib.request and asyncio load on a webhook's first call, not on import
    import urllib.request

SecretList = pydantic.Secret[list[Any]]
"""A list whose whole value is secret: masked in repr, encrypted at rest."""


class Secret(Block):
    """A secret string, dict or list, encrypted at rest; `.get()` returns the plain value.

    The value may be a `SecretRef` (``Secret(value=SecretRef("env:API_KEY"))``): `.get()` then
    reads it from where it points (see "Secrets by reference" in the README).
    """

    value: SecretStr | SecretDict | SecretList

    def get(self) -> Any:
        """The plain secret value (a str, a dict or a list); masked in run logs from now on."""
        value = self.value.get_secret_value()
        note_secret(value)
        return value


class JSON(Block):
    """Any JSON-compatible value."""

    _block_type_slug = "json"

    value: Any

    def get(self) -> Any:
        return self.value


class String(Block):
    """A plain (not secret) string."""

    value: str

    def get(self) -> str:
        return self.value


class DateTime(Block):
    """A date and time."""

    value: datetime

    def get(self) -> datetime:
        return self.value


@dataclass(frozen=True)
class WebhookResponse:
    """What a webhook answered: status, headers and body (already read)."""

    status_code: int
    headers: dict[str, str] = field(repr=False)
    content: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Webhook(Block):
    """An HTTP endpoint to call with a payload; the URL and headers are secret (a webhook URL
    is usually its own password).

    `call` sends the payload (a dict or list as JSON, a str as UTF-8 text, bytes as they are)
    and returns the answer; a failure - unreachable, slower than `timeout`, or a 4xx/5xx
    answer - is one `WebhookError` naming the method and the URL's host only.

    Example:
        >>> hook = Webhook(url="https://hooks.slack.com/services/T0/B0/xyz",
        ...                headers={"Authorization": "Bearer t0k3n"})
        >>> hook.save("alerts")
        >>> Webhook.load("alerts").call({"text": "ETL finished"}).status_code
        200
    """

    _description = "Call an HTTP endpoint (URL and headers sealed) with a payload."

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: SecretStr
    headers: SecretDict = Field(default_factory=lambda: SecretDict({}))
    timeout: float = Field(default=10.0, gt=0)
    """Seconds to connect, and to wait for each read of the answer."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        parts = urllib.parse.urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Never repeat the URL: it is the secret.
            raise ValueError("url must be an http:// or https:// URL with a host")
        return value

    def _host(self) -> str:
        parts = urllib.parse.urlsplit(self.url.get_secret_value())
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}"

    def _request(self, payload: Any) -> urllib.request.Request:
        import urllib.request

        headers = {str(k): str(v) for k, v in self.headers.get_secret_value().items()}
        body: bytes | None
        if payload is None:
            body = None
        elif isinstance(payload, bytes):
            body = payload
        elif isinstance(payload, str):
            body = payload.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            body = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        return urllib.request.Request(
            self.url.get_secret_value(), data=body, headers=headers, method=self.method
        )

    def call(self, payload: Any = None) -> WebhookResponse:
        """Send `payload` and return the answer; `WebhookError` if it fails."""
        import urllib.error
        import urllib.request

        request = self._request(payload)
        why: str
        status: int | None = None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return WebhookResponse(
                    status_code=int(answer.status),
                    headers=dict(answer.headers.items()),
                    content=answer.read(),
                )
        except urllib.error.HTTPError as exc:
            why = f"the server answered HTTP {exc.code} {exc.reason}"
            status = exc.code
        except TimeoutError:
            why = f"no answer within its timeout of {self.timeout:g} s"
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                why = f"no answer within its timeout of {self.timeout:g} s"
            elif isinstance(reason, OSError):
                why = f"cannot connect ({reason.strerror or type(reason).__name__})"
            else:
                why = "cannot connect"
        except (OSError, ValueError) as exc:
            why = f"the connection failed ({type(exc).__name__})"
        # `from None`: the chained exceptions hold the whole URL (and the request, its headers).
        error = WebhookError(f"Webhook {self.method} to {self._host()} failed: {why}.")
        error.status_code = status
        raise error from None

    async def acall(self, payload: Any = None) -> WebhookResponse:
        """`call` for async code (runs in a worker thread; the loop is never blocked)."""
        import asyncio

        return await asyncio.to_thread(self.call, payload)


__all__ = ["JSON", "DateTime", "Secret", "SecretRef", "String", "Webhook", "WebhookResponse"]
